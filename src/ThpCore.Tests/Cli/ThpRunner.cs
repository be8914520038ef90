using System.IO;
using Spectre.Console;
using ThpCore.Cli;

namespace ThpCore.Tests.Cli;

/// <summary>Runs the <c>thp</c> command in-process with captured, uncoloured output 240 columns wide.</summary>
internal static class ThpRunner
{
    public static (int Exit, string Output, string Error) Run(params string[] args)
    {
        var output = new StringWriter { NewLine = "\n" };
        var error = new StringWriter();
        IAnsiConsole console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = AnsiSupport.No,
            ColorSystem = ColorSystemSupport.NoColors,
            Out = new AnsiConsoleOutput(output),
        });
        console.Profile.Width = 240;
        int exit = Program.Run(args, new CliContext(console, output, error, ShowProgress: false));
        return (exit, output.ToString(), error.ToString());
    }
}
