namespace ThpCore.Mm;

/// <summary>
/// The <c>madvise</c> advice values <see cref="AddressSpace.Advise"/> models; each value is Linux's <c>MADV_*</c> number
/// (<c>include/uapi/asm-generic/mman-common.h</c>).
/// </summary>
public enum Advice
{
    /// <summary>
    /// <c>MADV_DONTNEED</c> (4): the range's pages are zapped as by <c>munmap</c>, but the VMAs stay; a later read of
    /// private anonymous memory finds zero-filled pages again.
    /// </summary>
    DontNeed = 4,

    /// <summary><c>MADV_HUGEPAGE</c> (14): sets <see cref="VmaFlags.HugePage"/> and clears <see cref="VmaFlags.NoHugePage"/>.</summary>
    HugePage = 14,

    /// <summary><c>MADV_NOHUGEPAGE</c> (15): sets <see cref="VmaFlags.NoHugePage"/> and clears <see cref="VmaFlags.HugePage"/>.</summary>
    NoHugePage = 15,
}
