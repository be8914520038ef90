using System;
using ThpCore.Diagnostics;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;
using Xunit;

namespace ThpCore.Tests.Mm;

public sealed class ForkTests
{
    private const ulong K4 = 4096;
    private const ulong M2 = 2UL << 20;
    private const Protection Rw = Protection.Read | Protection.Write;

    private static readonly ThpSettings s_always = new() { Enabled = ThpEnabled.Always };
    private static readonly ThpSettings s_never = new() { Enabled = ThpEnabled.Never };

    private static PageTableEntry Pte(AddressSpace space, ulong va) => AddressSpaceTests.Pte(space, va);

    private static PageTableEntry Pde(AddressSpace space, ulong va) => AddressSpaceTests.Pde(space, va);

    private static FaultAction Store(AddressSpace space, VirtualAddress va, ulong value)
    {
        AccessResult result = space.Access(va, AccessKind.Write);
        Assert.True(result.IsTranslated);
        space.Node.Memory.WriteUInt64(result.PhysicalAddress, value);
        return result.Fault;
    }

    private static ulong Load(AddressSpace space, VirtualAddress va)
    {
        AccessResult result = space.Access(va, AccessKind.Read);
        Assert.True(result.IsTranslated);
        return ((IPhysicalMemory)space.Node.Memory).ReadUInt64(result.PhysicalAddress);
    }

    private static Folio FolioAt(AddressSpace space, ulong va) => space.Node.FolioOf(Pte(space, va).Address.FrameNumber);

    // A 4 MiB mapping whose first 2 MiB is one PMD-mapped THP holding 0xA0 + i at page i for i < 8.
    private static (AddressSpace Space, VirtualAddress Start, Folio Folio) MappedThp()
    {
        AddressSpace space = AddressSpaceTests.Create(s_always);
        VirtualAddress start = space.Map(2 * M2, Rw);
        Assert.Equal(FaultAction.MappedHugePage, space.Access(start, AccessKind.Write).Fault);
        for (ulong i = 0; i < 8; i++)
        {
            Store(space, start.Add(i * K4), 0xA0 + i);
        }

        Folio folio = space.Node.FolioOf(Pde(space, start.Value).Address.FrameNumber);
        Assert.Equal(Folio.PmdOrder, folio.Order);
        return (space, start, folio);
    }

    [Fact]
    public void Fork_shares_each_page_read_only_with_a_reference_and_a_mapping_per_space_and_clears_anon_exclusive()
    {
        AddressSpace parent = AddressSpaceTests.Create(s_never);
        VirtualAddress start = parent.Map(4 * K4, Rw);
        Store(parent, start, 0x1111);
        Store(parent, start.Add(K4), 0x2222);
        Assert.Equal(0UL, Load(parent, start.Add(2 * K4)));
        Folio folio = FolioAt(parent, start.Value);

        AddressSpace child = parent.Fork();

        Assert.Equal(parent.Vmas.All, child.Vmas.All);
        Assert.Same(parent.Counters, child.Counters);
        Assert.Same(parent.Node, child.Node);
        Assert.NotEqual(parent.Root, child.Root);
        PageTableEntry p = Pte(parent, start.Value);
        PageTableEntry c = Pte(child, start.Value);
        Assert.Equal(folio.Address, p.Address);
        Assert.Equal(folio.Address, c.Address);
        Assert.True(p.IsPresent && !p.IsWritable && p.IsDirty && p.IsAccessed);
        Assert.True(c.IsPresent && !c.IsWritable && c.IsDirty && !c.IsAccessed && c.IsUser && c.IsExecuteDisable);
        Assert.Equal(2, folio.RefCount);
        Assert.Equal(2, folio.PageMapCount(0));
        Assert.False(folio.IsAnonExclusive(0));
        Assert.False(FolioAt(parent, start.Value + K4).IsAnonExclusive(0));
        Assert.Equal(2, FolioAt(child, start.Value + K4).RefCount);

        PageTableEntry zero = Pte(child, start.Value + (2 * K4));
        Assert.Equal(parent.ZeroPage.Address, zero.Address);
        Assert.False(zero.IsWritable);
        Assert.Equal(0UL, Pte(child, start.Value + (3 * K4)).Raw);

        Assert.Equal(0x1111UL, Load(child, start));
        Assert.Equal(0x2222UL, Load(child, start.Add(K4)));
    }

    [Fact]
    public void A_write_to_a_shared_page_copies_it_and_leaves_the_other_side_bytes_intact_in_both_directions()
    {
        AddressSpace parent = AddressSpaceTests.Create(s_never);
        VirtualAddress start = parent.Map(2 * K4, Rw);
        Store(parent, start, 0x1111);
        Store(parent, start.Add(K4), 0x2222);
        Folio first = FolioAt(parent, start.Value);
        Folio second = FolioAt(parent, start.Value + K4);
        AddressSpace child = parent.Fork();

        Assert.Equal(FaultAction.CopiedPage, Store(child, start, 0x3333));

        PageTableEntry c = Pte(child, start.Value);
        Assert.NotEqual(first.Address, c.Address);
        Assert.True(c.IsWritable && c.IsDirty);
        Folio copy = FolioAt(child, start.Value);
        Assert.True(copy.IsAnonExclusive(0));
        Assert.Equal(1, copy.RefCount);
        Assert.Equal(1, first.RefCount);
        Assert.Equal(1, first.PageMapCount(0));
        Assert.Equal(0x1111UL, Load(parent, start));
        Assert.Equal(0x3333UL, Load(child, start));

        // The parent is now the only user of the first page: wp_can_reuse_anon_folio reuses it.
        Assert.Equal(FaultAction.None, Store(parent, start, 0x4444));
        Assert.Equal(first.Address, Pte(parent, start.Value).Address);
        Assert.True(Pte(parent, start.Value).IsWritable);
        Assert.True(first.IsAnonExclusive(0));

        // The parent writes the still-shared second page: the parent gets the copy.
        Assert.Equal(FaultAction.CopiedPage, Store(parent, start.Add(K4), 0x5555));
        Assert.NotEqual(second.Address, Pte(parent, start.Value + K4).Address);
        Assert.Equal(second.Address, Pte(child, start.Value + K4).Address);
        Assert.Equal(1, second.RefCount);
        Assert.Equal(0x2222UL, Load(child, start.Add(K4)));
        Assert.Equal(0x5555UL, Load(parent, start.Add(K4)));
        Assert.Equal(0x3333UL, Load(child, start));
        Assert.Equal(0x4444UL, Load(parent, start));
    }

    [Fact]
    public void A_write_after_the_child_unmapped_everything_reuses_the_page_without_copying()
    {
        AddressSpace parent = AddressSpaceTests.Create(s_never);
        VirtualAddress start = parent.Map(K4, Rw);
        Store(parent, start, 0x1111);
        Folio folio = FolioAt(parent, start.Value);
        AddressSpace child = parent.Fork();
        child.Unmap(start, K4);
        Assert.Equal(1, folio.RefCount);
        ulong free = parent.Node.Buddy.FreeFrames;

        Assert.Equal(FaultAction.None, Store(parent, start, 0x2222));

        Assert.Equal(free, parent.Node.Buddy.FreeFrames);
        PageTableEntry p = Pte(parent, start.Value);
        Assert.Equal(folio.Address, p.Address);
        Assert.True(p.IsWritable && p.IsDirty);
        Assert.True(folio.IsAnonExclusive(0));
        Assert.Equal(0x2222UL, Load(parent, start));
    }

    [Fact]
    public void A_pinned_anon_exclusive_page_is_copied_for_the_child_at_fork_and_the_parent_keeps_it_writable()
    {
        AddressSpace parent = AddressSpaceTests.Create(s_never);
        VirtualAddress start = parent.Map(2 * K4, Rw);
        Store(parent, start, 0x1111);
        Store(parent, start.Add(K4), 0x2222);
        Folio pinned = FolioAt(parent, start.Value);
        pinned.Pin();

        AddressSpace child = parent.Fork();

        PageTableEntry p = Pte(parent, start.Value);
        PageTableEntry c = Pte(child, start.Value);
        Assert.Equal(pinned.Address, p.Address);
        Assert.True(p.IsWritable);
        Assert.True(pinned.IsAnonExclusive(0));
        Assert.Equal(1 + Folio.PinCountingBias, pinned.RefCount);
        Assert.Equal(1, pinned.PageMapCount(0));
        Assert.NotEqual(pinned.Address, c.Address);
        Assert.True(c.IsWritable && c.IsDirty);
        Folio copy = FolioAt(child, start.Value);
        Assert.True(copy.IsAnonExclusive(0));
        Assert.Equal(1, copy.RefCount);
        Assert.Equal(0x1111UL, Load(child, start));

        // The unpinned page is shared as usual.
        Assert.Equal(Pte(parent, start.Value + K4).Address, Pte(child, start.Value + K4).Address);
        Assert.False(Pte(parent, start.Value + K4).IsWritable);

        Assert.Equal(FaultAction.None, Store(child, start, 0x3333));
        Assert.Equal(0x1111UL, Load(parent, start));
        pinned.Unpin();
    }

    [Fact]
    public void Fork_of_a_pinned_thp_splits_the_parent_pmd_and_copies_every_page_for_the_child()
    {
        (AddressSpace parent, VirtualAddress start, Folio folio) = MappedThp();
        folio.Pin();

        AddressSpace child = parent.Fork();

        Assert.False(Pde(parent, start.Value).IsLeaf);
        Assert.Equal(1, parent.Counters.Get(VmEvent.ThpSplitPmd));
        Assert.Equal(512 + 1, folio.RefCount);
        Assert.Equal(512, folio.MapCount);
        for (int i = 0; i < 512; i++)
        {
            ulong va = start.Value + ((ulong)i * K4);
            Assert.True(Pte(parent, va).IsWritable);
            Assert.True(folio.IsAnonExclusive(i));
            PageTableEntry c = Pte(child, va);
            Assert.True(c.IsWritable);
            Assert.Equal(0, FolioAt(child, va).Order);
        }

        Assert.Equal(0xA5UL, Load(child, start.Add(5 * K4)));
        folio.Unpin();
    }

    [Fact]
    public void A_child_write_into_a_shared_thp_splits_only_the_child_pmd_and_copies_one_page_and_a_later_parent_write_splits_and_copies_too()
    {
        (AddressSpace parent, VirtualAddress start, Folio folio) = MappedThp();

        AddressSpace child = parent.Fork();

        PageTableEntry p = Pde(parent, start.Value);
        PageTableEntry c = Pde(child, start.Value);
        Assert.True(p.IsLeaf && !p.IsWritable && p.IsDirty && p.IsAccessed);
        Assert.True(c.IsLeaf && !c.IsWritable && c.IsDirty && !c.IsAccessed);
        Assert.Equal(folio.Address, c.Address);
        Assert.Equal(2, folio.EntireMapCount);
        Assert.Equal(2, folio.RefCount);
        Assert.False(folio.IsAnonExclusive(0));

        // do_huge_pmd_wp_page: not exclusive, refcount 2 → split the child's PMD, then do_wp_page copies 4 KiB.
        Assert.Equal(FaultAction.CopiedPage, Store(child, start.Add(5 * K4), 0xC5));

        Assert.Equal(1, parent.Counters.Get(VmEvent.ThpSplitPmd));
        Assert.False(Pde(child, start.Value).IsLeaf);
        for (int i = 0; i < 512; i++)
        {
            PageTableEntry pte = Pte(child, start.Value + ((ulong)i * K4));
            if (i == 5)
            {
                Assert.NotEqual(folio.Address.Add(5 * K4), pte.Address);
                Assert.True(pte.IsWritable);
                Assert.Equal(0, folio.PageMapCount(i));
            }
            else
            {
                Assert.Equal(folio.Address.Add((ulong)i * K4), pte.Address);
                Assert.False(pte.IsWritable);
                Assert.Equal(1, folio.PageMapCount(i));
                Assert.False(folio.IsAnonExclusive(i));
            }
        }

        Assert.Equal(1 + 511, folio.RefCount);
        Assert.Equal(1 + 511, folio.MapCount);
        Assert.Equal(1, folio.EntireMapCount);
        Assert.False(folio.IsOnDeferredSplitQueue);
        Assert.True(Pde(parent, start.Value).IsLeaf);
        Assert.False(Pde(parent, start.Value).IsWritable);
        Assert.Equal(0xA5UL, Load(parent, start.Add(5 * K4)));
        Assert.Equal(0xC5UL, Load(child, start.Add(5 * K4)));
        Assert.Equal(0xA6UL, Load(child, start.Add(6 * K4)));

        // The parent: not exclusive and refcount 512 → split its PMD too; a page of a large folio is always copied.
        Assert.Equal(FaultAction.CopiedPage, Store(parent, start.Add(6 * K4), 0xD6));

        Assert.Equal(2, parent.Counters.Get(VmEvent.ThpSplitPmd));
        Assert.False(Pde(parent, start.Value).IsLeaf);
        Assert.NotEqual(folio.Address.Add(6 * K4), Pte(parent, start.Value + (6 * K4)).Address);
        Assert.Equal(511 + 511, folio.RefCount);
        Assert.Equal(511 + 511, folio.MapCount);
        Assert.Equal(0, folio.EntireMapCount);
        Assert.Equal(0xA6UL, Load(child, start.Add(6 * K4)));
        Assert.Equal(0xD6UL, Load(parent, start.Add(6 * K4)));
        Assert.Equal(0xA5UL, Load(parent, start.Add(5 * K4)));
    }

    [Fact]
    public void A_parent_write_into_a_thp_after_the_child_unmapped_everything_reuses_the_whole_pmd()
    {
        (AddressSpace parent, VirtualAddress start, Folio folio) = MappedThp();
        AddressSpace child = parent.Fork();
        child.Unmap(start, 2 * M2);
        ulong free = parent.Node.Buddy.FreeFrames;

        Assert.Equal(FaultAction.None, Store(parent, start.Add(5 * K4), 0xE5));

        Assert.Equal(free, parent.Node.Buddy.FreeFrames);
        PageTableEntry p = Pde(parent, start.Value);
        Assert.True(p.IsLeaf && p.IsWritable);
        Assert.Equal(folio.Address, p.Address);
        Assert.True(folio.IsAnonExclusive(0));
        Assert.Equal(1, folio.RefCount);
        Assert.Equal(0, parent.Counters.Get(VmEvent.ThpSplitPmd));
    }

    [Fact]
    public void The_huge_zero_page_and_the_zero_page_are_shared_read_only_without_references()
    {
        AddressSpace parent = AddressSpaceTests.Create(s_always);
        VirtualAddress start = parent.Map(2 * M2, Rw);
        Assert.Equal(FaultAction.MappedHugeZeroPage, parent.Access(start, AccessKind.Read).Fault);
        Folio huge = parent.HugeZeroPage!.Value;
        ulong before = parent.Node.Buddy.FreeFrames;

        AddressSpace child = parent.Fork();

        Assert.Equal(huge, child.HugeZeroPage);
        Assert.Equal(parent.ZeroPage, child.ZeroPage);
        Assert.Equal(1, huge.RefCount);
        PageTableEntry c = Pde(child, start.Value);
        Assert.True(c.IsLeaf && !c.IsWritable && c.IsAccessed);
        Assert.Equal(huge.Address, c.Address);
        Assert.Equal(before - 4, parent.Node.Buddy.FreeFrames);

        // The child writes: the huge zero PMD is split into zero-page PTEs and one page is copied.
        Assert.Equal(FaultAction.CopiedZeroPage, Store(child, start.Add(K4), 0x7));
        Assert.True(Pde(parent, start.Value).IsLeaf);
        Assert.Equal(0UL, Load(parent, start.Add(K4)));
        Assert.Equal(parent.ZeroPage.Address, Pte(child, start.Value).Address);
    }

    [Fact]
    public void After_the_child_unmaps_everything_only_its_root_table_stays_allocated()
    {
        (AddressSpace parent, VirtualAddress start, Folio folio) = MappedThp();
        Assert.Equal(FaultAction.MappedHugePage, Store(parent, start.Add(M2), 0x1));
        Folio second = parent.Node.FolioOf(Pde(parent, start.Value + M2).Address.FrameNumber);
        ulong before = parent.Node.Buddy.FreeFrames;

        AddressSpace child = parent.Fork();

        // Root, PDPT, PD and a deposited table per THP.
        Assert.Equal(before - 5, parent.Node.Buddy.FreeFrames);
        Store(child, start.Add(5 * K4), 0x3);
        Store(child, start.Add(M2), 0x4);
        Assert.Equal(before - 7, parent.Node.Buddy.FreeFrames);

        child.Unmap(start, 2 * M2);

        // Both PMDs were split by the writes and the two copies are freed; the deposited tables became the PTE tables,
        // which free_pgtables frees with the directory and PDPT above them: only the child's root is left.
        Assert.Equal(before - 1, parent.Node.Buddy.FreeFrames);
        Assert.Equal(1, folio.RefCount);
        Assert.Equal(1, folio.EntireMapCount);
        Assert.Equal(1, folio.MapCount);
        Assert.Equal(1, second.RefCount);
        Assert.Equal(1, second.EntireMapCount);
        Assert.False(folio.IsOnDeferredSplitQueue || second.IsOnDeferredSplitQueue);
        Assert.Equal(0x1UL, Load(parent, start.Add(M2)));
        Assert.Equal(0xA5UL, Load(parent, start.Add(5 * K4)));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(6)]
    public void Running_out_of_frames_part_way_tears_the_child_down_and_frees_everything_it_took(int framesLeft)
    {
        // Pinned pages are copied eagerly for the child, so a fork of many pinned pages needs many frames.
        var space = new AddressSpace(new MemoryNode(8UL << 20), s_never);
        VirtualAddress start = space.Map(16 * K4, Rw);
        for (ulong page = 0; page < 16; page++)
        {
            Store(space, start.Add((page * K4) + 8), 0x100 + page);
        }

        using PinHandle pin = space.Pin(start, 16 * K4, write: true);
        MemoryNode node = space.Node;
        var eaten = new System.Collections.Generic.List<Folio>();
        while (node.Buddy.FreeFrames > (ulong)framesLeft && node.TryAllocateFolio(0, out Folio f))
        {
            eaten.Add(f);
        }

        ulong free = node.Buddy.FreeFrames;
        Assert.Throws<InvalidOperationException>(() => space.Fork());

        Assert.Equal(free, node.Buddy.FreeFrames);
        eaten.ForEach(f => f.Put());
        Assert.Null(MmBooks.Check(new System.Collections.Generic.List<AddressSpace> { space }, new[] { pin }, null));
        for (ulong page = 0; page < 16; page++)
        {
            Assert.Equal(0x100 + page, Load(space, start.Add((page * K4) + 8)));
        }

        AddressSpace child = space.Fork();
        Assert.Equal(0x10FUL, Load(child, start.Add((15 * K4) + 8)));
    }

}
