using System;
using System.CommandLine;
using Spectre.Console;

namespace ThpCore.Cli;

/// <summary>The <c>thp</c> command: demos and tools built on ThpCore.</summary>
public static class Program
{
    /// <summary>Entry point. Exit codes: 0 success, 1 usage error.</summary>
    public static int Main(string[] args) => BuildRootCommand(AnsiConsole.Console).Parse(args).Invoke();

    /// <summary>Builds the command tree, writing to <paramref name="console"/>.</summary>
    public static RootCommand BuildRootCommand(IAnsiConsole console)
    {
        var root = new RootCommand("thp — x86-64 paging and transparent huge pages, modelled exactly (ThpCore).");

        var walkDemo = new Command(
            "walk-demo",
            "Build a small address space with 4 KiB, 2 MiB and 1 GiB pages and show page walks step by step, one ending in a page fault.");
        walkDemo.SetAction(_ =>
        {
            WalkDemo.Run(console);
            return 0;
        });
        root.Subcommands.Add(walkDemo);
        return root;
    }
}
