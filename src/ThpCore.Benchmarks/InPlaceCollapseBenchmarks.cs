using System;
using BenchmarkDotNet.Attributes;
using ThpCore.Collapse;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;

namespace ThpCore.Benchmarks;

/// <summary>
/// In-place collapse: the 512-entry check (scalar, Vector128, Vector256) against the native floor's scalar C check
/// (~300 ns), and a whole collapse. A collapse needs a PTE-mapped THP, so <see cref="SplitThenCollapse"/> times a
/// <see cref="AddressSpace.SplitHugePmd"/> (which uses the deposited table, no allocation) followed by the collapse.
/// </summary>
[MemoryDiagnoser]
public class InPlaceCollapseBenchmarks
{
    private readonly ulong[] _table = new ulong[512];
    private AddressSpace _space = null!;
    private VirtualAddress _start;

    [GlobalSetup]
    public void Setup()
    {
        for (int i = 0; i < 512; i++)
        {
            // A run at 1 GiB: P | RW | US | A | D | XD, A and D varying as they do in real tables.
            _table[i] = ((1UL << 30) + ((ulong)i << 12)) | 0x7 | ((ulong)(i & 3) << 5) | (1UL << 63);
        }

        _space = new AddressSpace(new MemoryNode(64UL << 20), new ThpSettings { Enabled = ThpEnabled.Always });
        _start = _space.Map(2UL << 20, Protection.Read | Protection.Write);
        _space.Access(_start, AccessKind.Write);
        _space.SplitHugePmd(_start);
        if (Collapser.TryCollapseInPlace(_space, _start).Status != CollapseStatus.Succeed)
        {
            throw new InvalidOperationException("The benchmark's THP did not collapse.");
        }
    }

    [Benchmark(Baseline = true)]
    public int CheckScalar() => PteRunCheck.FindFirstMismatchScalar(_table, out _);

    [Benchmark]
    public int CheckVector128() => PteRunCheck.FindFirstMismatchVector128(_table, out _);

    [Benchmark]
    public int CheckVector256() => PteRunCheck.FindFirstMismatchVector256(_table, out _);

    [Benchmark]
    public CollapseStatus SplitThenCollapse()
    {
        _space.SplitHugePmd(_start);
        return Collapser.TryCollapseInPlace(_space, _start).Status;
    }
}
