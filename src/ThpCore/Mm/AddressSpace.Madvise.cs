using System;
using ThpCore.Internal;
using ThpCore.Paging;

namespace ThpCore.Mm;

/// <content><c>madvise</c>: <see cref="Advise"/>.</content>
public sealed partial class AddressSpace
{
    /// <summary>
    /// Gives advice about <c>[start, start + length)</c> like <c>madvise(start, length, advice)</c>.
    /// </summary>
    /// <param name="start">The first address; a multiple of 4 KiB.</param>
    /// <param name="length">A non-zero multiple of 4 KiB (Linux rounds the length up to a page and returns 0 for an
    /// empty range; here both are rejected, as by <see cref="Protect"/>).</param>
    /// <param name="advice">What to do.</param>
    /// <remarks>
    /// <para>
    /// <see cref="Advice.DontNeed"/> zaps the range without touching the VMAs (<c>madvise_dontneed_single_vma</c> →
    /// <c>zap_page_range_single</c>), along exactly the path <see cref="Unmap"/> takes: a PMD leaf wholly inside is
    /// cleared, its folio's PMD mapping and reference put and its deposited table freed (<c>zap_huge_pmd</c>); a PMD
    /// leaf only partly inside is split first (<c>zap_pmd_range</c> → <c>__split_huge_pmd</c>) and then the PTEs in the
    /// range are cleared and their references put; a THP left partly mapped goes on the deferred-split queue
    /// (<c>thp_deferred_split_page</c>). Page tables are left in place. A later read faults in the zero page again
    /// (or, for a whole emptied PMD where THP is allowed, a THP or the huge zero page).
    /// </para>
    /// <para>
    /// <see cref="Advice.HugePage"/> and <see cref="Advice.NoHugePage"/> change the VMA flags as <c>hugepage_madvise</c>
    /// does (<c>MADV_HUGEPAGE</c>: clear <see cref="VmaFlags.NoHugePage"/>, set <see cref="VmaFlags.HugePage"/>;
    /// <c>MADV_NOHUGEPAGE</c> the reverse) through <see cref="VmaList.Modify"/>, and change no page table by
    /// themselves. Only where the VMAs are split at an address that is not 2 MiB-aligned is the PMD leaf around it
    /// split, because Linux's <c>__split_vma</c> and the merge path call <c>vma_adjust_trans_huge</c>, which splits a
    /// PMD mapping straddling the new boundary. Advising the range back re-merges the VMAs, but the THP stays
    /// PTE-mapped (as the <c>khugepaged</c> selftest's <c>collapse_full_of_compound</c> relies on). Registering the
    /// range with <c>khugepaged</c> (<c>khugepaged_enter_vma</c>) is not modelled.
    /// </para>
    /// <para>
    /// <see cref="Advice.Free"/> makes the range's pages lazyfree (<c>madvise_free_pte_range</c>,
    /// <c>madvise_free_huge_pmd</c>): clean, old, not swap-backed (<c>pglazyfree</c>), skipping folios that look shared,
    /// splitting large folios only partly in the range, and freeing swap entries. <see cref="Advice.Cold"/> clears the
    /// accessed bits of pages mapped only here, and <see cref="Advice.PageOut"/> reclaims them at once
    /// (<c>madvise_cold_or_pageout_pte_range</c> → <c>reclaim_pages</c>): swap-backed folios are swapped out as by
    /// <see cref="SwapOut"/>, clean lazyfree folios discarded (<c>pglazyfreed</c>). See docs/address-space.md.
    /// </para>
    /// <para>
    /// <see cref="Advice.Collapse"/> runs <c>MADV_COLLAPSE</c> through the collapse layer
    /// (<c>ThpCore.Collapse.Collapser.MadviseCollapse</c>, Linux's <c>madvise_collapse</c>): each aligned 2 MiB region is
    /// collapsed by copy, ignoring the <c>enabled</c> mode and the khugepaged limits. As in Linux it works on the VMAs
    /// that are there and then reports unmapped parts, so a failure may come after some regions collapsed.
    /// </para>
    /// <para>
    /// <b>Unmapped parts.</b> When part of the range is not covered by VMAs, Linux applies the advice to the VMAs that
    /// are there and then returns <c>-ENOMEM</c>; here <see cref="InvalidOperationException"/> is thrown and nothing is
    /// changed (as <see cref="VmaList.Modify"/> does for <see cref="Protect"/>).
    /// </para>
    /// </remarks>
    /// <exception cref="ArgumentException"><paramref name="start"/> is not page-aligned, <paramref name="length"/> is zero or not a
    /// multiple of 4 KiB, or the range ends above <see cref="VmaList.TaskSize"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="advice"/> is not defined (Linux: <c>-EINVAL</c>).</exception>
    /// <exception cref="InvalidOperationException">Part of the range is not mapped (Linux: <c>-ENOMEM</c>), or, for
    /// <see cref="Advice.DontNeed"/>, <see cref="Advice.Free"/>, <see cref="Advice.Cold"/> or <see cref="Advice.PageOut"/>, a VMA in it is
    /// <see cref="VmaFlags.Locked"/> (Linux: <c>-EINVAL</c>); nothing is changed. For <see cref="Advice.Collapse"/>: the
    /// collapse did not succeed everywhere, the message names the errno Linux returns (<c>-EINVAL</c>, <c>-ENOMEM</c>,
    /// <c>-EAGAIN</c>, <c>-EBUSY</c>); regions that collapsed before the failure stay collapsed.</exception>
    public void Advise(VirtualAddress start, ulong length, Advice advice)
    {
        using LockScope locks = EnterWrite(andNode: true);
        ThrowIfDisposed();
        if (advice is not (Advice.DontNeed or Advice.Free or Advice.HugePage or Advice.NoHugePage or Advice.Cold or Advice.PageOut or Advice.Collapse))
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(advice), advice, "The advice is DontNeed, Free, HugePage, NoHugePage, Cold, PageOut or Collapse.");
        }

        ulong end = CheckRange(start, length);
        switch (advice)
        {
            case Advice.Collapse:
                int errno = (CollapseAdvice ?? ThrowHelper.ThrowInvalidOperation<Func<AddressSpace, VirtualAddress, ulong, int>>("MADV_COLLAPSE: the collapse layer is not initialized."))(this, start, length);
                if (errno != 0)
                {
                    ThrowHelper.ThrowInvalidOperation($"MADV_COLLAPSE of {ThrowHelper.Hex(length)} bytes at {start} failed ({ErrnoText(errno)}).");
                }

                return;
            case Advice.DontNeed:
                CheckFullyMapped(start, end, "MADV_DONTNEED", refuseLocked: true);
                ZapRange(start.Value, end);
                return;
            case Advice.Free:
                CheckFullyMapped(start, end, "MADV_FREE", refuseLocked: true);
                FreeRange(start.Value, end);
                return;
            case Advice.Cold or Advice.PageOut:
                CheckFullyMapped(start, end, advice == Advice.Cold ? "MADV_COLD" : "MADV_PAGEOUT", refuseLocked: true);
                ColdOrPageOutRange(start.Value, end, pageout: advice == Advice.PageOut);
                return;
        }

        (VmaFlags set, VmaFlags clear) = advice == Advice.HugePage
            ? (VmaFlags.HugePage, VmaFlags.NoHugePage)
            : (VmaFlags.NoHugePage, VmaFlags.HugePage);
        Vmas.Modify(start, VirtualAddress.FromRaw(end), v => v with { Flags = (v.Flags & ~clear) | set });

        // vma_adjust_trans_huge: a PMD leaf lies inside one VMA, so one straddling an edge now on a VMA boundary
        // was straddling a boundary the change created; Linux split it while splitting the VMA.
        SplitHugePmdAtVmaBoundary(start.Value);
        SplitHugePmdAtVmaBoundary(end);
    }

    private void SplitHugePmdAtVmaBoundary(ulong address)
    {
        if ((address & (HugeSize - 1)) == 0 || address >= Vmas.TaskSize)
        {
            return;
        }

        Vma? below = Vmas.Find(VirtualAddress.FromRaw(address - PageSize4K));
        if (below is null || below.End.Value == address)
        {
            SplitHugePmd(VirtualAddress.FromRaw(address));
        }
    }
}
