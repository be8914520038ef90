using System;
using ThpCore.Diagnostics;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;
using Xunit;

namespace ThpCore.Tests.Mm;

/// <summary>The seed thread's scenario 4: swap-out of a THP, then the refault of every page through the swap cache.</summary>
public sealed class SwapTests
{
    private const ulong Page = 4096;
    private static readonly int[] s_marked = { 0, 1, 77, 300, 511 };

    [Fact]
    public void THP_swapped_out_and_kept_in_the_swap_cache_refaults_page_by_page_into_a_PTE_mapped_THP()
    {
        (MemoryNode node, AddressSpace space, SwapDevice device, VirtualAddress start, ulong head) = MappedThp();

        SwapOutResult result = space.SwapOut(start.Add(5 * Page), keepInSwapCache: true);

        Assert.Equal(SwapOutStatus.SwappedOut, result.Status);
        Assert.Equal(512, result.Pages);
        Assert.Equal(0UL, result.FirstSlot % SwapDevice.ClusterSize);
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpSwpOut));
        Assert.Equal(512, space.Counters.Get(VmEvent.PswpOut));
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpSplitPmd));
        Folio thp = node.FolioOf(head);
        Assert.True(thp.IsSwapCache);
        Assert.Equal(512, thp.RefCount);
        Assert.Equal(0, thp.MapCount);
        Assert.Equal(512, space.SwapCacheSlots);

        // The PDE is a table of 512 swap PTEs: not present, consecutive slots of one aligned cluster, exclusive.
        ulong pde = Pde(space, start);
        Assert.Equal(0UL, pde & (1UL << 7));
        Assert.NotEqual(0UL, pde & 1);
        for (ulong i = 0; i < 512; i++)
        {
            ulong pte = Pte(space, pde, i);
            Assert.Equal(0UL, pte & 1);
            Assert.True(SwapEntry.TryFromPteRaw(pte, out SwapEntry entry, out bool exclusive));
            Assert.Equal(device.Type, entry.Type);
            Assert.Equal(result.FirstSlot + i, entry.Offset);
            Assert.True(exclusive);
            Assert.Equal(1u, device.SwapCount(entry.Offset));
        }

        // Refault every page, alternating reads and writes: each maps page i of the same folio.
        for (int i = 0; i < 512; i++)
        {
            AccessResult access = space.Access(start.Add((ulong)i * Page), i % 2 == 0 ? AccessKind.Read : AccessKind.Write);
            Assert.Equal(FaultAction.SwapIn, access.Fault);
            Assert.Equal((head + (ulong)i) * Page, access.PhysicalAddress.Value);
            Assert.Equal(PageSize.Size4K, access.PageSize);
        }

        Assert.False(thp.IsSwapCache);
        Assert.Equal(0, space.SwapCacheSlots);
        Assert.Equal(9, thp.Order);
        Assert.Equal(512, thp.RefCount);
        Assert.Equal(512, thp.MapCount);
        Assert.Equal(0, thp.EntireMapCount);
        Assert.Equal(0UL, device.UsedSlots);
        Assert.Equal(0, space.Counters.Get(VmEvent.PswpIn));
        for (ulong i = 0; i < 512; i++)
        {
            ulong pte = Pte(space, pde, i);
            Assert.Equal(1UL, pte & 1);
            Assert.Equal(head + i, (pte & PageTableEntry.AddressMask4K) >> 12);
            Assert.NotEqual(0UL, pte & 2);
            Assert.True(thp.IsAnonExclusive((int)i));
        }

        AssertMarks(node, head);
    }

    [Fact]
    public void THP_swapped_out_and_freed_comes_back_as_order0_pages_read_from_swap()
    {
        (MemoryNode node, AddressSpace space, SwapDevice device, VirtualAddress start, ulong head) = MappedThp();
        ulong freeBefore = node.Buddy.FreeFrames;

        SwapOutResult result = space.SwapOut(start);

        Assert.True(result.IsSwappedOut);
        Assert.Equal(0, space.SwapCacheSlots);

        // The folio's 512 frames and its deposited table went back; the table of swap PTEs stays.
        Assert.Equal(freeBefore + 512, node.Buddy.FreeFrames);
        Assert.Equal(512UL, device.UsedSlots);

        foreach (int i in s_marked)
        {
            AccessResult access = space.Access(start.Add((ulong)i * Page), AccessKind.Read);
            Assert.Equal(FaultAction.SwapIn, access.Fault);
            Folio small = node.FolioOf(access.PhysicalAddress.FrameNumber);
            Assert.Equal(0, small.Order);
            Assert.Equal(1, small.RefCount);
            Assert.Equal(1, small.MapCount);
            Assert.Equal((byte)(i + 1), node.Memory.ReadFrame(small.HeadFrame)[i]);
            Assert.Equal(FaultAction.None, space.Access(start.Add((ulong)i * Page), AccessKind.Write).Fault);
        }

        Assert.Equal(s_marked.Length, space.Counters.Get(VmEvent.PswpIn));
        Assert.Equal(s_marked.Length, space.Counters.Get(VmEvent.PgMajFault));
        Assert.Equal(512UL - (ulong)s_marked.Length, device.UsedSlots);
        Assert.Equal(0u, device.SwapCount(result.FirstSlot));
    }

    [Fact]
    public void Order0_page_swaps_out_to_one_slot_and_back()
    {
        var node = new MemoryNode(16UL << 20);
        var space = new AddressSpace(node);
        var device = new SwapDevice(1, 4096);
        space.AttachSwap(device);
        VirtualAddress start = space.Map(4 * Page, Protection.Read | Protection.Write);
        AccessResult first = space.Access(start.Add(Page), AccessKind.Write);
        node.Memory.GetWritableFrame(first.PhysicalAddress.FrameNumber)[3] = 0x42;

        SwapOutResult result = space.SwapOut(start.Add(Page));

        Assert.True(result.IsSwappedOut);
        Assert.Equal(1, result.Pages);
        Assert.Equal(1, space.Counters.Get(VmEvent.PswpOut));
        Assert.Equal(0, space.Counters.Get(VmEvent.ThpSwpOut));
        Assert.Equal(1UL, device.UsedSlots);
        AccessResult back = space.Access(start.Add(Page), AccessKind.Read);
        Assert.Equal(FaultAction.SwapIn, back.Fault);
        Assert.Equal(0x42, node.Memory.ReadFrame(back.PhysicalAddress.FrameNumber)[3]);
        Assert.Equal(0UL, device.UsedSlots);
    }

    [Fact]
    public void Pinned_or_unmapped_or_zero_page_is_refused_and_nothing_changes()
    {
        (MemoryNode node, AddressSpace space, SwapDevice device, VirtualAddress start, ulong head) = MappedThp();
        Folio thp = node.FolioOf(head);
        thp.Pin();

        Assert.Equal(SwapOutStatus.Pinned, space.SwapOut(start).Status);
        Assert.Equal(0UL, device.UsedSlots);
        Assert.Equal(0, space.Counters.Get(VmEvent.ThpSwpOut));
        Assert.NotEqual(0UL, Pde(space, start) & (1UL << 7));
        thp.Unpin();

        VirtualAddress other = space.Map(Page, Protection.Read);
        Assert.Equal(SwapOutStatus.NotMapped, space.SwapOut(other).Status);
        space.Access(other, AccessKind.Read);
        Assert.Equal(SwapOutStatus.NotAnonymous, space.SwapOut(other).Status);
    }

    [Fact]
    public void Shared_THP_after_fork_is_refused()
    {
        (_, AddressSpace space, _, VirtualAddress start, _) = MappedThp();
        AddressSpace child = space.Fork();

        Assert.Equal(SwapOutStatus.Shared, space.SwapOut(start).Status);
        Assert.NotNull(child);
    }

    private static (MemoryNode Node, AddressSpace Space, SwapDevice Device, VirtualAddress Start, ulong Head) MappedThp()
    {
        var node = new MemoryNode(32UL << 20);
        var space = new AddressSpace(node);
        var device = new SwapDevice(2, 4 * SwapDevice.ClusterSize);
        space.AttachSwap(device);
        VirtualAddress start = space.Map(2UL << 20, Protection.Read | Protection.Write, VmaFlags.Anonymous | VmaFlags.HugePage);
        AccessResult first = space.Access(start, AccessKind.Write);
        Assert.Equal(FaultAction.MappedHugePage, first.Fault);
        ulong head = first.PhysicalAddress.FrameNumber;
        foreach (int i in s_marked)
        {
            node.Memory.GetWritableFrame(head + (ulong)i)[i] = (byte)(i + 1);
        }

        return (node, space, device, start, head);
    }

    private static void AssertMarks(MemoryNode node, ulong head)
    {
        foreach (int i in s_marked)
        {
            Assert.Equal((byte)(i + 1), node.Memory.ReadFrame(head + (ulong)i)[i]);
        }
    }

    private static ulong Pde(AddressSpace space, VirtualAddress va)
    {
        IPhysicalMemory memory = space.Node.Memory;
        ulong table = space.Root.Value;
        for (int level = 4; level > 2; level--)
        {
            ulong entry = memory.ReadUInt64(PhysicalAddress.FromMaskedBits(table + (((va.Value >> (12 + (9 * (level - 1)))) & 0x1FF) * 8)));
            table = entry & PageTableEntry.AddressMask4K;
        }

        return memory.ReadUInt64(PhysicalAddress.FromMaskedBits(table + (((va.Value >> 21) & 0x1FF) * 8)));
    }

    private static ulong Pte(AddressSpace space, ulong pde, ulong index) =>
        ((IPhysicalMemory)space.Node.Memory).ReadUInt64(PhysicalAddress.FromMaskedBits((pde & PageTableEntry.AddressMask4K) + (index * 8)));
}
