using System;
using System.Collections.Generic;
using ThpCore.Diagnostics;
using ThpCore.Memory;
using ThpCore.Paging;

namespace ThpCore.Mm;

public sealed partial class AddressSpace
{
    // Records, for every frame this space maps by a PTE (not a zero page), the family member to migrate it through.
    internal void CollectMappedHeads(AddressSpace representative, Dictionary<ulong, AddressSpace> owners)
    {
        foreach ((Vma vma, ulong chunk, ulong pde) in VmaChunks())
        {
            if (IsHugeLeaf(pde) || (pde & P) == 0)
            {
                continue;
            }

            PhysicalAddress table = PhysicalAddress.FromMaskedBits(pde & PageTableEntry.AddressMask4K);
            ulong to = Math.Min(vma.End.Value, chunk + HugeSize);
            for (ulong va = Math.Max(vma.Start.Value, chunk); va < to; va += PageSize4K)
            {
                ulong pte = Read(PteSlot(table, va));
                if (IsMapped(pte) && FrameOf(pte) != ZeroPage.HeadFrame)
                {
                    owners.TryAdd(FrameOf(pte), representative);
                }
            }
        }
    }

    // Compaction's migrate_pages for one isolated order-0 folio into the free page the free scanner chose. The
    // destination is consumed either way (freed on refusal). Counts pgmigrate_success / pgmigrate_fail here.
    internal bool MigrateForCompaction(Folio folio, Folio destination)
    {
        IReadOnlyList<FolioMapping> mappings = FamilyEntries(folio, migrationEntries: false);
        if (mappings.Count != folio.MapCount || CheckMovable(folio, mappings) != MigrationStatus.Migrated)
        {
            destination.Put();
            Counters.Add(VmEvent.PgMigrateFail, folio.PageCount);
            return false;
        }

        folio.Get(); // the isolation reference
        if (!MigrateIsolated(folio, destination, mappings, options: null))
        {
            Counters.Add(VmEvent.PgMigrateFail, folio.PageCount);
            return false;
        }

        Counters.Add(VmEvent.PgMigrateSuccess, folio.PageCount);
        return true;
    }

    // vma_thp_gfp_mask: whether a THP fault's allocation may enter direct reclaim, and so direct compaction
    // (__GFP_DIRECT_RECLAIM). defer and defer+madvise only wake kcompactd for other VMAs: not modelled.
    private bool FaultMayCompact(Vma vma)
    {
        bool madvised = (vma.Flags & VmaFlags.HugePage) != 0;
        return Settings.Defrag switch
        {
            ThpDefrag.Always => true,
            ThpDefrag.DeferMadvise or ThpDefrag.Madvise => madvised,
            _ => false,
        };
    }

    // An order-9 allocation that may fall into direct compaction once when the free lists cannot serve it.
    private bool TryAllocateHuge(bool mayCompact, bool anon, out Folio folio)
    {
        if (Node.TryAllocateFolio(Folio.PmdOrder, out folio, anon))
        {
            return true;
        }

        return mayCompact && Compaction.TryDirect(Node, Folio.PmdOrder, Counters) && Node.TryAllocateFolio(Folio.PmdOrder, out folio, anon);
    }
}
