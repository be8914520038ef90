using System;
using ThpCore.Paging;

namespace ThpCore.Inspection;

/// <summary>What <see cref="PageTableEnumerator"/> found that is not an ordinary mapping.</summary>
public enum AnomalyKind
{
    /// <summary>
    /// A present entry references a table that lies (wholly or partly) outside physical memory: the memory's
    /// <see cref="IPhysicalMemory.TryReadUInt64"/> returned <see langword="false"/>. The unreadable part is skipped.
    /// </summary>
    EntryOutsideMemory,

    /// <summary>
    /// A present entry sets a reserved bit for this CPU state (<see cref="CpuState.ReservedBits"/>). A walk through
    /// it faults with RSVD, so nothing below it (or the page it maps) is enumerated.
    /// </summary>
    ReservedBits,

    /// <summary>The root table that CR3 points to lies outside physical memory; nothing is enumerated.</summary>
    RootOutsideMemory,

    /// <summary>The enumeration stopped because it found more leaves than <see cref="EnumerationOptions.MaxLeaves"/>.</summary>
    LeafLimitReached,

    /// <summary>The enumeration stopped because it had read <see cref="EnumerationOptions.MaxEntriesRead"/> entries.</summary>
    WorkLimitReached,

    /// <summary>
    /// Informational: a table reached again by another path (a shared table, or a recursive slot). It is still
    /// enumerated under every path; this is reported once per table frame.
    /// </summary>
    RepeatedTable,
}

/// <summary>One anomaly found while enumerating page tables.</summary>
/// <param name="Kind">What was found.</param>
/// <param name="Level">
/// The level of the entry concerned: the entry with reserved bits, the entry that references an unreadable or
/// repeated table, the leaf beyond the leaf limit, or the table being read when the work limit was reached. For
/// <see cref="AnomalyKind.RootOutsideMemory"/>, the root level.
/// </param>
/// <param name="Address">The canonical virtual address of the start of the range that entry covers (0 for the root).</param>
/// <param name="EntryAddress">The physical address of that entry (for <see cref="AnomalyKind.RootOutsideMemory"/>, the root table's).</param>
/// <param name="Raw">The entry's raw value (CR3 for <see cref="AnomalyKind.RootOutsideMemory"/>; 0 for <see cref="AnomalyKind.WorkLimitReached"/>, which stops before the read).</param>
/// <param name="Message">A sentence for people: what, where, and what was skipped.</param>
public readonly record struct Anomaly(AnomalyKind Kind, PagingLevel Level, VirtualAddress Address, PhysicalAddress EntryAddress, ulong Raw, string Message)
{
    /// <summary>Whether this anomaly is only informational (<see cref="AnomalyKind.RepeatedTable"/>): nothing was skipped because of it.</summary>
    public bool IsInformational => Kind == AnomalyKind.RepeatedTable;

    /// <summary>The message.</summary>
    public override string ToString() => Message;
}
