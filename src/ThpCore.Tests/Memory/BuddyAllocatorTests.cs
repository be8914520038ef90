using System;
using System.Collections.Generic;
using System.Linq;
using System.Threading.Tasks;
using ThpCore.Memory;
using Xunit;

namespace ThpCore.Tests.Memory;

public sealed class BuddyAllocatorTests
{
    private static BuddyAllocator Node(ulong frames, params (ulong FirstFrame, ulong Count)[] reserved) =>
        new(new FrameTable(frames), reserved);

    private static (ulong FirstFrame, int Order)[] List(BuddyAllocator allocator, int order) => allocator.FreeBlockList(order).ToArray();

    private static ulong Allocate(BuddyAllocator allocator, int order)
    {
        Assert.True(allocator.TryAllocate(order, out ulong frame), $"order {order} should be available");
        return frame;
    }

    // A 16-frame node (one order-4 block) after eight order-0 allocations (frames 0..7, see the splitting test)
    // and frees of 1, 3, 6 and 7: free blocks 1 (order 0), 3 (order 0), 6 (order 1, 6 and 7 merged) and 8 (order 3).
    private static BuddyAllocator NodeWithFreeOrders0013()
    {
        BuddyAllocator allocator = Node(16);
        for (ulong expected = 0; expected < 8; expected++)
        {
            Assert.Equal(expected, Allocate(allocator, 0));
        }

        foreach (ulong frame in new ulong[] { 1, 3, 6, 7 })
        {
            allocator.Free(frame, 0);
        }

        Assert.Equal(new[] { 2L, 1, 0, 1, 0 }, Enumerable.Range(0, 5).Select(allocator.FreeBlocks));
        return allocator;
    }

    // ------------------------------------------------------------------------------------------ construction

    [Fact]
    public void A_table_of_whole_4_MiB_blocks_starts_as_order_10_blocks_in_address_order()
    {
        BuddyAllocator allocator = Node(4096);

        Assert.Equal(new[] { (0UL, 10), (1024UL, 10), (2048UL, 10), (3072UL, 10) }, List(allocator, 10));
        Assert.All(Enumerable.Range(0, 10), order => Assert.Equal(0, allocator.FreeBlocks(order)));
        Assert.Equal(4096UL, allocator.FreeFrames);
        Assert.Equal(4096UL, allocator.ManagedFrames);
        Assert.Equal(0, allocator.AllocationFailures);
    }

    [Fact]
    public void Any_other_size_leaves_smaller_aligned_blocks_at_the_end()
    {
        // 1795 = 1024 + 512 + 256 + 2 + 1.
        BuddyAllocator allocator = Node(1795);

        Assert.Equal(new[] { (0UL, 10) }, List(allocator, 10));
        Assert.Equal(new[] { (1024UL, 9) }, List(allocator, 9));
        Assert.Equal(new[] { (1536UL, 8) }, List(allocator, 8));
        Assert.Equal(new[] { (1792UL, 1) }, List(allocator, 1));
        Assert.Equal(new[] { (1794UL, 0) }, List(allocator, 0));
        Assert.Equal(5, Enumerable.Range(0, 11).Sum(o => allocator.FreeBlocks(o)));
        Assert.Equal(1795UL, allocator.FreeFrames);
    }

    [Fact]
    public void Reserved_frames_are_flagged_never_handed_out_and_split_the_free_runs()
    {
        BuddyAllocator allocator = Node(16, (5, 2));

        // Runs [0, 5) and [7, 16), each cut from its start into the largest aligned blocks that fit.
        Assert.Equal(new[] { (4UL, 0), (7UL, 0) }, List(allocator, 0));
        Assert.Equal(new[] { (0UL, 2) }, List(allocator, 2));
        Assert.Equal(new[] { (8UL, 3) }, List(allocator, 3));
        Assert.Equal(14UL, allocator.ManagedFrames);
        Assert.Equal(14UL, allocator.FreeFrames);
        Assert.Equal(FrameFlags.Reserved, allocator.Frames.Describe(5).Flags);
        Assert.Equal(FrameFlags.Reserved, allocator.Frames.Describe(6).Flags);

        var handedOut = new List<ulong>();
        while (allocator.TryAllocate(0, out ulong frame))
        {
            handedOut.Add(frame);
        }

        Assert.Equal(Enumerable.Range(0, 16).Select(i => (ulong)i).Except(new ulong[] { 5, 6 }).Order(), handedOut.Order());
        Assert.Equal(0UL, allocator.FreeFrames);
    }

    [Fact]
    public void Overlapping_and_empty_reserved_ranges_are_counted_once()
    {
        BuddyAllocator allocator = Node(2048, (0, 4), (2, 4), (100, 0), (2047, 1));

        Assert.Equal(2048UL - 7, allocator.ManagedFrames);
        Assert.Equal(allocator.ManagedFrames, allocator.FreeFrames);
        Assert.Equal(0, allocator.FreeBlocks(10));
        // The run [6, 2047): 6 (o1), 8 (o3), 16 (o4), ..., 512 (o9), then 1024 no longer fits order 10.
        Assert.Equal(new[] { (512UL, 9), (1024UL, 9) }, List(allocator, 9));
        Assert.Equal(new[] { (6UL, 1), (2044UL, 1) }, List(allocator, 1));
        Assert.Equal(new[] { (2046UL, 0) }, List(allocator, 0));
    }

    [Theory]
    [InlineData(16UL, 1UL)]
    [InlineData(10UL, 7UL)]
    [InlineData(0UL, 17UL)]
    [InlineData(1UL, ulong.MaxValue)]
    public void A_reserved_range_outside_the_table_throws(ulong first, ulong count)
    {
        var ex = Assert.Throws<ArgumentException>(() => Node(16, (first, count)));
        Assert.Equal("reserved", ex.ParamName);
        Assert.Contains("outside the table of 16 frames", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_frame_table_already_in_use_is_refused()
    {
        var table = new FrameTable(16);
        _ = new BuddyAllocator(table);

        var ex = Assert.Throws<ArgumentException>(() => new BuddyAllocator(table));
        Assert.Equal("frames", ex.ParamName);
        Assert.Contains("already in use", ex.Message, StringComparison.Ordinal);
    }

    // ------------------------------------------------------------------------------------------ allocation

    [Fact]
    public void Allocation_takes_the_lowest_part_of_the_split_block_and_returns_the_upper_halves()
    {
        BuddyAllocator allocator = Node(16);

        Assert.Equal(0UL, Allocate(allocator, 0));

        // expand: 16 -> 8 + [8..16), 8 -> 4 + [4..8), 4 -> 2 + [2..4), 2 -> 1 + [1].
        Assert.Equal(new[] { (8UL, 3) }, List(allocator, 3));
        Assert.Equal(new[] { (4UL, 2) }, List(allocator, 2));
        Assert.Equal(new[] { (2UL, 1) }, List(allocator, 1));
        Assert.Equal(new[] { (1UL, 0) }, List(allocator, 0));
        Assert.Equal(0, allocator.FreeBlocks(4));
        Assert.Equal(15UL, allocator.FreeFrames);
    }

    [Fact]
    public void Allocation_takes_the_smallest_order_that_has_a_free_block()
    {
        BuddyAllocator allocator = Node(16);
        Assert.Equal(0UL, Allocate(allocator, 0));

        Assert.Equal(2UL, Allocate(allocator, 1));  // order 1 exists: not split from 4 or 8
        Assert.Equal(1UL, Allocate(allocator, 0));
        Assert.Equal(4UL, Allocate(allocator, 2));
        Assert.Equal(8UL, Allocate(allocator, 0));  // order 3 is the smallest left: 8 splits into 8, 9, [10, 12), [12, 16)
        Assert.Equal(new[] { (9UL, 0) }, List(allocator, 0));
        Assert.Equal(new[] { (10UL, 1) }, List(allocator, 1));
        Assert.Equal(new[] { (12UL, 2) }, List(allocator, 2));
        Assert.Equal(0, allocator.FreeBlocks(3));
    }

    [Fact]
    public void The_first_block_on_a_list_is_the_one_handed_out()
    {
        BuddyAllocator allocator = Node(4096);
        Assert.Equal(0UL, Allocate(allocator, 10));
        Assert.Equal(1024UL, Allocate(allocator, 10));
        Assert.Equal(new[] { (2048UL, 10), (3072UL, 10) }, List(allocator, 10));
    }

    [Fact]
    public void Allocated_frames_come_out_with_no_flags_no_references_unmapped_and_the_order_on_the_first_frame()
    {
        BuddyAllocator allocator = Node(64);
        Assert.Equal(0UL, Allocate(allocator, 0));  // free-block heads at 1, 2, 4, 8, 16, 32
        Assert.Equal(8UL, Allocate(allocator, 3));
        allocator.Free(0, 0);                       // merges 1, 2 and 4 back: [0, 8)
        allocator.Free(8, 3);                       // and 16, 32: [0, 64)
        Assert.Equal(new[] { (0UL, 6) }, List(allocator, 6));

        ulong low = Allocate(allocator, 5);         // [0, 32) holds the frames that were heads
        ulong high = Allocate(allocator, 3);

        foreach ((ulong first, int order) in new[] { (low, 5), (high, 3) })
        {
            for (ulong frame = first; frame < first + (1UL << order); frame++)
            {
                ref FrameMetadata metadata = ref allocator.Frames.Ref(frame);
                Assert.Equal(frame == first ? (uint)order << FrameMetadata.OrderShift : 0u, metadata.FlagsAndOrder);
                Assert.Equal(0, metadata.RefCount);
                Assert.Equal(-1, metadata.MapCount);
                Assert.Equal(-1, metadata.Link);

                FrameInfo info = allocator.Frames.Describe(frame);
                Assert.Equal(FrameFlags.None, info.Flags);
                Assert.Equal(frame == first ? order : 0, info.Order);
                Assert.Equal(0, info.MapCount);
                Assert.Equal(frame, info.HeadFrame);
            }
        }
    }

    [Fact]
    public void Allocation_failure_is_a_result_and_is_counted()
    {
        // Out of memory.
        BuddyAllocator full = Node(16);
        Assert.Equal(0UL, Allocate(full, 4));
        Assert.False(full.TryAllocate(0, out ulong none));
        Assert.Equal(0UL, none);
        Assert.Equal(1, full.AllocationFailures);

        // Fragmentation: 12 frames free but no block of 16, 8 is the largest.
        BuddyAllocator fragmented = NodeWithFreeOrders0013();
        Assert.False(fragmented.TryAllocate(4, out _));
        Assert.False(fragmented.TryAllocate(10, out _));
        Assert.Equal(2, fragmented.AllocationFailures);
        Assert.Equal(12UL, fragmented.FreeFrames);
        Assert.True(fragmented.TryAllocate(3, out ulong eight));
        Assert.Equal(8UL, eight);
        Assert.Equal(2, fragmented.AllocationFailures);
    }

    [Fact]
    public void Allocating_and_freeing_allocate_no_memory()
    {
        BuddyAllocator allocator = Node(4096);
        var held = new ulong[64];
        for (int round = 0; round < 2; round++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < held.Length; i++)
            {
                Assert.True(allocator.TryAllocate(i % 7, out held[i]));
            }

            for (int i = held.Length - 1; i >= 0; i -= 2)
            {
                allocator.Free(held[i], i % 7);
            }

            for (int i = held.Length - 2; i >= 0; i -= 2)
            {
                allocator.Free(held[i], i % 7);
            }

            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            if (round == 1)
            {
                Assert.Equal(0, allocated);
            }
        }

        Assert.Equal(4096UL, allocator.FreeFrames);
    }

    // ------------------------------------------------------------------------------------------ freeing

    [Fact]
    public void Freeing_merges_buddies_back_into_the_largest_block()
    {
        BuddyAllocator allocator = Node(16);
        ulong[] frames = Enumerable.Range(0, 16).Select(_ => Allocate(allocator, 0)).ToArray();
        Assert.Equal(0UL, allocator.FreeFrames);

        foreach (ulong frame in new ulong[] { 5, 12, 0, 9, 3, 15, 6, 10, 1, 14, 7, 2, 11, 4, 13, 8 })
        {
            allocator.Free(frame, 0);
        }

        Assert.Equal(new[] { (0UL, 4) }, List(allocator, 4));
        Assert.All(Enumerable.Range(0, 4), order => Assert.Equal(0, allocator.FreeBlocks(order)));
        Assert.Equal(16UL, allocator.FreeFrames);
        Assert.Equal(16, frames.Distinct().Count());
    }

    [Fact]
    public void Merging_stops_at_MaxOrder()
    {
        BuddyAllocator allocator = Node(2048);
        Assert.Equal(0UL, Allocate(allocator, 10));
        Assert.Equal(1024UL, Allocate(allocator, 10));

        allocator.Free(1024, 10);
        allocator.Free(0, 10);

        Assert.Equal(2, allocator.FreeBlocks(10));
        Assert.Equal(new[] { (0UL, 10), (1024UL, 10) }, List(allocator, 10).Order());
    }

    [Fact]
    public void A_freed_block_whose_buddy_one_order_up_is_free_goes_to_the_tail_of_its_list()
    {
        BuddyAllocator allocator = Node(16);
        for (int i = 0; i < 8; i++)
        {
            Allocate(allocator, 0);                 // frames 0..7
        }

        allocator.Free(5, 0);                       // buddy 4 held; one order up, [6, 8) is held: head
        allocator.Free(0, 0);
        allocator.Free(1, 0);                       // merges with 0 into [0, 2)
        Assert.Equal(new[] { (0UL, 1) }, List(allocator, 1));

        allocator.Free(3, 0);                       // buddy 2 held; one order up, [0, 2) is free: tail (buddy_merge_likely)
        Assert.Equal(new[] { (5UL, 0), (3UL, 0) }, List(allocator, 0));
        Assert.Equal(5UL, Allocate(allocator, 0));

        allocator.Free(5, 0);                       // [6, 8) still held: head again
        Assert.Equal(new[] { (5UL, 0), (3UL, 0) }, List(allocator, 0));
    }

    [Fact]
    public void An_order_recorded_by_a_split_lets_the_pieces_be_freed_one_by_one()
    {
        BuddyAllocator allocator = Node(16);
        ulong block = Allocate(allocator, 2);
        allocator.Frames.Ref(block).FlagsAndOrder = 0; // as split_page: four order-0 blocks

        for (ulong frame = block; frame < block + 4; frame++)
        {
            allocator.Free(frame, 0);
        }

        Assert.Equal(new[] { (0UL, 4) }, List(allocator, 4));
    }

    [Fact]
    public void Describe_reports_every_frame_of_a_free_block_as_free_with_its_first_frame()
    {
        BuddyAllocator allocator = Node(16);
        Allocate(allocator, 0);                     // free: 1 (o0), [2, 4), [4, 8), [8, 16)

        FrameInfo head = allocator.Frames.Describe(8);
        Assert.Equal(new FrameInfo(8, FrameFlags.Free, 3, 0, 0, 8), head);
        for (ulong frame = 9; frame < 16; frame++)
        {
            Assert.Equal(new FrameInfo(frame, FrameFlags.Free, 0, 0, 0, 8), allocator.Frames.Describe(frame));
        }

        Assert.Equal(new FrameInfo(5, FrameFlags.Free, 0, 0, 0, 4), allocator.Frames.Describe(5));
        Assert.Equal(new FrameInfo(1, FrameFlags.Free, 0, 0, 0, 1), allocator.Frames.Describe(1));
        Assert.Equal(new FrameInfo(0, FrameFlags.None, 0, 0, 0, 0), allocator.Frames.Describe(0));
    }

    // ------------------------------------------------------------------------------------------ misuse

    [Theory]
    [InlineData(-1)]
    [InlineData(11)]
    [InlineData(int.MinValue)]
    public void An_order_outside_0_to_10_throws_everywhere(int order)
    {
        BuddyAllocator allocator = Node(16);
        var exceptions = new[]
        {
            Assert.Throws<ArgumentOutOfRangeException>(() => allocator.TryAllocate(order, out _)),
            Assert.Throws<ArgumentOutOfRangeException>(() => allocator.Free(0, order)),
            Assert.Throws<ArgumentOutOfRangeException>(() => allocator.FreeBlocks(order)),
            Assert.Throws<ArgumentOutOfRangeException>(() => allocator.FreeBlockList(order)),
            Assert.Throws<ArgumentOutOfRangeException>(() => allocator.Fragmentation(order)),
        };

        Assert.All(exceptions, ex =>
        {
            Assert.Equal(order, ex.ActualValue);
            Assert.Contains($"Order {order} is outside 0 to 10", ex.Message, StringComparison.Ordinal);
        });
        Assert.Equal(0, allocator.AllocationFailures);
    }

    [Fact]
    public void Freeing_a_frame_outside_the_table_throws()
    {
        BuddyAllocator allocator = Node(16);
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => allocator.Free(16, 0));
        Assert.Equal("firstFrame", ex.ParamName);
        Assert.Equal(16UL, ex.ActualValue);
        Assert.Contains("Frame 0x10 is outside the table of 16 frames (the last is 0xf)", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Freeing_a_free_block_throws_whether_at_its_start_or_inside()
    {
        BuddyAllocator allocator = Node(16);
        Allocate(allocator, 0);

        var atStart = Assert.Throws<InvalidOperationException>(() => allocator.Free(8, 3));
        Assert.Equal("Frame 0x8 is already free: it starts a free block of order 3.", atStart.Message);

        var inside = Assert.Throws<InvalidOperationException>(() => allocator.Free(10, 1));
        Assert.Equal("Frame 0xa is already free: it lies inside the free block of order 3 at frame 0x8.", inside.Message);

        allocator.Free(0, 0);
        var twice = Assert.Throws<InvalidOperationException>(() => allocator.Free(0, 0));
        Assert.Equal("Frame 0x0 is already free: it starts a free block of order 4.", twice.Message);
    }

    [Fact]
    public void Freeing_a_reserved_frame_throws()
    {
        BuddyAllocator allocator = Node(16, (3, 1));
        var ex = Assert.Throws<InvalidOperationException>(() => allocator.Free(3, 0));
        Assert.Equal("Frame 0x3 is reserved: the allocator never hands it out, so it cannot be freed.", ex.Message);
    }

    [Fact]
    public void Freeing_a_frame_inside_an_allocated_block_throws()
    {
        BuddyAllocator allocator = Node(16);
        Assert.Equal(0UL, Allocate(allocator, 3));

        var ex = Assert.Throws<InvalidOperationException>(() => allocator.Free(4, 0));
        Assert.Equal("Frame 0x4 is not the start of an allocated block: it lies inside the block of order 3 allocated at frame 0x0.", ex.Message);
        Assert.Throws<InvalidOperationException>(() => allocator.Free(4, 2));
    }

    [Fact]
    public void Freeing_with_another_order_than_the_allocated_one_throws()
    {
        BuddyAllocator allocator = Node(16);
        Assert.Equal(0UL, Allocate(allocator, 2));
        Assert.Equal(4UL, Allocate(allocator, 0));

        var smaller = Assert.Throws<InvalidOperationException>(() => allocator.Free(0, 1));
        Assert.Equal("Order mismatch: the block at frame 0x0 was allocated with order 2, not 1.", smaller.Message);

        var larger = Assert.Throws<InvalidOperationException>(() => allocator.Free(4, 2));
        Assert.Equal("Order mismatch: the block at frame 0x4 was allocated with order 0, not 2.", larger.Message);
    }

    [Fact]
    public void Freeing_a_frame_not_aligned_to_the_order_throws()
    {
        BuddyAllocator allocator = Node(16);
        Assert.Equal(0UL, Allocate(allocator, 0));
        Assert.Equal(1UL, Allocate(allocator, 0));

        var ex = Assert.Throws<InvalidOperationException>(() => allocator.Free(1, 1));
        Assert.Equal("Frame 0x1 is not the start of an allocated block of order 1: blocks of that order start at multiples of 2 frames.", ex.Message);
    }

    [Fact]
    public void Freeing_a_tail_page_or_a_frame_still_referenced_mapped_or_on_the_LRU_throws()
    {
        BuddyAllocator allocator = Node(16);
        ulong block = Allocate(allocator, 2);
        ref FrameMetadata head = ref allocator.Frames.Ref(block);
        ref FrameMetadata tail = ref allocator.Frames.Ref(block + 1);

        tail.FlagsAndOrder = (uint)FrameFlags.Tail;
        tail.Link = 1;
        Assert.Equal(
            "Frame 0x1 is not the start of an allocated block: it is a tail page of the folio at frame 0x0.",
            Assert.Throws<InvalidOperationException>(() => allocator.Free(1, 0)).Message);

        head.RefCount = 2;
        Assert.Equal(
            "Frame 0x0 still has 2 references; a block is freed only when its reference count is 0.",
            Assert.Throws<InvalidOperationException>(() => allocator.Free(0, 2)).Message);
        head.RefCount = 0;

        head.MapCount = 0;
        Assert.Equal(
            "Frame 0x0 is still mapped by 1 page-table entries (MapCount 0, -1 when unmapped).",
            Assert.Throws<InvalidOperationException>(() => allocator.Free(0, 2)).Message);
        head.MapCount = -1;

        head.FlagsAndOrder |= (uint)FrameFlags.Lru;
        Assert.Contains("still in use (Lru)", Assert.Throws<InvalidOperationException>(() => allocator.Free(0, 2)).Message, StringComparison.Ordinal);

        // Folio flags that only describe the contents (head, anon, dirty) are cleared, as Linux's free_pages_prepare does.
        head.FlagsAndOrder = (uint)(FrameFlags.Head | FrameFlags.Anon | FrameFlags.Dirty) | (2u << FrameMetadata.OrderShift);
        tail.FlagsAndOrder = 0;
        tail.Link = -1;
        allocator.Free(0, 2);
        Assert.Equal(new[] { (0UL, 4) }, List(allocator, 4));
    }

    [Fact]
    public void A_free_that_throws_changes_nothing()
    {
        BuddyAllocator allocator = NodeWithFreeOrders0013();
        long[] before = Enumerable.Range(0, 11).Select(allocator.FreeBlocks).ToArray();

        Assert.Throws<InvalidOperationException>(() => allocator.Free(1, 0));
        Assert.Throws<InvalidOperationException>(() => allocator.Free(0, 1));
        Assert.Throws<InvalidOperationException>(() => allocator.Free(9, 0));

        Assert.Equal(before, Enumerable.Range(0, 11).Select(allocator.FreeBlocks));
        Assert.Equal(12UL, allocator.FreeFrames);
        allocator.Free(0, 0);
        Assert.Equal(13UL, allocator.FreeFrames);
    }

    // ------------------------------------------------------------------------------------------ fragmentation

    [Fact]
    public void Fragmentation_figures_match_Linux_arithmetic_for_free_blocks_of_orders_0_0_1_3()
    {
        BuddyAllocator allocator = NodeWithFreeOrders0013();

        // fill_contig_page_info: free_pages = 1 + 1 + 2 + 8 = 12, free_blocks_total = 4.
        // free_blocks_suitable(order) = sum over free blocks of order o >= order of 2^(o - order).
        // unusable_free_index = (free_pages - (suitable << order)) * 1000 / free_pages.
        // __fragmentation_index = -1000 if suitable != 0, else 1000 - (1000 + free_pages * 1000 / 2^order) / total.
        //
        // order 0: suitable = 1 + 1 + 2 + 8 = 12;  unusable = (12 - 12) * 1000 / 12 = 0;     index -1000
        // order 1: suitable = 1 + 4 = 5;          unusable = (12 - 10) * 1000 / 12 = 166;   index -1000
        // order 2: suitable = 2;                  unusable = (12 - 8) * 1000 / 12 = 333;    index -1000
        // order 3: suitable = 1;                  unusable = (12 - 8) * 1000 / 12 = 333;    index -1000
        // order 4: suitable = 0;                  unusable = 12 * 1000 / 12 = 1000;
        //          index = 1000 - (1000 + 12000 / 16) / 4 = 1000 - 1750 / 4 = 1000 - 437 = 563
        // order 10: index = 1000 - (1000 + 12000 / 1024) / 4 = 1000 - 1011 / 4 = 1000 - 252 = 748
        Assert.Equal(new FragmentationFigures(0, 12, 4, 12, 0, -1000), allocator.Fragmentation(0));
        Assert.Equal(new FragmentationFigures(1, 12, 4, 5, 166, -1000), allocator.Fragmentation(1));
        Assert.Equal(new FragmentationFigures(2, 12, 4, 2, 333, -1000), allocator.Fragmentation(2));
        Assert.Equal(new FragmentationFigures(3, 12, 4, 1, 333, -1000), allocator.Fragmentation(3));
        Assert.Equal(new FragmentationFigures(4, 12, 4, 0, 1000, 563), allocator.Fragmentation(4));
        Assert.Equal(new FragmentationFigures(10, 12, 4, 0, 1000, 748), allocator.Fragmentation(10));

        Assert.Equal(0.333, allocator.Fragmentation(2).UnusableFreeIndexValue);
        Assert.Equal(-1.0, allocator.Fragmentation(2).FragmentationIndexValue);
        Assert.Equal(0.563, allocator.Fragmentation(4).FragmentationIndexValue);
    }

    [Fact]
    public void Fragmentation_with_nothing_free_is_all_unusable_and_a_lack_of_memory()
    {
        BuddyAllocator allocator = Node(16);
        Allocate(allocator, 4);

        // free_pages = 0: unusable_free_index is 1000 by definition; free_blocks_total = 0: __fragmentation_index is 0.
        for (int order = 0; order <= BuddyAllocator.MaxOrder; order++)
        {
            Assert.Equal(new FragmentationFigures(order, 0, 0, 0, 1000, 0), allocator.Fragmentation(order));
        }
    }

    [Fact]
    public void Fragmentation_in_a_mid_case_between_lack_of_memory_and_fragmentation()
    {
        BuddyAllocator allocator = NodeWithFreeOrders0013();
        Assert.Equal(8UL, Allocate(allocator, 3)); // free: 1 (o0), 3 (o0), 6 (o1)

        // free_pages = 1 + 1 + 2 = 4, total = 3.
        // order 1: suitable = 1; unusable = (4 - 2) * 1000 / 4 = 500; index -1000.
        // order 2: suitable = 0; unusable = 4000 / 4 = 1000; index = 1000 - (1000 + 4000 / 4) / 3 = 1000 - 666 = 334.
        Assert.Equal(new FragmentationFigures(1, 4, 3, 1, 500, -1000), allocator.Fragmentation(1));
        Assert.Equal(new FragmentationFigures(2, 4, 3, 0, 1000, 334), allocator.Fragmentation(2));
    }

    [Fact]
    public void Fragmentation_index_goes_below_zero_with_a_single_small_free_block_as_in_Linux()
    {
        BuddyAllocator allocator = Node(2);
        Assert.Equal(0UL, Allocate(allocator, 0));

        // free_pages = 1, total = 1, order 1: 1000 - (1000 + 1000 / 2) / 1 = -500.
        Assert.Equal(new FragmentationFigures(1, 1, 1, 0, 1000, -500), allocator.Fragmentation(1));
    }

    [Fact]
    public void Fragmentation_figures_can_be_computed_from_buddyinfo_counts()
    {
        // /proc/buddyinfo-style counts: 3 x order 0, 1 x order 2, 2 x order 5.
        // free_pages = 3 + 4 + 64 = 71, total = 6; order 3: suitable = 2 * 4 = 8;
        // unusable = (71 - 64) * 1000 / 71 = 98; index -1000.
        // order 6: suitable 0; unusable 1000; index = 1000 - (1000 + 71000 / 64) / 6 = 1000 - 2109 / 6 = 1000 - 351 = 649.
        long[] counts = { 3, 0, 1, 0, 0, 2 };
        Assert.Equal(new FragmentationFigures(3, 71, 6, 8, 98, -1000), FragmentationFigures.Compute(3, counts));
        Assert.Equal(new FragmentationFigures(6, 71, 6, 0, 1000, 649), FragmentationFigures.Compute(6, counts));
        Assert.Throws<ArgumentException>(() => FragmentationFigures.Compute(0, new long[12]));
        Assert.Throws<ArgumentException>(() => FragmentationFigures.Compute(0, new long[] { -1 }));
    }

    // ------------------------------------------------------------------------------------------ threads

    [Fact]
    public void Concurrent_allocations_and_frees_hand_out_no_frame_twice_and_keep_the_books()
    {
        BuddyAllocator allocator = Node(8192 + 77, (100, 50));
        var owner = new int[allocator.Frames.FrameCount];

        Parallel.For(0, 8, worker =>
        {
            var random = new Random(worker);
            var held = new List<(ulong Frame, int Order)>();
            for (int step = 0; step < 4000; step++)
            {
                if (held.Count == 0 || random.Next(3) != 0)
                {
                    int order = random.Next(0, 6);
                    if (allocator.TryAllocate(order, out ulong frame))
                    {
                        for (ulong f = frame; f < frame + (1UL << order); f++)
                        {
                            Assert.Equal(0, System.Threading.Interlocked.CompareExchange(ref owner[f], worker + 1, 0));
                        }

                        held.Add((frame, order));
                    }
                }
                else
                {
                    int pick = random.Next(held.Count);
                    (ulong frame, int order) = held[pick];
                    held[pick] = held[^1];
                    held.RemoveAt(held.Count - 1);
                    for (ulong f = frame; f < frame + (1UL << order); f++)
                    {
                        Assert.Equal(worker + 1, System.Threading.Interlocked.Exchange(ref owner[f], 0));
                    }

                    allocator.Free(frame, order);
                }
            }

            foreach ((ulong frame, int order) in held)
            {
                for (ulong f = frame; f < frame + (1UL << order); f++)
                {
                    owner[f] = 0;
                }

                allocator.Free(frame, order);
            }
        });

        Assert.Equal(allocator.ManagedFrames, allocator.FreeFrames);
        Assert.Equal(8192UL + 77 - 50, allocator.ManagedFrames);
        Assert.Equal(new BuddyAllocator(new FrameTable(8192 + 77), new[] { (100UL, 50UL) }).FreeBlockList(10).Count(), allocator.FreeBlocks(10));
    }
}
