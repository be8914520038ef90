using System;
using ThpCore.Paging;
using Xunit;

namespace ThpCore.Tests.Paging;

public sealed class SimpleFrameAllocatorTests
{
    [Fact]
    public void Frames_come_out_in_order_until_the_range_is_used_up()
    {
        var allocator = new SimpleFrameAllocator(PhysicalAddress.Create(0x10_0000), PhysicalAddress.Create(0x10_3000));
        Assert.Equal(3, allocator.Capacity);

        Assert.True(allocator.TryAllocateFrame(out PhysicalAddress a));
        Assert.True(allocator.TryAllocateFrame(out PhysicalAddress b));
        Assert.True(allocator.TryAllocateFrame(out PhysicalAddress c));
        Assert.False(allocator.TryAllocateFrame(out PhysicalAddress none));

        Assert.Equal(new[] { 0x10_0000UL, 0x10_1000UL, 0x10_2000UL }, new[] { a.Value, b.Value, c.Value });
        Assert.Equal(PhysicalAddress.Zero, none);
        Assert.Equal(3, allocator.AllocatedCount);
        Assert.True(allocator.IsAllocated(b));
    }

    [Fact]
    public void Freed_frames_are_reused_before_the_allocator_reports_exhaustion()
    {
        var allocator = new SimpleFrameAllocator(PhysicalAddress.Create(0x1000), PhysicalAddress.Create(0x3000));
        Assert.True(allocator.TryAllocateFrame(out PhysicalAddress a));
        Assert.True(allocator.TryAllocateFrame(out _));

        allocator.FreeFrame(a);
        Assert.Equal(1, allocator.AllocatedCount);
        Assert.False(allocator.IsAllocated(a));

        Assert.True(allocator.TryAllocateFrame(out PhysicalAddress again));
        Assert.Equal(a, again);
        Assert.False(allocator.TryAllocateFrame(out _));
    }

    [Fact]
    public void Freeing_twice_throws_and_leaves_the_count_alone()
    {
        var allocator = new SimpleFrameAllocator(PhysicalAddress.Create(0x1000), PhysicalAddress.Create(0x5000));
        Assert.True(allocator.TryAllocateFrame(out PhysicalAddress a));
        allocator.FreeFrame(a);

        var ex = Assert.Throws<ArgumentException>(() => allocator.FreeFrame(a));
        Assert.Equal("frame", ex.ParamName);
        Assert.Contains("already free", ex.Message, StringComparison.Ordinal);
        Assert.Equal(0, allocator.AllocatedCount);
    }

    [Theory]
    [InlineData(0x0UL)]
    [InlineData(0x5000UL)]
    [InlineData(0x2000UL)]
    [InlineData(0x1008UL)]
    public void Freeing_a_frame_never_handed_out_throws(ulong address)
    {
        var allocator = new SimpleFrameAllocator(PhysicalAddress.Create(0x1000), PhysicalAddress.Create(0x5000));
        Assert.True(allocator.TryAllocateFrame(out _));

        var ex = Assert.Throws<ArgumentException>(() => allocator.FreeFrame(PhysicalAddress.Create(address)));
        Assert.Contains("never handed out", ex.Message, StringComparison.Ordinal);
        Assert.Equal(1, allocator.AllocatedCount);
    }

    [Fact]
    public void The_range_must_be_frame_aligned_and_not_reversed()
    {
        Assert.Equal("start", Assert.Throws<ArgumentException>(() => new SimpleFrameAllocator(PhysicalAddress.Create(0x10), PhysicalAddress.Create(0x2000))).ParamName);
        Assert.Equal("end", Assert.Throws<ArgumentException>(() => new SimpleFrameAllocator(PhysicalAddress.Zero, PhysicalAddress.Create(0x2010))).ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => new SimpleFrameAllocator(PhysicalAddress.Create(0x3000), PhysicalAddress.Create(0x2000)));

        var empty = new SimpleFrameAllocator(PhysicalAddress.Create(0x3000), PhysicalAddress.Create(0x3000));
        Assert.Equal(0, empty.Capacity);
        Assert.False(empty.TryAllocateFrame(out _));
    }
}
