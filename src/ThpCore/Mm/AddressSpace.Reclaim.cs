using System;
using System.Collections.Generic;
using ThpCore.Diagnostics;
using ThpCore.Memory;
using ThpCore.Paging;

namespace ThpCore.Mm;

/// <content>
/// <c>MADV_FREE</c>, <c>MADV_COLD</c> and <c>MADV_PAGEOUT</c> (<c>mm/madvise.c</c>), and the lazyfree discard of reclaim.
/// </content>
public sealed partial class AddressSpace
{
    // madvise_free_single_vma → madvise_free_pte_range (with madvise_free_huge_pmd) over [start, end).
    private void FreeRange(ulong start, ulong end) =>
        WalkAdvisedRange(
            start,
            end,
            onWholeHugeLeaf: (_, pdeSlot, pde, huge) =>
            {
                huge.SetDirty(false);
                Write(pdeSlot, pde & ~(A | D));
                MarkLazyFree(huge);
            },
            onPte: FreePte,
            afterTable: null);

    // The page-range walk of madvise_free_pte_range and madvise_cold_or_pageout_pte_range: a THP's PMD leaf wholly in
    // the range goes to onWholeHugeLeaf (chunk, PDE slot, PDE, folio); one partly in it is split with its folio
    // ("discard part-pages of THP", split_folio) and the PTE loop runs over the range's part of the new table; a THP
    // that looks shared and the huge zero page are skipped. onPte (table, va, end of this table's part) returns how
    // many PTEs it covered, 0 to look at va again; afterTable runs once the table's part is done.
    private void WalkAdvisedRange(ulong start, ulong end, Action<ulong, PhysicalAddress, ulong, Folio> onWholeHugeLeaf, Func<PhysicalAddress, ulong, ulong, ulong> onPte, Action? afterTable)
    {
        foreach ((ulong chunk, ulong from, ulong to, PhysicalAddress pdeSlot) in PdesOf(start, end))
        {
            ulong pde = Read(pdeSlot);
            if (IsHugeLeaf(pde))
            {
                Folio huge = Node.FolioOf((pde & PageTableEntry.AddressMask2M) >> 12);
                if (IsHugeZero(pde) || LikelyMappedShared(huge))
                {
                    continue;
                }

                if (from == chunk && to == chunk + HugeSize)
                {
                    onWholeHugeLeaf(chunk, pdeSlot, pde, huge);
                    continue;
                }

                if (!SplitPmdMappedFolio(huge, chunk, pdeSlot, pde))
                {
                    continue;
                }

                pde = Read(pdeSlot);
            }

            if ((pde & P) == 0)
            {
                continue;
            }

            PhysicalAddress table = PhysicalAddress.FromMaskedBits(pde & PageTableEntry.AddressMask4K);
            for (ulong va = from; va < to;)
            {
                va += onPte(table, va, to) * PageSize4K;
            }

            afterTable?.Invoke();
        }
    }

    // One step of madvise_free_pte_range at va; returns how many PTEs it covered (0: look at va again).
    private ulong FreePte(PhysicalAddress table, ulong va, ulong to)
    {
        PhysicalAddress slot = PteSlot(table, va);
        ulong pte = Read(slot);
        if (!IsMapped(pte))
        {
            // A swap entry is freed and cleared, so a later touch is a new zero page rather than a swap-in.
            ZapSwapPte(slot, pte);
            return 1;
        }

        if (!TryTakeFolio(table, va, to, out Folio folio, out int nr, out ulong step))
        {
            return step;
        }

        if (folio.IsSwapCache || folio.IsDirty)
        {
            if (folio.MapCount != folio.PageCount || (folio.IsSwapCache && !_swap!.TryFreeSwap(folio)))
            {
                return (ulong)nr;
            }

            folio.SetDirty(false);
        }

        for (int i = 0; i < nr; i++)
        {
            PhysicalAddress each = PteSlot(table, va + ((ulong)i * PageSize4K));
            Write(each, Read(each) & ~(A | D));
        }

        MarkLazyFree(folio);
        return (ulong)nr;
    }

    // madvise_cold_or_pageout_pte_range over [start, end), with reclaim_pages (shrink_folio_list, references ignored)
    // for the folios isolated from each page table.
    private void ColdOrPageOutRange(ulong start, ulong end, bool pageout)
    {
        List<(Folio Folio, ulong First)> isolated = new();
        WalkAdvisedRange(
            start,
            end,
            onWholeHugeLeaf: (chunk, pdeSlot, pde, huge) =>
            {
                if (pageout)
                {
                    ShrinkFolio(huge, new List<ulong> { chunk }, new List<ulong>(), keepInSwapCache: false);
                }
                else
                {
                    Write(pdeSlot, pde & ~A);
                }
            },
            onPte: (table, va, to) => ColdOrPageOutPte(table, va, to, pageout, isolated),
            afterTable: () =>
            {
                foreach ((Folio folio, ulong first) in isolated)
                {
                    List<ulong> ptes = new(folio.PageCount);
                    for (int i = 0; i < folio.PageCount; i++)
                    {
                        ptes.Add(first + ((ulong)i * PageSize4K));
                    }

                    ShrinkFolio(folio, new List<ulong>(), ptes, keepInSwapCache: false);
                }

                isolated.Clear();
            });
    }

    // One step of the PTE loop of madvise_cold_or_pageout_pte_range; returns the PTEs covered (0: look at va again).
    private ulong ColdOrPageOutPte(PhysicalAddress table, ulong va, ulong to, bool pageout, List<(Folio Folio, ulong First)> isolated)
    {
        if (!TryTakeFolio(table, va, to, out Folio folio, out int nr, out ulong step))
        {
            return step;
        }

        // "Do not interfere with other mappings of this folio": a folio fully here must be mapped only here.
        if (folio.MapCount != folio.PageCount || !folio.IsAnon)
        {
            return (ulong)nr;
        }

        if (pageout)
        {
            isolated.Add((folio, va));
        }
        else
        {
            for (int i = 0; i < nr; i++)
            {
                PhysicalAddress each = PteSlot(table, va + ((ulong)i * PageSize4K));
                Write(each, Read(each) & ~A);
            }
        }

        return (ulong)nr;
    }

    // try_to_unmap_one's lazyfree branch and __discard_anon_folio_pmd_locked: a clean lazyfree folio whose only
    // references are its mappings is unmapped and freed (pglazyfreed); one written again (dirty PTE, PMD or folio) or
    // with other references (a pin) is remapped and swap-backed again. A PTE-mapped folio is unmapped PTE by PTE, stopping at the first dirty one.
    private SwapOutResult DiscardLazyFree(Folio folio, List<ulong> hugeChunks, List<ulong> pteAddresses)
    {
        int pages = folio.PageCount;
        List<ulong> ptes = new(pteAddresses);
        foreach (ulong chunk in hugeChunks)
        {
            TryFindPde(chunk, out PhysicalAddress pdeSlot);
            ulong pde = Read(pdeSlot);
            if (!folio.IsDirty && (pde & D) == 0 && folio.RefCount == folio.MapCount)
            {
                ZapHugePmd(chunk, pdeSlot, pde);
                continue;
            }

            // unmap_huge_pmd_locked failed: TTU_SPLIT_HUGE_PMD, then the PTEs (which inherit the PMD's D bit).
            SplitLocked(chunk, pdeSlot, pde);
            for (ulong i = 0; i < 512; i++)
            {
                ptes.Add(chunk + (i * PageSize4K));
            }
        }

        foreach (ulong va in ptes)
        {
            PhysicalAddress slot = PteSlotOf(va);
            ulong pte = Read(slot);
            if ((pte & D) != 0)
            {
                folio.SetDirty(true);
            }

            if (folio.IsDirty || folio.RefCount != folio.MapCount)
            {
                // v6.12 sets PG_swapbacked on any failure to discard (later kernels only when redirtied).
                folio.SetSwapBacked(true);
                return new SwapOutResult(SwapOutStatus.Redirtied, 0, 0);
            }

            Write(slot, 0);
            ReleasePte(pte);
        }

        Counters.Add(VmEvent.PgLazyFreed, pages);
        return new SwapOutResult(SwapOutStatus.Discarded, 0, pages);
    }

    // The 2 MiB chunks of [start, end) that have a PDE: chunk, the range's part of it, and the PDE's slot.
    private IEnumerable<(ulong Chunk, ulong From, ulong To, PhysicalAddress PdeSlot)> PdesOf(ulong start, ulong end)
    {
        for (ulong chunk = start & ~(HugeSize - 1); chunk < end; chunk += HugeSize)
        {
            if (TryFindPde(chunk, out PhysicalAddress pdeSlot))
            {
                yield return (chunk, Math.Max(start, chunk), Math.Min(end, chunk + HugeSize), pdeSlot);
            }
        }
    }

    // What both PTE loops do first (vm_normal_folio, madvise_folio_pte_batch): false, with the step to take, for
    // anything but a present page of a folio (PROT_NONE entries are skipped here, simplified) and for a large folio
    // only partly in the range, which is split unless it looks shared (step 0 after a split: look at va again).
    private bool TryTakeFolio(PhysicalAddress table, ulong va, ulong to, out Folio folio, out int nr, out ulong step)
    {
        ulong pte = Read(PteSlot(table, va));
        folio = default;
        nr = 1;
        step = 1;
        if ((pte & P) == 0 || FrameOf(pte) == ZeroPage.HeadFrame)
        {
            return false;
        }

        folio = Node.FolioOf(FrameOf(pte));
        if (!folio.IsLarge)
        {
            return true;
        }

        nr = PteBatch(table, va, to, folio);
        if (nr == folio.PageCount)
        {
            return true;
        }

        step = LikelyMappedShared(folio) || !SplitPteMappedFolio(folio) ? (ulong)nr : 0;
        return false;
    }

    // folio_mark_lazyfree → lru_lazyfree: an anonymous swap-backed folio not in the swap cache loses PG_swapbacked
    // and counts pglazyfree per page.
    private void MarkLazyFree(Folio folio)
    {
        if (folio.IsSwapBacked && !folio.IsSwapCache)
        {
            folio.SetSwapBacked(false);
            Counters.Add(VmEvent.PgLazyFree, folio.PageCount);
        }
    }

    // folio_likely_mapped_shared (v6.12): an order-0 folio mapped more than once; a large folio mapped more than once
    // with a PMD mapping or more mappings than pages, else judged by its first page being mapped more than once.
    private static bool LikelyMappedShared(Folio folio)
    {
        int mapcount = folio.MapCount;
        if (!folio.IsLarge)
        {
            return mapcount > 1;
        }

        if (mapcount <= 1)
        {
            return false;
        }

        return folio.EntireMapCount > 0 || mapcount > folio.PageCount || folio.PageMapCount(0) > 1;
    }

    // madvise_folio_pte_batch: how many PTEs from va (below to, in this table) map consecutive pages of folio.
    private int PteBatch(PhysicalAddress table, ulong va, ulong to, Folio folio)
    {
        ulong frame = FrameOf(Read(PteSlot(table, va)));
        ulong end = folio.HeadFrame + (ulong)folio.PageCount;
        int nr = 0;
        for (ulong at = va; at < to && frame + (ulong)nr < end; at += PageSize4K, nr++)
        {
            ulong pte = Read(PteSlot(table, at));
            if ((pte & P) == 0 || FrameOf(pte) != frame + (ulong)nr)
            {
                break;
            }
        }

        return nr;
    }

    // split_folio on a PMD-mapped THP (its PMD at chunk split first, as unmap_folio does); false when refused, with the
    // PMD left as it was when can_split_folio fails, as Linux checks before unmapping.
    private bool SplitPmdMappedFolio(Folio folio, ulong chunk, PhysicalAddress pdeSlot, ulong pde)
    {
        if (folio.IsSwapCache || folio.RefCount != folio.MapCount)
        {
            return SplitWithReference(folio).Split;
        }

        SplitLocked(chunk, pdeSlot, pde);
        return SplitWithReference(folio).Split;
    }

    // split_folio on a PTE-mapped large folio. A folio in the swap cache is not split here (simplified: the cache
    // keeps whole folios), which Linux would do.
    private bool SplitPteMappedFolio(Folio folio) => !folio.IsSwapCache && SplitWithReference(folio).Split;
}
