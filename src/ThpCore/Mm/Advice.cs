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

    /// <summary>
    /// <c>MADV_FREE</c> (8): the range's private anonymous pages become lazyfree (clean, old, not swap-backed); reclaim
    /// may then discard them without writing them, and a read after that finds zero-filled pages. Writing a page again
    /// keeps it. Swap entries in the range are freed.
    /// </summary>
    Free = 8,

    /// <summary><c>MADV_HUGEPAGE</c> (14): sets <see cref="VmaFlags.HugePage"/> and clears <see cref="VmaFlags.NoHugePage"/>.</summary>
    HugePage = 14,

    /// <summary><c>MADV_NOHUGEPAGE</c> (15): sets <see cref="VmaFlags.NoHugePage"/> and clears <see cref="VmaFlags.HugePage"/>.</summary>
    NoHugePage = 15,

    /// <summary>
    /// <c>MADV_COLD</c> (20): deactivate the range's pages mapped only by this process. There are no LRU lists here, so
    /// what is left is the page-table part: the accessed bit of their PTEs and PMDs is cleared, and large folios only
    /// partly in the range are split.
    /// </summary>
    Cold = 20,

    /// <summary>
    /// <c>MADV_PAGEOUT</c> (21): reclaim the range's pages mapped only by this process now: swap-backed pages are
    /// swapped out (as <see cref="AddressSpace.SwapOut"/>), clean lazyfree pages are discarded.
    /// </summary>
    PageOut = 21,

    /// <summary>
    /// <c>MADV_COLLAPSE</c> (25): collapse the range's aligned 2 MiB regions into THPs now, synchronously, by copy
    /// (<c>ThpCore.Collapse.Collapser.MadviseCollapse</c>, which also returns the per-region results).
    /// </summary>
    Collapse = 25,
}
