using System;

namespace ThpCore.Tests;

/// <summary>
/// Measures what a piece of code allocates on the calling thread in its steady state: one warm-up run, then the least
/// of three measured runs. The runtime itself may allocate on the thread while a method tiers up (on-stack
/// replacement, call-counting stubs), more so on a loaded machine; an allocation the code makes on every run shows
/// in every run, so the minimum still catches it.
/// </summary>
internal static class Allocations
{
    public static long SteadyState(Action body)
    {
        body();
        long least = long.MaxValue;
        for (int run = 0; run < 3; run++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            body();
            least = Math.Min(least, GC.GetAllocatedBytesForCurrentThread() - before);
        }

        return least;
    }
}
