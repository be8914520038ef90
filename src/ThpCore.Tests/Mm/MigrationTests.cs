using System;
using System.Collections.Generic;
using System.Linq;
using ThpCore.Diagnostics;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;
using Xunit;

namespace ThpCore.Tests.Mm;

public sealed class MigrationTests
{
    private const ulong K4 = ReverseMapTests.K4;
    private const ulong M2 = ReverseMapTests.M2;
    private const ulong AddressBits = 0x000F_FFFF_FFFF_F000;

    private static ulong Raw(AddressSpace space, ulong va, PagingLevel level) => ReverseMapTests.Raw(space, va, level);

    private static void Store(AddressSpace space, VirtualAddress va, ulong value) => ReverseMapTests.Store(space, va, value);

    private static ulong Load(AddressSpace space, VirtualAddress va) => ReverseMapTests.Load(space, va);

    private static long Events(AddressSpace space, VmEvent e) => space.Counters.Get(e);

    // Everything a refusal must leave alone: the entries at addresses, the folio's counts and the node's free frames.
    private static string Snapshot(AddressSpace[] spaces, ulong[] addresses, Folio folio) =>
        string.Join(",", spaces.SelectMany(s => addresses.Select(a => $"{Raw(s, a, PagingLevel.Pd):x}/{Raw(s, a, PagingLevel.Pt):x}")))
        + $";{folio.RefCount},{folio.MapCount},{folio.EntireMapCount},{folio.IsAnonExclusive(0)};{folio.Node.Buddy.FreeFrames}";

    [Fact]
    public void An_order_0_page_moves_with_its_bytes_and_PTE_bits_and_the_old_frame_is_freed()
    {
        AddressSpace space = AddressSpaceTests.Create(ReverseMapTests.Never);
        VirtualAddress start = space.Map(4 * K4, ReverseMapTests.Rw);
        Store(space, start.Add(K4 + 8), 0x1234_5678);
        ulong before = Raw(space, start.Value + K4, PagingLevel.Pt);
        Folio old = space.Node.FolioOf((before & AddressBits) >> 12);
        ulong free = space.Node.Buddy.FreeFrames;

        MigrationResult result = space.Migrate(start.Add(K4 + 100));

        Assert.Equal(MigrationStatus.Migrated, result.Status);
        Assert.Equal(old.Address, result.OldAddress);
        Assert.NotEqual(result.OldAddress, result.NewAddress);
        Assert.Equal(1, result.PagesMigrated);
        ulong after = Raw(space, start.Value + K4, PagingLevel.Pt);
        Assert.Equal(result.NewAddress.Value, after & AddressBits);
        Assert.Equal(before & ~AddressBits, after & ~AddressBits); // P, R/W, U/S, A, D, XD as before
        Folio copy = space.Node.FolioOf(result.NewAddress.FrameNumber);
        Assert.Equal((1, 1, true, true), (copy.RefCount, copy.MapCount, copy.IsAnonExclusive(0), copy.IsAnon));
        Assert.False(space.Node.TryGetFolio(result.OldAddress, out _));
        Assert.Equal(0x1234_5678UL, Load(space, start.Add(K4 + 8)));
        Assert.Equal(free, space.Node.Buddy.FreeFrames);
        Assert.Equal((1L, 0L, 0L), (Events(space, VmEvent.PgMigrateSuccess), Events(space, VmEvent.PgMigrateFail), Events(space, VmEvent.ThpMigrationSuccess)));
    }

    [Fact]
    public void A_lazyfree_page_stays_lazyfree_and_clean_after_migration()
    {
        AddressSpace space = AddressSpaceTests.Create(ReverseMapTests.Never);
        VirtualAddress start = space.Map(K4, ReverseMapTests.Rw);
        Store(space, start.Add(8), 42);
        space.Advise(start, K4, Advice.Free);
        Folio before = space.Node.FolioOf((Raw(space, start.Value, PagingLevel.Pt) & AddressBits) >> 12);
        Assert.False(before.IsSwapBacked);

        MigrationResult result = space.Migrate(start);

        Assert.Equal(MigrationStatus.Migrated, result.Status);
        Folio copy = space.Node.FolioOf(result.NewAddress.FrameNumber);
        Assert.False(copy.IsSwapBacked);
        Assert.False(copy.IsDirty);
    }

    [Fact]
    public void A_PMD_mapped_THP_moves_as_one_PMD_and_unwritten_frames_stay_unmaterialised()
    {
        (AddressSpace space, VirtualAddress start, Folio old) = ReverseMapTests.MappedThp();
        ulong before = Raw(space, start.Value, PagingLevel.Pd);
        ulong free = space.Node.Buddy.FreeFrames;
        long materialised = space.Node.Memory.MaterializedFrames;

        MigrationResult result = space.Migrate(start.Add(300 * K4));

        Assert.Equal(MigrationStatus.Migrated, result.Status);
        Assert.Equal(512, result.PagesMigrated);
        ulong after = Raw(space, start.Value, PagingLevel.Pd);
        Assert.Equal(result.NewAddress.Value, after & AddressBits);
        Assert.Equal(before & ~AddressBits, after & ~AddressBits);
        Folio copy = space.Node.FolioOf(result.NewAddress.FrameNumber);
        Assert.Equal((9, 1, 1, 1, true), (copy.Order, copy.RefCount, copy.MapCount, copy.EntireMapCount, copy.IsAnonExclusive(0)));
        Assert.Equal(new[] { new FolioMapping(space, start, PagingLevel.Pd, 0) }, space.FindMappings(copy));
        for (ulong i = 0; i < 8; i++)
        {
            Assert.Equal(0xA0 + i, Load(space, start.Add(i * K4)));
        }

        Assert.Equal(free, space.Node.Buddy.FreeFrames);
        Assert.Equal(materialised, space.Node.Memory.MaterializedFrames);
        Assert.Equal((512L, 1L, 0L), (Events(space, VmEvent.PgMigrateSuccess), Events(space, VmEvent.ThpMigrationSuccess), Events(space, VmEvent.ThpSplitPmd)));
    }

    [Fact]
    public void A_PTE_mapped_THP_after_an_mprotect_split_moves_every_PTE_in_order_with_its_own_rights()
    {
        (AddressSpace space, VirtualAddress start, Folio old) = ReverseMapTests.MappedThp();
        space.Protect(start.Add(4 * K4), K4, Protection.Read);
        ulong[] before = Enumerable.Range(0, 512).Select(i => Raw(space, start.Value + ((ulong)i * K4), PagingLevel.Pt)).ToArray();
        ulong free = space.Node.Buddy.FreeFrames;

        MigrationResult result = space.Migrate(start);

        Assert.Equal(MigrationStatus.Migrated, result.Status);
        Folio copy = space.Node.FolioOf(result.NewAddress.FrameNumber);
        for (int i = 0; i < 512; i++)
        {
            ulong pte = Raw(space, start.Value + ((ulong)i * K4), PagingLevel.Pt);
            Assert.Equal(result.NewAddress.Value + ((ulong)i * K4), pte & AddressBits);
            Assert.Equal(before[i] & ~AddressBits, pte & ~AddressBits);
            Assert.Equal(1, copy.PageMapCount(i));
            Assert.True(copy.IsAnonExclusive(i));
        }

        Assert.Equal(0UL, before[4] & 2); // the mprotected page stayed read-only
        Assert.Equal((512, 512, 0), (copy.RefCount, copy.MapCount, copy.EntireMapCount));
        Assert.Equal(0xA4UL, Load(space, start.Add(4 * K4)));
        Assert.Equal(free, space.Node.Buddy.FreeFrames);
    }

    [Fact]
    public void A_THP_shared_after_fork_is_rewritten_in_both_and_copy_on_write_still_separates_them()
    {
        (AddressSpace parent, VirtualAddress start, Folio old) = ReverseMapTests.MappedThp();
        AddressSpace child = parent.Fork();
        ulong parentBefore = Raw(parent, start.Value, PagingLevel.Pd);
        ulong childBefore = Raw(child, start.Value, PagingLevel.Pd);
        ulong free = parent.Node.Buddy.FreeFrames;

        MigrationResult result = child.Migrate(start.Add(K4));

        Assert.Equal(MigrationStatus.Migrated, result.Status);
        Folio copy = parent.Node.FolioOf(result.NewAddress.FrameNumber);
        Assert.Equal(result.NewAddress.Value | (parentBefore & ~AddressBits), Raw(parent, start.Value, PagingLevel.Pd));
        Assert.Equal(result.NewAddress.Value | (childBefore & ~AddressBits), Raw(child, start.Value, PagingLevel.Pd));
        Assert.Equal((2, 2, 2, false), (copy.RefCount, copy.MapCount, copy.EntireMapCount, copy.IsAnonExclusive(0)));
        Assert.Equal(free, parent.Node.Buddy.FreeFrames);

        Store(child, start.Add(2 * K4), 0xC2);
        Store(parent, start.Add(2 * K4), 0xD2);
        Assert.Equal(0xC2UL, Load(child, start.Add(2 * K4)));
        Assert.Equal(0xD2UL, Load(parent, start.Add(2 * K4)));
        Assert.Equal(0xA3UL, Load(child, start.Add(3 * K4)));
        Assert.Equal(0xA3UL, Load(parent, start.Add(3 * K4)));
    }

    [Fact]
    public void While_unmapped_every_mapping_is_a_non_present_migration_entry_of_the_right_kind_and_faults_on_it_throw()
    {
        (AddressSpace parent, VirtualAddress start, Folio old) = ReverseMapTests.MappedThp();
        VirtualAddress small = parent.Map(K4, ReverseMapTests.Rw);
        AddressSpace child = parent.Fork();
        int calls = 0;

        MigrationResult result = parent.Migrate(start, new MigrationOptions
        {
            WhileUnmapped = progress =>
            {
                calls++;
                Assert.Equal(old, progress.Source);
                Assert.Equal(2, progress.Entries.Count);
                foreach ((AddressSpace space, bool young) in new[] { (parent, true), (child, false) })
                {
                    ulong raw = Raw(space, start.Value, PagingLevel.Pd);
                    Assert.False(SwapEntry.PmdPresent(raw));
                    Assert.True(SwapEntry.TryFromPmdRaw(raw, out SwapEntry entry, out _));
                    Assert.Equal((MigrationKind.Read, old.HeadFrame, young, true), (entry.MigrationKind, entry.Pfn, entry.IsMigrationYoung, entry.IsMigrationDirty));
                }

                Assert.Equal((1, 0), (old.RefCount, old.MapCount)); // only the isolation reference
                Assert.Throws<InvalidOperationException>(() => child.Access(start.Add(K4), AccessKind.Read));
                Assert.Throws<InvalidOperationException>(() => parent.Migrate(small));
            },
        });

        Assert.Equal(1, calls);
        Assert.Equal(MigrationStatus.Migrated, result.Status);
        Assert.Equal(0xA1UL, Load(child, start.Add(K4)));

        // An exclusive writable page: a Write entry, young and dirty; the PTE is restored writable and exclusive.
        Store(parent, small, 5);
        parent.Migrate(small, new MigrationOptions
        {
            WhileUnmapped = progress =>
            {
                Assert.True(SwapEntry.TryFromPteRaw(Raw(parent, small.Value, PagingLevel.Pt), out SwapEntry entry, out _));
                Assert.Equal((MigrationKind.Write, true, true), (entry.MigrationKind, entry.IsMigrationYoung, entry.IsMigrationDirty));
            },
        });
        Assert.Equal(5UL, Load(parent, small));
    }

    [Fact]
    public void A_pinned_folio_is_refused_with_Pinned_and_nothing_changes()
    {
        (AddressSpace space, VirtualAddress start, Folio folio) = ReverseMapTests.MappedThp();
        using PinHandle pin = space.Pin(start.Add(K4), K4, write: true);
        string before = Snapshot(new[] { space }, new[] { start.Value }, folio);

        MigrationResult result = space.Migrate(start);

        Assert.Equal(MigrationStatus.Pinned, result.Status);
        Assert.Equal(before, Snapshot(new[] { space }, new[] { start.Value }, folio));
        Assert.Equal((0L, 512L, 1L), (Events(space, VmEvent.PgMigrateSuccess), Events(space, VmEvent.PgMigrateFail), Events(space, VmEvent.ThpMigrationFail)));

        AddressSpace small = AddressSpaceTests.Create(ReverseMapTests.Never);
        VirtualAddress page = small.Map(K4, ReverseMapTests.Rw);
        using PinHandle smallPin = small.Pin(page, K4, write: true);
        Folio pinned = small.Node.FolioOf(smallPin.Pages[0].FrameNumber);
        string smallBefore = Snapshot(new[] { small }, new[] { page.Value }, pinned);
        Assert.Equal(MigrationStatus.Pinned, small.Migrate(page).Status);
        Assert.Equal(smallBefore, Snapshot(new[] { small }, new[] { page.Value }, pinned));
    }

    [Fact]
    public void An_extra_reference_is_refused_with_UnexpectedReferences_and_nothing_changes_until_it_is_dropped()
    {
        (AddressSpace parent, VirtualAddress start, Folio folio) = ReverseMapTests.MappedThp();
        AddressSpace child = parent.Fork();
        folio.Get();
        AddressSpace[] both = { parent, child };
        string before = Snapshot(both, new[] { start.Value }, folio);

        MigrationResult result = child.Migrate(start);

        Assert.Equal(MigrationStatus.UnexpectedReferences, result.Status);
        Assert.Equal(folio.Address, result.OldAddress);
        Assert.Equal(before, Snapshot(both, new[] { start.Value }, folio));
        Assert.Equal((512L, 1L), (Events(parent, VmEvent.PgMigrateFail), Events(parent, VmEvent.ThpMigrationFail)));

        folio.Put();
        Assert.Equal(MigrationStatus.Migrated, child.Migrate(start).Status);
    }

    [Fact]
    public void Nothing_mapped_or_a_zero_page_is_not_migrated()
    {
        AddressSpace space = AddressSpaceTests.Create(ReverseMapTests.Always);
        VirtualAddress start = space.Map(2 * M2, ReverseMapTests.Rw);
        Assert.Equal(MigrationStatus.NotMapped, space.Migrate(start).Status);
        Assert.Equal(MigrationStatus.NotMapped, space.Migrate(VirtualAddress.FromRaw(0x1000_0000)).Status);
        space.Access(start, AccessKind.Read);
        Assert.Equal(MigrationStatus.NotAnonymous, space.Migrate(start).Status);
        Assert.Equal(0L, Events(space, VmEvent.PgMigrateFail));
    }

    [Fact]
    public void A_partially_mapped_THP_on_the_deferred_split_queue_is_split_and_its_mapped_pages_migrated()
    {
        (AddressSpace space, VirtualAddress start, Folio old) = ReverseMapTests.MappedThp();
        space.Unmap(start.Add(256 * K4), 256 * K4);
        Assert.True(old.IsOnDeferredSplitQueue && old.IsPartiallyMapped);
        ulong free = space.Node.Buddy.FreeFrames;

        MigrationResult result = space.Migrate(start.Add(K4));

        Assert.Equal(MigrationStatus.Split, result.Status);
        Assert.Equal(512, result.PagesMigrated); // 256 moved + 256 freed unmapped
        Assert.Equal(0, space.Node.DeferredSplitCount);
        for (ulong i = 0; i < 256; i++)
        {
            ulong pte = Raw(space, start.Value + (i * K4), PagingLevel.Pt);
            Folio page = space.Node.FolioOf((pte & AddressBits) >> 12);
            Assert.Equal((0, 1, 1, true), (page.Order, page.RefCount, page.MapCount, page.IsAnonExclusive(0)));
            Assert.NotEqual(old.HeadFrame + i, page.HeadFrame); // moved (possibly into a frame the split or an earlier move freed)
        }

        Assert.Equal(0xA7UL, Load(space, start.Add(7 * K4)));
        Assert.Equal(free + 256, space.Node.Buddy.FreeFrames);
        Assert.Equal((1L, 1L, 0L, 512L), (Events(space, VmEvent.ThpMigrationSplit), Events(space, VmEvent.ThpMigrationFail), Events(space, VmEvent.ThpMigrationSuccess), Events(space, VmEvent.PgMigrateSuccess)));
    }

    [Fact]
    public void A_queued_but_not_partially_mapped_THP_migrates_whole_and_leaves_the_queue()
    {
        (AddressSpace space, VirtualAddress start, Folio old) = ReverseMapTests.MappedThp();
        old.QueueForDeferredSplit(partiallyMapped: false);

        MigrationResult result = space.Migrate(start);

        Assert.Equal(MigrationStatus.Migrated, result.Status);
        Folio copy = space.Node.FolioOf(result.NewAddress.FrameNumber);
        Assert.False(copy.IsOnDeferredSplitQueue);
        Assert.Equal(0, space.Node.DeferredSplitCount);
    }

    [Fact]
    public void Without_an_order_9_block_a_THP_is_split_and_its_pages_migrated_and_without_any_frame_it_is_refused()
    {
        (AddressSpace space, VirtualAddress start, Folio old) = ReverseMapTests.MappedThp();
        MemoryNode node = space.Node;
        List<Folio> filler = new();
        while (node.TryAllocateFolio(0, out Folio f))
        {
            filler.Add(f);
        }

        // Free every other filler frame: 600 frames, no two adjacent, so no order-9 block.
        foreach (Folio f in filler.Where(f => f.HeadFrame % 2 == 0).Take(600))
        {
            f.Put();
        }

        MigrationResult result = space.Migrate(start);

        Assert.Equal(MigrationStatus.Split, result.Status);
        Assert.Equal((1L, 1L, 1L, 512L), (Events(space, VmEvent.ThpMigrationSplit), Events(space, VmEvent.ThpMigrationFail), Events(space, VmEvent.ThpSplitPmd), Events(space, VmEvent.PgMigrateSuccess)));
        for (ulong i = 0; i < 512; i++)
        {
            ulong frame = (Raw(space, start.Value + (i * K4), PagingLevel.Pt) & AddressBits) >> 12;
            Assert.NotEqual(old.HeadFrame + i, frame);
        }

        Assert.Equal(0xA5UL, Load(space, start.Add(5 * K4)));

        // No frame at all: an order-0 page is refused and stays.
        while (node.TryAllocateFolio(0, out Folio f))
        {
            filler.Add(f);
        }

        ulong pte = Raw(space, start.Value, PagingLevel.Pt);
        Assert.Equal(MigrationStatus.OutOfMemory, space.Migrate(start).Status);
        Assert.Equal(pte, Raw(space, start.Value, PagingLevel.Pt));
        Assert.Equal(1L, Events(space, VmEvent.PgMigrateFail));
    }

    [Fact]
    public void A_THP_in_the_swap_cache_moves_its_slots_to_the_copy()
    {
        (AddressSpace space, VirtualAddress start, Folio old) = ReverseMapTests.MappedThp();
        space.AttachSwap(new SwapDevice(0, 4096));
        SwapOutResult swapped = space.SwapOut(start, keepInSwapCache: true);
        Assert.True(swapped.IsSwappedOut);
        Assert.Equal(0xA1UL, Load(space, start.Add(K4))); // refault one page from the swap cache

        MigrationResult result = space.Migrate(start.Add(K4));

        Assert.Equal(MigrationStatus.Migrated, result.Status);
        Folio copy = space.Node.FolioOf(result.NewAddress.FrameNumber);
        Assert.True(copy.IsSwapCache);
        Assert.Equal((513, 1), (copy.RefCount, copy.MapCount)); // 512 swap-cache references + one PTE
        Assert.True(space.TryGetSwapCacheFolio(swapped.FirstSlot + 6, out Folio cached));
        Assert.Equal(copy, cached);
        Assert.Equal(0xA6UL, Load(space, start.Add(6 * K4))); // a refault now maps the copy
        Assert.Equal(result.NewAddress.Value + (6 * K4), Raw(space, start.Value + (6 * K4), PagingLevel.Pt) & AddressBits);
    }
}
