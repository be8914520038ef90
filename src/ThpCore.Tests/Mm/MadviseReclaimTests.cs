using ThpCore.Diagnostics;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;
using Xunit;
using static ThpCore.Tests.Mm.AddressSpaceTests;

namespace ThpCore.Tests.Mm;

/// <summary>MADV_FREE, MADV_PAGEOUT and MADV_COLD.</summary>
public sealed class MadviseReclaimTests
{
    private const ulong Page = SwapLifecycleTests.Page;
    private const ulong Huge = SwapLifecycleTests.Huge;
    private const Protection Rw = SwapLifecycleTests.Rw;

    [Fact]
    public void FREE_then_PAGEOUT_discards_clean_pages_and_a_reread_finds_zeros()
    {
        (MemoryNode node, AddressSpace space, _, _) = SwapLifecycleTests.Setup(2048, attach: false);
        VirtualAddress va = space.Map(4 * Page, Rw, VmaFlags.Anonymous | VmaFlags.NoHugePage);
        Folio[] folios = WriteSmallPages(node, space, va, 4);
        ulong freeFrames = node.Buddy.FreeFrames;

        space.Advise(va, 4 * Page, Advice.Free);

        Assert.Equal(4, space.Counters.Get(VmEvent.PgLazyFree));
        for (int i = 0; i < 4; i++)
        {
            PageTableEntry pte = Pte(space, va.Value + ((ulong)i * Page));
            Assert.True(pte.IsPresent);
            Assert.False(pte.IsDirty);
            Assert.False(pte.IsAccessed);
            Assert.False(folios[i].IsSwapBacked);
            Assert.False(folios[i].IsDirty);
        }

        space.Advise(va, 4 * Page, Advice.PageOut);

        Assert.Equal(4, space.Counters.Get(VmEvent.PgLazyFreed));
        Assert.Equal(freeFrames + 4, node.Buddy.FreeFrames);
        Assert.Equal(0UL, Pte(space, va.Value + Page).Raw);
        AccessResult reread = space.Access(va.Add(Page), AccessKind.Read);
        Assert.Equal(FaultAction.MappedZeroPage, reread.Fault);
        Assert.Equal(0, node.Memory.ReadFrame(reread.PhysicalAddress.FrameNumber)[1]);
    }

    [Fact]
    public void FREE_then_a_write_then_PAGEOUT_keeps_the_written_page()
    {
        (MemoryNode node, AddressSpace space, SwapDevice device, _) = SwapLifecycleTests.Setup(2048);
        VirtualAddress va = space.Map(2 * Page, Rw, VmaFlags.Anonymous | VmaFlags.NoHugePage);
        Folio[] folios = WriteSmallPages(node, space, va, 2);
        space.Advise(va, 2 * Page, Advice.Free);

        Assert.Equal(FaultAction.None, space.Access(va.Add(Page), AccessKind.Write).Fault);
        node.Memory.GetWritableFrame(folios[1].HeadFrame)[5] = 0x77;
        space.Advise(va, 2 * Page, Advice.PageOut);

        Assert.Equal(1, space.Counters.Get(VmEvent.PgLazyFreed));
        Assert.Equal(0UL, Pte(space, va.Value).Raw);
        PageTableEntry kept = Pte(space, va.Value + Page);
        Assert.True(kept.IsPresent);
        Assert.Equal(folios[1].Address, kept.Address);
        Assert.True(folios[1].IsSwapBacked);
        Assert.Equal(0x77, node.Memory.ReadFrame(folios[1].HeadFrame)[5]);
        Assert.Equal(0, space.Counters.Get(VmEvent.PswpOut));
        Assert.Equal(0UL, device.UsedSlots);
    }

    [Fact]
    public void FREE_of_a_sub_range_of_a_THP_splits_it_and_marks_only_those_pages()
    {
        (MemoryNode node, AddressSpace space, _, VirtualAddress start) = SwapLifecycleTests.Setup(2048);
        ulong head = space.Access(start, AccessKind.Write).PhysicalAddress.FrameNumber;

        space.Advise(start.Add(8 * Page), 4 * Page, Advice.Free);

        Assert.Equal(1, space.Counters.Get(VmEvent.ThpSplitPmd));
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpSplitPage));
        Assert.Equal(4, space.Counters.Get(VmEvent.PgLazyFree));
        Assert.False(Pde(space, start.Value).IsLeaf);
        for (ulong i = 0; i < 512; i++)
        {
            Folio page = node.FolioOf(head + i);
            Assert.Equal(0, page.Order);
            Assert.Equal(i is >= 8 and < 12, !page.IsSwapBacked);
            Assert.Equal(head + i, Pte(space, start.Value + (i * Page)).Address.FrameNumber);
            Assert.Equal(i is >= 8 and < 12, !Pte(space, start.Value + (i * Page)).IsDirty);
        }
    }

    [Fact]
    public void FREE_of_a_whole_THP_then_PAGEOUT_discards_the_PMD()
    {
        (MemoryNode node, AddressSpace space, _, VirtualAddress start) = SwapLifecycleTests.Setup(2048, attach: false);
        Folio thp = node.FolioOf(space.Access(start, AccessKind.Write).PhysicalAddress.FrameNumber);
        ulong freeFrames = node.Buddy.FreeFrames;

        space.Advise(start, Huge, Advice.Free);
        PageTableEntry pde = Pde(space, start.Value);
        Assert.True(pde.IsLeaf && !pde.IsDirty && !pde.IsAccessed);
        Assert.False(thp.IsSwapBacked);
        Assert.Equal(512, space.Counters.Get(VmEvent.PgLazyFree));

        space.Advise(start, Huge, Advice.PageOut);

        Assert.Equal(512, space.Counters.Get(VmEvent.PgLazyFreed));
        Assert.Equal(0UL, Pde(space, start.Value).Raw);
        Assert.Equal(freeFrames + 513, node.Buddy.FreeFrames);
        Assert.Equal(0, space.Counters.Get(VmEvent.ThpSplitPmd));
    }

    [Fact]
    public void FREE_frees_swap_entries_in_the_range()
    {
        (_, AddressSpace space, SwapDevice device, _) = SwapLifecycleTests.Setup(2048);
        VirtualAddress va = space.Map(Page, Rw);
        space.Access(va, AccessKind.Write);
        Assert.True(space.SwapOut(va).IsSwappedOut);

        space.Advise(va, Page, Advice.Free);

        Assert.Equal(0UL, device.UsedSlots);
        Assert.Equal(0UL, Pte(space, va.Value).Raw);
    }

    [Fact]
    public void PAGEOUT_of_a_PMD_mapped_THP_swaps_it_out_whole()
    {
        (MemoryNode node, AddressSpace space, SwapDevice device, VirtualAddress start) = SwapLifecycleTests.Setup(2048);
        ulong head = space.Access(start, AccessKind.Write).PhysicalAddress.FrameNumber;
        node.Memory.GetWritableFrame(head + 100)[0] = 0x3C;

        space.Advise(start, Huge, Advice.PageOut);

        Assert.Equal(1, space.Counters.Get(VmEvent.ThpSwpOut));
        Assert.Equal(512, space.Counters.Get(VmEvent.PswpOut));
        Assert.Equal(512UL, device.UsedSlots);
        Assert.True(SwapEntry.TryFromPteRaw(Pte(space, start.Value).Raw, out SwapEntry entry, out _));
        Assert.Equal(0UL, entry.Offset % SwapDevice.ClusterSize);
        AccessResult back = space.Access(start.Add(100 * Page), AccessKind.Read);
        Assert.Equal(0x3C, node.Memory.ReadFrame(back.PhysicalAddress.FrameNumber)[0]);
    }

    [Fact]
    public void PAGEOUT_of_a_sub_range_of_a_THP_splits_it_and_swaps_out_those_pages_only()
    {
        (MemoryNode node, AddressSpace space, SwapDevice device, VirtualAddress start) = SwapLifecycleTests.Setup(2048);
        ulong head = space.Access(start, AccessKind.Write).PhysicalAddress.FrameNumber;
        for (ulong i = 16; i < 20; i++)
        {
            node.Memory.GetWritableFrame(head + i)[0] = (byte)i; // not zero-filled, so written rather than zeromapped
        }

        space.Advise(start.Add(16 * Page), 4 * Page, Advice.PageOut);

        Assert.Equal(1, space.Counters.Get(VmEvent.ThpSplitPage));
        Assert.Equal(4, space.Counters.Get(VmEvent.PswpOut));
        Assert.Equal(0, space.Counters.Get(VmEvent.SwpOutZero));
        Assert.Equal(0, space.Counters.Get(VmEvent.ThpSwpOut));
        Assert.Equal(4UL, device.UsedSlots);
        Assert.False(Pte(space, start.Value + (17 * Page)).IsPresent);
        Assert.Equal(head + 15, Pte(space, start.Value + (15 * Page)).Address.FrameNumber);
        Assert.Equal(head + 20, Pte(space, start.Value + (20 * Page)).Address.FrameNumber);
        Assert.Equal(1, node.FolioOf(head + 20).RefCount);
    }

    [Fact]
    public void PAGEOUT_without_a_swap_device_keeps_pages_and_splits_a_THP_as_v6_12_does()
    {
        (MemoryNode node, AddressSpace space, _, VirtualAddress start) = SwapLifecycleTests.Setup(2048, attach: false);
        ulong head = space.Access(start, AccessKind.Write).PhysicalAddress.FrameNumber;
        VirtualAddress small = space.Map(Page, Rw, VmaFlags.Anonymous | VmaFlags.NoHugePage);
        space.Access(small, AccessKind.Write);

        space.Advise(start, Huge, Advice.PageOut);
        space.Advise(small, Page, Advice.PageOut);

        Assert.True(Pte(space, small.Value).IsPresent);
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpSwpOutFallback));
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpSplitPage));
        Assert.Equal(0, space.Counters.Get(VmEvent.PswpOut));
        for (ulong i = 0; i < 512; i += 73)
        {
            Assert.Equal(head + i, Pte(space, start.Value + (i * Page)).Address.FrameNumber);
            Assert.Equal(0, node.FolioOf(head + i).Order);
        }
    }

    [Fact]
    public void PAGEOUT_keeps_pinned_folios()
    {
        (MemoryNode node, AddressSpace space, SwapDevice device, VirtualAddress start) = SwapLifecycleTests.Setup(2048);
        space.Access(start, AccessKind.Write);
        VirtualAddress small = space.Map(Page, Rw, VmaFlags.Anonymous | VmaFlags.NoHugePage);
        using PinHandle thpPin = space.Pin(start.Add(Page), Page, write: true);
        using PinHandle smallPin = space.Pin(small, Page, write: true);

        space.Advise(start, Huge, Advice.PageOut);
        space.Advise(small, Page, Advice.PageOut);

        AssertNothingReclaimed(space, device, start, small);
        Assert.Equal(0, space.Counters.Get(VmEvent.ThpSplitPageFailed));
        Assert.NotNull(node);
    }

    [Fact]
    public void PAGEOUT_and_FREE_skip_folios_shared_with_a_fork_child()
    {
        (MemoryNode node, AddressSpace space, SwapDevice device, VirtualAddress start) = SwapLifecycleTests.Setup(2048);
        Folio thp = node.FolioOf(space.Access(start, AccessKind.Write).PhysicalAddress.FrameNumber);
        VirtualAddress small = space.Map(Page, Rw, VmaFlags.Anonymous | VmaFlags.NoHugePage);
        space.Access(small, AccessKind.Write);
        AddressSpace child = space.Fork();

        space.Advise(start, Huge, Advice.PageOut);
        space.Advise(start.Add(Page), Page, Advice.PageOut);
        space.Advise(small, Page, Advice.PageOut);
        space.Advise(start, Huge, Advice.Free);

        AssertNothingReclaimed(space, device, start, small);
        Assert.Equal(0, space.Counters.Get(VmEvent.PgLazyFree));
        Assert.True(thp.IsSwapBacked);
        Assert.Equal(2, thp.MapCount);
        Assert.NotNull(child);
    }

    [Fact]
    public void COLD_clears_the_accessed_bit_only()
    {
        (_, AddressSpace space, SwapDevice device, VirtualAddress start) = SwapLifecycleTests.Setup(2048);
        space.Access(start, AccessKind.Write);

        space.Advise(start, Huge, Advice.Cold);

        PageTableEntry pde = Pde(space, start.Value);
        Assert.True(pde.IsLeaf && pde.IsDirty && !pde.IsAccessed);
        Assert.Equal(0UL, device.UsedSlots);
        Assert.Equal(0, space.Counters.Get(VmEvent.PgLazyFree));
    }

    // The THP at start is still PMD-mapped and unsplit, the page at small still mapped, and nothing went to swap.
    private static void AssertNothingReclaimed(AddressSpace space, SwapDevice device, VirtualAddress start, VirtualAddress small)
    {
        Assert.True(Pde(space, start.Value).IsLeaf);
        Assert.True(Pte(space, small.Value).IsPresent);
        Assert.Equal(0UL, device.UsedSlots);
        Assert.Equal(0, space.Counters.Get(VmEvent.ThpSplitPage));
    }

    private static Folio[] WriteSmallPages(MemoryNode node, AddressSpace space, VirtualAddress va, int count)
    {
        var folios = new Folio[count];
        for (int i = 0; i < count; i++)
        {
            AccessResult w = space.Access(va.Add((ulong)i * Page), AccessKind.Write);
            node.Memory.GetWritableFrame(w.PhysicalAddress.FrameNumber)[1] = (byte)(i + 1);
            folios[i] = node.FolioOf(w.PhysicalAddress.FrameNumber);
        }

        return folios;
    }
}
