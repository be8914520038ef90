using System;
using System.Collections.Generic;
using System.Threading;
using ThpCore.Diagnostics;
using ThpCore.Internal;

namespace ThpCore.Memory;

/// <summary>Why <see cref="MemoryNode.TrySplitFolio"/> did not split a folio.</summary>
public enum FolioSplitRefusal
{
    /// <summary>The folio was split.</summary>
    None,

    /// <summary>The folio is order 0: there is nothing to split.</summary>
    NotLarge,

    /// <summary>
    /// The folio is mapped by a PMD (<see cref="Folio.EntireMapCount"/> above 0). Linux's split unmaps the folio
    /// and splits the PMD itself (<c>unmap_folio</c> with <c>TTU_SPLIT_HUGE_PMD</c>); here the node has no page
    /// tables, so the PMD must be split first (<c>split_huge_pmd</c>) by whoever owns it.
    /// </summary>
    PmdMapped,

    /// <summary>The folio may be pinned for DMA (<see cref="Folio.PinCount"/> above 0): its pages must stay where they are, whole.</summary>
    Pinned,

    /// <summary>
    /// The reference count is not exactly the mappings, the swap cache's references and the caller's own (Linux's
    /// <c>can_split_folio</c>): someone else holds a reference (a FOLL_GET, an isolation), or the caller holds
    /// fewer than it said.
    /// </summary>
    UnexpectedReferences,

    /// <summary>The handle's folio was freed already.</summary>
    Freed,
}

/// <summary>The outcome of <see cref="MemoryNode.TrySplitFolio"/>.</summary>
/// <param name="Split">Whether the folio was split into order-0 folios.</param>
/// <param name="Refusal">Why it was not; <see cref="FolioSplitRefusal.None"/> when it was.</param>
/// <param name="PagesFreed">Pages left with no reference by the split and freed to the buddy allocator (0 on a refusal).</param>
public readonly record struct FolioSplitResult(bool Split, FolioSplitRefusal Refusal, int PagesFreed);

public sealed partial class MemoryNode
{
    /// <summary>
    /// Splits a large folio into order-0 folios (Linux <c>split_folio</c>, <c>__split_huge_page</c>). Page tables
    /// here point at frames, not folios, so no mapping needs rewriting: every subpage becomes an order-0 folio in
    /// place, keeping its bytes and its PTE mappings.
    /// </summary>
    /// <remarks>
    /// <para>
    /// Refused, with nothing changed, when the folio is order 0, mapped by a PMD (split the PMD first), may be pinned
    /// for DMA, or holds references other than its mappings, the swap cache's (one per page) and
    /// <paramref name="extraReferences"/> (Linux's <c>can_split_folio</c>: the count must equal the total map count
    /// plus the swap-cache pages plus one for the caller).
    /// </para>
    /// <para>
    /// On success each subpage gets a reference count of its own PTE map count, plus one while the folio was in the
    /// swap cache (the cache keeps one reference per page), plus <paramref name="extraReferences"/> on the head page
    /// only (Linux returns the head locked and referenced to the caller, and drops the rest). Anon, Dirty, SwapCache
    /// and Lru are copied to every subpage; AnonExclusive stays per page. The large-folio record is released and the
    /// folio leaves the deferred-split queue. Subpages left with no reference (unmapped, not in the swap cache) are
    /// freed to the buddy allocator at once and their bytes dropped, as Linux frees them at the end of the split.
    /// </para>
    /// <para>
    /// Counts <see cref="VmEvent.ThpSplitPage"/> on success and <see cref="VmEvent.ThpSplitPageFailed"/> on a
    /// refusal Linux also makes (pinned or unexpected references; not a PMD mapping alone, which Linux's split would
    /// split first), for PMD-order folios only; nothing is counted for an order-0 or freed folio.
    /// </para>
    /// </remarks>
    /// <param name="folio">A folio of this node.</param>
    /// <param name="extraReferences">References the caller holds beyond the mappings and the swap cache: 1 for a caller that took one (Linux's rule), 0 for one that took none.</param>
    /// <param name="counters">Where to count the split; <see langword="null"/> to count nothing.</param>
    /// <returns>Whether the folio was split, why not, and how many pages were freed.</returns>
    /// <exception cref="ArgumentException"><paramref name="folio"/> belongs to another node.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="extraReferences"/> is negative.</exception>
    /// <exception cref="InvalidOperationException"><paramref name="folio"/> is the default value.</exception>
    public FolioSplitResult TrySplitFolio(Folio folio, int extraReferences = 1, VmEventCounters? counters = null)
    {
        if (!ReferenceEquals(folio.Node, this))
        {
            ThrowHelper.ThrowArgument(nameof(folio), $"The {folio} belongs to another node.");
        }

        if (extraReferences < 0)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(extraReferences), extraReferences, $"The caller's references cannot be negative; {extraReferences} is.");
        }

        lock (_lock)
        {
            return TrySplitFolioLocked(folio, extraReferences, counters);
        }
    }

    /// <summary>
    /// Runs the deferred-split shrinker over the node's queue (Linux <c>deferred_split_scan</c>): takes up to
    /// <paramref name="maxFolios"/> queued folios, oldest first, and splits each partially mapped one with
    /// <see cref="TrySplitFolio"/>.
    /// </summary>
    /// <remarks>
    /// <para>
    /// Linux's shrinker takes a reference on each folio, splits with that reference as the caller's, and drops it
    /// afterwards. Here it takes none and splits with <c>extraReferences</c> 0, which ends in the same state: the
    /// head keeps only its mappings' (and the swap cache's) references, and is freed when it has none.
    /// </para>
    /// <para>
    /// A partially mapped folio that cannot be split goes back on the queue; as Linux splices the scanned folios
    /// that are left back at the tail, it moves to the tail, behind the folios not scanned. A scanned folio that is
    /// not partially mapped (queued at fault or collapse time) is taken off the queue unsplit: Linux splits such a
    /// folio only when <c>thp_underused</c> finds more than <c>max_ptes_none</c> zero-filled pages, and with the
    /// default <c>max_ptes_none</c> of 511 it never does; the underused rule is not modelled.
    /// </para>
    /// <para>Split pages with no reference go back to the buddy allocator, so <see cref="BuddyAllocator.FreeFrames"/> rises by exactly the unmapped pages of the split folios.</para>
    /// </remarks>
    /// <param name="maxFolios">The most folios to scan (Linux's <c>nr_to_scan</c>).</param>
    /// <param name="counters">Where to count splits and failures; <see langword="null"/> to count nothing.</param>
    /// <returns>The number of folios split.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxFolios"/> is negative.</exception>
    public int ShrinkDeferredSplitQueue(int maxFolios = int.MaxValue, VmEventCounters? counters = null)
    {
        if (maxFolios < 0)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(maxFolios), maxFolios, $"The number of folios to scan cannot be negative; {maxFolios} is.");
        }

        lock (_lock)
        {
            var scanned = new List<ulong>(Math.Min(maxFolios, _deferredCount));
            for (int index = _deferredHead; index >= 0 && scanned.Count < maxFolios; index = Frames.Record(index).DeferredNext)
            {
                scanned.Add(Frames.Record(index).HeadFrame);
            }

            int split = 0;
            var putBack = new List<ulong>();
            foreach (ulong head in scanned)
            {
                ref FrameMetadata headFrame = ref Frames.Ref(head);
                if ((headFrame.Flags & FrameFlags.PartiallyMapped) == 0)
                {
                    UnqueueDeferredLocked(ref headFrame);
                    continue;
                }

                FolioSplitResult result = TrySplitFolioLocked(new Folio(this, head, headFrame.Order), extraReferences: 0, counters);
                if (result.Split)
                {
                    split++;
                }
                else
                {
                    putBack.Add(head);
                }
            }

            // list_splice_tail: the unsplit ones go to the tail, in the order they were scanned.
            foreach (ulong head in putBack)
            {
                ref FrameMetadata headFrame = ref Frames.Ref(head);
                int record = headFrame.Link;
                UnqueueDeferredLocked(ref headFrame);
                EnqueueDeferredLocked(record);
                Volatile.Write(ref headFrame.FlagsAndOrder, headFrame.FlagsAndOrder | (uint)(FrameFlags.DeferredSplit | FrameFlags.PartiallyMapped));
            }

            return split;
        }
    }

    private FolioSplitResult TrySplitFolioLocked(Folio folio, int extraReferences, VmEventCounters? counters)
    {
        if (!folio.IsLive())
        {
            return new FolioSplitResult(false, FolioSplitRefusal.Freed, 0);
        }

        if (!folio.IsLarge)
        {
            return new FolioSplitResult(false, FolioSplitRefusal.NotLarge, 0);
        }

        ulong headNumber = folio.HeadFrame;
        int pages = folio.PageCount;
        ref FrameMetadata head = ref Frames.Ref(headNumber);
        ref LargeFolioRecord record = ref Frames.Record(head.Link);
        bool swapCache = (head.Flags & FrameFlags.SwapCache) != 0;
        // Linux's own verdict (can_split_folio): pins or unexpected references fail the split.
        FolioSplitRefusal linux = record.PinCount > 0 ? FolioSplitRefusal.Pinned
            : (long)head.RefCount != (long)record.TotalMapCount + (swapCache ? pages : 0) + extraReferences ? FolioSplitRefusal.UnexpectedReferences
            : FolioSplitRefusal.None;

        // A PMD mapping is no failure in Linux (unmap_folio splits it first); the node has no page tables, so the
        // mapping's owner must split it, and the refusal says so, counting thp_split_page_failed only when Linux fails.
        FolioSplitRefusal refusal = record.EntireMapCount >= 0 ? FolioSplitRefusal.PmdMapped : linux;
        bool pmdOrder = folio.Order == Folio.PmdOrder;
        if (refusal != FolioSplitRefusal.None)
        {
            if (pmdOrder && linux != FolioSplitRefusal.None)
            {
                counters?.Count(VmEvent.ThpSplitPageFailed);
            }

            return new FolioSplitResult(false, refusal, 0);
        }

        UnqueueDeferredLocked(ref head);
        Frames.FreeRecord(head.Link);

        // Folio-wide flags go to every page; AnonExclusive is per page already.
        const FrameFlags Copied = FrameFlags.Anon | FrameFlags.Dirty | FrameFlags.SwapCache | FrameFlags.Lru | FrameFlags.LazyFree;
        uint shared = (uint)(head.Flags & Copied);
        int swapReference = swapCache ? 1 : 0;
        for (int i = 0; i < pages; i++)
        {
            ref FrameMetadata page = ref Frames.Ref(headNumber + (ulong)i);
            page.RefCount = page.MapCount + 1 + swapReference + (i == 0 ? extraReferences : 0);
            page.Link = -1;
            Volatile.Write(ref page.FlagsAndOrder, shared | (uint)(page.Flags & FrameFlags.AnonExclusive));
        }

        // Linux frees the pages nobody references once the split is done (free_folio_and_swap_cache / the tail loop).
        int freed = 0;
        for (int i = 0; i < pages; i++)
        {
            ulong frame = headNumber + (ulong)i;
            ref FrameMetadata page = ref Frames.Ref(frame);
            if (page.RefCount == 0)
            {
                ResetToAllocated(ref page);
                Memory.DiscardFrame(frame);
                Buddy.Free(frame, 0);
                freed++;
            }
        }

        if (pmdOrder)
        {
            counters?.Count(VmEvent.ThpSplitPage);
        }

        return new FolioSplitResult(true, FolioSplitRefusal.None, freed);
    }
}
