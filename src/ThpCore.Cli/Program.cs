using System;

namespace ThpCore.Cli;

/// <summary>The <c>thp</c> command.</summary>
public static class Program
{
    /// <summary>Entry point.</summary>
    public static int Main(string[] args)
    {
        Console.WriteLine("thp: walk-demo is coming.");
        return 0;
    }
}
