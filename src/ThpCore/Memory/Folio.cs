using System;
using System.Threading;
using ThpCore.Internal;
using ThpCore.Paging;

namespace ThpCore.Memory;

/// <summary>
/// A folio: a power-of-two run of frames that is allocated, referenced, mapped and freed as one (Linux's
/// <c>struct folio</c>). This is a cheap handle (node, head frame, order); the state lives in the node's
/// <see cref="FrameTable"/> (head and per-page fields) and, for large folios, in one record found through the
/// head's link.
/// </summary>
/// <remarks>
/// <para>
/// <b>Invariant.</b> For a live folio, <see cref="RefCount"/> ≥ <see cref="MapCount"/> + the pins' references
/// (1 per pin on a large folio, <see cref="PinCountingBias"/> per pin on an order-0 folio) + <see cref="PageCount"/>
/// while <see cref="IsSwapCache"/>. Every mapping, pin and swap-cache entry holds its references, as in Linux.
/// Operations that drop references (<see cref="Put"/>, <see cref="Unpin"/>, <see cref="RemoveFromSwapCache"/>)
/// check it and throw <see cref="InvalidOperationException"/> rather than break it. Pins on an order-0 folio
/// cannot be told from ordinary references (the bias scheme), so for order-0 folios the check covers mappings
/// and the swap cache only. Adding a mapping is not checked: Linux's <c>__split_huge_pmd_locked</c> adds 511
/// references and 512 PTE mappings before it removes the PMD mapping, one mapping over for a moment.
/// </para>
/// <para>
/// <b>Lifetime.</b> When the last reference goes (<see cref="Put"/>, <see cref="Unpin"/>), the folio is freed: it
/// leaves the deferred-split queue, its bytes are dropped and its frames go back to the buddy allocator. State
/// members and operations on a freed folio throw <see cref="ObjectDisposedException"/> (an
/// <see cref="InvalidOperationException"/>); <see cref="TryGet"/> returns <see langword="false"/>. A handle whose
/// frames were handed out again as a new folio of the same head and order cannot tell: like a stale
/// <c>struct folio *</c> in Linux, it then sees the new folio. <see cref="Node"/>, <see cref="HeadFrame"/>,
/// <see cref="Address"/>, <see cref="Order"/>, <see cref="PageCount"/> and <see cref="IsLarge"/> describe the
/// handle and never throw (except <see cref="Node"/> on the default value).
/// </para>
/// <para>
/// <b>Threads.</b> Every change takes the node's one lock; reads are lock-free single-field reads, each
/// consistent by itself but not with one another while another thread changes the folio.
/// </para>
/// </remarks>
public readonly struct Folio : IEquatable<Folio>
{
    /// <summary>What a pin adds to an order-0 folio's reference count (Linux <c>GUP_PIN_COUNTING_BIAS</c>, <c>1U &lt;&lt; 10</c>).</summary>
    public const int PinCountingBias = 1 << 10;

    /// <summary>The order of a folio a PMD maps: 9, 512 frames, 2 MiB (Linux <c>HPAGE_PMD_ORDER</c> on x86-64).</summary>
    public const int PmdOrder = 9;

    private readonly MemoryNode? _node;
    private readonly ulong _headFrame;
    private readonly int _order;

    internal Folio(MemoryNode node, ulong headFrame, int order)
    {
        _node = node;
        _headFrame = headFrame;
        _order = order;
    }

    /// <summary>The node whose memory holds the folio.</summary>
    /// <exception cref="InvalidOperationException">This is the default value, not a folio.</exception>
    public MemoryNode Node => _node ?? ThrowHelper.ThrowInvalidOperation<MemoryNode>("This Folio is the default value and refers to no folio.");

    /// <summary>The first frame of the folio (Linux <c>folio_pfn</c>).</summary>
    public ulong HeadFrame => _headFrame;

    /// <summary>The physical address of the folio's first byte.</summary>
    public PhysicalAddress Address => PhysicalAddress.FromFrameNumber(_headFrame);

    /// <summary>The folio's order: it spans 2^<see cref="Order"/> frames (Linux <c>folio_order</c>).</summary>
    public int Order => _order;

    /// <summary>The number of 4 KiB pages (Linux <c>folio_nr_pages</c>).</summary>
    public int PageCount => 1 << _order;

    /// <summary>Whether the folio has more than one page (Linux <c>folio_test_large</c>).</summary>
    public bool IsLarge => _order > 0;

    /// <summary>References to the folio (Linux <c>folio_ref_count</c>).</summary>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    public int RefCount => Volatile.Read(ref LiveHead().RefCount);

    /// <summary>
    /// All mappings of the folio: every PTE mapping of every page plus every PMD mapping, a PMD mapping counting 1
    /// (Linux <c>folio_mapcount</c>, <c>_large_mapcount + 1</c> since 6.10).
    /// </summary>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    public int MapCount
    {
        get
        {
            ref FrameMetadata head = ref LiveHead();
            return IsLarge ? Volatile.Read(ref Record(ref head).TotalMapCount) : Volatile.Read(ref head.MapCount) + 1;
        }
    }

    /// <summary>PMD mappings of the whole folio (Linux <c>folio_entire_mapcount</c>, stored there minus one); 0 for an order-0 folio.</summary>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    public int EntireMapCount
    {
        get
        {
            ref FrameMetadata head = ref LiveHead();
            return IsLarge ? Volatile.Read(ref Record(ref head).EntireMapCount) + 1 : 0;
        }
    }

    /// <summary>
    /// FOLL_PIN pins. Exact for a large folio (Linux <c>_pincount</c>). For an order-0 folio it is an estimate,
    /// <c>RefCount / PinCountingBias</c>: Linux keeps no pin count there, and 1024 ordinary references look like a pin.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    public int PinCount
    {
        get
        {
            ref FrameMetadata head = ref LiveHead();
            return IsLarge ? Volatile.Read(ref Record(ref head).PinCount) : Volatile.Read(ref head.RefCount) / PinCountingBias;
        }
    }

    /// <summary>
    /// Whether the folio may be pinned for DMA (Linux <c>folio_maybe_dma_pinned</c>). Exact for a large folio
    /// (pin count above 0); for an order-0 folio true means <c>RefCount ≥ 1024</c>, so 1024 ordinary references
    /// give a false positive, as in Linux. False is always certain.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    public bool MaybeDmaPinned
    {
        get
        {
            ref FrameMetadata head = ref LiveHead();
            return IsLarge ? Volatile.Read(ref Record(ref head).PinCount) > 0 : (uint)Volatile.Read(ref head.RefCount) >= PinCountingBias;
        }
    }

    /// <summary>Anonymous memory (Linux <c>folio_test_anon</c>).</summary>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    public bool IsAnon => HasFlag(FrameFlags.Anon);

    /// <summary>The contents differ from the backing store (Linux <c>folio_test_dirty</c>).</summary>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    public bool IsDirty => HasFlag(FrameFlags.Dirty);

    /// <summary>In the swap cache, which holds <see cref="PageCount"/> references (Linux <c>folio_test_swapcache</c>).</summary>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    public bool IsSwapCache => HasFlag(FrameFlags.SwapCache);

    /// <summary>On an LRU list (Linux <c>folio_test_lru</c>); the list holds no reference.</summary>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    public bool IsLru => HasFlag(FrameFlags.Lru);

    /// <summary>On the node's deferred-split queue (Linux: <c>_deferred_list</c> not empty).</summary>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    public bool IsOnDeferredSplitQueue => HasFlag(FrameFlags.DeferredSplit);

    /// <summary>Marked partially mapped when queued for deferred split (Linux <c>folio_test_partially_mapped</c>, 6.12+).</summary>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    public bool IsPartiallyMapped => HasFlag(FrameFlags.PartiallyMapped);

    /// <summary>Tests for equality: same node, head frame and order.</summary>
    public static bool operator ==(Folio left, Folio right) => left.Equals(right);

    /// <summary>Tests for inequality.</summary>
    public static bool operator !=(Folio left, Folio right) => !left.Equals(right);

    /// <summary>PTE mappings of page <paramref name="index"/> (Linux <c>_mapcount + 1</c> of that page).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is not a page of the folio.</exception>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    public int PageMapCount(int index)
    {
        CheckIndex(index);
        LiveHead();
        return Volatile.Read(ref Page(index).MapCount) + 1;
    }

    /// <summary>Whether page <paramref name="index"/> belongs to exactly one process (Linux <c>PageAnonExclusive</c>).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is not a page of the folio.</exception>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    public bool IsAnonExclusive(int index)
    {
        CheckIndex(index);
        LiveHead();
        return ((FrameFlags)(Volatile.Read(ref Page(index).FlagsAndOrder) & FrameMetadata.FlagsMask) & FrameFlags.AnonExclusive) != 0;
    }

    /// <summary>Sets or clears PageAnonExclusive on page <paramref name="index"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is not a page of the folio.</exception>
    /// <exception cref="InvalidOperationException">Setting it on a folio that is not anonymous (Linux allows PAE on anonymous pages only).</exception>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    public void SetAnonExclusive(int index, bool value)
    {
        CheckIndex(index);
        lock (Node.SyncRoot)
        {
            ref FrameMetadata head = ref LiveHead();
            if (value && (head.Flags & FrameFlags.Anon) == 0)
            {
                ThrowHelper.ThrowInvalidOperation($"Page {index} of the folio at frame {ThrowHelper.Hex(_headFrame)} cannot be marked anon-exclusive: the folio is not anonymous.");
            }

            SetFlag(ref Page(index), FrameFlags.AnonExclusive, value);
        }
    }

    /// <summary>Takes a reference (Linux <c>folio_get</c>).</summary>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    /// <exception cref="InvalidOperationException">The count would overflow.</exception>
    public void Get()
    {
        lock (Node.SyncRoot)
        {
            ref FrameMetadata head = ref LiveHead();
            AddReferences(ref head, 1, "Get");
        }
    }

    /// <summary>
    /// Takes a reference unless the folio is already freed (Linux <c>folio_try_get</c>, which refuses a count of 0):
    /// the speculative lookup's get.
    /// </summary>
    /// <returns><see langword="false"/> when the folio was freed.</returns>
    /// <exception cref="InvalidOperationException">This is the default value, or the count would overflow.</exception>
    public bool TryGet()
    {
        lock (Node.SyncRoot)
        {
            if (!IsLive())
            {
                return false;
            }

            AddReferences(ref HeadRef(), 1, "TryGet");
            return true;
        }
    }

    /// <summary>
    /// Drops a reference (Linux <c>folio_put</c>). When it was the last, the folio is freed: it leaves the
    /// deferred-split queue, its bytes are dropped (<see cref="SparsePhysicalMemory.DiscardFrame"/>) and its
    /// frames go back to the buddy allocator.
    /// </summary>
    /// <returns><see langword="true"/> when this freed the folio.</returns>
    /// <exception cref="ObjectDisposedException">The folio was already freed (its count was 0).</exception>
    /// <exception cref="InvalidOperationException">The reference belongs to a mapping, pin or the swap cache (see the invariant).</exception>
    public bool Put()
    {
        lock (Node.SyncRoot)
        {
            ref FrameMetadata head = ref LiveHead();
            return DropReferences(ref head, 1, PinsLocked(ref head), "Put");
        }
    }

    /// <summary>
    /// Pins the folio (FOLL_PIN, Linux <c>try_grab_folio</c>): a large folio gets one reference and one pin
    /// (<c>_pincount</c>); an order-0 folio gets <see cref="PinCountingBias"/> references.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    /// <exception cref="InvalidOperationException">The count would overflow.</exception>
    public void Pin()
    {
        lock (Node.SyncRoot)
        {
            ref FrameMetadata head = ref LiveHead();
            if (IsLarge)
            {
                AddReferences(ref head, 1, "Pin");
                Record(ref head).PinCount++;
            }
            else
            {
                AddReferences(ref head, PinCountingBias, "Pin");
            }
        }
    }

    /// <summary>
    /// Unpins the folio (Linux <c>gup_put_folio</c> with FOLL_PIN): the reverse of <see cref="Pin"/>. When that
    /// drops the last reference the folio is freed, as by <see cref="Put"/>.
    /// </summary>
    /// <exception cref="InvalidOperationException">
    /// The folio is not pinned: a large folio's pin count is 0, or an order-0 folio has fewer than
    /// <see cref="PinCountingBias"/> references (an order-0 folio with 1024 ordinary references cannot be told
    /// from a pinned one, and Linux cannot tell either); or unpinning would break the invariant.
    /// </exception>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    public void Unpin()
    {
        lock (Node.SyncRoot)
        {
            ref FrameMetadata head = ref LiveHead();
            if (IsLarge)
            {
                ref LargeFolioRecord record = ref Record(ref head);
                if (record.PinCount == 0)
                {
                    ThrowHelper.ThrowInvalidOperation($"The folio at frame {ThrowHelper.Hex(_headFrame)} (order {_order}) is not pinned: its pin count is 0.");
                }

                DropReferences(ref head, 1, pinsAfter: record.PinCount - 1, "Unpin");
            }
            else
            {
                if (head.RefCount < PinCountingBias)
                {
                    ThrowHelper.ThrowInvalidOperation($"The order-0 folio at frame {ThrowHelper.Hex(_headFrame)} is not pinned: it has {head.RefCount} references, fewer than the {PinCountingBias} a pin adds.");
                }

                DropReferences(ref head, PinCountingBias, pinsAfter: 0, "Unpin");
            }
        }
    }

    /// <summary>
    /// Records a PTE mapping of page <paramref name="index"/>: that page's map count and the folio's total go up
    /// by one (Linux <c>folio_add_*_rmap_ptes</c>). The reference count is not changed: the caller that installs
    /// the mapping takes the mapping's reference, as Linux's callers do. Adding is not checked against the
    /// invariant (see the remarks on <see cref="Folio"/>); dropping a reference is.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is not a page of the folio.</exception>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    public void AddPteMapping(int index)
    {
        CheckIndex(index);
        lock (Node.SyncRoot)
        {
            ref FrameMetadata head = ref LiveHead();
            Page(index).MapCount++;
            if (IsLarge)
            {
                Record(ref head).TotalMapCount++;
            }
        }
    }

    /// <summary>
    /// Removes a PTE mapping of page <paramref name="index"/> (Linux <c>folio_remove_rmap_ptes</c>). The
    /// reference count is not changed: the caller drops the mapping's reference afterwards. Queueing a now
    /// partially mapped folio for deferred split is the caller's decision (<see cref="QueueForDeferredSplit"/>),
    /// as <c>__folio_remove_rmap</c> makes it in Linux.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is not a page of the folio.</exception>
    /// <exception cref="InvalidOperationException">The page has no PTE mapping.</exception>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    public void RemovePteMapping(int index)
    {
        CheckIndex(index);
        lock (Node.SyncRoot)
        {
            ref FrameMetadata head = ref LiveHead();
            ref FrameMetadata page = ref Page(index);
            if (page.MapCount < 0)
            {
                ThrowHelper.ThrowInvalidOperation($"Page {index} of the folio at frame {ThrowHelper.Hex(_headFrame)} has no PTE mapping to remove.");
            }

            page.MapCount--;
            if (IsLarge)
            {
                Record(ref head).TotalMapCount--;
            }
        }
    }

    /// <summary>
    /// Records a PMD mapping of the whole folio (Linux <c>folio_add_*_rmap_pmd</c>): the entire map count and the
    /// total go up by one. The reference count is not changed (the caller takes the mapping's reference).
    /// </summary>
    /// <exception cref="InvalidOperationException">The folio's order is not <see cref="PmdOrder"/>.</exception>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    public void AddPmdMapping()
    {
        lock (Node.SyncRoot)
        {
            ref FrameMetadata head = ref LiveHead();
            CheckPmdOrder();
            ref LargeFolioRecord record = ref Record(ref head);
            record.EntireMapCount++;
            record.TotalMapCount++;
        }
    }

    /// <summary>Removes a PMD mapping (Linux <c>folio_remove_rmap_pmd</c>); the caller drops its reference afterwards.</summary>
    /// <exception cref="InvalidOperationException">The folio's order is not <see cref="PmdOrder"/>, or it has no PMD mapping.</exception>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    public void RemovePmdMapping()
    {
        lock (Node.SyncRoot)
        {
            ref FrameMetadata head = ref LiveHead();
            ref LargeFolioRecord record = ref PmdMappedRecord(ref head, "remove");

            record.EntireMapCount--;
            record.TotalMapCount--;
        }
    }

    /// <summary>Sets or clears the dirty flag.</summary>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    public void SetDirty(bool value) => ChangeHeadFlag(FrameFlags.Dirty, value);

    /// <summary>
    /// Whether the folio is anonymous and backed by swap (Linux <c>folio_test_swapbacked</c>): true from allocation,
    /// false after <see cref="SetSwapBacked"/>(<see langword="false"/>) (<c>MADV_FREE</c>'s lazyfree).
    /// </summary>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    public bool IsSwapBacked => IsAnon && !HasFlag(FrameFlags.LazyFree);

    /// <summary>
    /// Sets or clears <c>PG_swapbacked</c> of an anonymous folio (Linux <c>folio_set_swapbacked</c>,
    /// <c>folio_clear_swapbacked</c>): a folio that is not swap-backed is lazyfree, and reclaim may discard it while clean.
    /// </summary>
    /// <exception cref="InvalidOperationException">The folio is not anonymous.</exception>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    public void SetSwapBacked(bool value)
    {
        if (!IsAnon)
        {
            ThrowHelper.ThrowInvalidOperation($"The {this} is not anonymous; only anonymous folios are lazyfree or swap-backed here.");
        }

        ChangeHeadFlag(FrameFlags.LazyFree, !value);
    }

    /// <summary>Sets or clears the LRU flag (being on an LRU list holds no reference in Linux).</summary>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    public void SetLru(bool value) => ChangeHeadFlag(FrameFlags.Lru, value);

    /// <summary>Adds the folio to the swap cache, which takes <see cref="PageCount"/> references (Linux <c>add_to_swap_cache</c>).</summary>
    /// <exception cref="InvalidOperationException">The folio is already in the swap cache, or the count would overflow.</exception>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    public void AddToSwapCache()
    {
        lock (Node.SyncRoot)
        {
            ref FrameMetadata head = ref LiveHead();
            if ((head.Flags & FrameFlags.SwapCache) != 0)
            {
                ThrowHelper.ThrowInvalidOperation($"The folio at frame {ThrowHelper.Hex(_headFrame)} is already in the swap cache.");
            }

            AddReferences(ref head, PageCount, "AddToSwapCache");
            head.FlagsAndOrder |= (uint)FrameFlags.SwapCache;
        }
    }

    /// <summary>
    /// Removes the folio from the swap cache, dropping its <see cref="PageCount"/> references (Linux
    /// <c>delete_from_swap_cache</c>). As in Linux the caller holds a reference of its own, so this never frees.
    /// </summary>
    /// <exception cref="InvalidOperationException">The folio is not in the swap cache, the caller holds no reference of its own, or the invariant would break.</exception>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    public void RemoveFromSwapCache()
    {
        lock (Node.SyncRoot)
        {
            ref FrameMetadata head = ref LiveHead();
            if ((head.Flags & FrameFlags.SwapCache) == 0)
            {
                ThrowHelper.ThrowInvalidOperation($"The folio at frame {ThrowHelper.Hex(_headFrame)} is not in the swap cache.");
            }

            int remaining = head.RefCount - PageCount;
            if (remaining < 1)
            {
                ThrowHelper.ThrowInvalidOperation($"Removing the folio at frame {ThrowHelper.Hex(_headFrame)} from the swap cache would leave it no reference: the caller must hold one of its own.");
            }

            CheckReferences(remaining, MapCountLocked(ref head), PinsLocked(ref head), swapCache: false, "RemoveFromSwapCache");
            head.FlagsAndOrder &= ~(uint)FrameFlags.SwapCache;
            Volatile.Write(ref head.RefCount, remaining);
        }
    }

    /// <summary>
    /// Queues a large folio at the tail of the node's deferred-split queue if it is not queued yet (Linux
    /// <c>deferred_split_folio</c>); <paramref name="partiallyMapped"/> also marks it partially mapped, and
    /// <see langword="false"/> never clears that mark. As in Linux, an order-1 folio (no room for the list there)
    /// and a folio in the swap cache (reclaim is handling it) are left alone.
    /// </summary>
    /// <exception cref="InvalidOperationException">The folio is order 0.</exception>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    public void QueueForDeferredSplit(bool partiallyMapped)
    {
        MemoryNode node = Node;
        lock (node.SyncRoot)
        {
            ref FrameMetadata head = ref LiveHead();
            CheckLarge("QueueForDeferredSplit");
            if (_order == 1 || (head.Flags & FrameFlags.SwapCache) != 0)
            {
                return;
            }

            if (partiallyMapped)
            {
                head.FlagsAndOrder |= (uint)FrameFlags.PartiallyMapped;
            }

            if ((head.Flags & FrameFlags.DeferredSplit) == 0)
            {
                node.EnqueueDeferredLocked(head.Link);
                head.FlagsAndOrder |= (uint)FrameFlags.DeferredSplit;
            }
        }
    }

    /// <summary>
    /// Takes a large folio off the deferred-split queue and clears its partially-mapped mark (Linux
    /// <c>folio_unqueue_deferred_split</c>); nothing happens when it is not queued.
    /// </summary>
    /// <exception cref="InvalidOperationException">The folio is order 0.</exception>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    public void RemoveFromDeferredSplitQueue()
    {
        MemoryNode node = Node;
        lock (node.SyncRoot)
        {
            ref FrameMetadata head = ref LiveHead();
            CheckLarge("RemoveFromDeferredSplitQueue");
            node.UnqueueDeferredLocked(ref head);
        }
    }

    /// <summary>The bytes of page <paramref name="index"/>; a shared zero page when it was never written (no host memory is used).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is not a page of the folio.</exception>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    public ReadOnlySpan<byte> ReadPage(int index)
    {
        CheckIndex(index);
        LiveHead();
        return Node.Memory.ReadFrame(_headFrame + (ulong)index);
    }

    /// <summary>The bytes of page <paramref name="index"/>, for writing; gives the page host memory if it had none.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is not a page of the folio.</exception>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    public Span<byte> GetWritablePage(int index)
    {
        CheckIndex(index);
        LiveHead();
        return Node.Memory.GetWritableFrame(_headFrame + (ulong)index);
    }

    /// <inheritdoc/>
    public bool Equals(Folio other) => ReferenceEquals(_node, other._node) && _headFrame == other._headFrame && _order == other._order;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is Folio other && Equals(other);

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(_node, _headFrame, _order);

    /// <summary>The head frame and order, e.g. <c>folio 0x200 order 9</c>.</summary>
    public override string ToString() => _node is null ? "no folio" : $"folio {ThrowHelper.Hex(_headFrame)} order {_order}";

    /// <summary>Whether the head frame still heads this folio (lock-free; exact under the node's lock).</summary>
    internal bool IsLive()
    {
        ref FrameMetadata head = ref HeadRef();
        uint flagsAndOrder = Volatile.Read(ref head.FlagsAndOrder);
        var flags = (FrameFlags)(flagsAndOrder & FrameMetadata.FlagsMask);
        int order = (int)((flagsAndOrder & FrameMetadata.OrderMask) >> FrameMetadata.OrderShift);
        const FrameFlags NotAHead = FrameFlags.Free | FrameFlags.Tail | FrameFlags.Reserved | FrameFlags.PageTable;
        return (flags & NotAHead) == 0
            && ((flags & FrameFlags.Head) != 0) == IsLarge
            && order == _order
            && Volatile.Read(ref head.RefCount) > 0;
    }

    private ref FrameMetadata HeadRef() => ref Node.Frames.Ref(_headFrame);

    private ref FrameMetadata LiveHead()
    {
        if (!IsLive())
        {
            throw new ObjectDisposedException(nameof(Folio), $"The folio at frame {ThrowHelper.Hex(_headFrame)} (order {_order}) was freed: its last reference was dropped and its frames went back to the allocator.");
        }

        return ref HeadRef();
    }

    private ref FrameMetadata Page(int index) => ref Node.Frames.Ref(_headFrame + (uint)index);

    private Span<FrameMetadata> Pages() => Node.Frames.Slice(_headFrame, PageCount);

    private ref LargeFolioRecord Record(ref FrameMetadata head) => ref Node.Frames.Record(Volatile.Read(ref head.Link));

    private bool HasFlag(FrameFlags flag) =>
        ((FrameFlags)(Volatile.Read(ref LiveHead().FlagsAndOrder) & FrameMetadata.FlagsMask) & flag) != 0;

    private int MapCountLocked(ref FrameMetadata head) => IsLarge ? Record(ref head).TotalMapCount : head.MapCount + 1;

    // Exact pins: a large folio's pin count; 0 for order-0 folios, whose pins hide in the reference count.
    private int PinsLocked(ref FrameMetadata head) => IsLarge ? Record(ref head).PinCount : 0;

    private void ChangeHeadFlag(FrameFlags flag, bool value)
    {
        lock (Node.SyncRoot)
        {
            SetFlag(ref LiveHead(), flag, value);
        }
    }

    private static void SetFlag(ref FrameMetadata frame, FrameFlags flag, bool value)
    {
        uint updated = value ? frame.FlagsAndOrder | (uint)flag : frame.FlagsAndOrder & ~(uint)flag;
        Volatile.Write(ref frame.FlagsAndOrder, updated);
    }

    /// <summary>The number of pages marked anon-exclusive, read in one pass (one liveness check).</summary>
    /// <exception cref="ObjectDisposedException">The folio was freed.</exception>
    internal int CountAnonExclusivePages()
    {
        LiveHead();
        int count = 0;
        foreach (ref FrameMetadata page in Pages())
        {
            count += (int)((Volatile.Read(ref page.FlagsAndOrder) & (uint)FrameFlags.AnonExclusive) / (uint)FrameFlags.AnonExclusive);
        }

        return count;
    }

    /// <summary>
    /// The accounting of a PMD split (<c>__split_huge_pmd_locked</c>), in one step: the PMD mapping becomes one PTE
    /// mapping per page, the one reference becomes one per page (+ <c>PageCount</c> − 1), and with
    /// <paramref name="exclusive"/> every page is marked anon-exclusive (the head's flag copied to all).
    /// </summary>
    /// <exception cref="InvalidOperationException">The folio is not PMD-order, was freed, or has no PMD mapping.</exception>
    internal void ConvertPmdMappingToPtes(bool exclusive)
    {
        lock (Node.SyncRoot)
        {
            ref FrameMetadata head = ref LiveHead();
            ref LargeFolioRecord record = ref PmdMappedRecord(ref head, "split");

            AddReferences(ref head, PageCount - 1, "A PMD split");
            record.EntireMapCount--;
            record.TotalMapCount += PageCount - 1;
            foreach (ref FrameMetadata page in Pages())
            {
                page.MapCount++;
                if (exclusive)
                {
                    SetFlag(ref page, FrameFlags.AnonExclusive, true);
                }
            }
        }
    }

    /// <summary>
    /// The accounting of an in-place collapse, the inverse of <see cref="ConvertPmdMappingToPtes"/>, in one step: one
    /// PTE mapping of every page becomes one PMD mapping, one reference per page becomes one, and with
    /// <paramref name="clearTailExclusive"/> only the head keeps anon-exclusive (a PMD-mapped THP tracks it on the head).
    /// Checked first, so nothing changes when a page has no PTE mapping.
    /// </summary>
    /// <exception cref="InvalidOperationException">The folio is not PMD-order, was freed, or a page has no PTE mapping.</exception>
    internal void ConvertPteMappingsToPmd(bool clearTailExclusive)
    {
        lock (Node.SyncRoot)
        {
            ref FrameMetadata head = ref LiveHead();
            CheckPmdOrder();
            Span<FrameMetadata> pages = Pages();
            for (int i = 0; i < pages.Length; i++)
            {
                if (pages[i].MapCount < 0)
                {
                    ThrowHelper.ThrowInvalidOperation($"Page {i} of the folio at frame {ThrowHelper.Hex(_headFrame)} has no PTE mapping to fold into a PMD.");
                }
            }

            for (int i = 0; i < pages.Length; i++)
            {
                ref FrameMetadata page = ref pages[i];
                page.MapCount--;
                if (clearTailExclusive && i > 0)
                {
                    SetFlag(ref page, FrameFlags.AnonExclusive, false);
                }
            }

            ref LargeFolioRecord record = ref Record(ref head);
            record.EntireMapCount++;
            record.TotalMapCount -= PageCount - 1;
            DropReferences(ref head, PageCount - 1, PinsLocked(ref head), "An in-place collapse");
        }
    }

    private void AddReferences(ref FrameMetadata head, int count, string operation)
    {
        if (head.RefCount > int.MaxValue - count)
        {
            ThrowHelper.ThrowInvalidOperation($"{operation} would overflow the reference count ({head.RefCount}) of the folio at frame {ThrowHelper.Hex(_headFrame)}.");
        }

        Volatile.Write(ref head.RefCount, head.RefCount + count);
    }

    // Checks, then drops; pinsAfter is the exact pin count once done (large folios). Returns true when the
    // count reached 0 and the folio was freed.
    private bool DropReferences(ref FrameMetadata head, int count, int pinsAfter, string operation)
    {
        int remaining = head.RefCount - count;
        CheckReferences(remaining, MapCountLocked(ref head), pinsAfter, (head.Flags & FrameFlags.SwapCache) != 0, operation);
        if (IsLarge)
        {
            Record(ref head).PinCount = pinsAfter;
        }

        if (remaining == 0)
        {
            Node.FreeFolioLocked(_headFrame, _order);
            return true;
        }

        Volatile.Write(ref head.RefCount, remaining);
        return false;
    }

    // The invariant, as far as it can be known: mappings, swap-cache references and (large folios) exact pins.
    private void CheckReferences(int refCount, int mapCount, int pins, bool swapCache, string operation)
    {
        long needed = (long)mapCount + pins + (swapCache ? PageCount : 0);
        if (refCount < needed)
        {
            ThrowHelper.ThrowInvalidOperation(
                $"{operation} would leave the folio at frame {ThrowHelper.Hex(_headFrame)} with {refCount} references, "
                + $"fewer than its {mapCount} mappings, {pins} pins and {(swapCache ? PageCount : 0)} swap-cache references hold: "
                + "take a reference before mapping, and unmap before dropping it.");
        }
    }

    private void CheckIndex(int index)
    {
        if ((uint)index >= (uint)PageCount)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(index), index, $"Page index {index} is outside the folio at frame {ThrowHelper.Hex(_headFrame)}, which has {PageCount} pages (0 to {PageCount - 1}).");
        }
    }

    // The record of a PMD-order folio that a PMD maps; otherwise a message naming what could not be done.
    private ref LargeFolioRecord PmdMappedRecord(ref FrameMetadata head, string action)
    {
        CheckPmdOrder();
        ref LargeFolioRecord record = ref Record(ref head);
        if (record.EntireMapCount < 0)
        {
            ThrowHelper.ThrowInvalidOperation($"The folio at frame {ThrowHelper.Hex(_headFrame)} has no PMD mapping to {action}.");
        }

        return ref record;
    }

    private void CheckPmdOrder()
    {
        if (_order != PmdOrder)
        {
            ThrowHelper.ThrowInvalidOperation($"Only a folio of order {PmdOrder} (2 MiB) can be mapped by a PMD; the folio at frame {ThrowHelper.Hex(_headFrame)} has order {_order}.");
        }
    }

    private void CheckLarge(string operation)
    {
        if (!IsLarge)
        {
            ThrowHelper.ThrowInvalidOperation($"{operation} applies to large folios only; the folio at frame {ThrowHelper.Hex(_headFrame)} has order 0.");
        }
    }
}
