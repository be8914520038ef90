using System;
using System.Linq;
using ThpCore.Memory;
using Xunit;

namespace ThpCore.Tests.Memory;

/// <summary><see cref="BuddyAllocator.TryAllocateAt"/>: taking one chosen free block (Linux's take_page_off_buddy).</summary>
public sealed class BuddyAllocateAtTests
{
    private static (ulong FirstFrame, int Order)[] FreeBlocks(BuddyAllocator allocator) =>
        Enumerable.Range(0, BuddyAllocator.MaxOrder + 1).SelectMany(allocator.FreeBlockList).OrderBy(b => b.FirstFrame).ToArray();

    [Fact]
    public void Taking_frame_5_of_a_free_16_frame_block_leaves_its_buddies_free_at_each_order()
    {
        var allocator = new BuddyAllocator(new FrameTable(16));
        Assert.True(allocator.TryAllocateAt(5, 0));

        // 16 = [0..7] [8..15]; 5 lies in [4..7] = [4..5] [6..7]; [4..5] = 4, 5.
        Assert.Equal(new (ulong, int)[] { (0, 2), (4, 0), (6, 1), (8, 3) }, FreeBlocks(allocator));
        Assert.Equal(15UL, allocator.FreeFrames);
        FrameInfo info = allocator.Frames.Describe(5);
        Assert.Equal(FrameFlags.None, info.Flags);
        Assert.Equal(0, info.RefCount);

        allocator.Free(5, 0);
        Assert.Equal(new (ulong, int)[] { (0, 4) }, FreeBlocks(allocator));
    }

    [Fact]
    public void An_order_2_block_can_be_taken_from_the_middle_of_a_larger_one()
    {
        var allocator = new BuddyAllocator(new FrameTable(16));
        Assert.True(allocator.TryAllocateAt(12, 2));
        Assert.Equal(new (ulong, int)[] { (0, 3), (8, 2) }, FreeBlocks(allocator));
        Assert.Equal(2, allocator.Frames.Describe(12).Order);
        allocator.Free(12, 2);
        Assert.Equal(16UL, allocator.FreeFrames);
    }

    [Fact]
    public void An_allocated_or_partly_allocated_block_is_refused_and_nothing_changes()
    {
        var allocator = new BuddyAllocator(new FrameTable(16));
        Assert.True(allocator.TryAllocate(0, out ulong taken));
        Assert.Equal(0UL, taken);
        var before = FreeBlocks(allocator);
        long failures = allocator.AllocationFailures;

        Assert.False(allocator.TryAllocateAt(0, 0));
        Assert.False(allocator.TryAllocateAt(0, 1));
        Assert.False(allocator.TryAllocateAt(0, 4));

        Assert.Equal(before, FreeBlocks(allocator));
        Assert.Equal(15UL, allocator.FreeFrames);
        Assert.Equal(failures, allocator.AllocationFailures);
    }

    [Fact]
    public void A_free_head_of_exactly_the_order_is_taken_whole()
    {
        var allocator = new BuddyAllocator(new FrameTable(16));
        Assert.True(allocator.TryAllocateAt(0, 4));
        Assert.Empty(FreeBlocks(allocator));
        Assert.Equal(0UL, allocator.FreeFrames);
        allocator.Free(0, 4);
        Assert.Equal(new (ulong, int)[] { (0, 4) }, FreeBlocks(allocator));
    }

    [Fact]
    public void Reserved_frames_are_never_taken()
    {
        var allocator = new BuddyAllocator(new FrameTable(16), new[] { (4UL, 2UL) });
        Assert.False(allocator.TryAllocateAt(4, 0));
        Assert.False(allocator.TryAllocateAt(4, 2));
        Assert.True(allocator.TryAllocateAt(6, 0));
    }

    [Theory]
    [InlineData(16UL, 0)]
    [InlineData(3UL, 1)]
    [InlineData(0UL, 11)]
    [InlineData(0UL, -1)]
    public void Bad_frames_and_orders_throw(ulong frame, int order)
    {
        var allocator = new BuddyAllocator(new FrameTable(16));
        Assert.ThrowsAny<ArgumentOutOfRangeException>(() => allocator.TryAllocateAt(frame, order));
    }
}
