using System;
using System.IO;
using Spectre.Console;

namespace ThpCore.Cli;

/// <summary>Where a command writes: rich text for people, plain writers for output that scripts diff.</summary>
/// <param name="Console">Tables and colour for people.</param>
/// <param name="Out">Plain standard output (info tlb, JSON, tables of mappings): written exactly, never wrapped.</param>
/// <param name="Error">Diagnostics and progress.</param>
/// <param name="ShowProgress">Whether a progress line may be drawn on <paramref name="Error"/> (a terminal, not a file).</param>
public sealed record CliContext(IAnsiConsole Console, TextWriter Out, TextWriter Error, bool ShowProgress)
{
    /// <summary>The process's own console, output and error streams.</summary>
    public static CliContext FromProcess() =>
        new(AnsiConsole.Console, System.Console.Out, System.Console.Error, !System.Console.IsErrorRedirected);
}

/// <summary>Exit codes a script can rely on.</summary>
public static class ExitCodes
{
    /// <summary>Success (for <c>walk</c>: the address translated).</summary>
    public const int Success = 0;

    /// <summary>An unexpected internal error; the message says what happened.</summary>
    public const int InternalError = 1;

    /// <summary>Bad usage: unknown option, missing argument, a number that does not parse.</summary>
    public const int Usage = 2;

    /// <summary>The image or registers file cannot be read or is not a valid image.</summary>
    public const int BadFile = 3;

    /// <summary>CR3 points outside the image.</summary>
    public const int RootOutsideImage = 4;

    /// <summary>Enumeration stopped at the leaf or work limit: the output is incomplete.</summary>
    public const int LimitReached = 5;

    /// <summary><c>walk</c>: the access faults (#PF), is non-canonical (#GP) or reaches a table outside the image.</summary>
    public const int WalkFaulted = 6;
}

/// <summary>A failure with a message for the user and an exit code.</summary>
public sealed class CliException : Exception
{
    /// <summary>Creates the failure.</summary>
    public CliException(int exitCode, string message)
        : base(message) => ExitCode = exitCode;

    /// <summary>The process exit code.</summary>
    public int ExitCode { get; }
}
