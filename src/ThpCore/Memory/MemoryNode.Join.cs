using System.Threading;
using ThpCore.Internal;

namespace ThpCore.Memory;

/// <summary>Why <see cref="MemoryNode.TryJoinFolio"/> did not join 512 order-0 folios into one order-9 folio.</summary>
public enum FolioJoinRefusal
{
    /// <summary>The folios were joined.</summary>
    None,

    /// <summary>The first frame is not a multiple of 512: an order-9 folio starts on a 2 MiB boundary.</summary>
    NotAligned,

    /// <summary>A frame is free, reserved or a page table: not a folio at all.</summary>
    NotAFolio,

    /// <summary>A frame is part of a large folio already.</summary>
    LargeFolio,

    /// <summary>A folio is not anonymous.</summary>
    NotAnonymous,

    /// <summary>A folio may be pinned for DMA (Linux <c>folio_maybe_dma_pinned</c>: 1024 references or more on an order-0 folio).</summary>
    Pinned,

    /// <summary>A folio is in the swap cache (its cache slot is per folio and would have to be joined too).</summary>
    SwapCache,

    /// <summary>Some folios are lazyfree (<c>MADV_FREE</c>) and others swap-backed: one folio has one <c>PG_swapbacked</c>.</summary>
    MixedSwapBacked,

    /// <summary>
    /// A folio's references are not exactly its PTE mappings: someone holds another reference (a FOLL_GET, an
    /// isolation), or the page is not mapped at all.
    /// </summary>
    UnexpectedReferences,
}

public sealed partial class MemoryNode
{
    /// <summary>
    /// Joins the 512 order-0 anonymous folios on frames <paramref name="headFrame"/> .. + 511 into one order-9 folio
    /// where they lie: the inverse of <see cref="TrySplitFolio"/> for a fully PTE-mapped range. ThpCore's own operation
    /// (Linux has no way to join folios; its only route to a THP from small pages is copying, <c>collapse_huge_page</c>),
    /// the first step of re-forming a THP in place.
    /// </summary>
    /// <remarks>
    /// <para>
    /// Refused, with nothing changed, unless every frame is a live order-0 anonymous folio that is not maybe pinned,
    /// not in the swap cache, of the same swap-backed (lazyfree) state as the others, and whose reference count is
    /// exactly its PTE map count (so each is mapped, and by nothing else). The caller checks that those mappings are
    /// the 512 PTEs of one range, page i at slot i; the node has no page tables.
    /// </para>
    /// <para>
    /// The result keeps each page's PTE map count and anon-exclusive flag; the head's reference count is the sum of the
    /// 512 (one per mapping, as after a PMD split); Dirty and Lru are the OR over the pages, lazyfree the common state.
    /// A large-folio record is made (total map count the sum, no PMD mapping, no pins); the folio is not queued for
    /// deferred split (it is fully mapped). The buddy allocator needs nothing: it reads the order from the head when the
    /// folio is freed.
    /// </para>
    /// </remarks>
    /// <param name="headFrame">The first frame, a multiple of 512.</param>
    /// <param name="folio">The order-9 folio; <see langword="default"/> on a refusal.</param>
    /// <returns>Why the folios were not joined; <see cref="FolioJoinRefusal.None"/> when they were.</returns>
    /// <exception cref="System.ArgumentOutOfRangeException">The 512 frames reach past the node.</exception>
    public FolioJoinRefusal TryJoinFolio(ulong headFrame, out Folio folio)
    {
        const int Pages = 1 << Folio.PmdOrder;
        folio = default;
        if (headFrame >= Frames.FrameCount || Frames.FrameCount - headFrame < Pages)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(headFrame), headFrame, $"The 512 frames from {ThrowHelper.Hex(headFrame)} reach past the node's {Frames.FrameCount:#,0} frames.");
        }

        if ((headFrame & (Pages - 1)) != 0)
        {
            return FolioJoinRefusal.NotAligned;
        }

        lock (_lock)
        {
            FolioJoinRefusal refusal = CheckJoinableLocked(headFrame, Pages, out uint shared);
            if (refusal != FolioJoinRefusal.None)
            {
                return refusal;
            }

            int record = Frames.AllocateRecord(headFrame);
            int references = 0;
            System.Span<FrameMetadata> pages = Frames.Slice(headFrame, Pages);
            for (int i = 0; i < Pages; i++)
            {
                ref FrameMetadata page = ref pages[i];
                references += page.RefCount;
                uint exclusive = (uint)(page.Flags & FrameFlags.AnonExclusive);
                if (i > 0)
                {
                    page.RefCount = 0;
                    page.Link = i;
                    Volatile.Write(ref page.FlagsAndOrder, (uint)FrameFlags.Tail | exclusive);
                }
            }

            ref FrameMetadata head = ref pages[0];
            ref LargeFolioRecord entry = ref Frames.Record(record);
            entry.TotalMapCount = references;
            entry.PinCount = 0;
            head.Link = record;
            head.RefCount = references;
            uint headExclusive = (uint)(head.Flags & FrameFlags.AnonExclusive);
            Volatile.Write(ref head.FlagsAndOrder, shared | headExclusive | (uint)FrameFlags.Head | ((uint)Folio.PmdOrder << FrameMetadata.OrderShift));
            folio = new Folio(this, headFrame, Folio.PmdOrder);
            return FolioJoinRefusal.None;
        }
    }

    // The join's checks, in frame order, the first failing one the result; shared: the joined head's folio-wide flags.
    private FolioJoinRefusal CheckJoinableLocked(ulong headFrame, int pages, out uint shared)
    {
        shared = (uint)FrameFlags.Anon;
        FrameFlags lazyFree = Frames.Ref(headFrame).Flags & FrameFlags.LazyFree;
        const FrameFlags NotAFolio = FrameFlags.Free | FrameFlags.Reserved | FrameFlags.PageTable;
        for (int i = 0; i < pages; i++)
        {
            ref FrameMetadata page = ref Frames.Ref(headFrame + (ulong)i);
            FrameFlags flags = page.Flags;
            if ((flags & NotAFolio) != 0 || (page.RefCount <= 0 && (flags & FrameFlags.Tail) == 0))
            {
                return FolioJoinRefusal.NotAFolio;
            }

            if ((flags & (FrameFlags.Head | FrameFlags.Tail)) != 0 || page.Order != 0)
            {
                return FolioJoinRefusal.LargeFolio;
            }

            if ((flags & FrameFlags.Anon) == 0)
            {
                return FolioJoinRefusal.NotAnonymous;
            }

            if ((uint)page.RefCount >= Folio.PinCountingBias)
            {
                return FolioJoinRefusal.Pinned;
            }

            if ((flags & FrameFlags.SwapCache) != 0)
            {
                return FolioJoinRefusal.SwapCache;
            }

            if ((flags & FrameFlags.LazyFree) != lazyFree)
            {
                return FolioJoinRefusal.MixedSwapBacked;
            }

            if (page.RefCount != page.MapCount + 1)
            {
                return FolioJoinRefusal.UnexpectedReferences;
            }

            shared |= (uint)(flags & (FrameFlags.Dirty | FrameFlags.Lru | FrameFlags.LazyFree));
        }

        return FolioJoinRefusal.None;
    }
}
