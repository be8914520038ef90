using System;
using ThpCore.Paging;
using Xunit;

namespace ThpCore.Tests.Paging;

public sealed class SparsePhysicalMemoryTests
{
    [Fact]
    public void Untouched_frames_read_zero_and_cost_nothing()
    {
        var memory = new SparsePhysicalMemory(1UL << 36); // 64 GiB
        Assert.Equal(0UL, ((IPhysicalMemory)memory).ReadUInt64(PhysicalAddress.Create(0xA_3456_7000)));
        Assert.True(memory.ReadFrame(0x100).ToArray().AsSpan().IndexOfAnyExcept((byte)0) < 0);
        Assert.Equal(0, memory.MaterializedFrames);
    }

    [Fact]
    public void A_written_word_reads_back_and_materializes_one_frame()
    {
        var memory = new SparsePhysicalMemory(1UL << 30);
        memory.WriteUInt64(PhysicalAddress.Create(0x20_0008), 0xDEAD_BEEF_0000_0001);
        Assert.Equal(0xDEAD_BEEF_0000_0001UL, ((IPhysicalMemory)memory).ReadUInt64(PhysicalAddress.Create(0x20_0008)));
        Assert.Equal(1, memory.MaterializedFrames);
        Assert.Equal(0x01, memory.ReadFrame(0x200)[8]);
    }

    [Fact]
    public void Compare_exchange_replaces_only_on_match()
    {
        var memory = new SparsePhysicalMemory(1UL << 20);
        var at = PhysicalAddress.Create(0x1000);
        Assert.Equal(0UL, memory.CompareExchangeUInt64(at, 5, 0));
        Assert.Equal(5UL, memory.CompareExchangeUInt64(at, 7, 0));
        Assert.Equal(5UL, ((IPhysicalMemory)memory).ReadUInt64(at));
    }

    [Fact]
    public void Discarding_a_frame_drops_its_bytes()
    {
        var memory = new SparsePhysicalMemory(1UL << 20);
        memory.GetWritableFrame(3)[100] = 42;
        Assert.Equal(1, memory.MaterializedFrames);
        memory.DiscardFrame(3);
        Assert.Equal(0, memory.MaterializedFrames);
        Assert.Equal(0, memory.ReadFrame(3)[100]);
    }

    [Fact]
    public void Out_of_range_and_misaligned_accesses_are_refused()
    {
        var memory = new SparsePhysicalMemory(1UL << 20);
        Assert.False(memory.TryReadUInt64(PhysicalAddress.Create(1UL << 20), out _));
        Assert.Throws<ArgumentOutOfRangeException>(() => memory.WriteUInt64(PhysicalAddress.Create(1UL << 20), 1));
        Assert.Throws<ArgumentException>(() => memory.WriteUInt64(PhysicalAddress.Create(4), 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => memory.GetWritableFrame(256));
        Assert.Throws<ArgumentOutOfRangeException>(() => new SparsePhysicalMemory(4095));
    }
}
