using System;
using ThpCore.Diagnostics;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;
using Xunit;
using static ThpCore.Tests.Mm.MmFixtures;

namespace ThpCore.Tests.Mm;

/// <summary><see cref="AddressSpace.Lock"/> / <see cref="AddressSpace.Unlock"/> (mlock, munlock) and MAP_LOCKED, as Linux v6.12.</summary>
public sealed class MlockTests
{
    [Fact]
    public void Locking_a_writable_range_populates_it_with_private_writable_pages_and_splits_and_remerges_the_vmas()
    {
        AddressSpace space = AddressSpaceTests.Create(Never);
        VirtualAddress start = space.Map(8 * K4, Rw);

        space.Lock(start.Add(2 * K4), 3 * K4);

        Assert.Equal(3, space.Vmas.All.Count);
        Assert.Equal(VmaFlags.Anonymous | VmaFlags.Locked, space.Vmas.Find(start.Add(2 * K4))!.Flags);
        for (ulong page = 0; page < 8; page++)
        {
            PageTableEntry pte = Pte(space, start.Value + (page * K4));
            bool locked = page is >= 2 and < 5;
            Assert.Equal(locked, pte.IsPresent);
            if (locked)
            {
                Assert.True(pte.IsWritable && pte.IsDirty, $"{pte}");
                Folio folio = space.Node.FolioOf(pte.Address.FrameNumber);
                Assert.True(folio.IsAnon && folio.IsAnonExclusive(0));
            }
        }

        space.Unlock(start.Add(2 * K4), 3 * K4);
        Assert.Single(space.Vmas.All);
        Assert.True(Pte(space, start.Value + (3 * K4)).IsPresent); // munlock unmaps nothing
    }

    [Fact]
    public void Locking_4_KiB_of_a_PMD_mapped_THP_splits_the_PMD_and_unlocking_leaves_the_THP_PTE_mapped_in_order()
    {
        AddressSpace space = AddressSpaceTests.Create(Always);
        VirtualAddress start = space.Map(M2, Rw);
        Assert.Equal(PageSize.Size2M, space.Access(start, AccessKind.Write).PageSize);
        Folio thp = space.Node.FolioOf(Pde(space, start.Value).Address.FrameNumber);

        space.Lock(start.Add(100 * K4), K4);
        space.Unlock(start.Add(100 * K4), K4);

        Assert.Single(space.Vmas.All);
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpSplitPmd));
        AddressSpaceTests.AssertPteMappedInOrder(space, start, thp);
    }

    [Fact]
    public void Locking_a_THP_eligible_range_faults_in_whole_THPs()
    {
        AddressSpace space = AddressSpaceTests.Create(Always);
        VirtualAddress start = space.Map(2 * M2, Rw);

        space.Lock(start, 2 * M2);

        Assert.Equal(2, space.Counters.Get(VmEvent.ThpFaultAlloc));
        Assert.True(Pde(space, start.Value).IsPresent && Pde(space, start.Value + M2).IsPresent);
        Assert.Equal(2, space.Counters.Get(VmEvent.PgFault));
    }

    [Fact]
    public void A_read_only_range_gets_the_zero_page_and_PROT_NONE_gets_nothing()
    {
        AddressSpace space = AddressSpaceTests.Create(Never);
        VirtualAddress readOnly = space.Map(2 * K4, Protection.Read);
        VirtualAddress none = space.Map(2 * K4, Protection.None);

        space.Lock(readOnly, 2 * K4);
        space.Lock(none, 2 * K4);

        Assert.Equal(space.ZeroPage.HeadFrame, Pte(space, readOnly.Value + K4).Address.FrameNumber);
        Assert.False(Pte(space, none.Value).IsPresent);
        Assert.True((space.Vmas.Find(none)!.Flags & VmaFlags.Locked) != 0);
    }

    [Fact]
    public void A_locked_page_is_unevictable_and_madvise_of_a_locked_vma_is_EINVAL_until_unlocked()
    {
        AddressSpace space = AddressSpaceTests.Create(Never);
        space.AttachSwap(new SwapDevice(0, 1024));
        VirtualAddress start = space.Map(4 * K4, Rw);
        space.Lock(start, 4 * K4);

        Assert.Equal(SwapOutStatus.Mlocked, space.SwapOut(start).Status);
        foreach (Advice advice in new[] { Advice.DontNeed, Advice.Free, Advice.Cold, Advice.PageOut })
        {
            Assert.Contains("EINVAL", Assert.Throws<InvalidOperationException>(() => space.Advise(start, K4, advice)).Message, StringComparison.Ordinal);
        }

        Assert.True(Pte(space, start.Value).IsPresent);

        // Migration still moves a locked page (compact_unevictable_allowed = 1).
        Assert.Equal(MigrationStatus.Migrated, space.Migrate(start.Add(K4)).Status);

        space.Unlock(start, 4 * K4);
        Assert.Equal(SwapOutStatus.SwappedOut, space.SwapOut(start).Status);
    }

    [Fact]
    public void A_fork_child_does_not_inherit_the_lock()
    {
        AddressSpace parent = AddressSpaceTests.Create(Never);
        VirtualAddress start = parent.Map(4 * K4, Rw);
        parent.Lock(start, 4 * K4);

        AddressSpace child = parent.Fork();

        Assert.Equal(VmaFlags.Anonymous, child.Vmas.Find(start)!.Flags);
        Assert.Equal(VmaFlags.Anonymous | VmaFlags.Locked, parent.Vmas.Find(start)!.Flags);
        child.Advise(start, 4 * K4, Advice.DontNeed);
        Assert.True(Pte(parent, start.Value).IsPresent);
    }

    [Fact]
    public void MAP_LOCKED_maps_locked_and_populated()
    {
        AddressSpace space = AddressSpaceTests.Create(Never);
        VirtualAddress start = space.Map(3 * K4, Rw, mapFlags: MapFlags.Locked);

        Assert.Equal(VmaFlags.Anonymous | VmaFlags.Locked, space.Vmas.Find(start)!.Flags);
        Assert.True(Pte(space, start.Value + (2 * K4)).IsWritable);
    }

    [Fact]
    public void A_hole_is_ENOMEM_with_nothing_changed_and_running_out_of_frames_is_EAGAIN_with_the_range_locked()
    {
        AddressSpace space = AddressSpaceTests.Create(Never);
        VirtualAddress start = space.Map(4 * K4, Rw);
        space.Unmap(start.Add(2 * K4), K4);

        Assert.Contains("ENOMEM", Assert.Throws<InvalidOperationException>(() => space.Lock(start, 4 * K4)).Message, StringComparison.Ordinal);
        Assert.All(space.Vmas.All, v => Assert.Equal(VmaFlags.Anonymous, v.Flags));
        Assert.False(Pte(space, start.Value).IsPresent);

        var small = new AddressSpace(new MemoryNode(1UL << 20), Never);
        VirtualAddress big = small.Map(1UL << 20, Rw);
        Assert.Contains("EAGAIN", Assert.Throws<InvalidOperationException>(() => small.Lock(big, 1UL << 20)).Message, StringComparison.Ordinal);
        Assert.Equal(VmaFlags.Anonymous | VmaFlags.Locked, small.Vmas.Find(big)!.Flags);
        Assert.True(Pte(small, big.Value).IsPresent);
    }
}
