using System.Collections.Generic;
using ThpCore.Collapse;
using ThpCore.Diagnostics;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;
using ThpCore.Tests.Mm;
using Xunit;
using static ThpCore.Tests.Collapse.CollapseFixture;

namespace ThpCore.Tests.Collapse;

/// <summary>Copy collapse (<c>hpage_collapse_scan_pmd</c> + <c>collapse_huge_page</c>): each refusal and the result's state.</summary>
public sealed class CopyCollapseTests
{
    private static readonly ThpSettings s_madvise = new() { Enabled = ThpEnabled.Madvise };
    private static readonly CollapseContext s_khugepaged = CollapseContext.Khugepaged();

    private static (AddressSpace Space, VirtualAddress Start) SmallPages(ThpSettings settings, int pages, Protection protection = Rw)
    {
        AddressSpace space = NewSpace(settings);
        VirtualAddress start = MapAtBase(space, M2, protection | Protection.Write);
        Fill(space, start, 0, pages);
        if ((protection & Protection.Write) == 0)
        {
            space.Protect(start, M2, protection);
        }

        // Faulted as 4 KiB pages (enabled=madvise), then made eligible for khugepaged.
        space.Advise(start, M2, Advice.HugePage);
        return (space, start);
    }

    [Fact]
    public void A_collapsed_range_is_one_dirty_writable_exclusive_PMD_over_a_new_folio_with_the_old_table_deposited()
    {
        (AddressSpace space, VirtualAddress start) = SmallPages(s_madvise, 300);
        Folio page7 = FolioAt(space, start.Add(7 * K4));
        ulong table = AddressSpaceTests.Pde(space, start.Value).Address.FrameNumber;
        ulong freeBefore = space.Node.Buddy.FreeFrames;

        CollapseResult result = Collapser.TryCollapseByCopy(space, start.Add(12345), s_khugepaged);

        Assert.Equal(CollapseStatus.Succeed, result.Status);
        Assert.Equal(CollapsePath.Copy, result.Path);
        Assert.Equal(start, result.Address);
        Assert.Equal(start, result.Invalidation.Start);
        Assert.Equal(M2, result.Invalidation.Length);
        PageTableEntry pde = AddressSpaceTests.Pde(space, start.Value);
        Assert.True(pde.IsLeaf && pde.IsPresent && pde.IsWritable && pde.IsDirty && pde.IsAccessed && pde.IsExecuteDisable);
        Assert.Equal(result.Folio, pde.Address);
        Folio thp = space.Node.FolioOf(pde.Address.FrameNumber);
        Assert.Equal(9, thp.Order);
        Assert.Equal(1, thp.RefCount);
        Assert.Equal(1, thp.EntireMapCount);
        Assert.True(thp.IsAnonExclusive(0));
        Assert.False(thp.IsOnDeferredSplitQueue);

        // 300 old pages freed, 512 taken; the page table stays, deposited.
        Assert.Equal(freeBefore + 300 - 512, space.Node.Buddy.FreeFrames);
        Assert.True((space.Node.Frames.Describe(page7.HeadFrame).Flags & FrameFlags.Free) != 0);
        Assert.True((space.Node.Frames.Describe(table).Flags & FrameFlags.PageTable) != 0);
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpCollapseAlloc));
        AssertBooks(space);
        Validate(space, start, 300, 512);

        // The deposited table serves a split: the same bytes through 512 PTEs.
        Assert.True(space.SplitHugePmd(start));
        Assert.Equal(table, AddressSpaceTests.Pde(space, start.Value).Address.FrameNumber);
        Validate(space, start, 300, 512);
        AssertBooks(space);
    }

    [Fact]
    public void A_GUP_pin_on_a_PTE_mapped_THP_refuses_copy_collapse_with_PageCount_and_MADV_COLLAPSE_with_EAGAIN()
    {
        AddressSpace space = NewSpace(s_madvise with { Enabled = ThpEnabled.Always });
        VirtualAddress start = PteMappedThp(space);
        using PinHandle pin = space.Pin(start.Add(40 * K4), K4, write: true);

        Assert.Equal(CollapseStatus.PageCount, Collapser.TryCollapseByCopy(space, start, s_khugepaged).Status);
        Assert.Equal(CollapseStatus.PageCount, Collapser.TryCollapseByCopy(space, start, CollapseContext.MadviseCollapse).Status);
        MadviseCollapseResult advised = Collapser.MadviseCollapse(space, start, M2);
        Assert.Equal(-11, advised.Errno);
        Assert.Equal(0, space.Counters.Get(VmEvent.ThpCollapseAlloc));
        Assert.False(IsHuge(space, start));
        AssertBooks([space], [pin]);

        pin.Dispose();
        Assert.Equal(0, Collapser.MadviseCollapse(space, start, M2).Errno);
        Assert.True(IsHuge(space, start));
        Validate(space, start, 512, 512);
        AssertBooks(space);
    }

    [Fact]
    public void A_pinned_small_page_refuses_with_PageCount()
    {
        (AddressSpace space, VirtualAddress start) = SmallPages(s_madvise, 512);
        using PinHandle pin = space.Pin(start, K4, write: false);
        Assert.Equal(CollapseStatus.PageCount, Collapser.TryCollapseByCopy(space, start, CollapseContext.MadviseCollapse).Status);
    }

    [Fact]
    public void Allocation_failure_under_fragmentation_is_AllocHugePageFail_counted_and_MADV_COLLAPSE_says_ENOMEM()
    {
        // One reserved frame in every 2 MiB block: no order-9 block can ever be free, compaction cannot help.
        var reserved = new List<(ulong, ulong)>();
        for (ulong block = 0; block < 32; block++)
        {
            reserved.Add(((block * 512) + 256, 1));
        }

        var space = new AddressSpace(new MemoryNode(64UL << 20, reserved), s_madvise with { KhugepagedDefrag = false });
        VirtualAddress start = MapAtBase(space, M2);
        Fill(space, start, 0, 512);
        space.Advise(start, M2, Advice.HugePage);
        ulong freeBefore = space.Node.Buddy.FreeFrames;

        CollapseResult khugepaged = Collapser.TryCollapseByCopy(space, start, s_khugepaged);
        Assert.Equal(CollapseStatus.AllocHugePageFail, khugepaged.Status);
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpCollapseAllocFailed));
        Assert.Equal(0, space.Counters.Get(VmEvent.CompactStall)); // khugepaged/defrag 0: GFP_TRANSHUGE_LIGHT

        MadviseCollapseResult advised = Collapser.MadviseCollapse(space, start, M2);
        Assert.Equal(-12, advised.Errno);
        Assert.Equal(CollapseStatus.AllocHugePageFail, Assert.Single(advised.Regions).Status);
        Assert.Equal(2, space.Counters.Get(VmEvent.ThpCollapseAllocFailed));
        Assert.Equal(0, space.Counters.Get(VmEvent.ThpCollapseAlloc));
        Assert.Equal(freeBefore, space.Node.Buddy.FreeFrames); // MmBooks does not know reserved frames: count them here
        Validate(space, start, 512, 512);
    }

    [Fact]
    public void A_read_only_range_is_PageRo_in_both_contexts()
    {
        (AddressSpace space, VirtualAddress start) = SmallPages(s_madvise, 512, Protection.Read);
        Assert.Equal(CollapseStatus.PageRo, Collapser.TryCollapseByCopy(space, start, s_khugepaged).Status);
        Assert.Equal(CollapseStatus.PageRo, Collapser.TryCollapseByCopy(space, start, CollapseContext.MadviseCollapse).Status);
        Assert.Equal(-22, Collapser.MadviseCollapse(space, start, M2).Errno);
    }

    [Fact]
    public void Without_young_PTEs_khugepaged_lacks_a_referenced_page_and_MADV_COLLAPSE_does_not_care()
    {
        (AddressSpace space, VirtualAddress start) = SmallPages(s_madvise, 512);
        space.Advise(start, M2, Advice.Cold);
        Assert.False(AddressSpaceTests.Pte(space, start.Value).IsAccessed);
        Assert.Equal(CollapseStatus.LackReferencedPage, Collapser.TryCollapseByCopy(space, start, s_khugepaged).Status);
        Assert.Equal(CollapseStatus.Succeed, Collapser.TryCollapseByCopy(space, start, CollapseContext.MadviseCollapse).Status);
    }

    [Fact]
    public void Swap_entries_need_half_the_range_young_for_khugepaged()
    {
        (AddressSpace space, VirtualAddress start) = SmallPages(s_madvise, 512);
        space.Advise(start, K4, Advice.PageOut);
        space.Advise(start.Add(K4), 300 * K4, Advice.Cold); // 211 young, one swap entry
        Assert.Equal(CollapseStatus.LackReferencedPage, Collapser.TryCollapseByCopy(space, start, s_khugepaged).Status);
        Assert.Equal(1UL, space.Swap!.UsedSlots);
    }

    [Fact]
    public void Shared_pages_beyond_max_ptes_shared_refuse_khugepaged_and_are_counted()
    {
        (AddressSpace space, VirtualAddress start) = SmallPages(s_madvise, 512);
        AddressSpace child = space.Fork();
        Fill(child, start, 0, 255); // 257 pages still shared with the parent
        CollapseResult result = Collapser.TryCollapseByCopy(child, start, s_khugepaged);
        Assert.Equal(CollapseStatus.ExceedSharedPte, result.Status);
        Assert.Equal(1, child.Counters.Get(VmEvent.ThpScanExceedSharedPte));

        Fill(child, start, 255, 256); // 256 shared: within the limit
        Assert.Equal(CollapseStatus.Succeed, Collapser.TryCollapseByCopy(child, start, s_khugepaged).Status);
        Validate(child, start, 512, 512);
        Validate(space, start, 512, 512);
        AssertBooks(space, child);
    }

    [Fact]
    public void The_VMA_checks_come_first()
    {
        AddressSpace space = NewSpace(s_madvise);
        Assert.Equal(CollapseStatus.VmaNull, Collapser.TryCollapseByCopy(space, BaseAddr, s_khugepaged).Status);
        VirtualAddress start = MapAtBase(space, M2 - K4);
        Fill(space, start, 0, 511);
        Assert.Equal(CollapseStatus.AddressRange, Collapser.TryCollapseByCopy(space, start, s_khugepaged).Status);

        AddressSpace never = NewSpace(new ThpSettings { Enabled = ThpEnabled.Never });
        VirtualAddress p = MapAtBase(never, M2);
        Fill(never, p, 0, 512);
        Assert.Equal(CollapseStatus.VmaCheck, Collapser.TryCollapseByCopy(never, p, s_khugepaged).Status);
        never.Advise(p, M2, Advice.NoHugePage);
        Assert.Equal(CollapseStatus.VmaCheck, Collapser.TryCollapseByCopy(never, p, CollapseContext.MadviseCollapse).Status);
        Assert.Equal(-22, Collapser.MadviseCollapse(never, p, M2).Errno);
        never.Advise(p, M2, Advice.HugePage);
        Assert.Equal(CollapseStatus.Succeed, Collapser.TryCollapseByCopy(never, p, CollapseContext.MadviseCollapse).Status);
        Assert.Equal(CollapseStatus.PmdMapped, Collapser.TryCollapseByCopy(never, p, CollapseContext.MadviseCollapse).Status);

        never.Dispose();
        Assert.Equal(CollapseStatus.AnyProcess, Collapser.TryCollapseByCopy(never, p, CollapseContext.MadviseCollapse).Status);
    }

    [Fact]
    public void The_PMD_states_are_PmdNull_and_PmdNone()
    {
        AddressSpace space = NewSpace(s_madvise);
        VirtualAddress start = MapAtBase(space, 2 * M2);
        Assert.Equal(CollapseStatus.PmdNull, Collapser.TryCollapseByCopy(space, start, CollapseContext.MadviseCollapse).Status);
        Fill(space, start.Add(M2), 0, 1);
        Assert.Equal(CollapseStatus.PmdNone, Collapser.TryCollapseByCopy(space, start, CollapseContext.MadviseCollapse).Status);
    }

    [Fact]
    public void Zero_page_PTEs_count_as_none_and_become_zeroed_pages()
    {
        (AddressSpace space, VirtualAddress start) = SmallPages(s_madvise with { MaxPtesNone = 10 }, 500);
        for (int i = 500; i < 512; i++)
        {
            Assert.Equal(FaultAction.MappedZeroPage, space.Access(start.Add((ulong)i * K4), AccessKind.Read).Fault);
        }

        Assert.Equal(CollapseStatus.ExceedNonePte, Collapser.TryCollapseByCopy(space, start, s_khugepaged).Status);
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpScanExceedNonePte));
        Assert.Equal(CollapseStatus.Succeed, Collapser.TryCollapseByCopy(space, start, CollapseContext.MadviseCollapse).Status);
        Validate(space, start, 500, 512);
        AssertBooks(space);
    }
}
