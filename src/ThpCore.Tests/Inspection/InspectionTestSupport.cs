using System;
using System.Collections.Generic;
using System.Linq;
using ThpCore.Inspection;
using ThpCore.Paging;
using Xunit;

namespace ThpCore.Tests.Inspection;

/// <summary>Helpers shared by the inspection tests.</summary>
internal static class InspectionTestSupport
{
    public const ulong MapperMemorySize = 64UL << 20;
    public const ulong MapperTablesStart = 1UL << 20;

    public static (PageTableMapper Mapper, SparsePhysicalMemory Memory, CpuState Cpu) NewMapper(PagingMode mode)
    {
        var memory = new SparsePhysicalMemory(MapperMemorySize);
        var allocator = new SimpleFrameAllocator(PhysicalAddress.Create(MapperTablesStart), PhysicalAddress.Create(MapperMemorySize));
        var mapper = new PageTableMapper(memory, allocator, mode);
        var cpu = CpuState.Create(mapper.Root.Value, mode == PagingMode.FiveLevel ? Cr4Flags.Pae | Cr4Flags.La57 : Cr4Flags.Pae);
        return (mapper, memory, cpu);
    }

    /// <summary>Enumerates everything and returns the mappings with the enumerator (for its counters and anomalies).</summary>
    public static (List<Mapping> Mappings, PageTableEnumerator Enumerator) EnumerateAll(IPhysicalMemory memory, CpuState cpu, EnumerationOptions? options = null)
    {
        var enumerator = new PageTableEnumerator(memory, cpu, options);
        List<Mapping> mappings = enumerator.Enumerate().ToList();
        return (mappings, enumerator);
    }

    /// <summary>
    /// Asserts that a probe walk of the mapping's address translates through exactly the mapping's leaf: the
    /// same entry address and value, frame, size and rights. The walker is the independent oracle.
    /// </summary>
    public static void AssertWalkerAgrees(IPhysicalMemory memory, CpuState cpu, Mapping mapping)
    {
        var trace = new WalkTrace();
        WalkResult result = PageWalker.Translate(cpu, memory, mapping.Address, AccessKind.Read, Privilege.Supervisor, new WalkOptions { Probe = true }, trace);
        Assert.True(result.IsTranslated, $"{mapping}: {result}");
        Assert.Equal(mapping.Frame, result.PhysicalAddress);
        Assert.Equal(mapping.Size, result.PageSize);
        Assert.Equal(mapping.Rights, result.Rights);
        Assert.Equal(mapping.Leaf, trace.Steps[^1].Entry);
        Assert.Equal(mapping.EntryAddress, trace.Steps[^1].EntryAddress);
    }

    public static Anomaly Single(PageTableEnumerator enumerator, AnomalyKind kind) =>
        Assert.Single(enumerator.Anomalies, a => a.Kind == kind);
}

/// <summary>Memory whose reads fail in [<see cref="HoleStart"/>, <see cref="HoleEnd"/>), as a guest image with a gap would.</summary>
internal sealed class HoleyMemory : IPhysicalMemory
{
    private readonly SparsePhysicalMemory _inner;

    public HoleyMemory(SparsePhysicalMemory inner, ulong holeStart, ulong holeEnd)
    {
        _inner = inner;
        HoleStart = holeStart;
        HoleEnd = holeEnd;
    }

    public ulong HoleStart { get; }

    public ulong HoleEnd { get; }

    public ulong Size => _inner.Size;

    public bool TryReadUInt64(PhysicalAddress address, out ulong value)
    {
        if (address.Value >= HoleStart && address.Value < HoleEnd)
        {
            value = 0;
            return false;
        }

        return _inner.TryReadUInt64(address, out value);
    }

    public void WriteUInt64(PhysicalAddress address, ulong value) => _inner.WriteUInt64(address, value);

    public ulong CompareExchangeUInt64(PhysicalAddress address, ulong value, ulong comparand) => _inner.CompareExchangeUInt64(address, value, comparand);

    public ReadOnlySpan<byte> ReadFrame(ulong frameNumber) => _inner.ReadFrame(frameNumber);

    public Span<byte> GetWritableFrame(ulong frameNumber) => _inner.GetWritableFrame(frameNumber);
}

/// <summary>An <see cref="IProgress{T}"/> that records synchronously (the BCL's Progress posts to a context).</summary>
internal sealed class RecordingProgress<T> : IProgress<T>
{
    public List<T> Reports { get; } = new();

    public Action<T>? OnReport { get; set; }

    public void Report(T value)
    {
        Reports.Add(value);
        OnReport?.Invoke(value);
    }
}
