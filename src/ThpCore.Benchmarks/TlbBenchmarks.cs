using BenchmarkDotNet.Attributes;
using ThpCore.Paging;

namespace ThpCore.Benchmarks;

/// <summary>
/// The TLB-hit workload of the native floor: a 256-entry direct-mapped 4 KiB TLB, every lookup a hit, addresses
/// cycling through 256 pages with stride 7 as in native_floor.c.
/// </summary>
[MemoryDiagnoser]
public class TlbBenchmarks
{
    private const ulong Base = 0x7f00_0000_0000UL;
    private const int Batch = 1024;

    private SparsePhysicalMemory _memory = null!;
    private CpuState _cpu = null!;
    private Tlb _tlb = null!;
    private VirtualAddress[] _addresses = null!;
    private int _next;

    [GlobalSetup]
    public void Setup()
    {
        _memory = new SparsePhysicalMemory(2UL << 30);
        var frames = new SimpleFrameAllocator(PhysicalAddress.Create(0), PhysicalAddress.Create(1UL << 30));
        var mapper = new PageTableMapper(_memory, frames, PagingMode.FourLevel);
        for (ulong i = 0; i < 256; i++)
        {
            mapper.Map(VirtualAddress.Create(Base + (i * 4096)), PhysicalAddress.Create((1UL << 30) + (i * 4096)), PageSize.Size4K,
                PageTableFlags.Present | PageTableFlags.Writable | PageTableFlags.User).Ignore();
        }

        _cpu = CpuState.Create(mapper.Root.Value);
        _tlb = new Tlb(TlbOptions.Default with { Entries4K = 256, Associativity4K = 1 });
        _addresses = new VirtualAddress[Batch];
        for (int i = 0; i < Batch; i++)
        {
            _addresses[i] = VirtualAddress.Create(Base + ((ulong)((i * 7) & 255) * 4096) + (ulong)(i & 4095));
        }

        foreach (VirtualAddress va in _addresses)
        {
            _tlb.Translate(_cpu, _memory, va, AccessKind.Read, Privilege.Supervisor);
        }
    }

    /// <summary>One TLB hit (per lookup: divide by <see cref="Batch"/>).</summary>
    [Benchmark(OperationsPerInvoke = Batch)]
    public ulong Hit()
    {
        ulong sum = 0;
        for (int i = 0; i < Batch; i++)
        {
            sum += _tlb.Translate(_cpu, _memory, _addresses[i], AccessKind.Read, Privilege.Supervisor).PhysicalAddress.Value;
        }

        _next++;
        return sum;
    }
}
