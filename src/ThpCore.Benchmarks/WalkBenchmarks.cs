using System;
using BenchmarkDotNet.Attributes;
using ThpCore.Paging;

namespace ThpCore.Benchmarks;

/// <summary>
/// The page-walk workloads of the native floor (native_floor.c): 1 GiB mapped by 4 KiB pages at
/// 0x7f0000000000, tables allocated from physical address 0 upward, data frames from 1 GiB; walks with A-bit
/// update (after the first pass every A bit is set, so a walk only reads, as in the C code).
/// </summary>
[MemoryDiagnoser]
public class WalkBenchmarks
{
    private const ulong Base = 0x7f00_0000_0000UL;
    private const ulong Pages = 262_144;
    private const int Batch = 1024;

    private SparsePhysicalMemory _memory = null!;
    private CpuState _cpu = null!;
    private VirtualAddress[] _random = null!;
    private ulong _next;

    [GlobalSetup]
    public void Setup()
    {
        _memory = new SparsePhysicalMemory(2UL << 30);
        ulong nextFrame = 0;
        ulong AllocFrame()
        {
            ulong f = nextFrame;
            nextFrame += 4096;
            return f;
        }

        ulong root = AllocFrame();
        const ulong tableFlags = 0x7; // P | RW | US
        for (ulong i = 0; i < Pages; i++)
        {
            ulong va = Base + (i * 4096);
            ulong table = root;
            for (int level = 4; level > 1; level--)
            {
                var at = PhysicalAddress.Create(table + (((va >> (12 + (9 * (level - 1)))) & 511) * 8));
                ulong e = ((IPhysicalMemory)_memory).ReadUInt64(at);
                if ((e & 1) == 0)
                {
                    e = AllocFrame() | tableFlags;
                    _memory.WriteUInt64(at, e);
                }

                table = e & PageTableEntry.AddressMask4K;
            }

            _memory.WriteUInt64(PhysicalAddress.Create(table + (((va >> 12) & 511) * 8)), ((1UL << 30) + (i * 4096)) | tableFlags);
        }

        _cpu = CpuState.Create(root);
        _random = new VirtualAddress[1 << 20];
        ulong x = 88172645463325252UL;
        for (int i = 0; i < _random.Length; i++)
        {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            _random[i] = VirtualAddress.Create(Base + ((x % Pages) * 4096) + (x & 4095));
        }

        // First pass sets every A bit, as the C benchmark's warm-up does implicitly.
        for (ulong i = 0; i < Pages; i++)
        {
            PageWalker.Translate(_cpu, _memory, VirtualAddress.Create(Base + (i * 4096)), AccessKind.Read, Privilege.Supervisor);
        }
    }

    /// <summary>Full 4-level walk of a random address (per walk: divide by <see cref="Batch"/>).</summary>
    [Benchmark(OperationsPerInvoke = Batch)]
    public ulong WalkRandom()
    {
        ulong sum = 0;
        int start = (int)(_next++ & ((1 << 20) / Batch - 1)) * Batch;
        for (int i = 0; i < Batch; i++)
        {
            sum += PageWalker.Translate(_cpu, _memory, _random[start + i], AccessKind.Read, Privilege.Supervisor).PhysicalAddress.Value;
        }

        return sum;
    }

    /// <summary>Full 4-level walk of sequential pages.</summary>
    [Benchmark(OperationsPerInvoke = Batch)]
    public ulong WalkSequential()
    {
        ulong sum = 0;
        ulong first = (_next++ * Batch) % Pages;
        for (ulong i = 0; i < Batch; i++)
        {
            var va = VirtualAddress.Create(Base + (((first + i) % Pages) * 4096));
            sum += PageWalker.Translate(_cpu, _memory, va, AccessKind.Read, Privilege.Supervisor).PhysicalAddress.Value;
        }

        return sum;
    }
}
