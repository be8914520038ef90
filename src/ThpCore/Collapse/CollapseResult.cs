using ThpCore.Paging;

namespace ThpCore.Collapse;

/// <summary>How a 2 MiB range was (or would have been) collapsed.</summary>
public enum CollapsePath : byte
{
    /// <summary>Nothing was done.</summary>
    None = 0,

    /// <summary>The PTE-mapped order-9 folio was mapped by one PMD where it lies: no copy, no allocation.</summary>
    InPlace = 1,

    /// <summary>A new order-9 folio was allocated and the pages copied into it (Linux's <c>collapse_huge_page</c>).</summary>
    Copy = 2,

    /// <summary>
    /// Re-formed in place (ThpCore's own, no Linux counterpart): order-0 pages mostly in place in one aligned 2 MiB block
    /// were completed there — the missing and misplaced ones copied in, the block's movable occupants migrated out —
    /// joined into one order-9 folio and mapped by a PMD (<see cref="Collapser.TryReformInPlace"/>).
    /// </summary>
    Reformed = 3,
}

/// <summary>The outcome of one collapse attempt on one 2 MiB range.</summary>
/// <param name="Status">Why it succeeded or refused: Linux's <c>SCAN_*</c> code or one of ThpCore's.</param>
/// <param name="Address">The 2 MiB-aligned start of the range.</param>
/// <param name="Path">How it was collapsed; <see cref="CollapsePath.None"/> on a refusal.</param>
/// <param name="Folio">The physical address of the folio the PMD now maps; <see cref="PhysicalAddress.Zero"/> on a refusal.</param>
/// <param name="Invalidation">
/// The TLB invalidation the change requires and that was not performed (no <see cref="Tlb"/> was given to the operation);
/// <see langword="default"/> when nothing changed or the operation invalidated itself.
/// </param>
public readonly record struct CollapseResult(CollapseStatus Status, VirtualAddress Address, CollapsePath Path, PhysicalAddress Folio, TlbRangeInvalidation Invalidation = default)
{
    /// <summary>Whether the range is now mapped by a PMD: collapsed now, or already (<see cref="CollapseStatus.PmdMapped"/>).</summary>
    public bool IsPmdMapped => Status is CollapseStatus.Succeed or CollapseStatus.PmdMapped;
}
