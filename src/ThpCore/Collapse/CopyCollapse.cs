using System;
using System.Collections.Generic;
using ThpCore.Diagnostics;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;

namespace ThpCore.Collapse;

/// <summary>
/// The collapse operations on one address space: copy collapse (Linux's khugepaged path) and <c>MADV_COLLAPSE</c>.
/// </summary>
public static partial class Collapser
{
    private const ulong HugeSize = 2UL << 20;
    private const int PtesPerTable = 512;

    /// <summary>
    /// Collapses the 2 MiB range containing <paramref name="address"/> by copying, as Linux's
    /// <c>hpage_collapse_scan_pmd</c> followed by <c>collapse_huge_page</c> does for anonymous memory: a new order-9
    /// folio is allocated, every present page is copied into it and the rest zeroed, and the range's page table is
    /// replaced by one PMD leaf (the old table deposited under it). The old pages lose this mapping and are freed when
    /// nothing else maps or holds them.
    /// </summary>
    /// <remarks>
    /// <para>
    /// The checks, in Linux's order, the first failing one giving the result: the address space torn down
    /// (<see cref="CollapseStatus.AnyProcess"/>); no VMA at or above the range (<see cref="CollapseStatus.VmaNull"/>);
    /// the aligned 2 MiB not inside one VMA (<see cref="CollapseStatus.AddressRange"/>); the VMA not eligible
    /// (<see cref="CollapseStatus.VmaCheck"/>: <see cref="VmaFlags.NoHugePage"/>, or for khugepaged the <c>enabled</c>
    /// mode); then the PDE (<see cref="CollapseStatus.PmdNull"/>, <see cref="CollapseStatus.PmdNone"/>,
    /// <see cref="CollapseStatus.PmdMapped"/>); then for each PTE: swap entries counted against <c>max_ptes_swap</c>
    /// (khugepaged), none or zero-page PTEs against <c>max_ptes_none</c> (khugepaged), a writable PTE noted, a
    /// non-anonymous page (<see cref="CollapseStatus.PageAnon"/>), folios likely mapped shared against
    /// <c>max_ptes_shared</c> (khugepaged), the reference count (<c>is_refcount_suitable</c>: references = mappings +
    /// swap-cache pages, so a pin or any other reference gives <see cref="CollapseStatus.PageCount"/>), young PTEs
    /// counted (khugepaged); then no writable PTE → <see cref="CollapseStatus.PageRo"/>; khugepaged with no young
    /// PTE, or with swap PTEs and fewer than 256 young → <see cref="CollapseStatus.LackReferencedPage"/>. The
    /// <c>thp_scan_exceed_*</c> counters are counted where the limits refuse.
    /// </para>
    /// <para>
    /// Then the allocation (<c>thp_collapse_alloc</c>, or <c>thp_collapse_alloc_failed</c> and
    /// <see cref="CollapseStatus.AllocHugePageFail"/>); the swap PTEs are swapped in through the swap-in fault path
    /// (<see cref="CollapseStatus.Fail"/> when that runs out of memory); the isolation checks run again
    /// (<c>__collapse_huge_page_isolate</c>: a non-present PTE is now <see cref="CollapseStatus.PteNonPresent"/>,
    /// and khugepaged needs one young PTE); then the copy and the PMD.
    /// </para>
    /// <para>
    /// Simplified: the operation holds the address space's write lock and the node lock throughout (Linux drops the
    /// mmap lock to allocate and revalidates), so the isolation checks run before the PDE is cleared and a refusal
    /// leaves the range untouched; there are no LRU lists or folio locks (<c>SCAN_PAGE_LRU</c>,
    /// <c>SCAN_PAGE_LOCK</c>, <c>SCAN_DEL_PAGE_LRU</c> never occur); the VMA's <c>anon_vma</c> is not modelled
    /// (an untouched range gives <see cref="CollapseStatus.PmdNull"/> or <see cref="CollapseStatus.PmdNone"/>);
    /// the new THP is not queued for the underused-THP shrinker, as the fault path does not queue it either.
    /// </para>
    /// </remarks>
    /// <param name="space">The address space.</param>
    /// <param name="address">Any address in the 2 MiB range.</param>
    /// <param name="context">khugepaged or <c>MADV_COLLAPSE</c>.</param>
    /// <returns>
    /// The result; on success its <see cref="CollapseResult.Invalidation"/> is the 2 MiB range, which the caller must
    /// invalidate in any TLB it keeps (<c>pmdp_collapse_flush</c> and the page-size change).
    /// </returns>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    public static CollapseResult TryCollapseByCopy(AddressSpace space, VirtualAddress address, CollapseContext context)
    {
        ArgumentNullException.ThrowIfNull(space);
        ArgumentNullException.ThrowIfNull(context);
        VirtualAddress chunk = VirtualAddress.FromRaw(address.Value & ~(HugeSize - 1));
        using AddressSpace.LockScope locks = space.EnterWrite(andNode: true);
        return CopyLocked(space, chunk, context, out _);
    }

    // TryCollapseByCopy with the locks held; attempted tells whether the scan passed and collapse_huge_page ran
    // (khugepaged's "mmap_locked = false": it leaves the mm after that).
    internal static CollapseResult CopyLocked(AddressSpace space, VirtualAddress chunk, CollapseContext context, out bool attempted) =>
        Emit(space, CopyLockedCore(space, chunk, context, out attempted), "Copy");

    // The structured event of one attempt (ThpCoreEventSource), built only while a listener is enabled.
    private static CollapseResult Emit(AddressSpace space, CollapseResult result, string path)
    {
        if (ThpCoreEventSource.Log.IsEnabled())
        {
            ThpCoreEventSource.Log.Collapse(space.Id, result.Address.Value, path, result.Status.ToString(), (int)result.Status, result.Folio.Value);
        }

        return result;
    }

    private static CollapseResult CopyLockedCore(AddressSpace space, VirtualAddress chunk, CollapseContext context, out bool attempted)
    {
        attempted = false;
        CollapseStatus status = Revalidate(space, chunk, context.IsKhugepaged, out Vma? vma);
        if (status != CollapseStatus.Succeed)
        {
            return Refused(status, chunk);
        }

        ThpSettings knobs = context.KnobsFor(space);
        Span<ulong> ptes = stackalloc ulong[PtesPerTable];
        status = ReadPmd(space, chunk, ptes);
        if (status == CollapseStatus.Succeed)
        {
            status = Check(space, ptes, context.IsKhugepaged, knobs, isolate: false, out int unmapped);
            if (status == CollapseStatus.Succeed)
            {
                attempted = true;
                return CollapseHugePage(space, chunk, vma!, context.IsKhugepaged, knobs, ptes, unmapped);
            }
        }

        return Refused(status, chunk);
    }

    // collapse_huge_page after a successful scan.
    private static CollapseResult CollapseHugePage(AddressSpace space, VirtualAddress chunk, Vma vma, bool khugepaged, ThpSettings knobs, Span<ulong> ptes, int unmapped)
    {
        // alloc_charge_folio: GFP_TRANSHUGE for MADV_COLLAPSE, khugepaged's own defrag flag otherwise.
        if (!space.TryAllocateHugeForCollapse(mayCompact: !khugepaged || knobs.KhugepagedDefrag, out Folio folio))
        {
            space.Counters.Count(VmEvent.ThpCollapseAllocFailed);
            return Refused(CollapseStatus.AllocHugePageFail, chunk);
        }

        space.Counters.Count(VmEvent.ThpCollapseAlloc);
        CollapseStatus status = CollapseStatus.Succeed;
        if (unmapped > 0)
        {
            // __collapse_huge_page_swapin: every swap PTE, one by one, through do_swap_page.
            for (int i = 0; i < PtesPerTable && status == CollapseStatus.Succeed; i++)
            {
                if (space.IsSwapPteOfDevice(ptes[i]) && !space.SwapInForCollapseLocked(chunk.Value + ((ulong)i << 12)))
                {
                    status = CollapseStatus.Fail;
                }
            }

            if (status == CollapseStatus.Succeed)
            {
                status = ReadPmd(space, chunk, ptes);
            }
        }

        if (status == CollapseStatus.Succeed)
        {
            status = Check(space, ptes, khugepaged, knobs, isolate: true, out _);
        }

        if (status != CollapseStatus.Succeed)
        {
            folio.Put();
            return Refused(status, chunk);
        }

        space.InstallCollapsedLocked(chunk.Value, folio, vma);
        return new CollapseResult(CollapseStatus.Succeed, chunk, CollapsePath.Copy, folio.Address, new TlbRangeInvalidation(chunk, HugeSize));
    }

    private static CollapseResult Refused(CollapseStatus status, VirtualAddress chunk) => new(status, chunk, CollapsePath.None, PhysicalAddress.Zero);

    // hugepage_vma_revalidate: the mm, find_vma, thp_vma_suitable_order, thp_vma_allowable_order.
    private static CollapseStatus Revalidate(AddressSpace space, VirtualAddress chunk, bool khugepaged, out Vma? vma)
    {
        vma = null;
        if (space.IsDisposed)
        {
            return CollapseStatus.AnyProcess;
        }

        IReadOnlyList<Vma> above = space.Vmas.FindIntersecting(chunk, VirtualAddress.FromRaw(space.Vmas.TaskSize));
        if (above.Count == 0)
        {
            return CollapseStatus.VmaNull;
        }

        vma = above[0];
        if (vma.Start.Value > chunk.Value || vma.End.Value < chunk.Value + HugeSize)
        {
            return CollapseStatus.AddressRange;
        }

        return space.HugePagesAllowed(vma, enforceSysfs: khugepaged) ? CollapseStatus.Succeed : CollapseStatus.VmaCheck;
    }

    // find_pmd_or_thp_or_none, with the PTEs read when a table is there.
    private static CollapseStatus ReadPmd(AddressSpace space, VirtualAddress chunk, Span<ulong> ptes) => space.ReadPteTableLocked(chunk.Value, ptes) switch
    {
        PmdKind.Null => CollapseStatus.PmdNull,
        PmdKind.None => CollapseStatus.PmdNone,
        PmdKind.Huge => CollapseStatus.PmdMapped,
        _ => CollapseStatus.Succeed,
    };

    // The PTE loop of hpage_collapse_scan_pmd (isolate false) or __collapse_huge_page_isolate (isolate true).
    private static CollapseStatus Check(AddressSpace space, ReadOnlySpan<ulong> ptes, bool khugepaged, ThpSettings knobs, bool isolate, out int unmapped)
    {
        unmapped = 0;
        int noneOrZero = 0;
        int shared = 0;
        int referenced = 0;
        bool writable = false;
        ulong zeroFrame = space.ZeroPage.HeadFrame;
        for (int i = 0; i < ptes.Length; i++)
        {
            ulong pte = ptes[i];
            if (pte != 0 && !AddressSpace.PtePresent(pte))
            {
                // is_swap_pte: swap and migration entries alike; after swap-in any left is SCAN_PTE_NON_PRESENT.
                if (isolate)
                {
                    return CollapseStatus.PteNonPresent;
                }

                if (++unmapped > knobs.MaxPtesSwap && khugepaged)
                {
                    space.Counters.Count(VmEvent.ThpScanExceedSwapPte);
                    return CollapseStatus.ExceedSwapPte;
                }

                continue;
            }

            if (pte == 0 || AddressSpace.PteFrame(pte) == zeroFrame)
            {
                if (++noneOrZero > knobs.MaxPtesNone && khugepaged)
                {
                    space.Counters.Count(VmEvent.ThpScanExceedNonePte);
                    return CollapseStatus.ExceedNonePte;
                }

                continue;
            }

            writable |= AddressSpace.PteWritable(pte);
            Folio folio = space.Node.FolioOf(AddressSpace.PteFrame(pte));
            if (!folio.IsAnon)
            {
                return CollapseStatus.PageAnon;
            }

            // "We treat a single page as shared if any part of the THP is shared."
            if (AddressSpace.FolioLikelyMappedShared(folio) && ++shared > knobs.MaxPtesShared && khugepaged)
            {
                space.Counters.Count(VmEvent.ThpScanExceedSharedPte);
                return CollapseStatus.ExceedSharedPte;
            }

            if (!IsRefcountSuitable(folio))
            {
                return CollapseStatus.PageCount;
            }

            if (khugepaged && AddressSpace.PteYoung(pte))
            {
                referenced++;
            }
        }

        if (!writable)
        {
            return CollapseStatus.PageRo;
        }

        if (khugepaged && (referenced == 0 || (!isolate && unmapped > 0 && referenced < PtesPerTable / 2)))
        {
            return CollapseStatus.LackReferencedPage;
        }

        return CollapseStatus.Succeed;
    }

    // is_refcount_suitable: an anonymous folio's references are its mappings plus, in the swap cache, one per page.
    private static bool IsRefcountSuitable(Folio folio) =>
        folio.RefCount == folio.MapCount + (folio.IsSwapCache ? folio.PageCount : 0);
}
