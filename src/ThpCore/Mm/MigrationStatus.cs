namespace ThpCore.Mm;

/// <summary>How an <see cref="AddressSpace.Migrate"/> ended.</summary>
public enum MigrationStatus : byte
{
    /// <summary>The folio was copied to new frames of the same order and every mapping now maps the copy.</summary>
    Migrated = 0,

    /// <summary>
    /// The THP was split into order-0 folios (<c>thp_migration_split</c>) and every one of them was migrated: on the
    /// deferred-split queue and partially mapped (Linux's <c>migrate_pages_batch</c> splits such a folio first), or no
    /// free order-9 block for the copy (<c>-ENOMEM</c> with a large folio).
    /// </summary>
    Split = 1,

    /// <summary>No VMA at the address, or nothing present is mapped there.</summary>
    NotMapped = 2,

    /// <summary>The address maps the zero page, the huge zero page or another non-anonymous folio, which the anonymous migration path does not move.</summary>
    NotAnonymous = 3,

    /// <summary>
    /// The folio may be DMA-pinned (<c>folio_maybe_dma_pinned</c>) and a mapped page of it is anon-exclusive:
    /// <c>try_to_migrate_one</c> cannot make the page shared (<c>folio_try_share_anon_rmap_*</c> fails), so it stays mapped.
    /// Nothing was changed.
    /// </summary>
    Pinned = 4,

    /// <summary>
    /// The folio holds references other than its mappings and the swap cache's (Linux: <c>folio_ref_count</c> differs from
    /// <c>folio_expected_refs</c> once unmapped, <c>-EAGAIN</c> until the retries run out). Nothing was changed.
    /// </summary>
    UnexpectedReferences = 5,

    /// <summary>
    /// No free block of the folio's order for the copy, and, for a THP, no split possible; or, after a split, no frame
    /// for one of the pages (the pages before it were migrated, the rest stay where they are).
    /// </summary>
    OutOfMemory = 6,
}
