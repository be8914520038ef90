namespace ThpCore.Collapse;

/// <summary>
/// Why a collapse succeeded or refused. Values 0 to 31 are Linux's <c>enum scan_result</c> in
/// <c>mm/khugepaged.c</c> (v6.12, the same order and numbers; the file and shmem codes are kept so that the numbers
/// match, though ThpCore has no file THPs); values from 100 are ThpCore's own, for the in-place paths Linux does not
/// have for anonymous memory (100-107 in-place collapse, 130-137 re-form in place).
/// </summary>
public enum CollapseStatus
{
    /// <summary><c>SCAN_FAIL</c>: a generic failure (the PMD changed under the operation, a swap-in failed).</summary>
    Fail = 0,

    /// <summary><c>SCAN_SUCCEED</c>: collapsed (or, as a check's result, the check passed).</summary>
    Succeed = 1,

    /// <summary><c>SCAN_PMD_NULL</c>: no page table reaches the range (a missing upper level or a bad PMD).</summary>
    PmdNull = 2,

    /// <summary><c>SCAN_PMD_NONE</c>: the PMD entry is empty.</summary>
    PmdNone = 3,

    /// <summary><c>SCAN_PMD_MAPPED</c>: the range is already mapped by a PMD leaf (MADV_COLLAPSE counts it as success).</summary>
    PmdMapped = 4,

    /// <summary><c>SCAN_EXCEED_NONE_PTE</c>: more than <c>max_ptes_none</c> PTEs are none or map the zero page.</summary>
    ExceedNonePte = 5,

    /// <summary><c>SCAN_EXCEED_SWAP_PTE</c>: more than <c>max_ptes_swap</c> swap PTEs.</summary>
    ExceedSwapPte = 6,

    /// <summary><c>SCAN_EXCEED_SHARED_PTE</c>: more than <c>max_ptes_shared</c> PTEs map folios likely mapped shared.</summary>
    ExceedSharedPte = 7,

    /// <summary><c>SCAN_PTE_NON_PRESENT</c>: a non-present PTE that is not a plain swap entry (a migration entry, PROT_NONE).</summary>
    PteNonPresent = 8,

    /// <summary><c>SCAN_PTE_UFFD_WP</c>: a userfaultfd write-protect marker (never produced: no userfaultfd in the model).</summary>
    PteUffdWp = 9,

    /// <summary><c>SCAN_PTE_MAPPED_HUGEPAGE</c>: file/shmem only (never produced).</summary>
    PteMappedHugepage = 10,

    /// <summary><c>SCAN_PAGE_RO</c>: no PTE of the range is writable (v6.12 still requires one; removed in 2025).</summary>
    PageRo = 11,

    /// <summary><c>SCAN_LACK_REFERENCED_PAGE</c>: khugepaged found no young or referenced page (or too few with swap PTEs).</summary>
    LackReferencedPage = 12,

    /// <summary><c>SCAN_PAGE_NULL</c>: a special mapping with no normal page.</summary>
    PageNull = 13,

    /// <summary><c>SCAN_SCAN_ABORT</c>: NUMA node distance (never produced: one node).</summary>
    ScanAbort = 14,

    /// <summary><c>SCAN_PAGE_COUNT</c>: a folio's reference count is not its map count (+ swap cache): a GUP pin or another reference.</summary>
    PageCount = 15,

    /// <summary><c>SCAN_PAGE_LRU</c>: a folio is not on an LRU list.</summary>
    PageLru = 16,

    /// <summary><c>SCAN_PAGE_LOCK</c>: a folio is locked.</summary>
    PageLock = 17,

    /// <summary><c>SCAN_PAGE_ANON</c>: a folio is not anonymous.</summary>
    PageAnon = 18,

    /// <summary><c>SCAN_PAGE_COMPOUND</c>: file path / <c>collapse_pte_mapped_thp</c>: the folio is not PMD-order.</summary>
    PageCompound = 19,

    /// <summary><c>SCAN_ANY_PROCESS</c>: the mm is exiting or has THP disabled.</summary>
    AnyProcess = 20,

    /// <summary><c>SCAN_VMA_NULL</c>: no VMA at the address.</summary>
    VmaNull = 21,

    /// <summary><c>SCAN_VMA_CHECK</c>: the VMA is not THP-eligible (NOHUGEPAGE, not anonymous, sysfs for khugepaged).</summary>
    VmaCheck = 22,

    /// <summary><c>SCAN_ADDRESS_RANGE</c>: the aligned 2 MiB does not fit inside the VMA.</summary>
    AddressRange = 23,

    /// <summary><c>SCAN_DEL_PAGE_LRU</c>: isolating a folio from the LRU failed.</summary>
    DelPageLru = 24,

    /// <summary><c>SCAN_ALLOC_HUGE_PAGE_FAIL</c>: no order-9 block for the new THP (counts <c>thp_collapse_alloc_failed</c>).</summary>
    AllocHugePageFail = 25,

    /// <summary><c>SCAN_CGROUP_CHARGE_FAIL</c>: memcg charge failed (never produced: no memcg).</summary>
    CgroupChargeFail = 26,

    /// <summary><c>SCAN_TRUNCATED</c>: file path (never produced).</summary>
    Truncated = 27,

    /// <summary><c>SCAN_PAGE_HAS_PRIVATE</c>: file path (never produced).</summary>
    PageHasPrivate = 28,

    /// <summary><c>SCAN_STORE_FAILED</c>: file path (never produced).</summary>
    StoreFailed = 29,

    /// <summary><c>SCAN_COPY_MC</c>: a machine check while copying (never produced).</summary>
    CopyMc = 30,

    /// <summary><c>SCAN_PAGE_FILLED</c>: shmem (never produced).</summary>
    PageFilled = 31,

    /// <summary>In place: a PTE of the 2 MiB is none or maps the zero page (a hole).</summary>
    InPlaceHole = 100,

    /// <summary>In place: a PTE of the 2 MiB is a swap entry.</summary>
    InPlaceSwapPte = 101,

    /// <summary>In place: the PTEs map pages of more than one folio, or of a folio that is not PMD-order.</summary>
    InPlaceMixedFolios = 102,

    /// <summary>In place: the PTEs map subpages of one order-9 folio, but not subpage i at slot i.</summary>
    InPlaceOutOfOrder = 103,

    /// <summary>In place: the PTEs' attributes (R/W, U/S, XD, PWT, PCD, PAT, G, protection key) differ (A and D may).</summary>
    InPlaceMixedAttributes = 104,

    /// <summary>
    /// In place: some subpages are anon-exclusive and others are not; the PMD's single exclusive flag cannot stand for
    /// both (David Hildenbrand's rule, Jan 2023).
    /// </summary>
    InPlaceMixedExclusive = 105,

    /// <summary>
    /// In place: every subpage is anon-exclusive, yet the folio has mappings or references outside these 512 PTEs
    /// (another address space, another range) beyond pins: exclusivity would be wrong.
    /// </summary>
    InPlaceSharedWithOthers = 106,

    /// <summary>In place: a PTE is writable although its page is not anon-exclusive (a broken copy-on-write state).</summary>
    InPlaceWritableShared = 107,

    /// <summary>Re-form: fewer PTEs than <see cref="ReformOptions.MinInPlace"/> map frame B + i of the best aligned block B.</summary>
    ReformTooFewInPlace = 130,

    /// <summary>
    /// Re-form: a frame of the target block that must be freed holds something that cannot move (a page table, a
    /// reserved frame, the zero page, part of a large folio, a pinned or otherwise referenced folio), or the block
    /// reaches past the node.
    /// </summary>
    ReformBlockOccupied = 131,

    /// <summary>Re-form: a page the range maps may be pinned for DMA (1024 references or more).</summary>
    ReformPinned = 132,

    /// <summary>Re-form: a page the range maps is mapped elsewhere too (map count above 1, another fork-family member) or is not anon-exclusive.</summary>
    ReformShared = 133,

    /// <summary>Re-form: a page the range maps is in the swap cache (a joined folio cannot keep per-page swap-cache slots).</summary>
    ReformSwapCache = 134,

    /// <summary>Re-form: the pages are of mixed lazyfree (<c>MADV_FREE</c>) and swap-backed state; one folio has one.</summary>
    ReformMixedLazyFree = 135,

    /// <summary>Re-form: the node has fewer free frames outside the target block than occupants to migrate out of it.</summary>
    ReformNoFreeFrames = 136,

    /// <summary>
    /// Re-form: a step failed after pages had begun to move (a migration refused, a freed frame taken, the join
    /// refused). Should not happen after the checks; the state is consistent (every page mapped, books balanced), the
    /// moves made so far are not undone, and the range is left PTE-mapped.
    /// </summary>
    ReformInterrupted = 137,
}
