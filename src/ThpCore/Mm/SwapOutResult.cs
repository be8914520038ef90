namespace ThpCore.Mm;

/// <summary>How an <see cref="AddressSpace.SwapOut"/> ended.</summary>
public enum SwapOutStatus : byte
{
    /// <summary>The folio was written to swap and every mapping of it became a swap PTE.</summary>
    SwappedOut = 0,

    /// <summary>Nothing is mapped at the address.</summary>
    NotMapped = 1,

    /// <summary>The address maps a zero page or a non-anonymous folio, which reclaim does not swap.</summary>
    NotAnonymous = 2,

    /// <summary>The folio is also mapped elsewhere (another address space, or a mapping here outside the folio-sized window searched).</summary>
    Shared = 3,

    /// <summary>The folio may be DMA-pinned (<c>folio_maybe_dma_pinned</c>): try_to_unmap would fail.</summary>
    Pinned = 4,

    /// <summary>The folio is already in the swap cache.</summary>
    AlreadyInSwapCache = 5,

    /// <summary>The folio is on the deferred-split queue (partly unmapped); Linux would split it first (not modelled).</summary>
    PartiallyMapped = 6,

    /// <summary>
    /// No free swap slot, or for an order-9 folio no wholly free 512-slot cluster (<c>thp_swpout_fallback</c> is
    /// counted; splitting and swapping the pages one by one is not modelled).
    /// </summary>
    NoSwapSpace = 7,

    /// <summary>The folio's order is neither 0 nor 9 (multi-size THP swap-out is not modelled).</summary>
    UnsupportedOrder = 8,
}

/// <summary>The outcome of <see cref="AddressSpace.SwapOut"/>.</summary>
/// <param name="Status">What happened.</param>
/// <param name="FirstSlot">The swap slot of the folio's first page when swapped out; otherwise 0.</param>
/// <param name="Pages">The number of pages written to swap: the folio's page count, or 0 when refused.</param>
public readonly record struct SwapOutResult(SwapOutStatus Status, ulong FirstSlot, int Pages)
{
    /// <summary>Whether the folio was swapped out.</summary>
    public bool IsSwappedOut => Status == SwapOutStatus.SwappedOut;
}
