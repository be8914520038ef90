using System;

namespace ThpCore.Memory;

/// <summary>
/// Per-frame state bits, after Linux's page flags (<c>include/linux/page-flags.h</c>) where one exists.
/// The folio-wide ones (anon, swap cache, dirty, LRU, deferred split) are kept on the head frame.
/// </summary>
[Flags]
public enum FrameFlags : uint
{
    /// <summary>No flag: a frame in use with no other state (every frame of a block the buddy allocator handed out, until it becomes a folio).</summary>
    None = 0,

    /// <summary>
    /// The frame is in the buddy allocator. Stored on the first frame of a free block only (Linux: <c>PageBuddy</c>;
    /// <c>page_count == 0</c> for all); <see cref="FrameTable.Describe"/> reports it for every frame of the block.
    /// </summary>
    Free = 1u << 0,

    /// <summary>The first frame of a large folio (Linux: <c>PG_head</c>).</summary>
    Head = 1u << 1,

    /// <summary>A frame of a large folio other than the first (Linux: <c>PageTail</c>, via <c>compound_head</c>).</summary>
    Tail = 1u << 2,

    /// <summary>Anonymous memory (Linux: <c>PageAnon</c>, the low bit of <c>page-&gt;mapping</c>).</summary>
    Anon = 1u << 3,

    /// <summary>The frame holds a paging structure (Linux: <c>PageTable</c> page type).</summary>
    PageTable = 1u << 4,

    /// <summary>The folio is in the swap cache (Linux: <c>PG_swapcache</c>); the cache holds one reference per page.</summary>
    SwapCache = 1u << 5,

    /// <summary>The folio's contents differ from its backing store (Linux: <c>PG_dirty</c>).</summary>
    Dirty = 1u << 6,

    /// <summary>The folio is on an LRU list (Linux: <c>PG_lru</c>).</summary>
    Lru = 1u << 7,

    /// <summary>Never handed out: firmware, holes, the kernel image (Linux: <c>PG_reserved</c>).</summary>
    Reserved = 1u << 8,

    /// <summary>This page of an anonymous folio belongs to exactly one process (Linux: <c>PageAnonExclusive</c>); per page.</summary>
    AnonExclusive = 1u << 9,

    /// <summary>The large folio is on the deferred-split queue (Linux: its <c>_deferred_list</c> is not empty).</summary>
    DeferredSplit = 1u << 10,

    /// <summary>The large folio is partially mapped (Linux: <c>PG_partially_mapped</c>, 6.12+).</summary>
    PartiallyMapped = 1u << 11,

    /// <summary>
    /// The anonymous folio is lazily freeable: Linux's <c>PG_swapbacked</c> is clear (<c>folio_mark_lazyfree</c> after
    /// <c>MADV_FREE</c>). Stored inverted, so that an anonymous folio is swap-backed from allocation as
    /// <c>folio_add_new_anon_rmap</c> makes it; folio-wide, on the head.
    /// </summary>
    LazyFree = 1u << 12,
}
