using System;
using System.Collections.Generic;
using ThpCore.Diagnostics;
using ThpCore.Internal;
using ThpCore.Memory;
using ThpCore.Paging;

namespace ThpCore.Mm;

/// <summary>Folio migration: moving an anonymous folio to other frames while it stays mapped everywhere.</summary>
/// <remarks>
/// <para>
/// <b>Linux.</b> <see cref="Migrate"/> is <c>migrate_pages</c> with <c>MIGRATE_SYNC</c> for one isolated folio, as
/// <c>move_pages(2)</c> or compaction drive it: <c>migrate_folio_unmap</c> allocates the destination
/// (<c>alloc_migration_target</c>, same order) and replaces every mapping by a migration entry
/// (<c>try_to_migrate_one</c>, <c>set_pmd_migration_entry</c>); <c>migrate_folio_move</c> checks the references
/// (<c>folio_expected_refs</c>), copies the bytes and the flags (<c>__migrate_folio</c>, <c>folio_migrate_flags</c>),
/// moves the swap-cache slots (<c>__folio_migrate_mapping</c>) and turns every migration entry into a mapping of the
/// new folio (<c>remove_migration_ptes</c>: <c>remove_migration_pte</c>, <c>remove_migration_pmd</c>); the old folio is
/// freed by the last put.
/// </para>
/// <para>
/// <b>Entries.</b> A writable entry becomes <see cref="MigrationKind.Write"/>, a read-only one of an anon-exclusive page
/// <see cref="MigrationKind.ReadExclusive"/>, any other <see cref="MigrationKind.Read"/>; the page stops being
/// anon-exclusive while the entry holds that fact. The entry keeps A and D (<c>make_migration_entry_young</c>/
/// <c>_dirty</c>: x86-64 has room for them unless the L1TF mitigation limits the swap offset, see below), and a
/// dirty entry marks the folio dirty. The new entry is built from the VMA's rights, as Linux builds it from
/// <c>vm_page_prot</c>: R/W only from a Write entry, XD unless executable, <c>PROT_NONE</c> kept, A only if young, D only if
/// dirty; the page is anon-exclusive again unless the entry was Read. A PMD stays a PMD, with its deposited table.
/// </para>
/// <para>
/// <b>Refusals</b> leave everything as it was. Linux checks the pin in <c>try_to_migrate_one</c> and the references after
/// unmapping, retries (<c>NR_MAX_MIGRATE_PAGES_RETRY</c>) and restores the entries it made; the model checks both before
/// unmapping, which ends in the same state (Linux may have set the folio's dirty flag on the way).
/// Counters: <c>pgmigrate_success</c> / <c>pgmigrate_fail</c> in pages, <c>thp_migration_success</c> /
/// <c>thp_migration_fail</c> / <c>thp_migration_split</c> per order-9 folio, as <c>migrate_pages</c> counts them.
/// </para>
/// </remarks>
public sealed partial class AddressSpace
{
    /// <summary>
    /// Migrates the anonymous folio mapped at <paramref name="address"/> (by a PTE or a PMD) to newly allocated frames of
    /// the same order, rewriting every mapping of it in this address space's family; see the remarks.
    /// </summary>
    /// <remarks>
    /// <para>
    /// A THP on the deferred-split queue and partially mapped is split first (<c>migrate_pages_batch</c>), and so is a
    /// THP for which no order-9 block is free (<c>-ENOMEM</c> → <c>try_split_folio</c>): its PMD mappings are split, the
    /// folio is split into order-0 folios (<c>thp_split_pmd</c>, <c>thp_split_page</c>, <c>thp_migration_split</c>, and
    /// <c>thp_migration_fail</c> because <c>migrate_pages_sync</c> counts a split THP as failed), and then each page is
    /// migrated, from the last page down to the head (the order <c>__split_huge_page</c> lists them). An unmapped page
    /// freed by the split counts in <c>pgmigrate_success</c>, as Linux finds it freed and reports it migrated. The first
    /// page with no frame to go to ends the pass (<c>-ENOMEM</c>: <c>pgmigrate_fail</c> + 1; the rest stay where they are).
    /// When the split is impossible (pinned, unexpected references) the THP is handled whole. A large folio in the swap
    /// cache is not split here (swap-cache splitting is not modelled): without an order-9 block it is refused.
    /// </para>
    /// <para>
    /// A migrated THP leaves the deferred-split queue and the copy is not queued (<c>__folio_migrate_mapping</c> calls
    /// <c>folio_unqueue_deferred_split</c> on the source, 6.8+). A folio in the swap cache moves its slots to the copy
    /// (its <c>PG_swapcache</c> and one reference per page). Bytes of frames never written stay unmaterialised.
    /// </para>
    /// </remarks>
    /// <param name="address">Any address in a page of the folio.</param>
    /// <param name="options">The in-flight callback; none when <see langword="null"/>.</param>
    /// <returns>What happened, with the old and new physical addresses.</returns>
    /// <exception cref="InvalidOperationException">A migration is already in flight in this family (a call from <see cref="MigrationOptions.WhileUnmapped"/>).</exception>
    public MigrationResult Migrate(VirtualAddress address, MigrationOptions? options = null)
    {
        // move_pages takes mmap_read_lock; other members' entries change under the node lock (their page-table locks),
        // and their walkers meet a non-present migration entry, fault and wait for the node lock.
        using LockScope locks = EnterRead(andNode: true);
        ThrowIfDisposed();
        if (_family.InFlight is InFlightMigration flight)
        {
            ThrowHelper.ThrowInvalidOperation($"The {flight.Source} is being migrated in this address-space family; a migration cannot start inside another one's callback (Linux: the folio is isolated, -EBUSY).");
        }

        if (Vmas.Find(address) is null || !TryFolioAt(address.Value, out Folio folio, out bool zero))
        {
            return new MigrationResult(MigrationStatus.NotMapped, default, default, 0);
        }

        if (zero || !folio.IsAnon)
        {
            return new MigrationResult(MigrationStatus.NotAnonymous, folio.Address, default, 0);
        }

        // migrate_pages_batch: the rare partially mapped folio on the deferred-split queue is split, not migrated whole.
        if (folio.Order == Folio.PmdOrder && folio.IsOnDeferredSplitQueue && folio.IsPartiallyMapped
            && TrySplitAndMigrate(folio, options, out MigrationResult splitResult))
        {
            return splitResult;
        }

        // migrate_folio_unmap: the destination is allocated before anything is unmapped.
        if (!Node.TryAllocateFolio(folio.Order, out Folio destination))
        {
            if (folio.Order == Folio.PmdOrder && !folio.IsSwapCache && TrySplitAndMigrate(folio, options, out splitResult))
            {
                return splitResult;
            }

            return Failed(folio, MigrationStatus.OutOfMemory);
        }

        IReadOnlyList<FolioMapping> mappings = FamilyEntries(folio, migrationEntries: false);
        MigrationStatus refusal = CheckMovable(folio, mappings);
        if (refusal != MigrationStatus.Migrated)
        {
            destination.Put();
            return Failed(folio, refusal);
        }

        folio.Get(); // folio_isolate_lru's reference
        if (!MigrateIsolated(folio, destination, mappings, options))
        {
            return Failed(folio, MigrationStatus.UnexpectedReferences);
        }

        Counters.Add(VmEvent.PgMigrateSuccess, folio.PageCount);
        if (folio.Order == Folio.PmdOrder)
        {
            Counters.Count(VmEvent.ThpMigrationSuccess);
        }

        return new MigrationResult(MigrationStatus.Migrated, folio.Address, destination.Address, folio.PageCount);
    }

    // The folio mapped at va, or the zero page / huge zero page (zero). False when nothing present is mapped there.
    private bool TryFolioAt(ulong va, out Folio folio, out bool zero)
    {
        folio = default;
        zero = false;
        if (!TryFindPde(va, out PhysicalAddress pdeSlot))
        {
            return false;
        }

        ulong pde = Read(pdeSlot);
        ulong frame;
        if (IsHugeLeaf(pde))
        {
            frame = (pde & PageTableEntry.AddressMask2M) >> 12;
            zero = IsHugeZero(pde);
        }
        else
        {
            ulong pte = (pde & P) == 0 ? 0 : Read(PteSlot(PhysicalAddress.FromMaskedBits(pde & PageTableEntry.AddressMask4K), va));
            if (!IsMapped(pte))
            {
                return false;
            }

            frame = FrameOf(pte);
            zero = frame == ZeroPage.HeadFrame;
        }

        folio = Node.FolioOf(frame);
        return true;
    }

    // try_to_migrate_one's pin check and folio_expected_refs, before anything changes.
    private static MigrationStatus CheckMovable(Folio folio, IReadOnlyList<FolioMapping> mappings)
    {
        if (mappings.Count != folio.MapCount)
        {
            ThrowHelper.ThrowInvalidOperation($"The reverse map found {mappings.Count} mappings of the {folio}, whose map count is {folio.MapCount}: it is mapped outside its address-space family.");
        }

        if (folio.MaybeDmaPinned)
        {
            foreach (FolioMapping mapping in mappings)
            {
                if (folio.IsAnonExclusive(mapping.PageIndex))
                {
                    // folio_try_share_anon_rmap_pte/_pmd refuses to unshare a page that may be pinned.
                    return MigrationStatus.Pinned;
                }
            }
        }

        return folio.RefCount == folio.MapCount + SwapCacheReferences(folio) ? MigrationStatus.Migrated : MigrationStatus.UnexpectedReferences;
    }

    private static int SwapCacheReferences(Folio folio) => folio.IsSwapCache ? folio.PageCount : 0;

    private MigrationResult Failed(Folio folio, MigrationStatus status)
    {
        Counters.Add(VmEvent.PgMigrateFail, folio.PageCount);
        if (folio.Order == Folio.PmdOrder)
        {
            Counters.Count(VmEvent.ThpMigrationFail);
        }

        return new MigrationResult(status, folio.Address, default, 0);
    }

    // migrate_folio_unmap + migrate_folio_move for a folio whose isolation reference the caller took (dropped here).
    // False when a reference appeared while it was unmapped: the entries are restored to the source (-EAGAIN path).
    private bool MigrateIsolated(Folio source, Folio destination, IReadOnlyList<FolioMapping> mappings, MigrationOptions? options)
    {
        foreach (FolioMapping mapping in mappings)
        {
            mapping.Space.InstallMigrationEntry(mapping, source);
        }

        InFlightMigration flight = _family.Begin(source, destination);
        bool moved;
        try
        {
            options?.WhileUnmapped?.Invoke(new MigrationProgress(source, destination, mappings));
        }
        finally
        {
            moved = source.RefCount == 1 + SwapCacheReferences(source);
            if (moved)
            {
                MoveFolio(source, destination);
            }

            RestoreMigrationEntries(source, moved ? destination : source);
            _family.End(flight);
            destination.Put(); // the allocation's reference: the copy keeps its mappings' (and the swap cache's)
            source.Put(); // the isolation reference: frees the source when moved
        }

        return moved;
    }

    // try_to_migrate_one (PTE) / set_pmd_migration_entry (PMD) for one mapping in this space.
    private void InstallMigrationEntry(FolioMapping mapping, Folio folio)
    {
        bool pmd = mapping.Level == PagingLevel.Pd;
        PhysicalAddress slot = EntrySlot(mapping);
        int index = mapping.PageIndex;
        bool exclusive = folio.IsAnonExclusive(index);

        // Clear the entry first (atomically: a walker of this space may be setting A/D on it), then
        // folio_try_share_anon_rmap_*: the page is no longer exclusive; the entry's kind says it was.
        ulong entry = Exchange(slot, 0);
        MigrationKind kind = (entry & RW) != 0 ? MigrationKind.Write : exclusive ? MigrationKind.ReadExclusive : MigrationKind.Read;
        if ((entry & D) != 0)
        {
            folio.SetDirty(true);
        }

        folio.SetAnonExclusive(index, false);
        SwapEntry migration = SwapEntry.Migration(kind, folio.HeadFrame + (ulong)index, young: (entry & A) != 0, dirty: (entry & D) != 0);
        Write(slot, pmd ? migration.ToPmdRaw() : migration.ToPteRaw());
        if (pmd)
        {
            folio.RemovePmdMapping();
        }
        else
        {
            folio.RemovePteMapping(index);
        }

        folio.Put();
    }

    // move_to_new_folio for an anonymous folio: bytes, flags, swap-cache slots; the source leaves the deferred-split queue.
    private void MoveFolio(Folio source, Folio destination)
    {
        for (int i = 0; i < source.PageCount; i++)
        {
            if (Node.Memory.IsMaterialized(source.HeadFrame + (ulong)i))
            {
                source.ReadPage(i).CopyTo(destination.GetWritablePage(i));
            }
        }

        if (source.IsLarge)
        {
            source.RemoveFromDeferredSplitQueue(); // __folio_migrate_mapping: folio_unqueue_deferred_split
        }

        if (source.IsSwapCache)
        {
            SwapDevice device = _swap ?? ThrowHelper.ThrowInvalidOperation<SwapDevice>($"The {source} is in a swap cache, but no swap device is attached.");
            device.MigrateSwapCache(source, destination);
        }

        destination.SetDirty(source.IsDirty);
        destination.SetLru(source.IsLru);
        destination.SetSwapBacked(source.IsSwapBacked); // __folio_migrate_mapping keeps a lazyfree folio lazyfree
    }

    // remove_migration_ptes: every migration entry naming a frame of source, wherever it is now, maps target.
    private void RestoreMigrationEntries(Folio source, Folio target)
    {
        foreach (FolioMapping mapping in FamilyEntries(source, migrationEntries: true))
        {
            mapping.Space.RestoreMigrationEntry(mapping, target);
        }
    }

    // remove_migration_pte / remove_migration_pmd for one entry of this space.
    private void RestoreMigrationEntry(FolioMapping mapping, Folio target)
    {
        bool pmd = mapping.Level == PagingLevel.Pd;
        PhysicalAddress slot = EntrySlot(mapping);
        ulong raw = Read(slot);
        Vma vma = Vmas.Find(mapping.Address) ?? ThrowHelper.ThrowInvalidOperation<Vma>($"The migration entry at {mapping.Address} has no VMA.");
        if (!TryDecodeMigration(raw, mapping.Level, out SwapEntry entry))
        {
            ThrowHelper.ThrowInvalidOperation($"The entry {ThrowHelper.Hex(raw)} at {mapping.Address} is not a migration entry.");
        }

        int index = mapping.PageIndex;
        ulong frame = pmd ? target.HeadFrame : target.HeadFrame + (ulong)index;
        ulong bits = Reprotect((frame << 12) | P | US | A | (pmd ? PS : 0), vma.Protection, zeroPage: entry.MigrationKind != MigrationKind.Write);
        if (!entry.IsMigrationYoung)
        {
            bits &= ~A;
        }

        if (entry.IsMigrationDirty && target.IsDirty)
        {
            bits |= D;
        }

        target.Get();
        if (pmd)
        {
            target.AddPmdMapping();
        }
        else
        {
            target.AddPteMapping(index);
        }

        if (entry.MigrationKind != MigrationKind.Read)
        {
            target.SetAnonExclusive(index, true);
        }

        Write(slot, bits);
    }

    // try_split_folio on a THP, then the split pages migrated one by one (migrate_pages' split_folios pass). False
    // when the folio cannot be split (pinned or unexpected references: can_split_folio), with nothing changed.
    private bool TrySplitAndMigrate(Folio folio, MigrationOptions? options, out MigrationResult result)
    {
        result = default;
        IReadOnlyList<FolioMapping> mappings = FamilyEntries(folio, migrationEntries: false);
        if (folio.MaybeDmaPinned || folio.RefCount != folio.MapCount + SwapCacheReferences(folio) || mappings.Count != folio.MapCount)
        {
            return false;
        }

        // split_folio → unmap_folio with TTU_SPLIT_HUGE_PMD: every PMD mapping becomes 512 PTEs first.
        foreach (FolioMapping mapping in mappings)
        {
            if (mapping.Level == PagingLevel.Pd)
            {
                mapping.Space.SplitHugePmdLocked(mapping.Address);
            }
        }

        PhysicalAddress old = folio.Address;
        folio.Get(); // the isolation reference, kept by the head through the split
        FolioSplitResult split = Node.TrySplitFolio(folio, extraReferences: 1, Counters);
        if (!split.Split)
        {
            ThrowHelper.ThrowInvalidOperation($"The split of the {folio} for migration was refused ({split.Refusal}) after its checks passed.");
        }

        Counters.Count(VmEvent.ThpMigrationSplit);
        Counters.Count(VmEvent.ThpMigrationFail);

        // The pages left after the split, last first and the head last (the order they are listed in).
        List<Folio> pages = new();
        for (int i = (1 << Folio.PmdOrder) - 1; i >= 0; i--)
        {
            if (Node.TryGetFolio(old.Add((ulong)i * PageSize4K), out Folio page) && page.HeadFrame == old.FrameNumber + (ulong)i)
            {
                pages.Add(page);
            }
        }

        int migrated = split.PagesFreed;
        for (int p = 0; p < pages.Count; p++)
        {
            Folio page = pages[p];
            bool head = page.HeadFrame == old.FrameNumber;
            if (head && page.RefCount == 1)
            {
                page.Put(); // unmapped: freed under the migration, counted as migrated
                migrated++;
                continue;
            }

            if (!Node.TryAllocateFolio(0, out Folio destination))
            {
                Counters.Count(VmEvent.PgMigrateFail);
                if (pages[^1].HeadFrame == old.FrameNumber)
                {
                    pages[^1].Put(); // the head's isolation reference, untried
                }

                Counters.Add(VmEvent.PgMigrateSuccess, migrated);
                result = new MigrationResult(MigrationStatus.OutOfMemory, old, default, migrated);
                return true;
            }

            if (!head)
            {
                page.Get();
            }

            MigrateIsolated(page, destination, FamilyEntries(page, migrationEntries: false), options);
            migrated++;
        }

        Counters.Add(VmEvent.PgMigrateSuccess, migrated);
        result = new MigrationResult(MigrationStatus.Split, old, default, migrated);
        return true;
    }

    // A fault found a migration entry: Linux's migration_entry_wait / pmd_migration_entry_wait sleeps until the
    // migration ends and retries. Here the migration runs on the caller's thread (or is over), so waiting would never end.
    private FaultAction? MigrationEntryWait(ulong raw, PagingLevel level)
    {
        if (!TryDecodeMigration(raw, level, out SwapEntry entry))
        {
            return ThrowHelper.ThrowInvalidOperation<FaultAction?>($"The {(level == PagingLevel.Pd ? "PMD" : "PTE")} {ThrowHelper.Hex(raw)} is neither present nor a migration entry (PMD swap entries are not modelled).");
        }

        if (_family.InFlight is InFlightMigration flight && flight.Covers(entry.Pfn))
        {
            return ThrowHelper.ThrowInvalidOperation<FaultAction?>(
                $"The fault found the {entry} of the {flight.Source} being migrated (thread {flight.ThreadId}); Linux's migration_entry_wait would sleep until the migration ends, which on this thread never happens.");
        }

        return ThrowHelper.ThrowInvalidOperation<FaultAction?>($"The fault found the {entry}, but no migration of that frame is in flight: a migration entry was left behind.");
    }

    private static bool IsMigrationPte(ulong pte) => TryDecodeMigration(pte, PagingLevel.Pt, out _);

    private static bool TryDecodeMigration(ulong raw, PagingLevel level, out SwapEntry entry) =>
        (level == PagingLevel.Pd ? SwapEntry.TryFromPmdRaw(raw, out entry, out _) : SwapEntry.TryFromPteRaw(raw, out entry, out _)) && entry.IsMigration;

    // The physical address of the PTE or PDE a reverse-map entry of this space names (its tables exist).
    private PhysicalAddress EntrySlot(FolioMapping mapping)
    {
        ulong va = mapping.Address.Value;
        TryFindPde(va, out PhysicalAddress pdeSlot);
        return mapping.Level == PagingLevel.Pd ? pdeSlot : PteSlot(PhysicalAddress.FromMaskedBits(Read(pdeSlot) & PageTableEntry.AddressMask4K), va);
    }
}
