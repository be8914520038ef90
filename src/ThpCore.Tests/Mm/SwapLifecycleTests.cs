using ThpCore.Diagnostics;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;
using Xunit;
using static ThpCore.Tests.Mm.AddressSpaceTests;

namespace ThpCore.Tests.Mm;

/// <summary>Swap slots freed on zap, shared by fork, and the THP swap-out fallback.</summary>
public sealed class SwapLifecycleTests
{
    internal const ulong Page = 4096;
    internal const ulong Huge = 2UL << 20;
    internal const Protection Rw = Protection.Read | Protection.Write;

    [Fact]
    public void DONTNEED_and_munmap_of_swap_PTEs_free_their_slots()
    {
        (MemoryNode node, AddressSpace space, SwapDevice device, VirtualAddress start) = Setup(4 * SwapDevice.ClusterSize);
        ulong freeSlots = device.FreeSlots;
        VirtualAddress small = space.Map(4 * Page, Rw, VmaFlags.Anonymous | VmaFlags.NoHugePage);
        Assert.Equal(FaultAction.MappedHugePage, space.Access(start, AccessKind.Write).Fault);
        space.Access(small, AccessKind.Write);
        Assert.True(space.SwapOut(start).IsSwappedOut);
        Assert.True(space.SwapOut(small).IsSwappedOut);
        Assert.Equal(513UL, device.UsedSlots);

        space.Advise(start, Huge, Advice.DontNeed);
        space.Unmap(small, 4 * Page);

        Assert.Equal(freeSlots, device.FreeSlots);
        Assert.Equal(0UL, device.UsedSlots);
        Assert.Equal(0UL, Pte(space, start.Value + (7 * Page)).Raw);
        Assert.Equal(FaultAction.MappedZeroPage, space.Access(start.Add(7 * Page), AccessKind.Read).Fault);
        Assert.NotNull(node);
    }

    [Fact]
    public void Unmapping_a_THP_kept_in_the_swap_cache_frees_slots_and_folio()
    {
        (MemoryNode node, AddressSpace space, SwapDevice device, VirtualAddress start) = Setup(4 * SwapDevice.ClusterSize);
        ulong freeSlots = device.FreeSlots;
        AccessResult first = space.Access(start, AccessKind.Write);
        Folio thp = node.FolioOf(first.PhysicalAddress.FrameNumber);
        node.Memory.GetWritableFrame(thp.HeadFrame + 3)[0] = 0x5A;
        ulong freeFrames = node.Buddy.FreeFrames;
        Assert.True(space.SwapOut(start, keepInSwapCache: true).IsSwappedOut);

        // One page comes back from the cache (mapped); then everything is unmapped.
        AccessResult back = space.Access(start.Add(3 * Page), AccessKind.Read);
        Assert.Equal(FaultAction.SwapIn, back.Fault);
        Assert.Equal(thp.HeadFrame + 3, back.PhysicalAddress.FrameNumber);
        Assert.Equal(512, space.SwapCacheSlots);
        Assert.Equal(512UL, device.UsedSlots);

        space.Unmap(start, Huge);

        Assert.Equal(0, space.SwapCacheSlots);
        Assert.Equal(freeSlots, device.FreeSlots);
        // The folio, and the page table, page directory and PDPT that only this range used (free_pgtables).
        Assert.Equal(freeFrames + 512 + 3, node.Buddy.FreeFrames);
        Assert.Equal(0, space.Counters.Get(VmEvent.PswpIn));
    }

    [Fact]
    public void Fork_duplicates_swap_entries_and_both_refault_the_same_page_copy_on_write()
    {
        (MemoryNode node, AddressSpace parent, SwapDevice device, _) = Setup(2048);
        VirtualAddress va = parent.Map(Page, Rw);
        AccessResult w = parent.Access(va, AccessKind.Write);
        node.Memory.GetWritableFrame(w.PhysicalAddress.FrameNumber)[10] = 0x11;
        ulong slot = parent.SwapOut(va).FirstSlot;
        Assert.True(SwapEntry.TryFromPteRaw(Pte(parent, va.Value).Raw, out _, out bool exclusiveBefore));
        Assert.True(exclusiveBefore);

        AddressSpace child = parent.Fork();

        Assert.Same(device, child.Swap);
        Assert.Equal(2u, device.SwapCount(slot));
        Assert.True(SwapEntry.TryFromPteRaw(Pte(parent, va.Value).Raw, out SwapEntry pe, out bool parentExclusive));
        Assert.True(SwapEntry.TryFromPteRaw(Pte(child, va.Value).Raw, out SwapEntry ce, out bool childExclusive));
        Assert.Equal(slot, pe.Offset);
        Assert.Equal(slot, ce.Offset);
        Assert.False(parentExclusive);
        Assert.False(childExclusive);

        // The child reads it in: through the swap cache (the slot is shared), read-only and not exclusive.
        AccessResult childRead = child.Access(va, AccessKind.Read);
        Assert.Equal(FaultAction.SwapIn, childRead.Fault);
        Folio page = node.FolioOf(childRead.PhysicalAddress.FrameNumber);
        Assert.True(page.IsSwapCache);
        Assert.Equal(1u, device.SwapCount(slot));
        Assert.False(Pte(child, va.Value).IsWritable);
        Assert.False(page.IsAnonExclusive(0));

        // The parent finds the same folio in the cache: no read; the slot and the cache are released.
        AccessResult parentRead = parent.Access(va, AccessKind.Read);
        Assert.Equal(childRead.PhysicalAddress, parentRead.PhysicalAddress);
        Assert.Equal(1, parent.Counters.Get(VmEvent.PswpIn));
        Assert.Equal(0UL, device.UsedSlots);
        Assert.False(page.IsSwapCache);
        Assert.Equal(2, page.RefCount);
        Assert.Equal(2, page.MapCount);
        Assert.False(Pte(parent, va.Value).IsWritable);

        // Writes stay private: the child copies, then the parent reuses the page it now holds alone.
        AccessResult childWrite = child.Access(va, AccessKind.Write);
        Assert.Equal(FaultAction.CopiedPage, childWrite.Fault);
        node.Memory.GetWritableFrame(childWrite.PhysicalAddress.FrameNumber)[10] = 0x22;
        AccessResult parentWrite = parent.Access(va, AccessKind.Write);
        Assert.Equal(FaultAction.None, parentWrite.Fault);
        Assert.Equal(parentRead.PhysicalAddress, parentWrite.PhysicalAddress);
        Assert.Equal(0x11, node.Memory.ReadFrame(parentWrite.PhysicalAddress.FrameNumber)[10]);
        Assert.Equal(0x22, node.Memory.ReadFrame(childWrite.PhysicalAddress.FrameNumber)[10]);
    }

    [Fact]
    public void The_last_user_of_a_forked_swap_slot_frees_it()
    {
        (MemoryNode node, AddressSpace parent, SwapDevice device, _) = Setup(2048);
        VirtualAddress va = parent.Map(2 * Page, Rw);
        parent.Access(va, AccessKind.Write);
        ulong slot = parent.SwapOut(va).FirstSlot;
        AddressSpace child = parent.Fork();

        child.Unmap(va, 2 * Page);
        Assert.Equal(1u, device.SwapCount(slot));
        AccessResult back = parent.Access(va, AccessKind.Write);

        // Count 1 again: read without the cache, exclusive, written in place.
        Assert.Equal(FaultAction.SwapIn, back.Fault);
        Assert.True(Pte(parent, va.Value).IsWritable);
        Assert.Equal(0UL, device.UsedSlots);
        Assert.Equal(0, device.SwapCacheSlots);
    }

    [Fact]
    public void THP_without_a_free_cluster_is_split_and_swapped_out_as_512_pages()
    {
        (MemoryNode node, AddressSpace space, SwapDevice device, VirtualAddress start) = Setup(2 * SwapDevice.ClusterSize);

        // Fragment the device: cluster 1 keeps one slot in use, so no cluster is wholly free.
        Assert.True(device.TryAllocateCluster(out ulong cluster));
        for (ulong s = cluster; s < cluster + SwapDevice.ClusterSize - 1; s++)
        {
            device.Free(s);
        }

        AccessResult first = space.Access(start, AccessKind.Write);
        ulong head = first.PhysicalAddress.FrameNumber;
        foreach (ulong i in new ulong[] { 0, 200, 511 })
        {
            node.Memory.GetWritableFrame(head + i)[1] = (byte)((i % 250) + 1);
        }

        ulong freeFrames = node.Buddy.FreeFrames;
        SwapOutResult result = space.SwapOut(start.Add(9 * Page));

        Assert.Equal(SwapOutStatus.SwappedOut, result.Status);
        Assert.True(result.Split);
        Assert.Equal(512, result.Pages);
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpSwpOutFallback));
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpSplitPage));
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpSplitPmd));
        Assert.Equal(0, space.Counters.Get(VmEvent.ThpSwpOut));

        // Each page is its own folio now: the three written ones are written, the other 509 go to the zeromap.
        Assert.Equal(3, space.Counters.Get(VmEvent.PswpOut));
        Assert.Equal(509, space.Counters.Get(VmEvent.SwpOutZero));
        Assert.Equal(513UL, device.UsedSlots);
        Assert.Equal(freeFrames + 512, node.Buddy.FreeFrames);
        for (ulong i = 0; i < 512; i++)
        {
            Assert.True(SwapEntry.TryFromPteRaw(Pte(space, start.Value + (i * Page)).Raw, out SwapEntry entry, out _));
            Assert.Equal(1u, device.SwapCount(entry.Offset));
        }

        foreach (ulong i in new ulong[] { 0, 200, 511 })
        {
            AccessResult back = space.Access(start.Add(i * Page), AccessKind.Read);
            Assert.Equal((byte)((i % 250) + 1), node.Memory.ReadFrame(back.PhysicalAddress.FrameNumber)[1]);
        }
    }

    [Fact]
    public void THP_split_for_a_device_short_of_slots_keeps_the_pages_it_cannot_write()
    {
        (_, AddressSpace space, SwapDevice device, VirtualAddress start) = Setup(SwapDevice.ClusterSize);
        space.Access(start, AccessKind.Write);

        SwapOutResult result = space.SwapOut(start);

        Assert.Equal(SwapOutStatus.NoSwapSpace, result.Status);
        Assert.True(result.Split);
        Assert.Equal(511, result.Pages);
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpSwpOutFallback));
        Assert.Equal(0UL, device.FreeSlots);
        Assert.True(Pte(space, start.Value + (511 * Page)).IsPresent);
        Assert.False(Pte(space, start.Value).IsPresent);
    }

    internal static (MemoryNode Node, AddressSpace Space, SwapDevice Device, VirtualAddress Start) Setup(ulong slots, bool attach = true)
    {
        var node = new MemoryNode(32UL << 20);
        var space = new AddressSpace(node);
        var device = new SwapDevice(2, slots);
        if (attach)
        {
            space.AttachSwap(device);
        }

        VirtualAddress start = space.Map(Huge, Rw, VmaFlags.Anonymous | VmaFlags.HugePage);
        return (node, space, device, start);
    }
}
