using System;
using System.Collections.Generic;
using System.Diagnostics.CodeAnalysis;
using System.Threading;
using ThpCore.Internal;
using ThpCore.Paging;

namespace ThpCore.Memory;

/// <summary>
/// One NUMA node (Linux's <c>pglist_data</c>): its physical memory, the frame metadata (<c>mem_map</c>), the
/// buddy allocator and the deferred-split queue. Data folios and page-table frames come from the same
/// allocator, as in Linux, so the node is also the <see cref="IFrameAllocator"/> of the tables that map it.
/// </summary>
/// <remarks>
/// <para>
/// Threads: every change to frame metadata, folio state or the deferred-split queue happens under one lock per
/// node; reads of single fields are lock-free. Calls made straight to <see cref="Buddy"/> or
/// <see cref="Memory"/> are not covered by that lock.
/// </para>
/// <para>
/// Memory: frame contents are sparse (a frame never written costs nothing), but the metadata is not: 16 bytes
/// per frame (<see cref="FrameTable.BytesPerFrame"/>) for the whole size, up front.
/// </para>
/// </remarks>
public sealed partial class MemoryNode : IFrameAllocator
{
    private readonly Lock _lock = new();

    // The deferred-split queue: a doubly linked list of large-folio record indices (Linux's split_queue).
    private int _deferredHead = -1;
    private int _deferredTail = -1;
    private int _deferredCount;

    /// <summary>A node of <paramref name="sizeBytes"/> bytes, every frame available.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="sizeBytes"/> is 0, not a multiple of 4 KiB, or above <see cref="SparsePhysicalMemory.MaxSize"/>.</exception>
    public MemoryNode(ulong sizeBytes)
        : this(sizeBytes, Array.Empty<(ulong, ulong)>())
    {
    }

    /// <summary>
    /// A node of <paramref name="sizeBytes"/> bytes whose <paramref name="reserved"/> frame ranges are never handed
    /// out (firmware, holes, the kernel image: Linux's <c>PG_reserved</c>). Ranges may overlap.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="sizeBytes"/> is 0, not a multiple of 4 KiB, or above <see cref="SparsePhysicalMemory.MaxSize"/>; or a reserved range reaches past the memory.</exception>
    public MemoryNode(ulong sizeBytes, IEnumerable<(ulong FirstFrame, ulong Count)> reserved)
    {
        ArgumentNullException.ThrowIfNull(reserved);
        Memory = new SparsePhysicalMemory(sizeBytes);
        Frames = new FrameTable(Memory.FrameCount);
        var ranges = new List<(ulong FirstFrame, ulong Count)>(reserved);
        foreach ((ulong first, ulong count) in ranges)
        {
            if (first > Memory.FrameCount || count > Memory.FrameCount - first)
            {
                ThrowHelper.ThrowArgumentOutOfRange(
                    nameof(reserved),
                    $"{ThrowHelper.Hex(first)}+{count}",
                    $"Reserved range of {count} frames from {ThrowHelper.Hex(first)} reaches past the node's {Memory.FrameCount:#,0} frames.");
            }
        }

        Buddy = new BuddyAllocator(Frames, ranges);
        foreach ((ulong first, ulong count) in ranges)
        {
            for (ulong frame = first; frame < first + count; frame++)
            {
                ref FrameMetadata metadata = ref Frames.Ref(frame);
                metadata.FlagsAndOrder = (uint)FrameFlags.Reserved;
                metadata.RefCount = 0;
                metadata.MapCount = -1;
                metadata.Link = -1;
            }
        }
    }

    /// <summary>The node's physical memory: real bytes, sparse.</summary>
    public SparsePhysicalMemory Memory { get; }

    /// <summary>Per-frame metadata (Linux's <c>mem_map</c>).</summary>
    public FrameTable Frames { get; }

    /// <summary>The node's page allocator.</summary>
    public BuddyAllocator Buddy { get; }

    /// <summary>The number of folios on the deferred-split queue (Linux's <c>split_queue_len</c>).</summary>
    public int DeferredSplitCount => Volatile.Read(ref _deferredCount);

    /// <summary>The deferred-split queue, oldest first (Linux appends at the tail): a snapshot.</summary>
    public IEnumerable<Folio> DeferredSplitQueue
    {
        get
        {
            lock (_lock)
            {
                var folios = new List<Folio>(_deferredCount);
                for (int index = _deferredHead; index >= 0; index = Frames.Record(index).DeferredNext)
                {
                    ulong head = Frames.Record(index).HeadFrame;
                    folios.Add(new Folio(this, head, Frames.Ref(head).Order));
                }

                return folios;
            }
        }
    }

    internal Lock SyncRoot => _lock;

    /// <summary>
    /// Allocates a folio of 2^<paramref name="order"/> frames (Linux <c>folio_alloc</c>): one reference, no
    /// mappings, not pinned, contents reading as zero.
    /// </summary>
    /// <param name="order">0 to <see cref="BuddyAllocator.MaxOrder"/>.</param>
    /// <param name="folio">The folio; <see langword="default"/> on failure.</param>
    /// <param name="anon">Whether the folio is anonymous memory.</param>
    /// <returns><see langword="false"/> when no free block of that order is left (out of memory is a result, not an error).</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="order"/> is negative or above <see cref="BuddyAllocator.MaxOrder"/>.</exception>
    public bool TryAllocateFolio(int order, out Folio folio, bool anon = true)
    {
        if ((uint)order > BuddyAllocator.MaxOrder)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(order), order, $"Folio order must be 0 to {BuddyAllocator.MaxOrder} (MAX_PAGE_ORDER); {order} is not.");
        }

        lock (_lock)
        {
            if (!Buddy.TryAllocate(order, out ulong head))
            {
                folio = default;
                return false;
            }

            folio = MakeFolioLocked(head, order, anon);
            return true;
        }
    }

    /// <summary>
    /// Allocates a folio on the chosen frames <paramref name="firstFrame"/> .. + 2^<paramref name="order"/> − 1 when
    /// they are all free, as compaction's free scanner takes chosen free pages (Linux <c>isolate_freepages_block</c>
    /// with <c>split_map_pages</c>, then <c>compaction_alloc</c> handing them to migration); otherwise as
    /// <see cref="TryAllocateFolio"/>.
    /// </summary>
    /// <param name="firstFrame">The folio's head frame, a multiple of 2^<paramref name="order"/>.</param>
    /// <param name="order">0 to <see cref="BuddyAllocator.MaxOrder"/>.</param>
    /// <param name="folio">The folio; <see langword="default"/> when any of the frames is not free.</param>
    /// <param name="anon">Whether the folio is anonymous memory.</param>
    /// <returns><see langword="false"/>, changing nothing, when those frames are not all free.</returns>
    /// <exception cref="ArgumentOutOfRangeException">
    /// <paramref name="order"/> is outside 0 to <see cref="BuddyAllocator.MaxOrder"/>, or <paramref name="firstFrame"/>
    /// is outside the node or not aligned to the order.
    /// </exception>
    public bool TryAllocateFolioAt(ulong firstFrame, int order, out Folio folio, bool anon = true)
    {
        lock (_lock)
        {
            if (!Buddy.TryAllocateAt(firstFrame, order))
            {
                folio = default;
                return false;
            }

            folio = MakeFolioLocked(firstFrame, order, anon);
            return true;
        }
    }

    // A block just taken from the buddy allocator becomes a folio with one reference and zero contents.
    private Folio MakeFolioLocked(ulong head, int order, bool anon)
    {
        int pages = 1 << order;
        for (int i = 0; i < pages; i++)
        {
            // Freeing drops a frame's bytes already; this makes the zero contents unconditional (__GFP_ZERO).
            Memory.DiscardFrame(head + (ulong)i);
        }

        uint flags = (anon ? (uint)FrameFlags.Anon : 0) | ((uint)order << FrameMetadata.OrderShift);
        ref FrameMetadata headFrame = ref Frames.Ref(head);
        if (order == 0)
        {
            headFrame.Link = -1;
        }
        else
        {
            flags |= (uint)FrameFlags.Head;
            headFrame.Link = Frames.AllocateRecord(head);
            for (int i = 1; i < pages; i++)
            {
                ref FrameMetadata tail = ref Frames.Ref(head + (ulong)i);
                tail.FlagsAndOrder = (uint)FrameFlags.Tail;
                tail.RefCount = 0;
                tail.MapCount = -1;
                tail.Link = i;
            }
        }

        headFrame.MapCount = -1;
        headFrame.RefCount = 1;
        Volatile.Write(ref headFrame.FlagsAndOrder, flags);
        return new Folio(this, head, order);
    }

    /// <summary>The folio containing frame <paramref name="frameNumber"/> (Linux <c>page_folio</c> / <c>compound_head</c>).</summary>
    /// <exception cref="ArgumentOutOfRangeException">The frame is outside the node.</exception>
    /// <exception cref="InvalidOperationException">The frame is free, reserved, a page table, or otherwise not part of a folio.</exception>
    public Folio FolioOf(ulong frameNumber)
    {
        Frames.Ref(frameNumber);
        lock (_lock)
        {
            if (!TryFindFolioLocked(frameNumber, out Folio folio, out string? reason))
            {
                ThrowHelper.ThrowInvalidOperation(reason);
            }

            return folio;
        }
    }

    /// <summary>The folio containing <paramref name="address"/>.</summary>
    /// <returns><see langword="false"/> when the address is outside the node or its frame is not part of a folio.</returns>
    public bool TryGetFolio(PhysicalAddress address, out Folio folio)
    {
        if (address.FrameNumber >= Frames.FrameCount)
        {
            folio = default;
            return false;
        }

        lock (_lock)
        {
            return TryFindFolioLocked(address.FrameNumber, out folio, out _);
        }
    }

    /// <summary>Takes one order-0 frame for a paging structure: flagged <see cref="FrameFlags.PageTable"/>, one reference, zeroed.</summary>
    /// <param name="frame">The frame's first byte; <see cref="PhysicalAddress.Zero"/> when memory is exhausted.</param>
    /// <returns><see langword="false"/> when no frame is free.</returns>
    public bool TryAllocateFrame(out PhysicalAddress frame)
    {
        lock (_lock)
        {
            if (!Buddy.TryAllocate(0, out ulong number))
            {
                frame = PhysicalAddress.Zero;
                return false;
            }

            Memory.DiscardFrame(number);
            ref FrameMetadata metadata = ref Frames.Ref(number);
            metadata.MapCount = -1;
            metadata.Link = -1;
            metadata.RefCount = 1;
            Volatile.Write(ref metadata.FlagsAndOrder, (uint)FrameFlags.PageTable);
            frame = PhysicalAddress.FromFrameNumber(number);
            return true;
        }
    }

    /// <summary>Frees a page-table frame from <see cref="TryAllocateFrame"/>; its bytes are dropped.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="frame"/> is outside the node.</exception>
    /// <exception cref="ArgumentException"><paramref name="frame"/> is not 4 KiB-aligned or not a page-table frame (for example, already freed).</exception>
    public void FreeFrame(PhysicalAddress frame)
    {
        if (!frame.IsAligned(PageSize.Size4K))
        {
            ThrowHelper.ThrowArgument(nameof(frame), $"A page-table frame starts on a 4 KiB boundary; {frame} does not.");
        }

        if (frame.FrameNumber >= Frames.FrameCount)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(frame), frame.ToString(), $"{frame} is outside the node's {Frames.FrameCount:#,0} frames.");
        }

        lock (_lock)
        {
            ref FrameMetadata metadata = ref Frames.Ref(frame.FrameNumber);
            if (metadata.Flags != FrameFlags.PageTable)
            {
                ThrowHelper.ThrowArgument(nameof(frame), $"Frame {frame} does not hold a page table (flags {metadata.Flags}); only frames from TryAllocateFrame can be freed here.");
            }

            ResetToAllocated(ref metadata);
            Memory.DiscardFrame(frame.FrameNumber);
            Buddy.Free(frame.FrameNumber, 0);
        }
    }

    internal void FreeFolioLocked(ulong head, int order)
    {
        ref FrameMetadata headFrame = ref Frames.Ref(head);
        if (order > 0)
        {
            UnqueueDeferredLocked(ref headFrame);
            Frames.FreeRecord(headFrame.Link);
        }

        int pages = 1 << order;
        for (int i = 0; i < pages; i++)
        {
            ResetToAllocated(ref Frames.Ref(head + (ulong)i));
            Memory.DiscardFrame(head + (ulong)i);
        }

        // The buddy allocator checks the order it recorded on the block's first frame when it handed it out.
        headFrame.FlagsAndOrder = (uint)order << FrameMetadata.OrderShift;
        Buddy.Free(head, order);
    }

    internal void EnqueueDeferredLocked(int record)
    {
        ref LargeFolioRecord entry = ref Frames.Record(record);
        entry.DeferredPrevious = _deferredTail;
        entry.DeferredNext = -1;
        if (_deferredTail >= 0)
        {
            Frames.Record(_deferredTail).DeferredNext = record;
        }
        else
        {
            _deferredHead = record;
        }

        _deferredTail = record;
        Volatile.Write(ref _deferredCount, _deferredCount + 1);
    }

    // Takes a large folio off the queue if it is on it, clearing DeferredSplit and PartiallyMapped.
    internal void UnqueueDeferredLocked(ref FrameMetadata head)
    {
        if ((head.Flags & FrameFlags.DeferredSplit) == 0)
        {
            return;
        }

        int record = head.Link;
        ref LargeFolioRecord entry = ref Frames.Record(record);
        if (entry.DeferredPrevious >= 0)
        {
            Frames.Record(entry.DeferredPrevious).DeferredNext = entry.DeferredNext;
        }
        else
        {
            _deferredHead = entry.DeferredNext;
        }

        if (entry.DeferredNext >= 0)
        {
            Frames.Record(entry.DeferredNext).DeferredPrevious = entry.DeferredPrevious;
        }
        else
        {
            _deferredTail = entry.DeferredPrevious;
        }

        entry.DeferredPrevious = -1;
        entry.DeferredNext = -1;
        Volatile.Write(ref head.FlagsAndOrder, head.FlagsAndOrder & ~(uint)(FrameFlags.DeferredSplit | FrameFlags.PartiallyMapped));
        Volatile.Write(ref _deferredCount, _deferredCount - 1);
    }

    // The state the buddy allocator hands frames out in, and takes them back in.
    private static void ResetToAllocated(ref FrameMetadata frame)
    {
        Volatile.Write(ref frame.FlagsAndOrder, 0);
        frame.RefCount = 0;
        frame.MapCount = -1;
        frame.Link = -1;
    }

    private bool TryFindFolioLocked(ulong frameNumber, out Folio folio, [NotNullWhen(false)] out string? reason)
    {
        folio = default;
        ref FrameMetadata frame = ref Frames.Ref(frameNumber);
        FrameFlags flags = frame.Flags;
        ulong head = frameNumber;

        // Only a free block's first frame carries Free; Describe finds the block for any frame inside it.
        if ((flags & FrameFlags.Free) != 0 || (flags == FrameFlags.None && frame.RefCount == 0 && (Frames.Describe(frameNumber).Flags & FrameFlags.Free) != 0))
        {
            reason = $"Frame {ThrowHelper.Hex(frameNumber)} is free (in the buddy allocator), not part of a folio.";
            return false;
        }

        if ((flags & FrameFlags.Reserved) != 0)
        {
            reason = $"Frame {ThrowHelper.Hex(frameNumber)} is reserved and never part of a folio.";
            return false;
        }

        if ((flags & FrameFlags.PageTable) != 0)
        {
            reason = $"Frame {ThrowHelper.Hex(frameNumber)} holds a page table, not a folio.";
            return false;
        }

        if ((flags & FrameFlags.Tail) != 0)
        {
            head = frameNumber - (ulong)frame.Link;
        }

        ref FrameMetadata headFrame = ref Frames.Ref(head);
        if (headFrame.RefCount <= 0 || (headFrame.Flags & (FrameFlags.Free | FrameFlags.Tail | FrameFlags.Reserved | FrameFlags.PageTable)) != 0)
        {
            reason = $"Frame {ThrowHelper.Hex(frameNumber)} is allocated but not part of a folio.";
            return false;
        }

        folio = new Folio(this, head, headFrame.Order);
        reason = null;
        return true;
    }
}
