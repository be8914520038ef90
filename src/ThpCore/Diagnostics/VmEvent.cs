namespace ThpCore.Diagnostics;

/// <summary>
/// The Linux vm events (<c>enum vm_event_item</c> in <c>include/linux/vm_event_item.h</c>) that the model counts:
/// every THP event of Linux v6.12 and the few others the model's operations produce. Each is a
/// <c>/proc/vmstat</c> line; <see cref="VmEventNames.Name(VmEvent)"/> gives its exact spelling.
/// </summary>
/// <remarks>
/// <para>
/// The members are numbered 0, 1, 2, ... in the order <c>mm/vmstat.c</c>'s <c>vmstat_text</c> prints them, so
/// iterating from 0 to <see cref="VmEventNames.Count"/> - 1 gives Linux's order. The set is that of Linux v6.12
/// built for x86-64 with <c>CONFIG_TRANSPARENT_HUGEPAGE</c>, <c>CONFIG_MIGRATION</c>, <c>CONFIG_COMPACTION</c>,
/// <c>CONFIG_SWAP</c> and <c>CONFIG_HAVE_ARCH_TRANSPARENT_HUGEPAGE_PUD</c> (all set in x86-64 defconfig-based
/// distribution kernels). Linux events between them that the model never produces (<c>pgalloc_*</c>,
/// <c>pgscan_*</c>, <c>numa_*</c>, ...) are left out.
/// </para>
/// <para>
/// Not included: <c>thp_split_pmd_failed</c>, proposed in 2025 after v6.12; ThpCore's own events (in-place
/// collapse, lazy zeroing), which are not Linux's and will get names of their own.
/// </para>
/// </remarks>
public enum VmEvent
{
    /// <summary><c>pswpin</c> (<c>PSWPIN</c>): a page was read in from swap.</summary>
    PswpIn,

    /// <summary><c>pswpout</c> (<c>PSWPOUT</c>): a page was written out to swap.</summary>
    PswpOut,

    /// <summary><c>pglazyfree</c> (<c>PGLAZYFREE</c>): a page was marked lazily freeable (<c>MADV_FREE</c>).</summary>
    PgLazyFree,

    /// <summary><c>pgfault</c> (<c>PGFAULT</c>): a page fault was handled (minor or major).</summary>
    PgFault,

    /// <summary><c>pgmajfault</c> (<c>PGMAJFAULT</c>): a fault needed I/O, such as a swap-in.</summary>
    PgMajFault,

    /// <summary><c>pglazyfreed</c> (<c>PGLAZYFREED</c>): reclaim freed a lazily freeable page without writing it.</summary>
    PgLazyFreed,

    /// <summary><c>pgmigrate_success</c> (<c>PGMIGRATE_SUCCESS</c>): base pages migrated, counted per page.</summary>
    PgMigrateSuccess,

    /// <summary><c>pgmigrate_fail</c> (<c>PGMIGRATE_FAIL</c>): base pages that failed to migrate.</summary>
    PgMigrateFail,

    /// <summary><c>thp_migration_success</c> (<c>THP_MIGRATION_SUCCESS</c>): a THP was migrated without splitting.</summary>
    ThpMigrationSuccess,

    /// <summary><c>thp_migration_fail</c> (<c>THP_MIGRATION_FAIL</c>): a THP could neither be migrated nor split.</summary>
    ThpMigrationFail,

    /// <summary><c>thp_migration_split</c> (<c>THP_MIGRATION_SPLIT</c>): a THP was split so that its pages could be migrated.</summary>
    ThpMigrationSplit,

    /// <summary><c>compact_stall</c> (<c>COMPACTSTALL</c>): an allocation entered direct compaction.</summary>
    CompactStall,

    /// <summary><c>compact_fail</c> (<c>COMPACTFAIL</c>): direct compaction did not produce the page.</summary>
    CompactFail,

    /// <summary><c>compact_success</c> (<c>COMPACTSUCCESS</c>): direct compaction produced the page.</summary>
    CompactSuccess,

    /// <summary><c>thp_fault_alloc</c> (<c>THP_FAULT_ALLOC</c>): a fault allocated and charged a PMD-size THP.</summary>
    ThpFaultAlloc,

    /// <summary><c>thp_fault_fallback</c> (<c>THP_FAULT_FALLBACK</c>): a fault wanted a THP and fell back to base pages.</summary>
    ThpFaultFallback,

    /// <summary>
    /// <c>thp_fault_fallback_charge</c> (<c>THP_FAULT_FALLBACK_CHARGE</c>): the THP was allocated but the memory
    /// cgroup charge failed (also counted in <see cref="ThpFaultFallback"/>).
    /// </summary>
    ThpFaultFallbackCharge,

    /// <summary><c>thp_collapse_alloc</c> (<c>THP_COLLAPSE_ALLOC</c>): khugepaged or <c>MADV_COLLAPSE</c> allocated a THP to collapse into.</summary>
    ThpCollapseAlloc,

    /// <summary><c>thp_collapse_alloc_failed</c> (<c>THP_COLLAPSE_ALLOC_FAILED</c>): that allocation failed.</summary>
    ThpCollapseAllocFailed,

    /// <summary><c>thp_file_alloc</c> (<c>THP_FILE_ALLOC</c>): a file or shmem THP was allocated.</summary>
    ThpFileAlloc,

    /// <summary><c>thp_file_fallback</c> (<c>THP_FILE_FALLBACK</c>): a file or shmem THP allocation fell back to base pages.</summary>
    ThpFileFallback,

    /// <summary><c>thp_file_fallback_charge</c> (<c>THP_FILE_FALLBACK_CHARGE</c>): the file THP was allocated but the charge failed.</summary>
    ThpFileFallbackCharge,

    /// <summary><c>thp_file_mapped</c> (<c>THP_FILE_MAPPED</c>): a file THP was mapped by a PMD.</summary>
    ThpFileMapped,

    /// <summary><c>thp_split_page</c> (<c>THP_SPLIT_PAGE</c>): a huge folio was split into base pages.</summary>
    ThpSplitPage,

    /// <summary><c>thp_split_page_failed</c> (<c>THP_SPLIT_PAGE_FAILED</c>): a split failed, for example because of an extra reference (a pin).</summary>
    ThpSplitPageFailed,

    /// <summary><c>thp_deferred_split_page</c> (<c>THP_DEFERRED_SPLIT_PAGE</c>): a THP was queued for deferred split (first partial unmap).</summary>
    ThpDeferredSplitPage,

    /// <summary>
    /// <c>thp_underused_split_page</c> (<c>THP_UNDERUSED_SPLIT_PAGE</c>, new in v6.12): the deferred-split shrinker
    /// split a THP because too many of its pages were zero-filled (the <c>max_ptes_none</c> rule).
    /// </summary>
    ThpUnderusedSplitPage,

    /// <summary><c>thp_split_pmd</c> (<c>THP_SPLIT_PMD</c>): a PMD mapping was split into a page table of PTEs; the folio stays whole.</summary>
    ThpSplitPmd,

    /// <summary><c>thp_scan_exceed_none_pte</c> (<c>THP_SCAN_EXCEED_NONE_PTE</c>): khugepaged gave up on a range with more than <c>max_ptes_none</c> empty or zero-page PTEs.</summary>
    ThpScanExceedNonePte,

    /// <summary><c>thp_scan_exceed_swap_pte</c> (<c>THP_SCAN_EXCEED_SWAP_PTE</c>): khugepaged gave up on a range with more than <c>max_ptes_swap</c> swap PTEs.</summary>
    ThpScanExceedSwapPte,

    /// <summary>
    /// <c>thp_scan_exceed_share_pte</c> (<c>THP_SCAN_EXCEED_SHARED_PTE</c>): khugepaged gave up on a range with more
    /// than <c>max_ptes_shared</c> shared pages. Linux's enum says "SHARED" but <c>/proc/vmstat</c> says "share".
    /// </summary>
    ThpScanExceedSharedPte,

    /// <summary><c>thp_split_pud</c> (<c>THP_SPLIT_PUD</c>): a PUD (1 GiB) mapping was split.</summary>
    ThpSplitPud,

    /// <summary><c>thp_zero_page_alloc</c> (<c>THP_ZERO_PAGE_ALLOC</c>): the huge zero page was allocated.</summary>
    ThpZeroPageAlloc,

    /// <summary><c>thp_zero_page_alloc_failed</c> (<c>THP_ZERO_PAGE_ALLOC_FAILED</c>): allocating the huge zero page failed.</summary>
    ThpZeroPageAllocFailed,

    /// <summary><c>thp_swpout</c> (<c>THP_SWPOUT</c>): a THP was swapped out whole, without splitting.</summary>
    ThpSwpOut,

    /// <summary><c>thp_swpout_fallback</c> (<c>THP_SWPOUT_FALLBACK</c>): a THP was split before being swapped out.</summary>
    ThpSwpOutFallback,

    /// <summary>
    /// <c>swpin_zero</c> (<c>SWPIN_ZERO</c>, v6.12): a page swapped in from the swap zeromap, filled with zeros without
    /// any I/O (so no <c>pswpin</c>).
    /// </summary>
    SwpInZero,

    /// <summary>
    /// <c>swpout_zero</c> (<c>SWPOUT_ZERO</c>, v6.12): a page of an all-zero folio recorded in the swap zeromap instead
    /// of being written (so no <c>pswpout</c> or <c>thp_swpout</c>).
    /// </summary>
    SwpOutZero,

    /// <summary>
    /// <c>thp_collapse_inplace</c> — ThpCore's own event, not Linux's: a PTE-mapped order-9 anonymous folio was mapped
    /// by one PMD where it lies, with no copy and no allocation (<c>ThpCore.Collapse.Collapser.TryCollapseInPlace</c>).
    /// </summary>
    ThpCollapseInPlace,

    /// <summary>
    /// <c>thp_collapse_inplace_failed</c> — ThpCore's own event, not Linux's: an in-place collapse refused (any reason
    /// except that the range was already PMD-mapped).
    /// </summary>
    ThpCollapseInPlaceFailed,

    /// <summary>
    /// <c>thp_collapse_reformed</c> — ThpCore's own event, not Linux's: a 2 MiB range of order-0 pages mostly in place in
    /// one aligned physical block was re-formed into a THP there (<c>ThpCore.Collapse.Collapser.TryReformInPlace</c>).
    /// </summary>
    ThpCollapseReformed,

    /// <summary>
    /// <c>thp_collapse_reformed_failed</c> — ThpCore's own event, not Linux's: a re-form in place refused, or stopped
    /// after it had begun moving pages.
    /// </summary>
    ThpCollapseReformedFailed,

    /// <summary>
    /// <c>thp_collapse_reform_migrated</c> — ThpCore's own event, not Linux's: one per page a re-form in place migrated out
    /// of its target block (each also counts <c>pgmigrate_success</c> in the address space that maps it).
    /// </summary>
    ThpCollapseReformMigrated,
}
