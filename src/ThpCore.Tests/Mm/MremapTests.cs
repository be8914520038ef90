using System;
using ThpCore.Diagnostics;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;
using Xunit;

namespace ThpCore.Tests.Mm;

public sealed class MremapTests
{
    private const ulong K4 = 4096;
    private const ulong M2 = 2UL << 20;
    private const Protection Rw = Protection.Read | Protection.Write;
    private const RemapFlags MoveTo = RemapFlags.MayMove | RemapFlags.Fixed;

    private static readonly ThpSettings s_always = new() { Enabled = ThpEnabled.Always };
    private static readonly VirtualAddress s_away = VirtualAddress.FromRaw(0x4000_0000);

    private static PageTableEntry Pte(AddressSpace space, ulong va) => AddressSpaceTests.Pte(space, va);

    private static PageTableEntry Pde(AddressSpace space, ulong va) => AddressSpaceTests.Pde(space, va);

    // A 4 MiB mapping whose first 2 MiB is one PMD-mapped THP, and that THP's folio.
    private static (AddressSpace Space, VirtualAddress Start, Folio Folio) MappedThp()
    {
        AddressSpace space = AddressSpaceTests.Create(s_always);
        VirtualAddress start = space.Map(2 * M2, Rw);
        Assert.Equal(FaultAction.MappedHugePage, space.Access(start, AccessKind.Write).Fault);
        Folio folio = space.Node.FolioOf(Pde(space, start.Value).Address.FrameNumber);
        Assert.Equal(Folio.PmdOrder, folio.Order);
        return (space, start, folio);
    }

    private static byte ReadByte(AddressSpace space, VirtualAddress address)
    {
        AccessResult result = space.Access(address, AccessKind.Read);
        Assert.True(result.IsTranslated);
        Assert.Equal(FaultAction.None, result.Fault);
        return space.Node.Memory.ReadFrame(result.PhysicalAddress.FrameNumber)[(int)(address.Value & (K4 - 1))];
    }

    [Fact]
    public void The_flag_values_are_linux_mremap_bits()
    {
        Assert.Equal(1, (int)RemapFlags.MayMove);
        Assert.Equal(2, (int)RemapFlags.Fixed);
    }

    [Theory]
    [InlineData(3 * K4, K4)]
    [InlineData(M2 / 4, M2 / 2)]
    public void A_sub_range_of_a_thp_moved_away_and_back_re_merges_the_vmas_and_leaves_the_thp_pte_mapped_in_order(ulong offset, ulong length)
    {
        (AddressSpace space, VirtualAddress start, Folio folio) = MappedThp();
        VirtualAddress range = start.Add(offset);
        ulong marked = offset / K4;
        space.Node.Memory.GetWritableFrame(folio.HeadFrame + marked)[9] = 0x5A;

        Assert.Equal(s_away, space.Remap(range, length, length, MoveTo, s_away));

        Assert.Equal(3, space.Vmas.Count);
        Vma moved = space.Vmas.Find(s_away)!;
        Assert.Equal(s_away.Add(length), moved.End);
        Assert.Equal(range.Value >> 12, moved.PageOffset);
        Assert.Null(space.Vmas.Find(range));
        Assert.False(Pde(space, start.Value).IsLeaf);
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpSplitPmd));
        Assert.Equal(folio.Address.Add(offset), Pte(space, s_away.Value).Address);
        Assert.Equal(0UL, AddressSpaceTests.Entry(space, range.Value, PagingLevel.Pt));
        Assert.Equal(0x5A, ReadByte(space, s_away.Add(9)));
        Assert.Equal(512, folio.RefCount);
        Assert.Equal(512, folio.MapCount);

        Assert.Equal(range, space.Remap(s_away, length, length, MoveTo, range));

        Vma vma = Assert.Single(space.Vmas.All);
        Assert.Equal(start, vma.Start);
        Assert.Equal(start.Add(2 * M2), vma.End);
        Assert.Equal(start.Value >> 12, vma.PageOffset);
        Assert.False(Pde(space, start.Value).IsLeaf);
        for (int i = 0; i < 512; i++)
        {
            PageTableEntry pte = Pte(space, start.Value + ((ulong)i * K4));
            Assert.True(pte.IsPresent && pte.IsWritable && pte.IsDirty && pte.IsAccessed);
            Assert.Equal(folio.Address.Add((ulong)i * K4), pte.Address);
            Assert.Equal(1, folio.PageMapCount(i));
        }

        Assert.Equal(512, folio.RefCount);
        Assert.Equal(512, folio.MapCount);
        Assert.Equal(0, folio.EntireMapCount);
        Assert.False(folio.IsOnDeferredSplitQueue);
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpSplitPmd));
        // The unmap of the moved-away source freed its page tables (free_pgtables): no VMA is left near s_away.
        Assert.Null(AddressSpaceTests.Entry(space, s_away.Value, PagingLevel.Pt));
        Assert.Equal(0x5A, ReadByte(space, start.Add((marked * K4) + 9)));
    }

    [Fact]
    public void A_whole_aligned_2_MiB_move_keeps_the_pmd_leaf_and_its_folio()
    {
        (AddressSpace space, VirtualAddress start, Folio folio) = MappedThp();
        space.Node.Memory.GetWritableFrame(folio.HeadFrame + 300)[17] = 0xC3;
        Assert.Equal(s_away, space.Remap(start, M2, M2, MoveTo, s_away));

        PageTableEntry pde = Pde(space, s_away.Value);
        Assert.True(pde.IsLeaf && pde.IsWritable && pde.IsDirty);
        Assert.Equal(folio.Address, pde.Address);
        Assert.Equal(0UL, AddressSpaceTests.Entry(space, start.Value, PagingLevel.Pd));
        Assert.Equal(0, space.Counters.Get(VmEvent.ThpSplitPmd));
        Assert.Equal(1, folio.RefCount);
        Assert.Equal(1, folio.EntireMapCount);
        Assert.Null(space.Vmas.Find(start));
        Assert.Equal(s_away.Add(M2), space.Vmas.Find(s_away)!.End);
        Assert.Equal(0xC3, ReadByte(space, s_away.Add((300 * K4) + 17)));

        // Moved back, it is still one PMD leaf, the VMAs merge again, and the deposited table came along: unmapping frees it.
        Assert.Equal(start, space.Remap(s_away, M2, M2, MoveTo, start));
        Assert.True(Pde(space, start.Value).IsLeaf);
        Assert.Single(space.Vmas.All);
        Assert.Equal(0, space.Counters.Get(VmEvent.ThpSplitPmd));
        ulong beforeUnmap = space.Node.Buddy.FreeFrames;
        space.Unmap(start, M2);
        Assert.Equal(beforeUnmap + 513, space.Node.Buddy.FreeFrames);
    }

    [Fact]
    public void Shrinking_unmaps_the_tail_and_frees_its_thp()
    {
        (AddressSpace space, VirtualAddress start, _) = MappedThp();
        Assert.Equal(FaultAction.MappedHugePage, space.Access(start.Add(M2), AccessKind.Write).Fault);
        ulong free = space.Node.Buddy.FreeFrames;

        Assert.Equal(start, space.Remap(start, 2 * M2, M2));

        Vma vma = Assert.Single(space.Vmas.All);
        Assert.Equal(start.Add(M2), vma.End);
        Assert.Equal(free + 513, space.Node.Buddy.FreeFrames);
        Assert.Equal(0UL, AddressSpaceTests.Entry(space, start.Value + M2, PagingLevel.Pd));
        Assert.True(Pde(space, start.Value).IsLeaf);
    }

    [Fact]
    public void Growing_extends_the_vma_in_place_when_the_range_after_it_is_free()
    {
        AddressSpace space = AddressSpaceTests.Create(s_always);
        VirtualAddress above = space.Map(M2, Rw);
        VirtualAddress start = space.Map(M2, Rw);
        Assert.Equal(start.Add(M2), above);
        space.Unmap(above, M2);

        Assert.Equal(start, space.Remap(start, M2, 2 * M2));

        Vma vma = Assert.Single(space.Vmas.All);
        Assert.Equal(start, vma.Start);
        Assert.Equal(start.Add(2 * M2), vma.End);
        Assert.Equal(start.Value >> 12, vma.PageOffset);
        Assert.Equal(FaultAction.MappedHugePage, space.Access(start.Add(M2), AccessKind.Write).Fault);
    }

    [Fact]
    public void Growing_moves_when_the_range_after_it_is_taken_and_may_move()
    {
        AddressSpace space = AddressSpaceTests.Create(s_always);
        VirtualAddress above = space.Map(M2, Protection.Read);
        VirtualAddress start = space.Map(M2, Rw);
        Assert.Equal(start.Add(M2), above);
        Assert.Equal(FaultAction.MappedHugePage, space.Access(start, AccessKind.Write).Fault);
        Folio folio = space.Node.FolioOf(Pde(space, start.Value).Address.FrameNumber);

        Assert.Throws<InvalidOperationException>(() => space.Remap(start, M2, 2 * M2));
        Assert.Equal(2, space.Vmas.Count);

        VirtualAddress moved = space.Remap(start, M2, 2 * M2, RemapFlags.MayMove);

        Assert.NotEqual(start, moved);
        Assert.Null(space.Vmas.Find(start));
        Vma vma = space.Vmas.Find(moved)!;
        Assert.Equal(moved.Add(2 * M2), vma.End);
        Assert.Equal(start.Value >> 12, vma.PageOffset);
        Assert.NotNull(space.Vmas.Find(above));
        Assert.True(Pde(space, moved.Value).IsLeaf);
        Assert.Equal(folio.Address, Pde(space, moved.Value).Address);
        Assert.Equal(0, space.Counters.Get(VmEvent.ThpSplitPmd));
        Assert.Equal(1, folio.RefCount);
    }

    [Fact]
    public void A_whole_thp_moved_to_an_unaligned_address_is_split_and_its_ptes_moved_in_order()
    {
        (AddressSpace space, VirtualAddress start, Folio folio) = MappedThp();
        VirtualAddress target = s_away.Add(K4);

        Assert.Equal(target, space.Remap(start, M2, M2, MoveTo, target));

        Assert.Equal(1, space.Counters.Get(VmEvent.ThpSplitPmd));
        for (int i = 0; i < 512; i++)
        {
            Assert.Equal(folio.Address.Add((ulong)i * K4), Pte(space, target.Value + ((ulong)i * K4)).Address);
        }

        // The source's page table (the deposited one the split installed) is freed with the source VMA.
        Assert.Null(AddressSpaceTests.Entry(space, start.Value, PagingLevel.Pt));
        Assert.Equal(512, folio.RefCount);
        Assert.Equal(512, folio.MapCount);
        Assert.Equal(0, folio.EntireMapCount);
        Assert.False(folio.IsOnDeferredSplitQueue);
    }

    [Fact]
    public void A_whole_aligned_page_table_moves_as_one_pde()
    {
        AddressSpace space = AddressSpaceTests.Create(new ThpSettings { Enabled = ThpEnabled.Never });
        VirtualAddress start = space.Map(2 * M2, Rw);
        Assert.Equal(0UL, start.Value & (M2 - 1));
        Assert.Equal(FaultAction.MappedPage, space.Access(start.Add(5 * K4), AccessKind.Write).Fault);
        PageTableEntry pde = Pde(space, start.Value);
        Folio page = space.Node.FolioOf(Pte(space, start.Value + (5 * K4)).Address.FrameNumber);

        Assert.Equal(s_away, space.Remap(start, M2, M2, MoveTo, s_away));

        Assert.Equal(pde.Raw, Pde(space, s_away.Value).Raw);
        Assert.Equal(0UL, AddressSpaceTests.Entry(space, start.Value, PagingLevel.Pd));
        Assert.Equal(page.Address, Pte(space, s_away.Value + (5 * K4)).Address);
        Assert.Equal(1, page.RefCount);
        Assert.Equal(1, page.MapCount);
    }

    [Fact]
    public void A_page_table_left_empty_at_the_destination_is_freed_by_the_unmap_and_the_thp_moves_whole()
    {
        (AddressSpace space, VirtualAddress start, Folio folio) = MappedThp();
        // A page of the second THP moved to s_away builds a page table there (splitting that THP); the unmap frees it
        // (free_pgtables), so the destination PMD is none when the whole THP moves there.
        Assert.Equal(FaultAction.MappedHugePage, space.Access(start.Add(M2), AccessKind.Write).Fault);
        space.Remap(start.Add(M2), K4, K4, MoveTo, s_away);
        Assert.True(Pde(space, s_away.Value).IsPresent);
        space.Unmap(s_away, K4);
        Assert.False(Pde(space, s_away.Value).IsPresent);

        space.Remap(start, M2, M2, MoveTo, s_away);

        Assert.True(Pde(space, s_away.Value).IsLeaf);
        Assert.Equal(folio.Address, Pde(space, s_away.Value).Address);
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpSplitPmd));
    }

    [Fact]
    public void The_huge_zero_page_moves_whole_or_splits_into_zero_page_ptes()
    {
        AddressSpace space = AddressSpaceTests.Create(s_always);
        VirtualAddress start = space.Map(2 * M2, Rw);
        Assert.Equal(FaultAction.MappedHugeZeroPage, space.Access(start, AccessKind.Read).Fault);
        Assert.Equal(FaultAction.MappedHugeZeroPage, space.Access(start.Add(M2), AccessKind.Read).Fault);

        space.Remap(start, M2, M2, MoveTo, s_away);
        space.Remap(start.Add(M2 + K4), K4, K4, MoveTo, s_away.Add(8 * M2));

        Assert.Equal(space.HugeZeroPage!.Value.Address, Pde(space, s_away.Value).Address);
        Assert.True(Pde(space, s_away.Value).IsLeaf);
        Assert.Equal(space.ZeroPage.Address, Pte(space, s_away.Value + (8 * M2)).Address);
        Assert.False(Pte(space, s_away.Value + (8 * M2)).IsWritable);
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpSplitPmd));
        Assert.Equal(FaultAction.CopiedZeroPage, space.Access(s_away.Add(8 * M2), AccessKind.Write).Fault);
    }

    [Fact]
    public void A_fixed_move_that_shrinks_unmaps_the_source_tail_and_the_destination_first()
    {
        (AddressSpace space, VirtualAddress start, Folio folio) = MappedThp();
        VirtualAddress other = space.Map(M2, Rw);
        Assert.Equal(FaultAction.MappedHugePage, space.Access(other, AccessKind.Write).Fault);
        ulong otherFrame = Pde(space, other.Value).Address.FrameNumber;

        Assert.Equal(other, space.Remap(start, 2 * M2, M2, MoveTo, other));

        Assert.True((space.Node.Frames.Describe(otherFrame).Flags & FrameFlags.Free) != 0);
        Assert.Equal(folio.Address, Pde(space, other.Value).Address);
        Assert.Null(space.Vmas.Find(start));
        Assert.Null(space.Vmas.Find(start.Add(M2)));
        Assert.Equal(other.Add(M2), space.Vmas.Find(other)!.End);
        Assert.Equal(start.Value >> 12, space.Vmas.Find(other)!.PageOffset);
    }

    [Fact]
    public void Refusals_change_nothing()
    {
        (AddressSpace space, VirtualAddress start, Folio folio) = MappedThp();

        Assert.Throws<ArgumentException>(() => space.Remap(start, K4, K4, (RemapFlags)4));
        Assert.Throws<ArgumentException>(() => space.Remap(start, K4, K4, RemapFlags.Fixed, s_away));
        Assert.Throws<ArgumentException>(() => space.Remap(start, K4, K4, MoveTo));
        Assert.Throws<ArgumentException>(() => space.Remap(start, K4, K4, RemapFlags.MayMove, s_away));
        Assert.Throws<ArgumentException>(() => space.Remap(start.Add(1), K4, K4));
        Assert.Throws<ArgumentException>(() => space.Remap(start, K4, 0));
        Assert.Throws<ArgumentException>(() => space.Remap(start, 0, K4));
        Assert.Throws<ArgumentException>(() => space.Remap(start, K4, 3));
        Assert.Throws<ArgumentException>(() => space.Remap(start, K4, K4, MoveTo, s_away.Add(1)));
        Assert.Throws<ArgumentException>(() => space.Remap(start, 2 * K4, 2 * K4, MoveTo, start.Add(K4)));
        Assert.Throws<ArgumentException>(() => space.Remap(start, K4, K4, MoveTo, start));
        Assert.Throws<InvalidOperationException>(() => space.Remap(s_away, K4, 2 * K4, RemapFlags.MayMove));
        Assert.Throws<InvalidOperationException>(() => space.Remap(start, 2 * M2 + K4, 3 * M2, RemapFlags.MayMove));
        Assert.Throws<InvalidOperationException>(() => space.Remap(start, 2 * M2 + K4, 2 * M2 + K4, MoveTo, s_away));

        Assert.Single(space.Vmas.All);
        Assert.True(Pde(space, start.Value).IsLeaf);
        Assert.Equal(1, folio.RefCount);
        Assert.Equal(0, space.Counters.Get(VmEvent.ThpSplitPmd));
    }
}
