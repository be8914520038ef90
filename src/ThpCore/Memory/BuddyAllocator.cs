using System;
using System.Collections.Generic;
using System.Threading;
using ThpCore.Internal;

namespace ThpCore.Memory;

/// <summary>
/// PLACEHOLDER buddy allocator: the public surface of the real one, implemented simply (one sorted set of free
/// block heads per order) so that the folio layer compiles and can be tested. Drop it when the real allocator
/// is merged.
/// </summary>
/// <remarks>
/// Allocated frames come back with flags <see cref="FrameFlags.None"/>, RefCount 0, MapCount -1 and Link -1;
/// free frames carry <see cref="FrameFlags.Free"/>. Thread-safe (one lock).
/// </remarks>
public sealed class BuddyAllocator
{
    /// <summary>The largest order (inclusive): blocks of 2^10 frames, 4 MiB (Linux's <c>MAX_PAGE_ORDER</c>).</summary>
    public const int MaxOrder = 10;

    private readonly Lock _lock = new();
    private readonly SortedSet<ulong>[] _free = new SortedSet<ulong>[MaxOrder + 1];
    private ulong _freeFrames;
    private long _failures;

    /// <summary>Hands out every frame of <paramref name="frames"/>.</summary>
    public BuddyAllocator(FrameTable frames)
        : this(frames, Array.Empty<(ulong, ulong)>())
    {
    }

    /// <summary>Hands out every frame of <paramref name="frames"/> except the <paramref name="reserved"/> ranges.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A reserved range reaches past the table.</exception>
    public BuddyAllocator(FrameTable frames, IEnumerable<(ulong FirstFrame, ulong Count)> reserved)
    {
        ArgumentNullException.ThrowIfNull(frames);
        ArgumentNullException.ThrowIfNull(reserved);
        Frames = frames;
        for (int order = 0; order <= MaxOrder; order++)
        {
            _free[order] = new SortedSet<ulong>();
        }

        ulong count = frames.FrameCount;
        var ranges = new List<(ulong Start, ulong End)>();
        foreach ((ulong first, ulong length) in reserved)
        {
            if (first > count || length > count - first)
            {
                ThrowHelper.ThrowArgumentOutOfRange(nameof(reserved), first, $"Reserved range {ThrowHelper.Hex(first)}+{length} reaches past the {count:#,0} frames.");
            }

            if (length != 0)
            {
                ranges.Add((first, first + length));
            }
        }

        ranges.Sort();
        ulong reservedFrames = 0;
        foreach ((ulong start, ulong end) in ranges)
        {
            for (ulong f = start; f < end; f++)
            {
                ref FrameMetadata frame = ref frames.Ref(f);
                if ((frame.Flags & FrameFlags.Reserved) == 0)
                {
                    frame.FlagsAndOrder = (uint)FrameFlags.Reserved;
                    reservedFrames++;
                }
            }
        }

        ManagedFrames = count - reservedFrames;

        ulong next = 0;
        while (next < count)
        {
            if (IsReserved(ranges, next, 1))
            {
                next++;
                continue;
            }

            int order = MaxOrder;
            while (order > 0 && ((next & ((1UL << order) - 1)) != 0 || next + (1UL << order) > count || IsReserved(ranges, next, 1UL << order)))
            {
                order--;
            }

            AddFree(next, order);
            next += 1UL << order;
        }
    }

    /// <summary>The frame table this allocator keeps its state in.</summary>
    public FrameTable Frames { get; }

    /// <summary>Frames currently free.</summary>
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

    /// <summary>Frames this allocator manages (all but the reserved ones).</summary>
    public ulong ManagedFrames { get; }

    /// <summary>How many allocations failed for lack of a free block.</summary>
    public long AllocationFailures => Volatile.Read(ref _failures);

    /// <summary>The number of free blocks of <paramref name="order"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="order"/> is outside 0..<see cref="MaxOrder"/>.</exception>
    public long FreeBlocks(int order)
    {
        CheckOrder(order);
        lock (_lock)
        {
            return _free[order].Count;
        }
    }

    /// <summary>Takes a free block of 2^<paramref name="order"/> frames, splitting a larger one if needed.</summary>
    /// <returns><see langword="false"/> when no block of that order or larger is free.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="order"/> is outside 0..<see cref="MaxOrder"/>.</exception>
    public bool TryAllocate(int order, out ulong firstFrame)
    {
        CheckOrder(order);
        lock (_lock)
        {
            int from = order;
            while (from <= MaxOrder && _free[from].Count == 0)
            {
                from++;
            }

            if (from > MaxOrder)
            {
                _failures++;
                firstFrame = 0;
                return false;
            }

            ulong block = _free[from].Min;
            RemoveFree(block, from);
            while (from > order)
            {
                from--;
                AddFree(block + (1UL << from), from);
            }

            for (ulong f = block; f < block + (1UL << order); f++)
            {
                ref FrameMetadata frame = ref Frames.Ref(f);
                frame.FlagsAndOrder = 0;
                frame.RefCount = 0;
                frame.MapCount = -1;
                frame.Link = -1;
            }

            firstFrame = block;
            return true;
        }
    }

    /// <summary>Gives back a block of 2^<paramref name="order"/> frames, merging it with free buddies.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="order"/> is outside 0..<see cref="MaxOrder"/>, or the block is outside the table.</exception>
    /// <exception cref="ArgumentException">The block is misaligned, or one of its frames is free or reserved.</exception>
    public void Free(ulong firstFrame, int order)
    {
        CheckOrder(order);
        ulong size = 1UL << order;
        if ((firstFrame & (size - 1)) != 0)
        {
            ThrowHelper.ThrowArgument(nameof(firstFrame), $"A block of order {order} starts on a multiple of {size} frames; {ThrowHelper.Hex(firstFrame)} does not.");
        }

        if (firstFrame >= Frames.FrameCount || size > Frames.FrameCount - firstFrame)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(firstFrame), firstFrame, $"Block {ThrowHelper.Hex(firstFrame)} of order {order} is outside the {Frames.FrameCount:#,0} frames.");
        }

        lock (_lock)
        {
            for (ulong f = firstFrame; f < firstFrame + size; f++)
            {
                if ((Frames.Ref(f).Flags & (FrameFlags.Free | FrameFlags.Reserved)) != 0)
                {
                    ThrowHelper.ThrowArgument(nameof(firstFrame), $"Frame {ThrowHelper.Hex(f)} is already free or reserved.");
                }
            }

            ulong block = firstFrame;
            while (order < MaxOrder)
            {
                ulong buddy = block ^ (1UL << order);
                if (!_free[order].Contains(buddy))
                {
                    break;
                }

                RemoveFree(buddy, order);
                block = Math.Min(block, buddy);
                order++;
            }

            AddFree(block, order);
        }
    }

    private void AddFree(ulong block, int order)
    {
        for (ulong f = block; f < block + (1UL << order); f++)
        {
            ref FrameMetadata frame = ref Frames.Ref(f);
            frame.FlagsAndOrder = (uint)FrameFlags.Free;
            frame.RefCount = 0;
            frame.MapCount = -1;
            frame.Link = -1;
        }

        Frames.Ref(block).FlagsAndOrder |= (uint)order << FrameMetadata.OrderShift;
        _free[order].Add(block);
        _freeFrames += 1UL << order;
    }

    private void RemoveFree(ulong block, int order)
    {
        _free[order].Remove(block);
        Frames.Ref(block).FlagsAndOrder &= ~FrameMetadata.OrderMask;
        _freeFrames -= 1UL << order;
    }

    private static bool IsReserved(List<(ulong Start, ulong End)> ranges, ulong first, ulong count)
    {
        foreach ((ulong start, ulong end) in ranges)
        {
            if (start < first + count && first < end)
            {
                return true;
            }
        }

        return false;
    }

    private static void CheckOrder(int order)
    {
        if ((uint)order > MaxOrder)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(order), order, $"Block order must be 0 to {MaxOrder}; {order} is not.");
        }
    }
}
