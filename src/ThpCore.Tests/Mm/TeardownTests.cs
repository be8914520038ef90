using System;
using ThpCore.Diagnostics;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;
using Xunit;
using static ThpCore.Tests.Mm.PageTableFreeingTests;

namespace ThpCore.Tests.Mm;

/// <summary><see cref="AddressSpace.Dispose"/> (<c>exit_mmap</c>): every frame back to the node, pins outliving it, fork families.</summary>
public sealed class TeardownTests
{
    private static readonly ThpSettings s_always = new() { Enabled = ThpEnabled.Always };

    private static byte Load(AddressSpace space, ulong address)
    {
        AccessResult result = space.Access(VirtualAddress.FromRaw(address), AccessKind.Read);
        Assert.Equal(AccessStatus.Translated, result.Status);
        return space.Node.Memory.ReadFrame(result.PhysicalAddress.FrameNumber)[(int)result.PhysicalAddress.PageOffset(PageSize.Size4K)];
    }

    private static void Store(AddressSpace space, ulong address, byte value)
    {
        AccessResult result = space.Access(VirtualAddress.FromRaw(address), AccessKind.Write);
        Assert.Equal(AccessStatus.Translated, result.Status);
        space.Node.Memory.GetWritableFrame(result.PhysicalAddress.FrameNumber)[(int)result.PhysicalAddress.PageOffset(PageSize.Size4K)] = value;
    }

    // A THP, a PTE-mapped THP, a THP left partly mapped on the deferred-split queue, the huge zero page, the 4 KiB zero
    // page and order-0 pages, at B.
    private static void Populate(AddressSpace space)
    {
        Place(space, B, 8 * M2);
        Store(space, B, 1);
        Store(space, B + M2, 2);
        space.Protect(VirtualAddress.FromRaw(B + M2 + K4), K4, Protection.Read);
        space.Protect(VirtualAddress.FromRaw(B + M2 + K4), K4, Rw);
        Store(space, B + (2 * M2), 3);
        space.Unmap(VirtualAddress.FromRaw(B + (2 * M2) + (7 * K4)), K4);
        Assert.Equal(0, Load(space, B + (4 * M2)));
        Place(space, B + (16 * M2), 4 * K4, VmaFlags.Anonymous | VmaFlags.NoHugePage);
        Assert.Equal(0, Load(space, B + (16 * M2)));
        Store(space, B + (16 * M2) + K4, 4);
        Assert.Equal(1, space.Node.DeferredSplitCount);
        Assert.NotNull(space.HugeZeroPage);
    }

    // A node, its free frames before any address space, and a populated space on it.
    private static (MemoryNode Node, ulong Initial, AddressSpace Space) Populated(PagingMode mode = PagingMode.FourLevel)
    {
        var node = new MemoryNode(64UL << 20);
        ulong initial = node.Buddy.FreeFrames;
        var space = new AddressSpace(node, s_always, mode: mode);
        Populate(space);
        return (node, initial, space);
    }

    [Fact]
    public void Dispose_of_a_populated_space_returns_every_frame_and_empties_the_deferred_split_queue()
    {
        (MemoryNode node, ulong initial, AddressSpace space) = Populated();
        Assert.True(node.Buddy.FreeFrames < initial - (4 * 512));

        space.Dispose();

        Assert.True(space.IsDisposed);
        Assert.Equal(initial, node.Buddy.FreeFrames);
        Assert.Equal(0, node.DeferredSplitCount);
        Assert.Empty(space.Vmas.All);
        Assert.False(space.ZeroPage.IsLive());
    }

    [Fact]
    public void Dispose_of_an_empty_space_frees_its_root_and_zero_page_and_a_second_dispose_does_nothing()
    {
        var node = new MemoryNode(16UL << 20);
        ulong initial = node.Buddy.FreeFrames;
        var space = new AddressSpace(node, s_always, mode: PagingMode.FiveLevel);
        Assert.Equal(initial - 2, node.Buddy.FreeFrames);

        space.Dispose();
        Assert.Equal(initial, node.Buddy.FreeFrames);
        space.Dispose();
        Assert.Equal(initial, node.Buddy.FreeFrames);
    }

    [Fact]
    public void Dispose_with_5_level_paging_frees_the_pml4_tables_too()
    {
        (MemoryNode node, ulong initial, AddressSpace space) = Populated(PagingMode.FiveLevel);
        Place(space, B + G512, K4);
        Store(space, B + G512, 5);

        space.Dispose();

        Assert.Equal(initial, node.Buddy.FreeFrames);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void A_fork_family_can_be_disposed_in_either_order_and_the_last_member_frees_the_zero_pages(bool parentFirst)
    {
        (MemoryNode node, ulong initial, AddressSpace parent) = Populated();
        AddressSpace child = parent.Fork();
        Store(child, B + 8, 9);
        Assert.Equal(1, Load(parent, B));
        Folio hugeZero = parent.HugeZeroPage!.Value;
        Assert.Equal(hugeZero, child.HugeZeroPage);

        (AddressSpace first, AddressSpace survivor) = parentFirst ? (parent, child) : (child, parent);
        first.Dispose();

        // The survivor still has its bytes, copy-on-write still works, and the zero pages are still there.
        Assert.Equal(parentFirst ? 9 : 0, Load(survivor, B + 8));
        Assert.Equal(1, Load(survivor, B));
        Assert.Equal(2, Load(survivor, B + M2));
        Assert.Equal(4, Load(survivor, B + (16 * M2) + K4));
        Store(survivor, B + (3 * M2), 7);
        Assert.Equal(FaultAction.MappedHugeZeroPage, survivor.Access(VirtualAddress.FromRaw(B + (6 * M2)), AccessKind.Read).Fault);
        Assert.Equal(0, Load(survivor, B + (16 * M2) + (2 * K4)));
        Store(survivor, B + (4 * M2), 6);
        Assert.Equal(1, hugeZero.RefCount);
        Assert.Equal(1, survivor.ZeroPage.RefCount);

        survivor.Dispose();

        Assert.Equal(initial, node.Buddy.FreeFrames);
        Assert.Equal(0, node.DeferredSplitCount);
    }

    [Fact]
    public void The_huge_zero_page_a_child_allocates_is_the_familys_and_survives_the_child()
    {
        var node = new MemoryNode(64UL << 20);
        ulong initial = node.Buddy.FreeFrames;
        var parent = new AddressSpace(node, s_always);
        Place(parent, B, 4 * M2);
        AddressSpace child = parent.Fork();
        AddressSpace grandchild = child.Fork();

        Assert.Equal(FaultAction.MappedHugeZeroPage, child.Access(VirtualAddress.FromRaw(B), AccessKind.Read).Fault);
        Folio hugeZero = child.HugeZeroPage!.Value;
        Assert.Equal(hugeZero, parent.HugeZeroPage);
        child.Dispose();
        Assert.Equal(FaultAction.MappedHugeZeroPage, parent.Access(VirtualAddress.FromRaw(B + M2), AccessKind.Read).Fault);
        Assert.Equal(FaultAction.MappedHugeZeroPage, grandchild.Access(VirtualAddress.FromRaw(B), AccessKind.Read).Fault);
        Assert.Equal(1, parent.Counters.Get(VmEvent.ThpZeroPageAlloc));
        Assert.Equal(hugeZero.Address, AddressSpaceTests.Pde(grandchild, B).Address);

        parent.Dispose();
        Assert.Equal(1, hugeZero.RefCount);
        grandchild.Dispose();

        Assert.Equal(initial, node.Buddy.FreeFrames);
    }

    [Fact]
    public void A_pinned_thp_and_page_outlive_dispose_until_the_pins_are_released()
    {
        (MemoryNode node, ulong initial, AddressSpace space) = Populated();
        PinHandle thpPins = space.Pin(VirtualAddress.FromRaw(B), 4 * K4, write: true);
        PinHandle pagePin = space.Pin(VirtualAddress.FromRaw(B + (16 * M2) + K4), K4, write: false);
        Folio thp = node.FolioOf(thpPins.Pages[0].FrameNumber);
        Folio page = node.FolioOf(pagePin.Pages[0].FrameNumber);

        space.Dispose();

        Assert.Equal(initial - 512 - 1, node.Buddy.FreeFrames);
        Assert.Equal(4, thp.RefCount);
        Assert.Equal(0, thp.MapCount);
        Assert.Equal(Folio.PinCountingBias, page.RefCount);
        Assert.Equal(4, node.Memory.ReadFrame(page.HeadFrame)[0]);

        thpPins.Dispose();
        Assert.Equal(initial - 1, node.Buddy.FreeFrames);
        pagePin.Dispose();
        Assert.Equal(initial, node.Buddy.FreeFrames);
    }

    [Fact]
    public void A_pinned_thp_on_the_deferred_split_queue_leaves_it_when_the_pin_frees_it()
    {
        (MemoryNode node, ulong initial, AddressSpace space) = Populated();
        PinHandle pin = space.Pin(VirtualAddress.FromRaw(B + (2 * M2)), K4, write: false);
        Folio queued = node.FolioOf(pin.Pages[0].FrameNumber);
        Assert.True(queued.IsOnDeferredSplitQueue);

        space.Dispose();

        Assert.Equal(1, node.DeferredSplitCount);
        Assert.Equal(1, queued.RefCount);

        pin.Dispose();

        Assert.Equal(0, node.DeferredSplitCount);
        Assert.Equal(initial, node.Buddy.FreeFrames);
    }

    [Fact]
    public void A_pinned_huge_zero_page_outlives_the_family()
    {
        var node = new MemoryNode(64UL << 20);
        ulong initial = node.Buddy.FreeFrames;
        var space = new AddressSpace(node, s_always);
        Place(space, B, M2);
        PinHandle pin = space.Pin(VirtualAddress.FromRaw(B), K4, write: false);
        Folio hugeZero = space.HugeZeroPage!.Value;

        space.Dispose();

        Assert.Equal(1, hugeZero.RefCount);
        Assert.Equal(initial - 512, node.Buddy.FreeFrames);
        pin.Dispose();
        Assert.Equal(initial, node.Buddy.FreeFrames);
    }

    [Fact]
    public void After_dispose_every_member_that_needs_the_page_tables_throws_ObjectDisposedException()
    {
        var space = new AddressSpace(new MemoryNode(16UL << 20), s_always);
        VirtualAddress start = space.Map(M2, Rw);
        space.Dispose();
        VirtualAddress at = start;

        Assert.Throws<ObjectDisposedException>(() => space.Map(K4, Rw));
        Assert.Throws<ObjectDisposedException>(() => space.Unmap(at, K4));
        Assert.Throws<ObjectDisposedException>(() => space.Protect(at, K4, Protection.Read));
        Assert.Throws<ObjectDisposedException>(() => space.Advise(at, K4, Advice.DontNeed));
        Assert.Throws<ObjectDisposedException>(() => space.Access(at, AccessKind.Read));
        Assert.Throws<ObjectDisposedException>(() => space.SplitHugePmd(at));
        Assert.Throws<ObjectDisposedException>(() => space.Fork());
        Assert.Throws<ObjectDisposedException>(() => space.Remap(at, K4, 2 * K4, RemapFlags.MayMove));
        Assert.Throws<ObjectDisposedException>(() => space.Pin(at, K4, write: false));
        Assert.Throws<ObjectDisposedException>(() => space.AttachSwap(new SwapDevice(0, 1024)));
        Assert.Throws<ObjectDisposedException>(() => space.SwapOut(at));
        Assert.Throws<ObjectDisposedException>(() => space.TryGetSwapCacheFolio(1, out _));
    }
}
