using System;
using System.Collections.Generic;
using System.Linq;
using ThpCore.Diagnostics;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;
using Xunit;
using static ThpCore.Tests.Mm.PageTableFreeingTests;

namespace ThpCore.Tests.Mm;

/// <summary>
/// The <c>/proc/vmstat</c> counters the model produces, one test each: the action that makes Linux v6.12 count the
/// event changes exactly the expected counters by exactly the expected amounts, and every other counter stays put.
/// </summary>
public sealed class CountersAuditTests
{
    private static readonly ThpSettings s_always = new() { Enabled = ThpEnabled.Always };
    private static readonly ThpSettings s_never = new() { Enabled = ThpEnabled.Never };

    // Runs the action and checks that exactly the listed counters moved, by exactly the listed amounts.
    private static void AssertCounts(AddressSpace space, Action action, params (VmEvent Event, long Count)[] expected)
    {
        VmEventSnapshot before = space.Counters.Snapshot();
        action();
        string actual = Describe(space.Counters.Snapshot().Since(before).NonZero());
        Assert.Equal(Describe(expected.Select(e => new KeyValuePair<VmEvent, long>(e.Event, e.Count))), actual);
    }

    private static string Describe(IEnumerable<KeyValuePair<VmEvent, long>> counts) =>
        string.Join(", ", counts.Where(c => c.Value != 0).OrderBy(c => c.Key).Select(c => $"{VmEventNames.Name(c.Key)} {c.Value}"));

    private static AccessResult Touch(AddressSpace space, ulong address, AccessKind kind = AccessKind.Write) =>
        space.Access(VirtualAddress.FromRaw(address), kind);

    private static AddressSpace WithThpAt(ulong address, ThpSettings settings, ulong length = 4 * M2)
    {
        var space = new AddressSpace(new MemoryNode(64UL << 20), settings);
        Place(space, address, length);
        return space;
    }

    // Leaves the node without a free order-9 block but with order-0 frames (one order-9 block broken up).
    private static void Fragment(MemoryNode node)
    {
        Folio last = default;
        while (node.TryAllocateFolio(Folio.PmdOrder, out Folio folio))
        {
            last = folio;
        }

        // Smaller blocks go first, so order-0 frames are taken until the returned block is broken up.
        last.Put();
        while (node.Buddy.FreeBlocks(Folio.PmdOrder) > 0)
        {
            Assert.True(node.TryAllocateFolio(0, out _));
        }

        Assert.True(node.Buddy.FreeFrames >= 256);
    }

    // Keeps one non-zero byte in a page: Linux v6.12 does no swap I/O (and counts no pswpout/thp_swpout) for a folio
    // whose pages are all zero (the swap zeromap), so the swap tests write real data first.
    private static void Mark(AddressSpace space, ulong address, byte value)
    {
        AccessResult result = Touch(space, address);
        space.Node.Memory.GetWritableFrame(result.PhysicalAddress.FrameNumber)[0] = value;
    }

    [Fact]
    public void Pgfault_counts_each_handled_fault_and_not_a_segfault_or_a_translated_access()
    {
        AddressSpace space = WithThpAt(B, s_never);
        AssertCounts(space, () => Touch(space, B), (VmEvent.PgFault, 1));
        AssertCounts(space, () => Touch(space, B));
        AssertCounts(space, () => Touch(space, B + K4, AccessKind.Read), (VmEvent.PgFault, 1));
        AssertCounts(space, () => Touch(space, B + K4), (VmEvent.PgFault, 1));
        AssertCounts(space, () => Assert.Equal(AccessStatus.Segfault, Touch(space, B + G1).Status));
        AssertCounts(space, () => Assert.Equal(AccessStatus.Segfault, Touch(space, B, AccessKind.Fetch).Status));
    }

    [Fact]
    public void Thp_fault_alloc_counts_a_pmd_mapped_thp_fault_and_nothing_for_a_range_too_small_for_one()
    {
        AddressSpace space = WithThpAt(B, s_always);
        AssertCounts(space, () => Touch(space, B), (VmEvent.PgFault, 1), (VmEvent.ThpFaultAlloc, 1));
        AssertCounts(space, () => Touch(space, B + M2 + K4), (VmEvent.PgFault, 1), (VmEvent.ThpFaultAlloc, 1));
        Place(space, B + G1 + K4, M2);
        AssertCounts(space, () => Touch(space, B + G1 + K4), (VmEvent.PgFault, 1));

        AddressSpace noZero = WithThpAt(B, s_always with { UseZeroPage = false });
        AssertCounts(noZero, () => Touch(noZero, B, AccessKind.Read), (VmEvent.PgFault, 1), (VmEvent.ThpFaultAlloc, 1));
    }

    [Fact]
    public void Thp_fault_fallback_counts_a_thp_fault_without_an_order_9_block_and_nothing_where_thp_is_not_allowed()
    {
        AddressSpace space = WithThpAt(B, s_always);
        Fragment(space.Node);
        AssertCounts(space, () => Assert.Equal(FaultAction.FellBackToSmallPage, Touch(space, B).Fault), (VmEvent.PgFault, 1), (VmEvent.ThpFaultFallback, 1));

        AddressSpace never = WithThpAt(B, s_never);
        Fragment(never.Node);
        AssertCounts(never, () => Touch(never, B), (VmEvent.PgFault, 1));
        AddressSpace madvise = WithThpAt(B, new ThpSettings { Enabled = ThpEnabled.Madvise });
        AssertCounts(madvise, () => Touch(madvise, B), (VmEvent.PgFault, 1));
    }

    [Fact]
    public void Thp_zero_page_alloc_counts_the_first_huge_zero_page_of_a_fork_family_only()
    {
        AddressSpace parent = WithThpAt(B, s_always);
        AddressSpace child = parent.Fork();
        AssertCounts(child, () => Touch(child, B, AccessKind.Read), (VmEvent.PgFault, 1), (VmEvent.ThpZeroPageAlloc, 1));
        AssertCounts(child, () => Touch(child, B + M2, AccessKind.Read), (VmEvent.PgFault, 1));
        AssertCounts(parent, () => Touch(parent, B, AccessKind.Read), (VmEvent.PgFault, 1));
        AssertCounts(parent, () => parent.Fork().Dispose());
    }

    [Fact]
    public void Thp_zero_page_alloc_failed_counts_with_thp_fault_fallback_and_the_read_maps_the_4_KiB_zero_page()
    {
        AddressSpace space = WithThpAt(B, s_always);
        Fragment(space.Node);
        AssertCounts(
            space,
            () => Assert.Equal(FaultAction.FellBackToSmallPage, Touch(space, B, AccessKind.Read).Fault),
            (VmEvent.PgFault, 1),
            (VmEvent.ThpZeroPageAllocFailed, 1),
            (VmEvent.ThpFaultFallback, 1));
        Assert.Equal(space.ZeroPage.Address, AddressSpaceTests.Pte(space, B).Address);
    }

    [Fact]
    public void Thp_split_pmd_counts_each_pmd_split_and_not_a_whole_pmd_zap()
    {
        AddressSpace space = WithThpAt(B, s_always);
        Touch(space, B);
        Touch(space, B + M2);
        Touch(space, B + (2 * M2), AccessKind.Read);
        Touch(space, B + (3 * M2));
        AssertCounts(space, () => space.Protect(VirtualAddress.FromRaw(B + K4), K4, Protection.Read), (VmEvent.ThpSplitPmd, 1));
        AssertCounts(space, () => space.Unmap(VirtualAddress.FromRaw(B + M2), M2));
        AssertCounts(space, () => Touch(space, B + (2 * M2)), (VmEvent.PgFault, 1), (VmEvent.ThpSplitPmd, 1));
        AssertCounts(space, () => Assert.True(space.SplitHugePmd(VirtualAddress.FromRaw(B + (3 * M2)))), (VmEvent.ThpSplitPmd, 1));
        AssertCounts(space, () => Assert.False(space.SplitHugePmd(VirtualAddress.FromRaw(B + (3 * M2)))));

        // Copy-on-write of a THP shared with a fork child splits the writer's PMD.
        AddressSpace parent = WithThpAt(B, s_always);
        Touch(parent, B);
        AddressSpace child = parent.Fork();
        AssertCounts(child, () => Touch(child, B), (VmEvent.PgFault, 1), (VmEvent.ThpSplitPmd, 1));
    }

    [Fact]
    public void Thp_deferred_split_page_counts_once_when_a_page_loses_its_last_mapping_and_the_thp_stays_mapped()
    {
        AddressSpace space = WithThpAt(B, s_always);
        Touch(space, B);
        AssertCounts(space, () => space.Unmap(VirtualAddress.FromRaw(B + K4), K4), (VmEvent.ThpSplitPmd, 1), (VmEvent.ThpDeferredSplitPage, 1));
        AssertCounts(space, () => space.Advise(VirtualAddress.FromRaw(B + (8 * K4)), K4, Advice.DontNeed));

        // Shared with a child, a page unmapped on one side only is still mapped: not partially mapped yet.
        AddressSpace parent = WithThpAt(B, s_always);
        Touch(parent, B);
        parent.SplitHugePmd(VirtualAddress.FromRaw(B));
        AddressSpace child = parent.Fork();
        AssertCounts(child, () => child.Unmap(VirtualAddress.FromRaw(B + K4), K4));
        AssertCounts(parent, () => parent.Unmap(VirtualAddress.FromRaw(B + K4), K4), (VmEvent.ThpDeferredSplitPage, 1));
    }

    [Fact]
    public void Thp_deferred_split_page_counts_a_pmd_zap_that_leaves_some_pages_mapped_by_ptes_elsewhere()
    {
        AddressSpace parent = WithThpAt(B, s_always);
        Touch(parent, B);
        Folio folio = parent.Node.FolioOf(AddressSpaceTests.Pde(parent, B).Address.FrameNumber);
        AddressSpace child = parent.Fork();
        AssertCounts(child, () => child.SplitHugePmd(VirtualAddress.FromRaw(B)), (VmEvent.ThpSplitPmd, 1));
        AssertCounts(child, () => child.Unmap(VirtualAddress.FromRaw(B + (5 * K4)), K4));

        AssertCounts(parent, () => parent.Unmap(VirtualAddress.FromRaw(B), M2), (VmEvent.ThpDeferredSplitPage, 1));

        Assert.True(folio.IsOnDeferredSplitQueue && folio.IsPartiallyMapped);
        Assert.Equal(511, folio.MapCount);
    }

    [Fact]
    public void Thp_deferred_split_page_is_not_counted_for_a_folio_in_the_swap_cache()
    {
        AddressSpace space = WithThpAt(B, s_always);
        space.AttachSwap(new SwapDevice(1, 4 * SwapDevice.ClusterSize));
        Mark(space, B, 1);
        Assert.Equal(SwapOutStatus.SwappedOut, space.SwapOut(VirtualAddress.FromRaw(B), keepInSwapCache: true).Status);
        Touch(space, B, AccessKind.Read);
        Touch(space, B + K4, AccessKind.Read);
        Folio folio = space.Node.FolioOf(AddressSpaceTests.Pte(space, B).Address.FrameNumber);
        Assert.True(folio.IsSwapCache);

        AssertCounts(space, () => space.Unmap(VirtualAddress.FromRaw(B + K4), K4));

        Assert.False(folio.IsOnDeferredSplitQueue || folio.IsPartiallyMapped);
    }

    [Fact]
    public void Thp_split_page_and_thp_split_page_failed_count_the_deferred_split_shrinkers_splits()
    {
        AddressSpace space = WithThpAt(B, s_always);
        Touch(space, B);
        Touch(space, B + M2);
        space.Unmap(VirtualAddress.FromRaw(B + K4), K4);
        space.Unmap(VirtualAddress.FromRaw(B + M2 + K4), K4);
        using PinHandle pin = space.Pin(VirtualAddress.FromRaw(B + M2), K4, write: false);

        AssertCounts(
            space,
            () => Assert.Equal(1, space.Node.ShrinkDeferredSplitQueue(counters: space.Counters)),
            (VmEvent.ThpSplitPage, 1),
            (VmEvent.ThpSplitPageFailed, 1));
    }

    [Fact]
    public void Thp_swpout_and_pswpout_count_a_whole_thp_and_each_page_written()
    {
        AddressSpace space = WithThpAt(B, s_always);
        space.AttachSwap(new SwapDevice(1, 4 * SwapDevice.ClusterSize));
        Mark(space, B, 1);
        Place(space, B + G1, K4);
        Mark(space, B + G1, 2);

        AssertCounts(space, () => space.SwapOut(VirtualAddress.FromRaw(B)), (VmEvent.ThpSwpOut, 1), (VmEvent.PswpOut, 512), (VmEvent.ThpSplitPmd, 1));
        AssertCounts(space, () => space.SwapOut(VirtualAddress.FromRaw(B + G1)), (VmEvent.PswpOut, 1));
    }

    [Fact]
    public void Thp_swpout_fallback_counts_a_thp_that_finds_no_free_cluster_and_is_split_and_swapped_page_by_page()
    {
        // One cluster whose slot 0 is the header: 511 free slots, no wholly free cluster. shrink_folio_list splits the
        // THP (its PMD first) and swaps the pages out one by one; the page with no slot left stays mapped.
        AddressSpace space = WithThpAt(B, s_always);
        space.AttachSwap(new SwapDevice(1, SwapDevice.ClusterSize));
        Mark(space, B, 1);

        AssertCounts(
            space,
            () =>
            {
                SwapOutResult result = space.SwapOut(VirtualAddress.FromRaw(B));
                Assert.Equal((SwapOutStatus.NoSwapSpace, true, 511), (result.Status, result.Split, result.Pages)); // the last page found no slot
            },
            (VmEvent.PswpOut, 1),
            (VmEvent.ThpSplitPage, 1),
            (VmEvent.ThpSplitPmd, 1),
            (VmEvent.ThpSwpOutFallback, 1),
            (VmEvent.SwpOutZero, 510)); // only page 0 was written; each other page is an all-zero folio
    }

    [Fact]
    public void Swpout_zero_and_swpin_zero_count_an_all_zero_folio_recorded_in_the_zeromap_instead_of_written()
    {
        // v6.12 swap_writepage: is_folio_zero_filled → swap_zeromap_folio_set, no I/O: neither thp_swpout nor pswpout.
        AddressSpace space = WithThpAt(B, s_always);
        space.AttachSwap(new SwapDevice(1, 4 * SwapDevice.ClusterSize));
        Touch(space, B); // written, but only with zeros

        AssertCounts(space, () => Assert.True(space.SwapOut(VirtualAddress.FromRaw(B)).IsSwappedOut), (VmEvent.SwpOutZero, 512), (VmEvent.ThpSplitPmd, 1));

        // The refault reads nothing (swap_read_folio_zeromap) but is still a major fault.
        AssertCounts(space, () => Assert.Equal(FaultAction.SwapIn, Touch(space, B + (7 * K4)).Fault), (VmEvent.PgFault, 1), (VmEvent.PgMajFault, 1), (VmEvent.SwpInZero, 1));
    }

    [Fact]
    public void Pswpin_and_pgmajfault_count_a_page_read_from_swap_and_not_one_found_in_the_swap_cache()
    {
        AddressSpace space = WithThpAt(B, s_never, 4 * K4);
        space.AttachSwap(new SwapDevice(1, SwapDevice.ClusterSize));
        Mark(space, B, 1);
        Mark(space, B + K4, 2);
        space.SwapOut(VirtualAddress.FromRaw(B));
        space.SwapOut(VirtualAddress.FromRaw(B + K4), keepInSwapCache: true);

        AssertCounts(space, () => Assert.Equal(FaultAction.SwapIn, Touch(space, B, AccessKind.Read).Fault), (VmEvent.PgFault, 1), (VmEvent.PswpIn, 1), (VmEvent.PgMajFault, 1));
        AssertCounts(space, () => Assert.Equal(FaultAction.SwapIn, Touch(space, B + K4, AccessKind.Read).Fault), (VmEvent.PgFault, 1));
    }
}
