using System;
using System.Collections.Generic;
using System.Runtime.CompilerServices;
using ThpCore.Internal;
using ThpCore.Mm;
using ThpCore.Paging;

namespace ThpCore.Collapse;

/// <summary>The outcome of <see cref="Collapser.MadviseCollapse"/>.</summary>
/// <param name="Errno">What <c>madvise(MADV_COLLAPSE)</c> would return: 0, or a negative errno (<c>-EINVAL</c> = −22,
/// <c>-ENOMEM</c> = −12, <c>-EAGAIN</c> = −11, <c>-EBUSY</c> = −16).</param>
/// <param name="Regions">One result per 2 MiB region attempted, in address order.</param>
public sealed record MadviseCollapseResult(int Errno, IReadOnlyList<CollapseResult> Regions)
{
    /// <summary>Whether the call succeeded (returned 0).</summary>
    public bool Succeeded => Errno == 0;
}

/// <content><c>MADV_COLLAPSE</c>.</content>
public static partial class Collapser
{
    /// <summary><c>-EINVAL</c>.</summary>
    public const int EInval = -22;

    /// <summary><c>-ENOMEM</c>.</summary>
    public const int ENoMem = -12;

    /// <summary><c>-EAGAIN</c>.</summary>
    public const int EAgain = -11;

    /// <summary><c>-EBUSY</c>.</summary>
    public const int EBusy = -16;

    /// <summary>
    /// <c>madvise(start, length, MADV_COLLAPSE)</c>: synchronously collapses every aligned 2 MiB region of the range
    /// by copy (<see cref="TryCollapseByCopy"/> in the <see cref="CollapseContext.MadviseCollapse"/> context: no
    /// <c>max_ptes_*</c> limits, no referenced rule, the sysfs <c>enabled</c> mode ignored, every swap PTE swapped in,
    /// the allocation allowed to compact), as Linux's <c>madvise_walk_vmas</c> and <c>madvise_collapse</c> do.
    /// </summary>
    /// <remarks>
    /// <para>
    /// For each VMA the range covers (<c>madvise_walk_vmas</c>): a VMA that may not have THPs
    /// (<see cref="VmaFlags.NoHugePage"/>) ends the call with <c>-EINVAL</c>; otherwise its part of the range is
    /// clamped inward to 2 MiB boundaries and each region tried in order. Success and
    /// <see cref="CollapseStatus.PmdMapped"/> count as collapsed; the recoverable results (<c>SCAN_PMD_NULL</c>,
    /// <c>PTE_NON_PRESENT</c>, <c>PTE_UFFD_WP</c>, <c>PAGE_RO</c>, <c>LACK_REFERENCED_PAGE</c>, <c>PAGE_NULL</c>,
    /// <c>PAGE_COUNT</c>, <c>PAGE_LOCK</c>, <c>PAGE_COMPOUND</c>, <c>PAGE_LRU</c>, <c>DEL_PAGE_LRU</c>) move on to the next
    /// region; any other result (for example <see cref="CollapseStatus.PmdNone"/> or
    /// <see cref="CollapseStatus.AllocHugePageFail"/>) stops the VMA. The VMA's answer is 0 when every region
    /// collapsed, else <c>madvise_collapse_errno</c> of the last failure (also when its part holds no whole region
    /// and does not end on the 2 MiB boundary where it starts, Linux's unsigned arithmetic); a non-zero answer ends the
    /// call. Parts of the range with no VMA make the call return <c>-ENOMEM</c> after the VMAs were processed.
    /// </para>
    /// <para>
    /// Errno (<c>madvise_collapse_errno</c>): <see cref="CollapseStatus.AllocHugePageFail"/> → <c>-ENOMEM</c>;
    /// <c>CGROUP_CHARGE_FAIL</c>, <see cref="CollapseStatus.ExceedNonePte"/> → <c>-EBUSY</c>;
    /// <see cref="CollapseStatus.PageCount"/>, <c>PAGE_LOCK</c>, <c>PAGE_LRU</c>, <c>DEL_PAGE_LRU</c>,
    /// <c>PAGE_FILLED</c> → <c>-EAGAIN</c>; anything else → <c>-EINVAL</c>.
    /// </para>
    /// <para>
    /// Each region returns an invalidation when it collapsed; this method does not apply them (no TLB here).
    /// </para>
    /// </remarks>
    /// <exception cref="ArgumentNullException"><paramref name="space"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="start"/> is not 4 KiB-aligned or <paramref name="length"/> is
    /// zero, not a multiple of 4 KiB, or reaches above the task size (Linux: <c>-EINVAL</c>, or 0 for an empty range).</exception>
    /// <exception cref="ObjectDisposedException">The address space was disposed.</exception>
    public static MadviseCollapseResult MadviseCollapse(AddressSpace space, VirtualAddress start, ulong length)
    {
        ArgumentNullException.ThrowIfNull(space);
        if ((start.Value & 0xFFF) != 0)
        {
            ThrowHelper.ThrowArgument(nameof(start), $"MADV_COLLAPSE: start {start} is not a multiple of 4 KiB (-EINVAL).");
        }

        ulong taskSize = space.Vmas.TaskSize;
        if (length == 0 || (length & 0xFFF) != 0 || length > taskSize || start.Value > taskSize - length)
        {
            ThrowHelper.ThrowArgument(nameof(length), $"MADV_COLLAPSE: length {ThrowHelper.Hex(length)} from {start} is not a non-zero multiple of 4 KiB ending at or below {ThrowHelper.Hex(taskSize)} (-EINVAL).");
        }

        using AddressSpace.LockScope locks = space.EnterWrite(andNode: true);
        if (space.IsDisposed)
        {
            throw new ObjectDisposedException(nameof(AddressSpace), "MADV_COLLAPSE on an address space torn down by Dispose.");
        }

        var regions = new List<CollapseResult>();
        ulong end = start.Value + length;
        int errno = WalkVmas(space, start.Value, end, regions);
        return new MadviseCollapseResult(errno, regions);
    }

    // madvise_walk_vmas with madvise_collapse as the visitor.
    private static int WalkVmas(AddressSpace space, ulong start, ulong end, List<CollapseResult> regions)
    {
        int unmappedError = 0;
        IReadOnlyList<Vma> vmas = space.Vmas.FindIntersecting(VirtualAddress.FromRaw(start), VirtualAddress.FromRaw(end));
        foreach (Vma vma in vmas)
        {
            if (start < vma.Start.Value)
            {
                unmappedError = ENoMem;
                start = vma.Start.Value;
            }

            ulong to = Math.Min(end, vma.End.Value);
            int error = CollapseVma(space, vma, start, to, regions);
            if (error != 0)
            {
                return error;
            }

            start = to;
        }

        return start < end ? ENoMem : unmappedError;
    }

    // madvise_collapse for [start, end) inside one VMA.
    private static int CollapseVma(AddressSpace space, Vma vma, ulong start, ulong end, List<CollapseResult> regions)
    {
        if (!space.HugePagesAllowed(vma, enforceSysfs: false))
        {
            return EInval;
        }

        ulong hstart = (start + HugeSize - 1) & ~(HugeSize - 1);
        ulong hend = end & ~(HugeSize - 1);
        ulong thps = 0;
        CollapseStatus lastFail = CollapseStatus.Fail;
        for (ulong addr = hstart; addr < hend; addr += HugeSize)
        {
            CollapseResult result = CopyLocked(space, VirtualAddress.FromRaw(addr), CollapseContext.MadviseCollapse, out _);
            regions.Add(result);
            if (result.IsPmdMapped)
            {
                thps++;
                continue;
            }

            lastFail = result.Status;
            if (!IsRecoverable(result.Status))
            {
                break;
            }
        }

        // Linux compares against (hend - hstart) >> HPAGE_PMD_SHIFT in unsigned arithmetic.
        return thps == unchecked(hend - hstart) >> 21 ? 0 : Errno(lastFail);
    }

    private static bool IsRecoverable(CollapseStatus status) => status is CollapseStatus.PmdNull or CollapseStatus.PteNonPresent
        or CollapseStatus.PteUffdWp or CollapseStatus.PageRo or CollapseStatus.LackReferencedPage or CollapseStatus.PageNull
        or CollapseStatus.PageCount or CollapseStatus.PageLock or CollapseStatus.PageCompound or CollapseStatus.PageLru
        or CollapseStatus.DelPageLru;

    /// <summary>
    /// <c>madvise_collapse_errno</c> (v6.12): the errno <c>MADV_COLLAPSE</c> returns for a collapse result.
    /// </summary>
    /// <param name="status">A failed result.</param>
    /// <returns>A negative errno.</returns>
    public static int Errno(CollapseStatus status) => status switch
    {
        CollapseStatus.AllocHugePageFail => ENoMem,
        CollapseStatus.CgroupChargeFail or CollapseStatus.ExceedNonePte => EBusy,
        CollapseStatus.PageCount or CollapseStatus.PageLock or CollapseStatus.PageLru or CollapseStatus.DelPageLru
            or CollapseStatus.PageFilled => EAgain,
        _ => EInval,
    };

    // Wires AddressSpace.Advise(Advice.Collapse) to MADV_COLLAPSE without Mm referencing this layer.
#pragma warning disable CA2255 // ModuleInitializer in a library: the Mm layer's hook must be set before any Advise call.
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void RegisterAdvice() => AddressSpace.CollapseAdvice = static (space, start, length) => MadviseCollapse(space, start, length).Errno;
}
