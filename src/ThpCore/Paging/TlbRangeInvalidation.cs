using System;
using ThpCore.Internal;

namespace ThpCore.Paging;

/// <summary>
/// An invalidation a page-table change requires and leaves to whoever holds the TLBs: every translation of a linear
/// range, of any page size (Linux's <c>flush_tlb_range</c>). Applying it executes INVLPG for every 4 KiB page of
/// the range, which also removes the 2 MiB and 1 GiB entries covering those addresses and, per the SDM, the
/// paging-structure-cache entries used to translate them. <see langword="default"/> means nothing to invalidate.
/// </summary>
/// <remarks>
/// When a range changes page size (4 KiB PTEs replaced by one 2 MiB PDE, or the reverse), the SDM (Vol. 3A §4.10.2.3,
/// "Details of TLB Use") allows the TLB to hold entries of both sizes for the same address and leaves unspecified
/// which one a translation uses; every 4 KiB page must be invalidated, not just one address. Linux flushes the range
/// (x86 switches to a full flush above <c>tlb_single_page_flush_ceiling</c>, 33 pages); the model invalidates page by
/// page, which removes the same entries.
/// </remarks>
public readonly record struct TlbRangeInvalidation
{
    /// <summary>An invalidation of [<paramref name="start"/>, <paramref name="start"/> + <paramref name="length"/>).</summary>
    /// <exception cref="ArgumentException">The start is not 4 KiB-aligned or the length is not a non-zero multiple of 4 KiB.</exception>
    public TlbRangeInvalidation(VirtualAddress start, ulong length)
    {
        if (!start.IsAligned(PageSize.Size4K) || length == 0 || (length & 0xFFF) != 0)
        {
            ThrowHelper.ThrowArgument(nameof(length), $"An invalidated range starts and ends on 4 KiB boundaries and is not empty; {start} + {ThrowHelper.Hex(length)} is not.");
        }

        Start = start;
        Length = length;
    }

    /// <summary>The first address.</summary>
    public VirtualAddress Start { get; }

    /// <summary>The length in bytes; 0 for nothing to invalidate.</summary>
    public ulong Length { get; }

    /// <summary>Whether there is nothing to invalidate.</summary>
    public bool IsNone => Length == 0;

    /// <summary>Executes INVLPG for every 4 KiB page of the range on <paramref name="tlb"/> (the current PCID of <paramref name="cpu"/>).</summary>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    public void ApplyTo(Tlb tlb, CpuState cpu)
    {
        ArgumentNullException.ThrowIfNull(tlb);
        ArgumentNullException.ThrowIfNull(cpu);
        for (ulong offset = 0; offset < Length; offset += 4096)
        {
            tlb.Invlpg(cpu, Start.Add(offset));
        }
    }

    /// <inheritdoc/>
    public override string ToString() => IsNone ? "no invalidation" : $"invalidate {Start}..+{ThrowHelper.Hex(Length)}";
}
