using System;
using System.Collections.Generic;
using System.Linq;
using System.Threading.Tasks;
using ThpCore.Memory;
using ThpCore.Paging;
using Xunit;
using static ThpCore.Tests.Memory.FolioTests;

namespace ThpCore.Tests.Memory;

public sealed class MemoryNodeTests
{
    [Fact]
    public void A_node_has_its_memory_frame_table_and_allocator()
    {
        var node = new MemoryNode(64UL << 20);
        Assert.Equal(64UL << 20, node.Memory.Size);
        Assert.Equal(16384UL, node.Frames.FrameCount);
        Assert.Same(node.Frames, node.Buddy.Frames);
        Assert.Equal(16384UL, node.Buddy.ManagedFrames);
        Assert.Equal(16384UL, node.Buddy.FreeFrames);
        Assert.Equal(0, node.DeferredSplitCount);
        Assert.Empty(node.DeferredSplitQueue);
    }

    [Fact]
    public void Sizes_that_are_not_whole_frames_or_too_large_are_refused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new MemoryNode(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => new MemoryNode(4097));
        Assert.Throws<ArgumentOutOfRangeException>(() => new MemoryNode(SparsePhysicalMemory.MaxSize + 4096));
    }

    [Fact]
    public void Reserved_frames_are_never_handed_out_and_are_not_folios()
    {
        var node = new MemoryNode(4UL << 20, new[] { (0UL, 16UL), (600UL, 1UL) });
        Assert.Equal(1024UL - 17, node.Buddy.ManagedFrames);
        Assert.Equal(FrameFlags.Reserved, node.Frames.Describe(0).Flags);
        Assert.Equal(FrameFlags.Reserved, node.Frames.Describe(600).Flags);

        var seen = new HashSet<ulong>();
        while (node.TryAllocateFolio(0, out Folio folio))
        {
            Assert.True(folio.HeadFrame >= 16 && folio.HeadFrame != 600, $"reserved frame {folio.HeadFrame} handed out");
            Assert.True(seen.Add(folio.HeadFrame));
        }

        Assert.Equal(1024 - 17, seen.Count);
        var error = Assert.Throws<InvalidOperationException>(() => node.FolioOf(600));
        Assert.Contains("reserved", error.Message, StringComparison.Ordinal);
        Assert.False(node.TryGetFolio(PhysicalAddress.FromFrameNumber(3), out _));
    }

    [Fact]
    public void Reserved_ranges_past_the_memory_are_refused()
    {
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => new MemoryNode(4UL << 20, new[] { (1000UL, 25UL) }));
        Assert.Contains("reaches past", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Out_of_memory_is_a_false_result_not_an_exception()
    {
        var node = new MemoryNode(4UL << 20); // 1024 frames: one order-10 block
        Assert.True(node.TryAllocateFolio(10, out Folio whole));
        Assert.False(node.TryAllocateFolio(0, out Folio none));
        Assert.Equal(default, none);
        Assert.False(node.TryAllocateFrame(out PhysicalAddress frame));
        Assert.Equal(PhysicalAddress.Zero, frame);
        Assert.True(node.Buddy.AllocationFailures >= 2);

        Assert.True(whole.Put());
        Assert.True(node.TryAllocateFolio(9, out _));
        Assert.True(node.TryAllocateFolio(9, out _));
        Assert.False(node.TryAllocateFolio(9, out _));
    }

    [Fact]
    public void Folio_of_any_frame_is_its_compound_head()
    {
        var node = new MemoryNode(8UL << 20);
        Folio folio = Allocate(node, 9);
        foreach (ulong offset in new ulong[] { 0, 1, 255, 511 })
        {
            Folio found = node.FolioOf(folio.HeadFrame + offset);
            Assert.Equal(folio, found);
            Assert.Equal(9, found.Order);
            Assert.True(node.TryGetFolio(PhysicalAddress.FromFrameNumber(folio.HeadFrame + offset).Add(0x123), out Folio byAddress));
            Assert.Equal(folio, byAddress);
        }

        Folio small = Allocate(node, 0);
        Assert.Equal(small, node.FolioOf(small.HeadFrame));
    }

    [Fact]
    public void Folio_of_a_free_or_outside_frame_is_refused()
    {
        var node = new MemoryNode(8UL << 20);
        Folio folio = Allocate(node, 9);
        ulong head = folio.HeadFrame;
        Assert.True(folio.Put());

        var error = Assert.Throws<InvalidOperationException>(() => node.FolioOf(head + 3));
        Assert.Contains("free", error.Message, StringComparison.Ordinal);
        Assert.False(node.TryGetFolio(PhysicalAddress.FromFrameNumber(head), out Folio none));
        Assert.Equal(default, none);
        Assert.Throws<ArgumentOutOfRangeException>(() => node.FolioOf(2048));
        Assert.False(node.TryGetFolio(PhysicalAddress.Create(8UL << 20), out _));
    }

    [Fact]
    public void Page_table_frames_come_from_the_same_allocator_flagged_and_zeroed()
    {
        var node = new MemoryNode(8UL << 20);
        IFrameAllocator allocator = node;
        ulong free = node.Buddy.FreeFrames;
        Assert.True(allocator.TryAllocateFrame(out PhysicalAddress table));
        Assert.True(table.IsAligned(PageSize.Size4K));
        Assert.Equal(free - 1, node.Buddy.FreeFrames);

        FrameInfo info = node.Frames.Describe(table.FrameNumber);
        Assert.Equal(FrameFlags.PageTable, info.Flags);
        Assert.Equal(1, info.RefCount);
        Assert.Equal(0, info.MapCount);
        Assert.True(node.Memory.ReadFrame(table.FrameNumber).IndexOfAnyExcept((byte)0) < 0);

        var notAFolio = Assert.Throws<InvalidOperationException>(() => node.FolioOf(table.FrameNumber));
        Assert.Contains("page table", notAFolio.Message, StringComparison.Ordinal);

        node.Memory.WriteUInt64(table, 0x1234_5027);
        allocator.FreeFrame(table);
        Assert.Equal(free, node.Buddy.FreeFrames);
        Assert.False(node.Memory.IsMaterialized(table.FrameNumber));
        Assert.True((node.Frames.Describe(table.FrameNumber).Flags & FrameFlags.Free) != 0);
    }

    [Fact]
    public void Freeing_a_frame_that_is_not_a_page_table_is_refused()
    {
        var node = new MemoryNode(8UL << 20);
        Folio folio = Allocate(node, 0);
        var error = Assert.Throws<ArgumentException>(() => node.FreeFrame(folio.Address));
        Assert.Contains("page table", error.Message, StringComparison.Ordinal);
        Assert.Equal(1, folio.RefCount);

        Assert.True(node.TryAllocateFrame(out PhysicalAddress table));
        node.FreeFrame(table);
        Assert.Throws<ArgumentException>(() => node.FreeFrame(table)); // double free
        Assert.Throws<ArgumentException>(() => node.FreeFrame(PhysicalAddress.Create(0x1008)));
        Assert.Throws<ArgumentOutOfRangeException>(() => node.FreeFrame(PhysicalAddress.Create(8UL << 20)));
    }

    [Fact]
    public void The_page_table_mapper_builds_tables_in_node_frames()
    {
        var node = new MemoryNode(8UL << 20);
        Folio data = Allocate(node, 0);
        var mapper = new PageTableMapper(node.Memory, node, PagingMode.FourLevel);
        Assert.True(mapper.TryMap(VirtualAddress.Create(0x7000_0000_0000), data.Address, PageSize.Size4K, PageTableFlags.Present | PageTableFlags.Writable, out _));
        int tables = Enumerable.Range(0, 2048).Count(f => node.Frames.Describe((ulong)f).Flags == FrameFlags.PageTable);
        Assert.Equal(4, tables); // PML4, PDPT, PD, PT
    }

    [Fact]
    public void Allocation_and_free_of_many_mixed_folios_returns_every_frame()
    {
        var node = new MemoryNode(16UL << 20);
        ulong free = node.Buddy.FreeFrames;
        var random = new Random(7);
        var live = new List<Folio>();
        for (int i = 0; i < 400; i++)
        {
            if (live.Count > 0 && random.Next(3) == 0)
            {
                int victim = random.Next(live.Count);
                Assert.True(live[victim].Put());
                live.RemoveAt(victim);
            }
            else if (node.TryAllocateFolio(random.Next(0, 10), out Folio folio))
            {
                live.Add(folio);
            }
        }

        var frames = new HashSet<ulong>();
        foreach (Folio folio in live)
        {
            for (int p = 0; p < folio.PageCount; p++)
            {
                Assert.True(frames.Add(folio.HeadFrame + (ulong)p), "two live folios share a frame");
                Assert.Equal(folio, node.FolioOf(folio.HeadFrame + (ulong)p));
            }
        }

        foreach (Folio folio in live)
        {
            Assert.True(folio.Put());
        }

        Assert.Equal(free, node.Buddy.FreeFrames);
        Assert.Equal(0, node.Frames.LargeFolioRecords);
    }

    [Fact]
    public void Threads_sharing_a_node_keep_counts_exact()
    {
        var node = new MemoryNode(64UL << 20);
        ulong free = node.Buddy.FreeFrames;
        Folio shared = Allocate(node, 9);
        Parallel.For(0, 8, worker =>
        {
            var mine = new List<Folio>();
            for (int i = 0; i < 500; i++)
            {
                shared.Get();
                shared.Pin();
                if (node.TryAllocateFolio(i % 4, out Folio folio))
                {
                    mine.Add(folio);
                }

                shared.Unpin();
                Assert.False(shared.Put());
            }

            foreach (Folio folio in mine)
            {
                Assert.True(folio.Put());
            }
        });

        Assert.Equal(1, shared.RefCount);
        Assert.Equal(0, shared.PinCount);
        Assert.True(shared.Put());
        Assert.Equal(free, node.Buddy.FreeFrames);
    }
}
