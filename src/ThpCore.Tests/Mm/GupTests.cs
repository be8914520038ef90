using System;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;
using Xunit;

namespace ThpCore.Tests.Mm;

public sealed class GupTests
{
    private const ulong K4 = 4096;
    private const ulong M2 = 2UL << 20;
    private const Protection Rw = Protection.Read | Protection.Write;

    private static readonly ThpSettings s_always = new() { Enabled = ThpEnabled.Always };
    private static readonly ThpSettings s_never = new() { Enabled = ThpEnabled.Never };

    private static PageTableEntry Pte(AddressSpace space, ulong va) => AddressSpaceTests.Pte(space, va);

    private static PageTableEntry Pde(AddressSpace space, ulong va) => AddressSpaceTests.Pde(space, va);

    private static Folio FolioAt(AddressSpace space, ulong va) => space.Node.FolioOf(Pte(space, va).Address.FrameNumber);

    [Fact]
    public void A_write_pin_faults_fresh_pages_in_and_pins_each_order0_folio_with_the_bias()
    {
        AddressSpace space = AddressSpaceTests.Create(s_never);
        VirtualAddress start = space.Map(3 * K4, Rw);

        using PinHandle pin = space.Pin(start, 3 * K4, write: true);

        Assert.Equal(3, pin.Pages.Count);
        for (int i = 0; i < 3; i++)
        {
            ulong va = start.Value + ((ulong)i * K4);
            PageTableEntry pte = Pte(space, va);
            Assert.True(pte.IsWritable);
            Assert.Equal(pte.Address, pin.Pages[i]);
            Folio folio = FolioAt(space, va);
            Assert.NotEqual(space.ZeroPage, folio);
            Assert.Equal(1 + Folio.PinCountingBias, folio.RefCount);
            Assert.True(folio.MaybeDmaPinned);
            Assert.True(folio.IsAnonExclusive(0));
        }

        pin.Dispose();
        Assert.True(pin.IsDisposed);
        for (int i = 0; i < 3; i++)
        {
            Folio folio = FolioAt(space, start.Value + ((ulong)i * K4));
            Assert.Equal(1, folio.RefCount);
            Assert.False(folio.MaybeDmaPinned);
        }
    }

    [Fact]
    public void A_read_pin_of_fresh_pages_maps_the_zero_page_and_takes_no_pin_on_it()
    {
        AddressSpace space = AddressSpaceTests.Create(s_never);
        VirtualAddress start = space.Map(2 * K4, Rw);
        int zeroRefs = space.ZeroPage.RefCount;

        using PinHandle pin = space.Pin(start, 2 * K4, write: false);

        Assert.Equal(space.ZeroPage.Address, pin.Pages[0]);
        Assert.Equal(space.ZeroPage.Address, pin.Pages[1]);
        Assert.Equal(zeroRefs, space.ZeroPage.RefCount);
        pin.Dispose();
        Assert.Equal(zeroRefs, space.ZeroPage.RefCount);
    }

    [Fact]
    public void A_read_pin_of_a_fresh_thp_range_pins_the_huge_zero_page_once_per_page()
    {
        AddressSpace space = AddressSpaceTests.Create(s_always);
        VirtualAddress start = space.Map(2 * M2, Rw);

        PinHandle pin = space.Pin(start, 3 * K4, write: false);

        Folio huge = Assert.NotNull(space.HugeZeroPage);
        Assert.Equal(huge.Address, Pde(space, start.Value).Address);
        Assert.Equal(huge.Address.Add(2 * K4), pin.Pages[2]);
        Assert.Equal(3, huge.PinCount);
        pin.Dispose();
        Assert.Equal(0, huge.PinCount);
    }

    [Fact]
    public void A_write_pin_replaces_the_zero_page_with_a_private_pinned_page()
    {
        AddressSpace space = AddressSpaceTests.Create(s_never);
        VirtualAddress start = space.Map(K4, Rw);
        Assert.True(space.Access(start, AccessKind.Read).IsTranslated);
        Assert.Equal(space.ZeroPage.Address, Pte(space, start.Value).Address);

        using PinHandle pin = space.Pin(start, K4, write: true);

        Assert.NotEqual(space.ZeroPage.Address, pin.Pages[0]);
        Assert.Equal(Pte(space, start.Value).Address, pin.Pages[0]);
        Assert.True(FolioAt(space, start.Value).MaybeDmaPinned);
    }

    [Fact]
    public void Each_pinned_page_of_a_pmd_mapped_thp_takes_a_pin_and_a_reference_and_blocks_the_folio_split()
    {
        AddressSpace space = AddressSpaceTests.Create(s_always);
        VirtualAddress start = space.Map(2 * M2, Rw);
        Assert.Equal(FaultAction.MappedHugePage, space.Access(start, AccessKind.Write).Fault);
        Folio folio = space.Node.FolioOf(Pde(space, start.Value).Address.FrameNumber);
        Assert.Equal(Folio.PmdOrder, folio.Order);

        PinHandle pin = space.Pin(start.Add(4 * K4), 16 * K4, write: true);

        Assert.True(Pde(space, start.Value).IsLeaf);
        Assert.Equal(16, folio.PinCount);
        Assert.Equal(1 + 16, folio.RefCount);
        Assert.True(folio.MaybeDmaPinned);
        for (int i = 0; i < 16; i++)
        {
            Assert.Equal(PhysicalAddress.FromFrameNumber(folio.HeadFrame + 4 + (ulong)i), pin.Pages[i]);
        }

        // PTE-map it so that only the pins stand in the way of the folio split.
        Assert.True(space.SplitHugePmd(start));
        Assert.Equal(512 + 16, folio.RefCount);
        FolioSplitResult refused = space.Node.TrySplitFolio(folio, extraReferences: 0);
        Assert.False(refused.Split);
        Assert.Equal(FolioSplitRefusal.Pinned, refused.Refusal);

        pin.Dispose();
        Assert.Equal(0, folio.PinCount);
        Assert.False(folio.MaybeDmaPinned);
        Assert.Equal(512, folio.RefCount);
        Assert.True(space.Node.TrySplitFolio(folio, extraReferences: 0).Split);
    }

    [Fact]
    public void A_page_pinned_through_Pin_is_copied_for_the_child_at_fork()
    {
        AddressSpace parent = AddressSpaceTests.Create(s_never);
        VirtualAddress start = parent.Map(2 * K4, Rw);
        using PinHandle pin = parent.Pin(start, K4, write: true);
        parent.Node.Memory.WriteUInt64(pin.Pages[0], 0x5151);
        Assert.True(parent.Access(start.Add(K4), AccessKind.Write).IsTranslated);

        AddressSpace child = parent.Fork();

        Assert.Equal(pin.Pages[0], Pte(parent, start.Value).Address);
        Assert.True(Pte(parent, start.Value).IsWritable);
        PageTableEntry c = Pte(child, start.Value);
        Assert.NotEqual(pin.Pages[0], c.Address);
        Assert.True(c.IsWritable);
        Assert.Equal(0x5151UL, ((IPhysicalMemory)child.Node.Memory).ReadUInt64(c.Address));

        // The unpinned page is shared copy-on-write as usual.
        Assert.Equal(Pte(parent, start.Value + K4).Address, Pte(child, start.Value + K4).Address);
    }

    [Fact]
    public void A_write_pin_of_a_page_shared_by_fork_breaks_copy_on_write_first()
    {
        AddressSpace parent = AddressSpaceTests.Create(s_never);
        VirtualAddress start = parent.Map(K4, Rw);
        Assert.True(parent.Access(start, AccessKind.Write).IsTranslated);
        Folio shared = FolioAt(parent, start.Value);
        AddressSpace child = parent.Fork();
        Assert.Equal(2, shared.RefCount);

        using PinHandle pin = child.Pin(start, K4, write: true);

        Folio copy = FolioAt(child, start.Value);
        Assert.NotEqual(shared, copy);
        Assert.Equal(copy.Address, pin.Pages[0]);
        Assert.True(copy.IsAnonExclusive(0));
        Assert.True(copy.MaybeDmaPinned);
        Assert.Equal(1, shared.RefCount);
    }

    [Fact]
    public void A_range_that_segfaults_part_way_throws_and_leaves_nothing_pinned()
    {
        AddressSpace space = AddressSpaceTests.Create(s_never);
        VirtualAddress start = space.Map(3 * K4, Rw);
        space.Unmap(start.Add(2 * K4), K4);

        InvalidOperationException e = Assert.Throws<InvalidOperationException>(() => space.Pin(start, 3 * K4, write: true));

        Assert.Contains(start.Add(2 * K4).ToString(), e.Message, StringComparison.Ordinal);
        for (int i = 0; i < 2; i++)
        {
            Folio folio = FolioAt(space, start.Value + ((ulong)i * K4));
            Assert.Equal(1, folio.RefCount);
            Assert.False(folio.MaybeDmaPinned);
        }
    }

    [Fact]
    public void A_write_pin_of_a_read_only_mapping_throws()
    {
        AddressSpace space = AddressSpaceTests.Create(s_never);
        VirtualAddress start = space.Map(K4, Protection.Read);

        Assert.Throws<InvalidOperationException>(() => space.Pin(start, K4, write: true));
        using PinHandle read = space.Pin(start, K4, write: false);
        Assert.Equal(space.ZeroPage.Address, read.Pages[0]);
    }

    [Fact]
    public void A_write_pin_that_runs_out_of_memory_part_way_unpins_and_throws()
    {
        AddressSpace space = AddressSpaceTests.Create(s_never);
        VirtualAddress start = space.Map(2 * K4, Rw);
        Assert.True(space.Access(start, AccessKind.Write).IsTranslated);
        Folio first = FolioAt(space, start.Value);
        while (space.Node.TryAllocateFrame(out _))
        {
        }

        InvalidOperationException e = Assert.Throws<InvalidOperationException>(() => space.Pin(start, 2 * K4, write: true));

        Assert.Contains("memory", e.Message, StringComparison.Ordinal);
        Assert.Equal(1, first.RefCount);
        Assert.False(first.MaybeDmaPinned);
    }

    [Fact]
    public void Dispose_twice_unpins_once()
    {
        AddressSpace space = AddressSpaceTests.Create(s_never);
        VirtualAddress start = space.Map(K4, Rw);
        PinHandle pin = space.Pin(start, K4, write: true);
        Folio folio = FolioAt(space, start.Value);

        pin.Dispose();
        pin.Dispose();

        Assert.Equal(1, folio.RefCount);
        Assert.False(folio.MaybeDmaPinned);
    }

    [Fact]
    public void Pin_rejects_an_unaligned_or_empty_range()
    {
        AddressSpace space = AddressSpaceTests.Create(s_never);
        VirtualAddress start = space.Map(K4, Rw);

        Assert.Throws<ArgumentException>(() => space.Pin(start.Add(1), K4, write: false));
        Assert.Throws<ArgumentException>(() => space.Pin(start, 0, write: false));
        Assert.Throws<ArgumentException>(() => space.Pin(start, 100, write: false));
    }
}
