using System;
using System.Collections.Generic;
using System.Collections.ObjectModel;
using ThpCore.Internal;
using ThpCore.Paging;

namespace ThpCore.Mm;

/// <summary>
/// The VMAs of one address space, sorted by address and never overlapping: the model of Linux's per-mm VMA tree
/// (a maple tree since v6.1; an rbtree and linked list before), kept here as a sorted list.
/// </summary>
/// <remarks>
/// <para>
/// After every <see cref="Insert"/>, <see cref="Remove"/> and <see cref="Modify"/> the list is fully merged: no two
/// neighbours satisfy <see cref="Vma.CanMergeWith"/>. Only <see cref="Split"/> leaves two mergeable neighbours behind,
/// as Linux's <c>__split_vma</c> does; <c>Modify(start, end, v =&gt; v)</c> merges them again.
/// </para>
/// <para>
/// Operations are all-or-nothing: one that throws leaves the list as it was. File mappings, userfaultfd contexts,
/// mempolicies and VMA names are not modelled; an <c>anon_vma</c> is represented by an id (<see cref="Vma.AnonVmaId"/>).
/// See <c>docs/vmas.md</c>.
/// </para>
/// </remarks>
public sealed class VmaList
{
    /// <summary>Linux's default <c>stack_guard_gap</c>: 256 pages (1 MiB) kept free below a <see cref="VmaFlags.GrowsDown"/> VMA.</summary>
    public const ulong DefaultStackGuardGap = 256 * 4096;

    private const ulong PageSize4K = 4096;
    private const ulong HugePageSize = 2UL << 20;

    private readonly List<Vma> _vmas = new();
    private readonly ReadOnlyCollection<Vma> _view;

    /// <summary>Creates an empty list for an address space with <paramref name="mode"/> paging.</summary>
    /// <param name="mode">The paging mode; it sets <see cref="TaskSize"/>.</param>
    /// <param name="stackGuardGap">The gap the free-range search keeps below a <see cref="VmaFlags.GrowsDown"/> VMA (Linux's
    /// <c>stack_guard_gap</c>, settable on the kernel command line); a multiple of 4 KiB.</param>
    /// <exception cref="ArgumentException"><paramref name="mode"/> is not defined or <paramref name="stackGuardGap"/> is not a multiple of 4 KiB.</exception>
    public VmaList(PagingMode mode = PagingMode.FourLevel, ulong stackGuardGap = DefaultStackGuardGap)
    {
        if ((stackGuardGap & (PageSize4K - 1)) != 0)
        {
            ThrowHelper.ThrowArgument(nameof(stackGuardGap), $"Stack guard gap {ThrowHelper.Hex(stackGuardGap)} is not a multiple of 4 KiB.");
        }

        // x86-64 TASK_SIZE_MAX: one page below the top of the lower canonical half (the guard page below the hole).
        TaskSize = (1UL << (mode.VirtualAddressBits() - 1)) - PageSize4K;
        StackGuardGap = stackGuardGap;
        _view = _vmas.AsReadOnly();
    }

    /// <summary>
    /// One past the highest user address: <c>2^47 - 4096</c> with 4-level paging and <c>2^56 - 4096</c> with 5-level
    /// paging (x86-64 <c>TASK_SIZE_MAX</c>). No VMA ends above it.
    /// </summary>
    public ulong TaskSize { get; }

    /// <summary>The gap kept free below a <see cref="VmaFlags.GrowsDown"/> VMA by the free-range search.</summary>
    public ulong StackGuardGap { get; }

    /// <summary>The VMAs in address order (a live read-only view).</summary>
    public IReadOnlyList<Vma> All => _view;

    /// <summary>The number of VMAs (<c>mm-&gt;map_count</c>).</summary>
    public int Count => _vmas.Count;

    /// <summary>The VMA containing <paramref name="address"/>, or <see langword="null"/> (<c>vma_lookup</c>).</summary>
    public Vma? Find(VirtualAddress address)
    {
        int index = IndexOfFirstEndingAfter(address);
        return index < _vmas.Count && _vmas[index].Start <= address ? _vmas[index] : null;
    }

    /// <summary>The VMAs that overlap <c>[start, end)</c>, in address order (<c>find_vma_intersection</c> and the iteration after it).</summary>
    /// <exception cref="ArgumentException"><paramref name="start"/> is not below <paramref name="end"/>.</exception>
    public IReadOnlyList<Vma> FindIntersecting(VirtualAddress start, VirtualAddress end)
    {
        if (start >= end)
        {
            ThrowHelper.ThrowArgument(nameof(end), $"Start {start} is not below end {end}.");
        }

        var result = new List<Vma>();
        for (int i = IndexOfFirstEndingAfter(start); i < _vmas.Count && _vmas[i].Start < end; i++)
        {
            result.Add(_vmas[i]);
        }

        return result;
    }

    /// <summary>
    /// Adds <paramref name="vma"/> and merges it with its neighbours where <see cref="Vma.CanMergeWith"/> allows (the new-range
    /// merge of <c>mmap_region</c>/<c>vma_merge_new_range</c> in <c>mm/vma.c</c>: first with the VMA before, then with the one after).
    /// </summary>
    /// <returns>The VMA that now covers <paramref name="vma"/>: <paramref name="vma"/> itself or a merged VMA.</returns>
    /// <exception cref="ArgumentException"><paramref name="vma"/> overlaps a VMA in the list or ends above <see cref="TaskSize"/>.</exception>
    public Vma Insert(Vma vma)
    {
        ArgumentNullException.ThrowIfNull(vma);
        CheckUserRange(vma.Start, vma.End, nameof(vma));
        int index = IndexOfFirstEndingAfter(vma.Start);
        if (index < _vmas.Count && _vmas[index].Start < vma.End)
        {
            ThrowHelper.ThrowArgument(nameof(vma), $"VMA {vma} overlaps {_vmas[index]}.");
        }

        _vmas.Insert(index, vma);
        return _vmas[MergeAround(index, index)];
    }

    /// <summary>
    /// Unmaps <c>[start, end)</c> with <c>munmap</c> semantics (<c>do_vmi_munmap</c>): a VMA that straddles <paramref name="start"/>
    /// or <paramref name="end"/> is split there (<c>__split_vma</c>) and the parts inside are removed. Holes are allowed.
    /// </summary>
    /// <returns>The removed parts, in address order; empty if nothing was mapped.</returns>
    /// <exception cref="ArgumentException">An address is not page-aligned, <paramref name="start"/> is not below
    /// <paramref name="end"/>, or the range ends above <see cref="TaskSize"/>.</exception>
    public IReadOnlyList<Vma> Remove(VirtualAddress start, VirtualAddress end)
    {
        CheckUserRange(start, end, nameof(end));
        var removed = new List<Vma>();
        int first = IndexOfFirstEndingAfter(start);
        int last = first;
        while (last < _vmas.Count && _vmas[last].Start < end)
        {
            last++;
        }

        if (first == last)
        {
            return removed;
        }

        var kept = new List<Vma>(2);
        for (int i = first; i < last; i++)
        {
            Vma vma = _vmas[i];
            if (vma.Start < start)
            {
                kept.Add(vma.Slice(vma.Start, start));
            }

            removed.Add(vma.Slice(Max(vma.Start, start), Min(vma.End, end)));
            if (vma.End > end)
            {
                kept.Add(vma.Slice(end, vma.End));
            }
        }

        _vmas.RemoveRange(first, last - first);
        _vmas.InsertRange(first, kept);
        return removed;
    }

    /// <summary>
    /// Changes the attributes of <c>[start, end)</c> with <c>mprotect</c>/<c>madvise</c> semantics (<c>vma_modify_flags</c>,
    /// <c>vma_modify</c> in <c>mm/vma.c</c>): the VMAs straddling <paramref name="start"/> and <paramref name="end"/> are split there,
    /// <paramref name="change"/> is applied to each covered piece in address order, and then every piece is merged with
    /// compatible neighbours (<c>vma_merge_existing_range</c>).
    /// </summary>
    /// <param name="start">The first address; page-aligned.</param>
    /// <param name="end">One past the last address; page-aligned.</param>
    /// <param name="change">Returns the new VMA for a piece; it may change anything but <see cref="Vma.Start"/> and <see cref="Vma.End"/>,
    /// for example <c>v =&gt; v with { Protection = Protection.Read }</c>.</param>
    /// <returns>The VMAs now overlapping <c>[start, end)</c>, in address order; merged ones may reach beyond it.</returns>
    /// <exception cref="InvalidOperationException">Part of <c>[start, end)</c> is not mapped (Linux: <c>-ENOMEM</c>). Unlike Linux's
    /// <c>mprotect</c>, which has already changed the VMAs below the hole when it finds one, nothing is changed.</exception>
    /// <exception cref="ArgumentException">An address is not page-aligned, <paramref name="start"/> is not below <paramref name="end"/>,
    /// or <paramref name="change"/> returned a VMA with another range.</exception>
    public IReadOnlyList<Vma> Modify(VirtualAddress start, VirtualAddress end, Func<Vma, Vma> change)
    {
        ArgumentNullException.ThrowIfNull(change);
        CheckUserRange(start, end, nameof(end));
        int first = IndexOfFirstEndingAfter(start);
        int last = first;
        VirtualAddress covered = start;
        while (covered < end)
        {
            if (last >= _vmas.Count || _vmas[last].Start > covered)
            {
                ThrowHelper.ThrowInvalidOperation($"[{start}, {end}) is not fully mapped: nothing is mapped at {covered} (-ENOMEM).");
            }

            covered = _vmas[last].End;
            last++;
        }

        // Build every replacement before touching the list, so that a throwing change leaves it intact.
        var replacement = new List<Vma>((last - first) + 2);
        for (int i = first; i < last; i++)
        {
            Vma vma = _vmas[i];
            if (vma.Start < start)
            {
                replacement.Add(vma.Slice(vma.Start, start));
            }

            Vma piece = vma.Slice(Max(vma.Start, start), Min(vma.End, end));
            Vma changed = change(piece);
            if (changed is null || changed.Start != piece.Start || changed.End != piece.End)
            {
                ThrowHelper.ThrowArgument(nameof(change), $"The change turned {piece} into {(changed is null ? "null" : changed.ToString())}; it must keep the range.");
            }

            replacement.Add(changed);
            if (vma.End > end)
            {
                replacement.Add(vma.Slice(end, vma.End));
            }
        }

        _vmas.RemoveRange(first, last - first);
        _vmas.InsertRange(first, replacement);

        // Merge from one before the replaced run to one after it; the neighbours outside were already fully merged.
        int low = Math.Max(first - 1, 0);
        int high = Math.Min(first + replacement.Count, _vmas.Count - 1);
        MergeRun(low, high);
        return FindIntersecting(start, end);
    }

    /// <summary>
    /// Splits the VMA containing <paramref name="at"/> into <c>[Start, at)</c> and <c>[at, End)</c> (<c>__split_vma</c>): both keep the
    /// attributes and <c>anon_vma</c>; the high part's page offset is the low part's plus the low part's page count.
    /// The two parts are mergeable with each other until a <see cref="Modify"/> changes one of them.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="at"/> is not page-aligned or not strictly inside a VMA.</exception>
    public (Vma Low, Vma High) Split(VirtualAddress at)
    {
        if ((at.Value & (PageSize4K - 1)) != 0)
        {
            ThrowHelper.ThrowArgument(nameof(at), $"Split address {at} is not a multiple of 4 KiB.");
        }

        int index = IndexOfFirstEndingAfter(at);
        if (index >= _vmas.Count || _vmas[index].Start >= at)
        {
            ThrowHelper.ThrowArgument(nameof(at), $"Split address {at} is not strictly inside a VMA.");
        }

        Vma vma = _vmas[index];
        Vma low = vma.Slice(vma.Start, at);
        Vma high = vma.Slice(at, vma.End);
        _vmas[index] = low;
        _vmas.Insert(index + 1, high);
        return (low, high);
    }

    /// <summary>
    /// The highest address <c>a</c>, a multiple of <paramref name="alignment"/>, at which <c>[a, a + length)</c> is free and lies in
    /// <c>[low, high)</c>, searching top-down like <c>arch_get_unmapped_area_topdown</c> / <c>unmapped_area_topdown</c>
    /// (<c>mm/mmap.c</c>); <see langword="null"/> if there is none (<c>-ENOMEM</c>).
    /// </summary>
    /// <remarks>
    /// As in Linux, the search takes the highest gap of at least <c>length + alignment - 4096</c> bytes (so an aligned fit in a
    /// smaller gap is not found) and places the range as high in that gap as the alignment allows. The gap below a
    /// <see cref="VmaFlags.GrowsDown"/> VMA ends <see cref="StackGuardGap"/> below its start (<c>vm_start_gap</c>).
    /// </remarks>
    /// <param name="length">The length; a non-zero multiple of 4 KiB.</param>
    /// <param name="low">The lowest address the range may use (Linux: <c>mmap_min_addr</c> or the mmap base); page-aligned.</param>
    /// <param name="high">One past the highest address the range may use (Linux: the mmap base); page-aligned, at most <see cref="TaskSize"/>.</param>
    /// <param name="alignment">A power of two, at least 4096.</param>
    /// <exception cref="ArgumentException">An argument breaks the rules above.</exception>
    public VirtualAddress? FindFreeRange(ulong length, VirtualAddress low, VirtualAddress high, ulong alignment = PageSize4K)
    {
        CheckSearch(length, low, high);
        if (alignment < PageSize4K || (alignment & (alignment - 1)) != 0)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(alignment), alignment, $"Alignment {ThrowHelper.Hex(alignment)} is not a power of two of at least 4 KiB.");
        }

        return SearchTopDown(length, low.Value, high.Value, alignment) is ulong address ? VirtualAddress.FromRaw(address) : null;
    }

    /// <summary>
    /// Where <c>mmap(NULL, length, ..., MAP_PRIVATE | MAP_ANONYMOUS, ...)</c> places an anonymous mapping with THP enabled in the
    /// kernel, Linux v6.12 and later (<c>__get_unmapped_area</c> → <c>thp_get_unmapped_area_vmflags</c> → <c>__thp_get_unmapped_area</c>):
    /// a length that is a multiple of 2 MiB gets a 2 MiB-aligned address; any other length gets the plain top-down search.
    /// </summary>
    /// <remarks>
    /// <para>
    /// For a multiple of 2 MiB, Linux searches top-down for <c>length + 2 MiB</c> bytes at page alignment. If the found address
    /// is already 2 MiB-aligned it returns that address plus 2 MiB (the range then ends at the top of the padded area, next to
    /// the VMA above, where it can merge); otherwise it rounds the address up to 2 MiB. If the padded search fails it falls back
    /// to the plain search for <c>length</c>, whose result need not be aligned.
    /// </para>
    /// <para>
    /// History: commit efa7df3e3bb5 ("mm: align larger anonymous mappings on THP boundaries", early 2024) aligned every anonymous
    /// mapping of at least 2 MiB; commit "mm, mmap: limit THP alignment of anonymous mappings to PMD-aligned sizes" (Vlastimil Babka,
    /// v6.12, also in stable kernels) limited it to multiples of 2 MiB because odd-sized aligned mappings regressed benchmarks.
    /// Address hints are handled by <see cref="AddressSpace.Map"/> (no THP alignment with a hint); 32-bit and compat tasks and
    /// bottom-up layouts are not modelled.
    /// </para>
    /// </remarks>
    /// <param name="length">The length; a non-zero multiple of 4 KiB.</param>
    /// <param name="low">The lowest address the range may use; page-aligned.</param>
    /// <param name="high">One past the highest address the range may use; page-aligned, at most <see cref="TaskSize"/>.</param>
    /// <exception cref="ArgumentException">An argument breaks the rules above.</exception>
    public VirtualAddress? FindFreeRangeForAnonymous(ulong length, VirtualAddress low, VirtualAddress high)
    {
        CheckSearch(length, low, high);
        if ((length & (HugePageSize - 1)) == 0 && length + HugePageSize > length)
        {
            ulong? padded = SearchTopDown(length + HugePageSize, low.Value, high.Value, PageSize4K);
            if (padded is ulong found)
            {
                ulong offSub = (0UL - found) & (HugePageSize - 1);
                return VirtualAddress.FromRaw(offSub == 0 ? found + HugePageSize : found + offSub);
            }
        }

        return SearchTopDown(length, low.Value, high.Value, PageSize4K) is ulong address ? VirtualAddress.FromRaw(address) : null;
    }

    private ulong? SearchTopDown(ulong length, ulong low, ulong high, ulong alignment)
    {
        ulong needed = length + (alignment - PageSize4K);
        if (needed < length)
        {
            return null;
        }

        for (int i = _vmas.Count; i >= 0; i--)
        {
            ulong gapStart = i == 0 ? 0 : _vmas[i - 1].End.Value;
            ulong gapEnd = i == _vmas.Count ? ulong.MaxValue : StartGap(_vmas[i]);
            if (gapStart >= high)
            {
                continue;
            }

            if (gapEnd <= low)
            {
                break;
            }

            gapStart = Math.Max(gapStart, low);
            gapEnd = Math.Min(gapEnd, high);
            if (gapEnd > gapStart && gapEnd - gapStart >= needed)
            {
                ulong address = gapEnd - length;
                return address & ~(alignment - 1);
            }
        }

        return null;
    }

    private ulong StartGap(Vma vma)
    {
        ulong start = vma.Start.Value;
        if ((vma.Flags & VmaFlags.GrowsDown) == 0)
        {
            return start;
        }

        return start > StackGuardGap ? start - StackGuardGap : 0;
    }

    /// <summary>Merges the run <c>[low, high]</c> of neighbours left to right; returns the index of the VMA now holding position <paramref name="target"/>.</summary>
    private int MergeAround(int index, int target)
    {
        int low = Math.Max(index - 1, 0);
        int high = Math.Min(index + 1, _vmas.Count - 1);
        return MergeRun(low, high, target);
    }

    private int MergeRun(int low, int high, int target = -1)
    {
        int result = target;
        int i = low;
        while (i < high)
        {
            if (_vmas[i].CanMergeWith(_vmas[i + 1]))
            {
                _vmas[i] = _vmas[i].MergeWith(_vmas[i + 1]);
                _vmas.RemoveAt(i + 1);
                if (result > i)
                {
                    result--;
                }

                high--;
            }
            else
            {
                i++;
            }
        }

        return result;
    }

    private int IndexOfFirstEndingAfter(VirtualAddress address)
    {
        int lo = 0;
        int hi = _vmas.Count;
        while (lo < hi)
        {
            int mid = lo + ((hi - lo) >> 1);
            if (_vmas[mid].End > address)
            {
                hi = mid;
            }
            else
            {
                lo = mid + 1;
            }
        }

        return lo;
    }

    private void CheckUserRange(VirtualAddress start, VirtualAddress end, string paramName)
    {
        Vma.CheckRange(start, end);
        if (end.Value > TaskSize)
        {
            ThrowHelper.ThrowArgumentOutOfRange(paramName, end, $"Range [{start}, {end}) ends above the task size {ThrowHelper.Hex(TaskSize)}.");
        }
    }

    private void CheckSearch(ulong length, VirtualAddress low, VirtualAddress high)
    {
        if (length == 0 || (length & (PageSize4K - 1)) != 0)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(length), length, $"Length {ThrowHelper.Hex(length)} is not a non-zero multiple of 4 KiB.");
        }

        CheckUserRange(low, high, nameof(high));
    }

    private static VirtualAddress Max(VirtualAddress a, VirtualAddress b) => a > b ? a : b;

    private static VirtualAddress Min(VirtualAddress a, VirtualAddress b) => a < b ? a : b;
}
