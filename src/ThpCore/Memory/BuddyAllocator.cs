using System;
using System.Collections.Generic;
using System.Numerics;
using System.Threading;
using ThpCore.Internal;

namespace ThpCore.Memory;

/// <summary>
/// Linux's binary buddy allocator (<c>mm/page_alloc.c</c>) over the frames of a <see cref="FrameTable"/>: free
/// blocks of 2^order frames, order 0 to <see cref="MaxOrder"/>, each aligned to its size, on one intrusive doubly
/// linked free list per order threaded through the frame table itself.
/// </summary>
/// <remarks>
/// <para>
/// <b>Semantics.</b> <see cref="TryAllocate"/> is <c>__rmqueue_smallest</c>: it takes the first block of the smallest
/// order at or above the request that has a free block and splits it as <c>expand</c> does, keeping the lowest-address
/// part and putting each upper half on the head of its order's list. <see cref="Free"/> is <c>__free_one_page</c>: it
/// merges with the buddy (<c>pfn ^ 2^order</c>) while the buddy is a free block of the same order, up to
/// <see cref="MaxOrder"/>, then puts the result on the head of its list, or on the tail when its buddy one order up is
/// free (<c>buddy_merge_likely</c>: the block is likely to merge soon, so it should not be handed out first). The
/// initial free blocks are what <c>memblock_free_all</c> frees: each run of frames that are not reserved is cut, from
/// its start, into the largest blocks that are aligned and fit, appended to the tails of the lists (<c>FPI_TO_TAIL</c>),
/// so the lists start in address order. Not modelled: migrate types and pageblocks, per-CPU lists, free-list
/// shuffling, guard pages, watermarks, zones (the allocator is one zone) and page poisoning.
/// </para>
/// <para>
/// <b>Frame metadata.</b> As Linux's <c>PageBuddy</c>, only the first frame of a free block carries state:
/// <see cref="FrameFlags.Free"/> and the order in the flags word, the previous block on the list in
/// <c>MapCount</c> and the next in <c>Link</c> (frame numbers, -1 for none). Every other frame of a free block is
/// left as an allocated frame is (flags <see cref="FrameFlags.None"/>, RefCount 0, MapCount -1, Link -1), so that
/// allocating and freeing touch O(<see cref="MaxOrder"/>) frames; <see cref="FrameTable.Describe"/> finds the
/// enclosing free block (as Linux's <c>is_free_buddy_page</c> does) and reports <see cref="FrameFlags.Free"/> for
/// those frames too. An allocated block's first frame records its order in the flags word (flags
/// <see cref="FrameFlags.None"/>), which is how <see cref="Free"/> checks the order; code that splits an allocated
/// block (a folio split) must record the new, smaller orders on the new first frames before freeing the pieces.
/// </para>
/// <para>
/// <b>Threads.</b> Every member is thread-safe: one lock serialises allocation, freeing and the readers. The lock
/// does not cover the frame table: code that changes the metadata of frames it was handed must not touch free frames,
/// and <see cref="FrameTable.Describe"/> of a frame whose block is being allocated or freed at that moment may see
/// a half-done change.
/// </para>
/// </remarks>
public sealed class BuddyAllocator
{
    /// <summary>The largest order, 10: blocks of up to 1,024 frames (4 MiB), as Linux's <c>MAX_PAGE_ORDER</c> on x86-64.</summary>
    public const int MaxOrder = 10;

    private const int OrderCount = MaxOrder + 1;
    private const int NoFrame = -1;

    private readonly Lock _lock = new();
    private readonly int[] _head = new int[OrderCount];
    private readonly int[] _tail = new int[OrderCount];
    private readonly long[] _blocks = new long[OrderCount];
    private ulong _freeFrames;
    private long _failures;

    /// <summary>An allocator for every frame of <paramref name="frames"/>, all free.</summary>
    /// <param name="frames">An unused frame table (every frame as <see cref="FrameTable"/>'s constructor left it).</param>
    /// <remarks>
    /// The frames are cut from frame 0 into the largest aligned blocks that fit: a table of a multiple of 1,024 frames
    /// (4 MiB) becomes blocks of order <see cref="MaxOrder"/>; any other size leaves smaller blocks at the end.
    /// </remarks>
    /// <exception cref="ArgumentNullException"><paramref name="frames"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="frames"/> is already in use.</exception>
    public BuddyAllocator(FrameTable frames)
        : this(frames, Array.Empty<(ulong FirstFrame, ulong Count)>())
    {
    }

    /// <summary>An allocator for the frames of <paramref name="frames"/> outside <paramref name="reserved"/>, all free.</summary>
    /// <param name="frames">An unused frame table (every frame as <see cref="FrameTable"/>'s constructor left it).</param>
    /// <param name="reserved">
    /// Ranges of frames never to hand out (firmware, holes, the kernel image): they get <see cref="FrameFlags.Reserved"/>.
    /// Ranges may overlap; an empty range is ignored.
    /// </param>
    /// <remarks>
    /// Each run of frames between reserved ones is cut from its start into the largest aligned blocks that fit, as
    /// Linux's <c>__free_pages_memory</c> frees memblock's free ranges.
    /// </remarks>
    /// <exception cref="ArgumentNullException"><paramref name="frames"/> or <paramref name="reserved"/> is null.</exception>
    /// <exception cref="ArgumentException">
    /// A range of <paramref name="reserved"/> reaches outside the table, or <paramref name="frames"/> is already in use.
    /// </exception>
    public BuddyAllocator(FrameTable frames, IEnumerable<(ulong FirstFrame, ulong Count)> reserved)
    {
        ArgumentNullException.ThrowIfNull(frames);
        ArgumentNullException.ThrowIfNull(reserved);
        Frames = frames;
        ulong frameCount = frames.FrameCount;

        if (frames.LargeFolioRecords != 0)
        {
            ThrowHelper.ThrowArgument(nameof(frames), $"The frame table is already in use: it holds {frames.LargeFolioRecords} large-folio records.");
        }

        for (ulong frame = 0; frame < frameCount; frame++)
        {
            ref FrameMetadata metadata = ref frames.Ref(frame);
            if (metadata.FlagsAndOrder != 0 || metadata.RefCount != 0 || metadata.MapCount != -1 || metadata.Link != -1)
            {
                ThrowHelper.ThrowArgument(nameof(frames), $"The frame table is already in use: frame {ThrowHelper.Hex(frame)} is not in its initial state ({frames.Describe(frame)}).");
            }
        }

        ulong reservedFrames = 0;
        foreach ((ulong first, ulong count) in reserved)
        {
            if (first >= frameCount || count > frameCount - first)
            {
                ThrowHelper.ThrowArgument(
                    nameof(reserved),
                    $"The reserved range of {count:#,0} frames from frame {ThrowHelper.Hex(first)} reaches outside the table of {frameCount:#,0} frames (the last is {ThrowHelper.Hex(frameCount - 1)}).");
            }

            for (ulong frame = first; frame < first + count; frame++)
            {
                ref FrameMetadata metadata = ref frames.Ref(frame);
                if (metadata.FlagsAndOrder == 0)
                {
                    metadata.FlagsAndOrder = (uint)FrameFlags.Reserved;
                    reservedFrames++;
                }
            }
        }

        ManagedFrames = frameCount - reservedFrames;
        Array.Fill(_head, NoFrame);
        Array.Fill(_tail, NoFrame);

        ulong start = 0;
        while (start < frameCount)
        {
            if (frames.Ref(start).FlagsAndOrder != 0)
            {
                start++;
                continue;
            }

            ulong end = start + 1;
            while (end < frameCount && frames.Ref(end).FlagsAndOrder == 0)
            {
                end++;
            }

            AddInitialRun(start, end);
            start = end;
        }
    }

    /// <summary>The frame table whose frames this allocator hands out.</summary>
    public FrameTable Frames { get; }

    /// <summary>The frames the allocator manages: all frames of the table minus the reserved ones (Linux's <c>managed_pages</c>).</summary>
    public ulong ManagedFrames { get; }

    /// <summary>The frames in free blocks (Linux's <c>NR_FREE_PAGES</c>).</summary>
    public ulong FreeFrames
    {
        get
        {
            lock (_lock)
            {
                return _freeFrames;
            }
        }
    }

    /// <summary>How many times <see cref="TryAllocate"/> found no free block of the requested order or above.</summary>
    public long AllocationFailures
    {
        get
        {
            lock (_lock)
            {
                return _failures;
            }
        }
    }

    /// <summary>The number of free blocks of <paramref name="order"/> (one column of <c>/proc/buddyinfo</c>, Linux's <c>free_area[order].nr_free</c>).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="order"/> is outside 0 to <see cref="MaxOrder"/>.</exception>
    public long FreeBlocks(int order)
    {
        CheckOrder(order, nameof(order));
        lock (_lock)
        {
            return _blocks[order];
        }
    }

    /// <summary>
    /// The free blocks of <paramref name="order"/> in list order: the first is the one <see cref="TryAllocate"/> takes
    /// next. A snapshot, for tests and diagnostics; it costs time and memory in proportion to the list.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="order"/> is outside 0 to <see cref="MaxOrder"/>.</exception>
    public IEnumerable<(ulong FirstFrame, int Order)> FreeBlockList(int order)
    {
        CheckOrder(order, nameof(order));
        lock (_lock)
        {
            var blocks = new (ulong FirstFrame, int Order)[_blocks[order]];
            int frame = _head[order];
            for (int i = 0; i < blocks.Length; i++)
            {
                blocks[i] = ((ulong)frame, order);
                frame = Frames.Ref((ulong)frame).Link;
            }

            return blocks;
        }
    }

    /// <summary>Linux's fragmentation figures for a request of <paramref name="order"/>, from the current free-block counts.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="order"/> is outside 0 to <see cref="MaxOrder"/>.</exception>
    public FragmentationFigures Fragmentation(int order)
    {
        CheckOrder(order, nameof(order));
        Span<long> counts = stackalloc long[OrderCount];
        lock (_lock)
        {
            _blocks.CopyTo(counts);
        }

        return FragmentationFigures.Compute(order, counts);
    }

    /// <summary>Takes a free block of 2^<paramref name="order"/> frames (Linux's <c>__rmqueue_smallest</c> and <c>expand</c>).</summary>
    /// <param name="order">The block's order, 0 to <see cref="MaxOrder"/>.</param>
    /// <param name="firstFrame">The block's first frame, a multiple of 2^<paramref name="order"/>; 0 on failure.</param>
    /// <returns>
    /// <see langword="false"/> when no block of <paramref name="order"/> or above is free (out of memory or too
    /// fragmented); the failure is counted in <see cref="AllocationFailures"/>.
    /// </returns>
    /// <remarks>
    /// Takes the first block on the list of the smallest order at or above <paramref name="order"/> that is not
    /// empty; while that block is bigger than asked, it halves it and puts the upper half on the head of the list of
    /// the half's order, so the caller gets the lowest-address part. The block's frames come out with flags
    /// <see cref="FrameFlags.None"/>, RefCount 0, MapCount -1 (unmapped) and Link -1, and the first frame records
    /// <paramref name="order"/>. O(<see cref="MaxOrder"/>); allocates no memory.
    /// </remarks>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="order"/> is outside 0 to <see cref="MaxOrder"/>.</exception>
    public bool TryAllocate(int order, out ulong firstFrame)
    {
        CheckOrder(order, nameof(order));
        lock (_lock)
        {
            for (int current = order; current <= MaxOrder; current++)
            {
                int block = _head[current];
                if (block == NoFrame)
                {
                    continue;
                }

                Unlink(block, current);

                // expand: hand the upper halves back, from the largest down.
                for (int high = current - 1; high >= order; high--)
                {
                    int upper = block + (1 << high);
                    MakeFreeHead(upper, high);
                    LinkAtHead(upper, high);
                }

                HandOut(block, order);
                firstFrame = (ulong)block;
                return true;
            }

            _failures++;
        }

        firstFrame = 0;
        return false;
    }

    /// <summary>
    /// Takes the free block of 2^<paramref name="order"/> frames starting at <paramref name="firstFrame"/> out of the
    /// free lists when it is wholly free (Linux's <c>take_page_off_buddy</c> with <c>break_down_buddy_pages</c>, as
    /// compaction's free scanner isolates chosen free pages).
    /// </summary>
    /// <param name="firstFrame">The block's first frame, a multiple of 2^<paramref name="order"/>.</param>
    /// <param name="order">The block's order, 0 to <see cref="MaxOrder"/>.</param>
    /// <returns>
    /// <see langword="false"/>, changing nothing, when those frames are not all inside one free block. Not counted in
    /// <see cref="AllocationFailures"/>: asking for one particular block is not an allocation request.
    /// </returns>
    /// <remarks>
    /// The enclosing free block is taken off its list and halved down to <paramref name="order"/>; each half that
    /// does not hold <paramref name="firstFrame"/> goes back on the head of its order's list. The block comes out as
    /// <see cref="TryAllocate"/> hands blocks out and goes back with <see cref="Free"/>. O(<see cref="MaxOrder"/>).
    /// </remarks>
    /// <exception cref="ArgumentOutOfRangeException">
    /// <paramref name="order"/> is outside 0 to <see cref="MaxOrder"/>, <paramref name="firstFrame"/> is outside the
    /// table or not a multiple of 2^<paramref name="order"/>.
    /// </exception>
    public bool TryAllocateAt(ulong firstFrame, int order)
    {
        CheckOrder(order, nameof(order));
        if (firstFrame >= Frames.FrameCount || (firstFrame & ((1UL << order) - 1)) != 0)
        {
            ThrowHelper.ThrowArgumentOutOfRange(
                nameof(firstFrame),
                firstFrame,
                $"Frame {ThrowHelper.Hex(firstFrame)} is not the start of an order-{order} block inside the table of {Frames.FrameCount:#,0} frames.");
        }

        lock (_lock)
        {
            int block;
            int current;
            if (IsFreeHeadOfAtLeast((int)firstFrame, order, out current))
            {
                block = (int)firstFrame;
            }
            else if (Frames.TryFindEnclosingBlock(firstFrame, order + 1, out ulong head, out current) && IsFreeHead((int)head, current))
            {
                block = (int)head;
            }
            else
            {
                return false;
            }

            Unlink(block, current);
            MakeInterior(block);
            while (current > order)
            {
                current--;
                int lower = block;
                int upper = block + (1 << current);
                int keep = (int)firstFrame >= upper ? upper : lower;
                int other = keep == upper ? lower : upper;
                MakeFreeHead(other, current);
                LinkAtHead(other, current);
                block = keep;
            }

            HandOut(block, order);
            return true;
        }
    }

    /// <summary>Gives back a block that <see cref="TryAllocate"/> handed out, merging it with free buddies (Linux's <c>__free_one_page</c>).</summary>
    /// <param name="firstFrame">The block's first frame, as <see cref="TryAllocate"/> returned it.</param>
    /// <param name="order">The order it was allocated with (or recorded on its first frame since).</param>
    /// <remarks>
    /// <para>
    /// While the buddy (<c>firstFrame ^ 2^order</c>) is a free block of the same order, takes it off its list and
    /// doubles the block, up to <see cref="MaxOrder"/>; puts the result on the head of its list, or on the tail when
    /// the buddy one order up is free. O(<see cref="MaxOrder"/>); allocates no memory (except to throw).
    /// </para>
    /// <para>
    /// Checks the first frame as Linux's <c>free_page_is_bad</c> checks a page: it must start a block of
    /// <paramref name="order"/> that is allocated, have no references, no page-table mappings and not be on an LRU
    /// list or a page table. Its other flags (head, anon, dirty, ...) are cleared. The other frames of the block are
    /// not looked at: the caller must have put them back as <see cref="TryAllocate"/> handed them out (flags
    /// <see cref="FrameFlags.None"/>, RefCount 0, MapCount -1, Link -1). When a check fails, nothing changes.
    /// </para>
    /// </remarks>
    /// <exception cref="ArgumentOutOfRangeException">
    /// <paramref name="order"/> is outside 0 to <see cref="MaxOrder"/>, or <paramref name="firstFrame"/> is outside the table.
    /// </exception>
    /// <exception cref="InvalidOperationException">
    /// The frame is free or reserved, is not the start of an allocated block of <paramref name="order"/> (a tail page,
    /// a frame inside a bigger block, a frame not aligned to the order, an order that differs from the recorded one),
    /// or is still referenced, mapped, on an LRU list or a page table.
    /// </exception>
    public void Free(ulong firstFrame, int order)
    {
        CheckOrder(order, nameof(order));
        ulong frameCount = Frames.FrameCount;
        if (firstFrame >= frameCount)
        {
            ThrowHelper.ThrowArgumentOutOfRange(
                nameof(firstFrame),
                firstFrame,
                $"Frame {ThrowHelper.Hex(firstFrame)} is outside the table of {frameCount:#,0} frames (the last is {ThrowHelper.Hex(frameCount - 1)}).");
        }

        lock (_lock)
        {
            CheckFreeable(firstFrame, order);

            int block = (int)firstFrame;
            MakeInterior(block);
            _freeFrames += 1UL << order;

            while (order < MaxOrder)
            {
                int buddy = block ^ (1 << order);
                if ((ulong)buddy >= frameCount || !IsFreeHead(buddy, order))
                {
                    break;
                }

                Unlink(buddy, order);
                MakeInterior(buddy);
                block &= buddy;
                order++;
            }

            MakeFreeHead(block, order);
            if (BuddyMergeLikely(block, order))
            {
                LinkAtTail(block, order);
            }
            else
            {
                LinkAtHead(block, order);
            }
        }
    }

    internal static void CheckOrder(int order, string paramName)
    {
        if ((uint)order > MaxOrder)
        {
            ThrowHelper.ThrowArgumentOutOfRange(paramName, order, $"Order {order} is outside 0 to {MaxOrder} (MaxOrder).");
        }
    }

    private void CheckFreeable(ulong frame, int order)
    {
        ref FrameMetadata metadata = ref Frames.Ref(frame);
        FrameFlags flags = metadata.Flags;

        if ((flags & FrameFlags.Free) != 0)
        {
            ThrowHelper.ThrowInvalidOperation($"Frame {ThrowHelper.Hex(frame)} is already free: it starts a free block of order {metadata.Order}.");
        }

        if ((flags & FrameFlags.Reserved) != 0)
        {
            ThrowHelper.ThrowInvalidOperation($"Frame {ThrowHelper.Hex(frame)} is reserved: the allocator never hands it out, so it cannot be freed.");
        }

        if ((flags & FrameFlags.Tail) != 0)
        {
            ThrowHelper.ThrowInvalidOperation($"Frame {ThrowHelper.Hex(frame)} is not the start of an allocated block: it is a tail page of the folio at frame {ThrowHelper.Hex(frame - (ulong)metadata.Link)}.");
        }

        if ((frame & ((1UL << order) - 1)) != 0)
        {
            ThrowHelper.ThrowInvalidOperation($"Frame {ThrowHelper.Hex(frame)} is not the start of an allocated block of order {order}: blocks of that order start at multiples of {1 << order} frames.");
        }

        if (Frames.TryFindEnclosingBlock(frame, order + 1, out ulong head, out int headOrder))
        {
            if ((Frames.Ref(head).Flags & FrameFlags.Free) != 0)
            {
                ThrowHelper.ThrowInvalidOperation($"Frame {ThrowHelper.Hex(frame)} is already free: it lies inside the free block of order {headOrder} at frame {ThrowHelper.Hex(head)}.");
            }

            ThrowHelper.ThrowInvalidOperation($"Frame {ThrowHelper.Hex(frame)} is not the start of an allocated block: it lies inside the block of order {headOrder} allocated at frame {ThrowHelper.Hex(head)}.");
        }

        if (metadata.Order != order)
        {
            ThrowHelper.ThrowInvalidOperation($"Order mismatch: the block at frame {ThrowHelper.Hex(frame)} was allocated with order {metadata.Order}, not {order}.");
        }

        if (metadata.RefCount != 0)
        {
            ThrowHelper.ThrowInvalidOperation($"Frame {ThrowHelper.Hex(frame)} still has {metadata.RefCount} references; a block is freed only when its reference count is 0.");
        }

        if (metadata.MapCount != -1)
        {
            ThrowHelper.ThrowInvalidOperation($"Frame {ThrowHelper.Hex(frame)} is still mapped by {metadata.MapCount + 1} page-table entries (MapCount {metadata.MapCount}, -1 when unmapped).");
        }

        FrameFlags busy = flags & (FrameFlags.Lru | FrameFlags.PageTable);
        if (busy != 0)
        {
            ThrowHelper.ThrowInvalidOperation($"Frame {ThrowHelper.Hex(frame)} is still in use ({busy}): take it off the LRU list or retire the page table before freeing it.");
        }
    }

    private void AddInitialRun(ulong start, ulong end)
    {
        while (start < end)
        {
            int order = start == 0 ? MaxOrder : Math.Min(MaxOrder, BitOperations.TrailingZeroCount(start));
            while (start + (1UL << order) > end)
            {
                order--;
            }

            MakeFreeHead((int)start, order);
            LinkAtTail((int)start, order);
            _freeFrames += 1UL << order;
            start += 1UL << order;
        }
    }

    // buddy_merge_likely: the block's buddy one order up is free, so the block will probably merge with it once its
    // own buddy comes back; keep it at the tail so it is handed out last.
    private bool BuddyMergeLikely(int block, int order)
    {
        if (order >= MaxOrder - 1)
        {
            return false;
        }

        int higher = block & ~(1 << order);
        int higherBuddy = higher ^ (1 << (order + 1));
        return (ulong)higherBuddy < Frames.FrameCount && IsFreeHead(higherBuddy, order + 1);
    }

    // The first frame of a block leaving the free lists: allocated, unreferenced, unmapped, recording its order.
    private void HandOut(int block, int order)
    {
        ref FrameMetadata first = ref Frames.Ref((ulong)block);
        first.FlagsAndOrder = (uint)order << FrameMetadata.OrderShift;
        first.RefCount = 0;
        first.MapCount = -1;
        first.Link = -1;
        _freeFrames -= 1UL << order;
    }

    private bool IsFreeHeadOfAtLeast(int frame, int order, out int headOrder)
    {
        ref FrameMetadata metadata = ref Frames.Ref((ulong)frame);
        headOrder = metadata.Order;
        return (metadata.Flags & FrameFlags.Free) != 0 && headOrder >= order;
    }

    private bool IsFreeHead(int frame, int order)
    {
        ref FrameMetadata metadata = ref Frames.Ref((ulong)frame);
        return (metadata.Flags & FrameFlags.Free) != 0 && metadata.Order == order;
    }

    private void MakeFreeHead(int frame, int order)
    {
        ref FrameMetadata metadata = ref Frames.Ref((ulong)frame);
        metadata.FlagsAndOrder = (uint)FrameFlags.Free | ((uint)order << FrameMetadata.OrderShift);
        metadata.RefCount = 0;
    }

    // A frame of a free block other than its first, or an allocated frame: no flags, no references, unmapped, no link.
    private void MakeInterior(int frame)
    {
        ref FrameMetadata metadata = ref Frames.Ref((ulong)frame);
        metadata.FlagsAndOrder = 0;
        metadata.RefCount = 0;
        metadata.MapCount = -1;
        metadata.Link = -1;
    }

    // The list links of a free block head: MapCount = previous, Link = next (frame numbers, NoFrame for none).
    private void LinkAtHead(int frame, int order)
    {
        ref FrameMetadata metadata = ref Frames.Ref((ulong)frame);
        int next = _head[order];
        metadata.MapCount = NoFrame;
        metadata.Link = next;
        if (next == NoFrame)
        {
            _tail[order] = frame;
        }
        else
        {
            Frames.Ref((ulong)next).MapCount = frame;
        }

        _head[order] = frame;
        _blocks[order]++;
    }

    private void LinkAtTail(int frame, int order)
    {
        ref FrameMetadata metadata = ref Frames.Ref((ulong)frame);
        int previous = _tail[order];
        metadata.MapCount = previous;
        metadata.Link = NoFrame;
        if (previous == NoFrame)
        {
            _head[order] = frame;
        }
        else
        {
            Frames.Ref((ulong)previous).Link = frame;
        }

        _tail[order] = frame;
        _blocks[order]++;
    }

    private void Unlink(int frame, int order)
    {
        ref FrameMetadata metadata = ref Frames.Ref((ulong)frame);
        int previous = metadata.MapCount;
        int next = metadata.Link;
        if (previous == NoFrame)
        {
            _head[order] = next;
        }
        else
        {
            Frames.Ref((ulong)previous).Link = next;
        }

        if (next == NoFrame)
        {
            _tail[order] = previous;
        }
        else
        {
            Frames.Ref((ulong)next).MapCount = previous;
        }

        metadata.MapCount = -1;
        metadata.Link = -1;
        _blocks[order]--;
    }
}
