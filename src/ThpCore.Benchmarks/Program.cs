using BenchmarkDotNet.Running;

namespace ThpCore.Benchmarks;

/// <summary>
/// Runs the benchmarks. Compare with ../shared/bench/run-native-floor.sh in the same session and quote ratios:
/// <c>dotnet run -c Release --project src/ThpCore.Benchmarks -- --filter '*'</c>.
/// </summary>
public static class Program
{
    public static void Main(string[] args) => BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
}
