using ThpCore.Memory;

namespace ThpCore.Mm;

/// <summary>How an <see cref="AddressSpace.SwapOut"/> (one folio of reclaim, Linux <c>shrink_folio_list</c>) ended.</summary>
public enum SwapOutStatus : byte
{
    /// <summary>The folio (or, after a split, every page of it that was mapped) was written to swap and every mapping of it became a swap PTE.</summary>
    SwappedOut = 0,

    /// <summary>Nothing is mapped at the address.</summary>
    NotMapped = 1,

    /// <summary>The address maps a zero page or a non-anonymous folio, which reclaim does not swap.</summary>
    NotAnonymous = 2,

    /// <summary>The folio is also mapped elsewhere (another address space, or a mapping here outside the folio-sized window searched).</summary>
    Shared = 3,

    /// <summary>The folio may be DMA-pinned (<c>folio_maybe_dma_pinned</c>): reclaim keeps it (<c>keep_locked</c>).</summary>
    Pinned = 4,

    /// <summary>The folio is already in the swap cache (a slot of it is shared with another address space); reclaiming it again is not modelled.</summary>
    AlreadyInSwapCache = 5,

    /// <summary>
    /// Not returned any more: a partially mapped folio on the deferred-split queue is now split first and its mapped
    /// pages are swapped out (<c>shrink_folio_list</c>); see <see cref="SwapOutResult.Split"/>.
    /// </summary>
    PartiallyMapped = 6,

    /// <summary>
    /// No free swap slot: an order-0 folio, or (after a THP was split, <see cref="SwapOutResult.Split"/>) some of its
    /// pages, stay in memory (<c>activate_locked_split</c>); <see cref="SwapOutResult.Pages"/> says how many were written.
    /// </summary>
    NoSwapSpace = 7,

    /// <summary>The folio's order is neither 0 nor 9 (multi-size THP swap-out is not modelled).</summary>
    UnsupportedOrder = 8,

    /// <summary>
    /// A large folio has references other than its mappings (<c>can_split_folio</c> fails): reclaim keeps it
    /// (<c>activate_locked</c>).
    /// </summary>
    ExtraReferences = 9,

    /// <summary>The large folio had to be split and <see cref="MemoryNode.TrySplitFolio"/> refused (<see cref="SwapOutResult.SplitRefusal"/>).</summary>
    SplitFailed = 10,

    /// <summary>
    /// No swap device (only from <see cref="Advice.PageOut"/>): <c>add_to_swap</c> fails, so an order-0 folio stays,
    /// and a THP is split first (<c>thp_swpout_fallback</c>) and its pages stay, as Linux v6.12 does.
    /// </summary>
    NoSwapDevice = 11,

    /// <summary>A clean lazyfree folio (after <c>MADV_FREE</c>) was unmapped and freed without I/O (<c>pglazyfreed</c>).</summary>
    Discarded = 12,

    /// <summary>
    /// A lazyfree folio was written again (a dirty PTE or PMD, or a dirty folio) or has extra references: it becomes
    /// swap-backed again (when dirty) and stays mapped (<c>try_to_unmap_one</c> remaps it).
    /// </summary>
    Redirtied = 13,

    /// <summary>
    /// The folio is mapped by a <see cref="VmaFlags.Locked"/> VMA (<c>mlock</c>): it is unevictable (on the unevictable
    /// LRU, <c>folio_evictable</c> false) and reclaim never takes it.
    /// </summary>
    Mlocked = 14,
}

/// <summary>The outcome of <see cref="AddressSpace.SwapOut"/>.</summary>
/// <param name="Status">What happened.</param>
/// <param name="FirstSlot">The swap slot of the folio's first page (after a split, of the first page written); otherwise 0.</param>
/// <param name="Pages">The number of pages written to swap (or, for <see cref="SwapOutStatus.Discarded"/>, discarded); 0 when refused.</param>
/// <param name="SplitRefusal">Why the split was refused, for <see cref="SwapOutStatus.SplitFailed"/>.</param>
/// <param name="Split">Whether the large folio was split into order-0 folios first (<c>split_folio_to_list</c>).</param>
public readonly record struct SwapOutResult(SwapOutStatus Status, ulong FirstSlot, int Pages, FolioSplitRefusal SplitRefusal = FolioSplitRefusal.None, bool Split = false)
{
    /// <summary>Whether the folio was swapped out.</summary>
    public bool IsSwappedOut => Status == SwapOutStatus.SwappedOut;
}
