using System;

namespace ThpCore.Mm;

/// <summary>
/// The <c>vm_flags</c> bits of a VMA that the model keeps, other than the access rights (see <see cref="Protection"/>).
/// </summary>
/// <remarks>
/// Two VMAs merge only when their flags are equal (Linux's <c>is_mergeable_vma</c>, which ignores only
/// <c>VM_SOFTDIRTY</c>; soft-dirty is not modelled). <see cref="HugePage"/> and <see cref="NoHugePage"/> exclude each
/// other, as <c>madvise(MADV_HUGEPAGE)</c> clears <c>VM_NOHUGEPAGE</c> and <c>MADV_NOHUGEPAGE</c> clears <c>VM_HUGEPAGE</c>
/// (<c>hugepage_madvise</c> in <c>mm/khugepaged.c</c>).
/// </remarks>
[Flags]
public enum VmaFlags : uint
{
    /// <summary>No flags.</summary>
    None = 0,

    /// <summary>Anonymous memory (<c>MAP_ANONYMOUS</c>): no backing file; <c>vma_is_anonymous</c>.</summary>
    Anonymous = 1,

    /// <summary><c>VM_SHARED</c> (<c>MAP_SHARED</c>); without it the mapping is private (copy-on-write after fork).</summary>
    Shared = 2,

    /// <summary><c>VM_HUGEPAGE</c>, set by <c>madvise(MADV_HUGEPAGE)</c>.</summary>
    HugePage = 4,

    /// <summary><c>VM_NOHUGEPAGE</c>, set by <c>madvise(MADV_NOHUGEPAGE)</c>: no THP at fault, none by khugepaged.</summary>
    NoHugePage = 8,

    /// <summary><c>VM_LOCKED</c> (<c>mlock</c>, <c>MAP_LOCKED</c>).</summary>
    Locked = 16,

    /// <summary><c>VM_GROWSDOWN</c> (<c>MAP_GROWSDOWN</c>, a stack): the free-range search keeps a stack guard gap below it.</summary>
    GrowsDown = 32,
}
