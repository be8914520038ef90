using System;
using System.Runtime.CompilerServices;
using ThpCore.Memory;
using Xunit;

namespace ThpCore.Tests.Memory;

public sealed class FolioTests
{
    private const ulong NodeSize = 16UL << 20; // 16 MiB: 4096 frames

    internal static Folio Allocate(MemoryNode node, int order, bool anon = true)
    {
        Assert.True(node.TryAllocateFolio(order, out Folio folio, anon));
        return folio;
    }

    [Fact]
    public void A_new_folio_has_one_reference_and_no_mappings_pins_or_flags_but_anon()
    {
        var node = new MemoryNode(NodeSize);
        Folio folio = Allocate(node, 9);
        Assert.Equal(9, folio.Order);
        Assert.Equal(512, folio.PageCount);
        Assert.True(folio.IsLarge);
        Assert.Equal(0UL, folio.HeadFrame % 512);
        Assert.Equal(folio.HeadFrame << 12, folio.Address.Value);
        Assert.Same(node, folio.Node);
        Assert.Equal(1, folio.RefCount);
        Assert.Equal(0, folio.MapCount);
        Assert.Equal(0, folio.EntireMapCount);
        Assert.Equal(0, folio.PinCount);
        Assert.False(folio.MaybeDmaPinned);
        Assert.True(folio.IsAnon);
        Assert.False(folio.IsDirty || folio.IsSwapCache || folio.IsLru || folio.IsOnDeferredSplitQueue || folio.IsPartiallyMapped);
        Assert.False(folio.IsAnonExclusive(0));

        Folio file = Allocate(node, 0, anon: false);
        Assert.False(file.IsAnon);
        Assert.False(file.IsLarge);
        Assert.Equal(1, file.PageCount);
    }

    [Fact]
    public void Head_and_tail_frames_hold_the_documented_metadata()
    {
        var node = new MemoryNode(NodeSize);
        Folio folio = Allocate(node, 4);
        folio.Get();
        folio.AddPteMapping(3);

        FrameInfo head = node.Frames.Describe(folio.HeadFrame);
        Assert.Equal(FrameFlags.Head | FrameFlags.Anon, head.Flags);
        Assert.Equal(4, head.Order);
        Assert.Equal(2, head.RefCount);
        Assert.Equal(0, head.MapCount);
        Assert.Equal(folio.HeadFrame, head.HeadFrame);

        FrameInfo tail = node.Frames.Describe(folio.HeadFrame + 3);
        Assert.Equal(FrameFlags.Tail, tail.Flags);
        Assert.Equal(0, tail.Order);
        Assert.Equal(0, tail.RefCount);
        Assert.Equal(1, tail.MapCount);
        Assert.Equal(folio.HeadFrame, tail.HeadFrame);
        Assert.Equal(1, node.Frames.LargeFolioRecords);

        Folio small = Allocate(node, 0);
        FrameInfo single = node.Frames.Describe(small.HeadFrame);
        Assert.Equal(FrameFlags.Anon, single.Flags);
        Assert.Equal(1, single.RefCount);
        Assert.Equal(1, node.Frames.LargeFolioRecords);
        Assert.Equal(16, FrameTable.BytesPerFrame);
    }

    [Fact]
    public void Metadata_costs_16_bytes_per_frame_and_one_32_byte_record_per_large_folio()
    {
        Assert.Equal(16, FrameTable.BytesPerFrame);
        Assert.Equal(16, Unsafe.SizeOf<FrameMetadata>());
        Assert.Equal(32, Unsafe.SizeOf<LargeFolioRecord>());

        long before = GC.GetAllocatedBytesForCurrentThread();
        var table = new FrameTable(65_536);
        long bytes = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.InRange(bytes, 16 * 65_536, (16 * 65_536) + 1024); // the array, plus a small initial record array
        GC.KeepAlive(table);
    }

    [Fact]
    public void Get_and_put_count_references_and_the_last_put_frees()
    {
        var node = new MemoryNode(NodeSize);
        ulong free = node.Buddy.FreeFrames;
        Folio folio = Allocate(node, 2);
        Assert.Equal(free - 4, node.Buddy.FreeFrames);
        folio.Get();
        Assert.True(folio.TryGet());
        Assert.Equal(3, folio.RefCount);
        Assert.False(folio.Put());
        Assert.False(folio.Put());
        Assert.True(folio.Put());
        Assert.Equal(free, node.Buddy.FreeFrames);
        Assert.Equal(0, node.Frames.LargeFolioRecords);
        Assert.True((node.Frames.Describe(folio.HeadFrame).Flags & FrameFlags.Free) != 0);
        Assert.False(folio.TryGet());
    }

    [Fact]
    public void Pte_mappings_count_per_page_and_in_the_total_without_touching_the_reference_count()
    {
        var node = new MemoryNode(NodeSize);
        Folio folio = Allocate(node, 9);
        for (int i = 0; i < 4; i++)
        {
            folio.Get();
        }

        folio.AddPteMapping(0);
        folio.AddPteMapping(0);
        folio.AddPteMapping(511);
        Assert.Equal(5, folio.RefCount);
        Assert.Equal(3, folio.MapCount);
        Assert.Equal(0, folio.EntireMapCount);
        Assert.Equal(2, folio.PageMapCount(0));
        Assert.Equal(0, folio.PageMapCount(1));
        Assert.Equal(1, folio.PageMapCount(511));

        folio.RemovePteMapping(0);
        Assert.Equal(2, folio.MapCount);
        Assert.Equal(1, folio.PageMapCount(0));
        Assert.Equal(5, folio.RefCount);
    }

    [Fact]
    public void A_pmd_mapping_counts_once_in_the_total_and_in_the_entire_count_but_not_per_page()
    {
        var node = new MemoryNode(NodeSize);
        Folio folio = Allocate(node, 9);
        folio.Get();
        folio.Get();
        folio.Get();
        folio.AddPmdMapping();
        folio.AddPmdMapping();
        folio.AddPteMapping(7);
        Assert.Equal(2, folio.EntireMapCount);
        Assert.Equal(3, folio.MapCount);
        Assert.Equal(0, folio.PageMapCount(0));
        Assert.Equal(1, folio.PageMapCount(7));

        folio.RemovePmdMapping();
        Assert.Equal(1, folio.EntireMapCount);
        Assert.Equal(2, folio.MapCount);
    }

    [Fact]
    public void Order_zero_folios_count_pte_mappings_on_their_one_page()
    {
        var node = new MemoryNode(NodeSize);
        Folio folio = Allocate(node, 0);
        folio.Get();
        folio.AddPteMapping(0);
        folio.AddPteMapping(0);
        Assert.Equal(2, folio.MapCount);
        Assert.Equal(2, folio.PageMapCount(0));
        Assert.Equal(0, folio.EntireMapCount);
    }

    [Fact]
    public void Pmd_mappings_need_a_pmd_order_folio()
    {
        var node = new MemoryNode(NodeSize);
        foreach (int order in new[] { 0, 1, 8, 10 })
        {
            Folio folio = Allocate(node, order);
            folio.Get();
            var error = Assert.Throws<InvalidOperationException>(folio.AddPmdMapping);
            Assert.Contains("order 9", error.Message, StringComparison.Ordinal);
            Assert.Throws<InvalidOperationException>(folio.RemovePmdMapping);
        }
    }

    [Fact]
    public void Flags_are_set_and_cleared_on_the_head()
    {
        var node = new MemoryNode(NodeSize);
        Folio folio = Allocate(node, 3);
        folio.SetDirty(true);
        folio.SetLru(true);
        Assert.True(folio.IsDirty);
        Assert.True(folio.IsLru);
        Assert.Equal(FrameFlags.Head | FrameFlags.Anon | FrameFlags.Dirty | FrameFlags.Lru, node.Frames.Describe(folio.HeadFrame).Flags);
        folio.SetDirty(false);
        Assert.False(folio.IsDirty);
        Assert.True(folio.IsLru);
        folio.SetLru(false);
        Assert.False(folio.IsLru);
    }

    [Fact]
    public void Anon_exclusive_is_per_page_and_only_for_anonymous_folios()
    {
        var node = new MemoryNode(NodeSize);
        Folio folio = Allocate(node, 9);
        folio.SetAnonExclusive(0, true);
        folio.SetAnonExclusive(300, true);
        Assert.True(folio.IsAnonExclusive(0));
        Assert.True(folio.IsAnonExclusive(300));
        Assert.False(folio.IsAnonExclusive(1));
        Assert.Equal(FrameFlags.Tail | FrameFlags.AnonExclusive, node.Frames.Describe(folio.HeadFrame + 300).Flags);
        folio.SetAnonExclusive(300, false);
        Assert.False(folio.IsAnonExclusive(300));

        Folio file = Allocate(node, 0, anon: false);
        var error = Assert.Throws<InvalidOperationException>(() => file.SetAnonExclusive(0, true));
        Assert.Contains("not anonymous", error.Message, StringComparison.Ordinal);
        file.SetAnonExclusive(0, false);
    }

    [Fact]
    public void The_swap_cache_holds_one_reference_per_page()
    {
        var node = new MemoryNode(NodeSize);
        Folio folio = Allocate(node, 9);
        folio.AddToSwapCache();
        Assert.True(folio.IsSwapCache);
        Assert.Equal(513, folio.RefCount);
        Assert.Throws<InvalidOperationException>(folio.AddToSwapCache);
        folio.RemoveFromSwapCache();
        Assert.False(folio.IsSwapCache);
        Assert.Equal(1, folio.RefCount);
        Assert.Throws<InvalidOperationException>(folio.RemoveFromSwapCache);

        Folio small = Allocate(node, 0);
        small.AddToSwapCache();
        Assert.Equal(2, small.RefCount);
    }

    [Fact]
    public void Removing_from_the_swap_cache_needs_a_reference_of_the_callers_own()
    {
        var node = new MemoryNode(NodeSize);
        Folio folio = Allocate(node, 2);
        folio.AddToSwapCache();
        Assert.False(folio.Put()); // only the swap cache's 4 references are left
        var error = Assert.Throws<InvalidOperationException>(folio.RemoveFromSwapCache);
        Assert.Contains("own", error.Message, StringComparison.Ordinal);
        Assert.True(folio.IsSwapCache);
        Assert.Equal(4, folio.RefCount);
    }

    [Fact]
    public void Misuse_throws_with_a_message()
    {
        var node = new MemoryNode(NodeSize);
        Folio folio = Allocate(node, 2);

        var index = Assert.Throws<ArgumentOutOfRangeException>(() => folio.PageMapCount(4));
        Assert.Contains("0 to 3", index.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentOutOfRangeException>(() => folio.AddPteMapping(-1));
        Assert.Throws<ArgumentOutOfRangeException>(() => folio.ReadPage(4));
        Assert.Throws<ArgumentOutOfRangeException>(() => folio.IsAnonExclusive(9));

        var unmapped = Assert.Throws<InvalidOperationException>(() => folio.RemovePteMapping(1));
        Assert.Contains("no PTE mapping", unmapped.Message, StringComparison.Ordinal);

        var order = Assert.Throws<ArgumentOutOfRangeException>(() => node.TryAllocateFolio(11, out _));
        Assert.Equal(11, order.ActualValue);
        Assert.Contains("0 to 10", order.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentOutOfRangeException>(() => node.TryAllocateFolio(-1, out _));

        Folio small = Allocate(node, 0);
        Assert.Throws<InvalidOperationException>(() => small.QueueForDeferredSplit(true));
        Assert.Throws<InvalidOperationException>(small.RemoveFromDeferredSplitQueue);

        Assert.Throws<InvalidOperationException>(() => default(Folio).Node);
        Assert.Throws<InvalidOperationException>(() => default(Folio).RefCount);
    }

    [Fact]
    public void Dropping_a_reference_a_mapping_holds_is_refused_and_changes_nothing()
    {
        var node = new MemoryNode(NodeSize);
        Folio folio = Allocate(node, 9);
        folio.AddPteMapping(0); // the allocation's reference becomes the mapping's, as in do_anonymous_page
        var error = Assert.Throws<InvalidOperationException>(() => folio.Put());
        Assert.Contains("fewer than", error.Message, StringComparison.Ordinal);
        Assert.Equal(1, folio.RefCount);
        Assert.Equal(1, folio.MapCount);
        folio.RemovePteMapping(0);
        Assert.True(folio.Put());
    }

    [Fact]
    public void Splitting_a_pmd_mapping_in_Linux_order_keeps_the_counts_right()
    {
        // __split_huge_pmd_locked: add 511 references, add 512 PTE mappings, then remove the PMD mapping.
        var node = new MemoryNode(NodeSize);
        Folio folio = Allocate(node, 9);
        folio.AddPmdMapping(); // the allocation's reference is the PMD's
        for (int i = 0; i < 511; i++)
        {
            folio.Get();
        }

        for (int i = 0; i < 512; i++)
        {
            folio.AddPteMapping(i);
        }

        Assert.Equal(513, folio.MapCount); // one over, for a moment, as in Linux
        folio.RemovePmdMapping();
        Assert.Equal(512, folio.RefCount);
        Assert.Equal(512, folio.MapCount);
        Assert.Equal(0, folio.EntireMapCount);
        Assert.All(new[] { 0, 200, 511 }, i => Assert.Equal(1, folio.PageMapCount(i)));
    }

    [Fact]
    public void Operations_on_a_freed_folio_say_it_was_freed()
    {
        var node = new MemoryNode(2UL << 20); // one 2 MiB block, so reuse of its frames is certain
        Folio folio = Allocate(node, 9);
        Assert.True(folio.Put());

        var put = Assert.Throws<ObjectDisposedException>(() => folio.Put());
        Assert.Contains($"folio at frame 0x{folio.HeadFrame:x}", put.Message, StringComparison.Ordinal);
        Assert.Contains("was freed", put.Message, StringComparison.Ordinal);
        Assert.ThrowsAny<InvalidOperationException>(folio.Get);
        Assert.ThrowsAny<InvalidOperationException>(folio.Pin);
        Assert.ThrowsAny<InvalidOperationException>(() => folio.RefCount);
        Assert.ThrowsAny<InvalidOperationException>(() => folio.AddPteMapping(0));
        Assert.ThrowsAny<InvalidOperationException>(() => folio.ReadPage(0).Length);
        Assert.False(folio.TryGet());

        // Handle identity stays readable.
        Assert.Equal(9, folio.Order);

        // The frames reused as two smaller folios: the old head now heads an order-8 folio, not this one.
        Folio first = Allocate(node, 8);
        Folio second = Allocate(node, 8);
        Assert.Contains(folio.HeadFrame, new[] { first.HeadFrame, second.HeadFrame });
        Assert.ThrowsAny<InvalidOperationException>(() => folio.MapCount);
        Assert.False(folio.TryGet());
    }

    [Fact]
    public void Folios_are_equal_when_they_name_the_same_head_on_the_same_node()
    {
        var node = new MemoryNode(NodeSize);
        Folio folio = Allocate(node, 9);
        Folio again = node.FolioOf(folio.HeadFrame + 17);
        Assert.Equal(folio, again);
        Assert.True(folio == again);
        Assert.Equal(folio.GetHashCode(), again.GetHashCode());
        Assert.NotEqual(folio, Allocate(node, 9));
        Assert.NotEqual(folio, Allocate(new MemoryNode(NodeSize), 9));
        Assert.NotEqual(folio, default);
        Assert.Equal($"folio 0x{folio.HeadFrame:x} order 9", folio.ToString());
    }

    [Fact]
    public void The_deferred_split_queue_is_first_in_first_out()
    {
        var node = new MemoryNode(NodeSize);
        Folio a = Allocate(node, 9);
        Folio b = Allocate(node, 4);
        Folio c = Allocate(node, 2);
        c.QueueForDeferredSplit(partiallyMapped: true);
        a.QueueForDeferredSplit(partiallyMapped: false);
        b.QueueForDeferredSplit(partiallyMapped: true);
        a.QueueForDeferredSplit(partiallyMapped: true); // already queued: keeps its place, gains the mark
        Assert.Equal(new[] { c, a, b }, node.DeferredSplitQueue);
        Assert.Equal(3, node.DeferredSplitCount);
        Assert.True(a.IsOnDeferredSplitQueue);
        Assert.True(a.IsPartiallyMapped);

        a.QueueForDeferredSplit(partiallyMapped: false); // false never clears the mark (Linux)
        Assert.True(a.IsPartiallyMapped);

        a.RemoveFromDeferredSplitQueue();
        Assert.False(a.IsOnDeferredSplitQueue);
        Assert.False(a.IsPartiallyMapped);
        Assert.Equal(new[] { c, b }, node.DeferredSplitQueue);
        a.RemoveFromDeferredSplitQueue(); // not queued: nothing happens
        a.QueueForDeferredSplit(false);
        Assert.Equal(new[] { c, b, a }, node.DeferredSplitQueue);
        Assert.False(a.IsPartiallyMapped);
    }

    [Fact]
    public void Freeing_a_queued_folio_takes_it_off_the_deferred_split_queue()
    {
        var node = new MemoryNode(NodeSize);
        Folio a = Allocate(node, 9);
        Folio b = Allocate(node, 9);
        Folio c = Allocate(node, 9);
        a.QueueForDeferredSplit(true);
        b.QueueForDeferredSplit(true);
        c.QueueForDeferredSplit(true);
        Assert.True(b.Put());
        Assert.Equal(new[] { a, c }, node.DeferredSplitQueue);
        Assert.True(a.Put());
        Assert.True(c.Put());
        Assert.Empty(node.DeferredSplitQueue);
        Assert.Equal(0, node.DeferredSplitCount);

        // The freed records are reused cleanly.
        Folio d = Allocate(node, 9);
        Assert.False(d.IsOnDeferredSplitQueue);
        d.QueueForDeferredSplit(false);
        Assert.Equal(new[] { d }, node.DeferredSplitQueue);
    }

    [Fact]
    public void Order_one_and_swap_cache_folios_are_not_queued_for_deferred_split_as_in_Linux()
    {
        var node = new MemoryNode(NodeSize);
        Folio pair = Allocate(node, 1);
        pair.QueueForDeferredSplit(true);
        Assert.False(pair.IsOnDeferredSplitQueue);
        Assert.False(pair.IsPartiallyMapped);

        Folio swapped = Allocate(node, 9);
        swapped.AddToSwapCache();
        swapped.QueueForDeferredSplit(true);
        Assert.False(swapped.IsOnDeferredSplitQueue);
        Assert.Equal(0, node.DeferredSplitCount);
    }
}
