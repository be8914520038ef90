using System;
using System.CommandLine;
using System.CommandLine.Parsing;

namespace ThpCore.Cli;

/// <summary>The <c>thp</c> command: demos and tools built on ThpCore.</summary>
public static class Program
{
    /// <summary>Entry point; see <see cref="ExitCodes"/>.</summary>
    public static int Main(string[] args) => Run(args, CliContext.FromProcess());

    /// <summary>Parses and runs <paramref name="args"/>, writing to <paramref name="context"/>; returns the exit code.</summary>
    public static int Run(string[] args, CliContext context)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(context);
        ParseResult parse = BuildRootCommand(context).Parse(args);
        if (parse.Errors.Count > 0)
        {
            foreach (ParseError error in parse.Errors)
            {
                context.Error.WriteLine($"thp: {error.Message}");
            }

            context.Error.WriteLine("Try 'thp --help' or 'thp COMMAND --help'.");
            return ExitCodes.Usage;
        }

        return parse.Invoke(new InvocationConfiguration { Output = context.Out, Error = context.Error });
    }

    /// <summary>Builds the command tree.</summary>
    public static RootCommand BuildRootCommand(CliContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var root = new RootCommand("thp — x86-64 paging and transparent huge pages, modelled exactly (ThpCore).");

        var walkDemo = new Command(
            "walk-demo",
            "Build a small address space with 4 KiB, 2 MiB and 1 GiB pages and show page walks step by step, one ending in a page fault.");
        walkDemo.SetAction(_ => Cli.Run(context, () =>
        {
            WalkDemo.Run(context.Console);
            return ExitCodes.Success;
        }));
        root.Subcommands.Add(walkDemo);
        root.Subcommands.Add(InspectCommand.Create(context));
        root.Subcommands.Add(WalkCommand.Create(context));
        return root;
    }
}

/// <summary>Runs a command body, turning failures into messages and exit codes.</summary>
internal static class Cli
{
    public static int Run(CliContext context, Func<int> body)
    {
        try
        {
            return body();
        }
        catch (CliException e)
        {
            context.Error.WriteLine($"thp: {e.Message}");
            return e.ExitCode;
        }
        catch (Exception e)
        {
            context.Error.WriteLine($"thp: internal error, please report it: {e}");
            return ExitCodes.InternalError;
        }
    }
}
