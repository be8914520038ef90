using System;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using ThpCore.Internal;
using ThpCore.Paging;

namespace ThpCore.Memory;

/// <summary>
/// One frame's metadata: 16 bytes, Linux's <c>struct page</c> cut to what THP needs. Its fields mean different
/// things by role, as <c>struct page</c>'s unions do:
/// <list type="table">
/// <item><term>order-0 folio or head</term><description>RefCount = references; MapCount = PTE mappings of this page minus one (Linux's <c>_mapcount</c>, -1 unmapped); Link = head: index of the large-folio record in <see cref="FrameTable"/>, order-0: -1.</description></item>
/// <item><term>tail</term><description>RefCount = 0 (tails hold no references, as in Linux); MapCount = this page's PTE mappings minus one; Link = distance to the head in frames.</description></item>
/// <item><term>free block head</term><description>Flags = <see cref="FrameFlags.Free"/>, order in the flags; RefCount = 0; MapCount = previous free block on its list (frame number, -1 none); Link = next (-1 none).</description></item>
/// <item><term>rest of a free block</term><description>Flags 0 (<see cref="FrameFlags.Free"/> is kept on the first frame only, as Linux's <c>PageBuddy</c>), RefCount = 0, MapCount = -1, Link = -1.</description></item>
/// <item><term>allocated block, before it becomes a folio</term><description>Flags 0; the first frame records the allocated order in the flags; RefCount = 0; MapCount = -1; Link = -1.</description></item>
/// </list>
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal struct FrameMetadata
{
    // Low 16 bits: FrameFlags. Bits 16..19: order (of a free block head or a folio head).
    internal uint FlagsAndOrder;
    internal int RefCount;
    internal int MapCount;
    internal int Link;

    internal const int OrderShift = 16;
    internal const uint OrderMask = 0xFu << OrderShift;
    internal const uint FlagsMask = 0xFFFF;

    internal readonly FrameFlags Flags => (FrameFlags)(FlagsAndOrder & FlagsMask);

    internal readonly int Order => (int)((FlagsAndOrder & OrderMask) >> OrderShift);
}

/// <summary>
/// The state of a large folio that Linux keeps in its first tail pages (<c>_entire_mapcount</c>,
/// <c>_large_mapcount</c>, <c>_pincount</c>, <c>_deferred_list</c>): one record per large folio, found from the
/// head's metadata, so per-frame metadata stays at 16 bytes.
/// </summary>
internal struct LargeFolioRecord
{
    internal ulong HeadFrame;

    // Linux's _entire_mapcount: PMD mappings minus one (-1 = none).
    internal int EntireMapCount;

    // All mappings (PTE + PMD) of the folio; a PMD mapping counts 1 (Linux's folio_mapcount()).
    internal int TotalMapCount;

    // Exact FOLL_PIN count (Linux's _pincount).
    internal int PinCount;

    // Deferred-split queue links: record indices, -1 none.
    internal int DeferredPrevious;
    internal int DeferredNext;

    // Free-list link of this record slot when unused: next free slot, -1 none.
    internal int NextFreeRecord;
}

/// <summary>A snapshot of one frame's metadata, for inspection and tests.</summary>
/// <param name="FrameNumber">The frame (PFN).</param>
/// <param name="Flags">
/// Its flags. <see cref="FrameFlags.Free"/> for every frame of a free block, although the frame table stores it on
/// the block's first frame only.
/// </param>
/// <param name="Order">The order of the free block, allocated block or folio it starts (0 otherwise).</param>
/// <param name="RefCount">References (heads and order-0 frames; 0 for tails and free frames).</param>
/// <param name="MapCount">PTE mappings of this page (Linux's <c>_mapcount + 1</c>; 0 for free frames).</param>
/// <param name="HeadFrame">
/// The folio's head for a folio frame, the first frame of the free block for a free frame, the frame itself
/// otherwise. A free frame starts its block when <paramref name="HeadFrame"/> equals <paramref name="FrameNumber"/>.
/// </param>
public readonly record struct FrameInfo(ulong FrameNumber, FrameFlags Flags, int Order, int RefCount, int MapCount, ulong HeadFrame);

/// <summary>
/// Metadata for every 4 KiB frame of physical memory, indexed by frame number: Linux's <c>mem_map</c> /
/// <c>struct page</c> array. <see cref="BytesPerFrame"/> is 16; large folios add one small record each.
/// </summary>
/// <remarks>Not thread-safe by itself: the buddy allocator and the folio operations serialise their changes.</remarks>
public sealed class FrameTable
{
    /// <summary>The most frames a table can describe (2^31: 8 TiB of 4 KiB frames; links are 32-bit).</summary>
    public const ulong MaxFrames = 1UL << 31;

    private readonly FrameMetadata[] _frames;
    private LargeFolioRecord[] _records = new LargeFolioRecord[16];
    private int _recordCount;
    private int _freeRecord = -1;

    /// <summary>Creates metadata for <paramref name="frameCount"/> frames, each initially free of any role (flags 0, unmapped).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="frameCount"/> is 0 or above <see cref="MaxFrames"/>.</exception>
    public FrameTable(ulong frameCount)
    {
        if (frameCount == 0 || frameCount > MaxFrames)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(frameCount), frameCount, $"A frame table describes 1 to {MaxFrames:#,0} frames.");
        }

        _frames = new FrameMetadata[frameCount];
        foreach (ref FrameMetadata frame in _frames.AsSpan())
        {
            frame.MapCount = -1;
            frame.Link = -1;
        }
    }

    /// <summary>Bytes of metadata per frame: 16.</summary>
    public static int BytesPerFrame => Unsafe.SizeOf<FrameMetadata>();

    /// <summary>The number of frames described.</summary>
    public ulong FrameCount => (ulong)_frames.Length;

    /// <summary>The number of large-folio records in use.</summary>
    public int LargeFolioRecords => _recordCount;

    /// <summary>A snapshot of frame <paramref name="frameNumber"/>'s metadata.</summary>
    /// <remarks>
    /// For a frame that carries no flags itself, looks for a free block that encloses it (at most
    /// <see cref="BuddyAllocator.MaxOrder"/> probes, as Linux's <c>is_free_buddy_page</c>).
    /// </remarks>
    /// <exception cref="ArgumentOutOfRangeException">The frame is outside the table.</exception>
    public FrameInfo Describe(ulong frameNumber)
    {
        ref FrameMetadata frame = ref Ref(frameNumber);
        if (frame.FlagsAndOrder == 0
            && TryFindEnclosingBlock(frameNumber, 1, out ulong blockHead, out _)
            && (_frames[blockHead].Flags & FrameFlags.Free) != 0)
        {
            return new FrameInfo(frameNumber, FrameFlags.Free, 0, 0, 0, blockHead);
        }

        FrameFlags flags = frame.Flags;
        ulong head = (flags & FrameFlags.Tail) != 0 ? frameNumber - (ulong)frame.Link : frameNumber;
        bool free = (flags & FrameFlags.Free) != 0;
        return new FrameInfo(frameNumber, flags, frame.Order, frame.RefCount, free ? 0 : frame.MapCount + 1, head);
    }

    internal ref FrameMetadata Ref(ulong frameNumber)
    {
        if (frameNumber >= (ulong)_frames.Length)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(frameNumber), frameNumber, $"Frame {ThrowHelper.Hex(frameNumber)} is outside physical memory of {_frames.Length:#,0} frames.");
        }

        return ref _frames[frameNumber];
    }

    // The metadata of frames first .. first + count - 1, for loops over a folio's pages.
    internal Span<FrameMetadata> Slice(ulong first, int count)
    {
        if (first > (ulong)_frames.Length || (ulong)count > (ulong)_frames.Length - first)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(first), first, $"Frames {ThrowHelper.Hex(first)}+{count} are outside physical memory of {_frames.Length:#,0} frames.");
        }

        return _frames.AsSpan((int)first, count);
    }

    /// <summary>
    /// Finds the block (free, allocated or folio) of order <paramref name="minimumOrder"/> or above that encloses
    /// <paramref name="frameNumber"/> without starting at it: the first frame <c>frameNumber</c> rounded down to
    /// 2^k, for k from <paramref name="minimumOrder"/> to <see cref="BuddyAllocator.MaxOrder"/>, that records an
    /// order of at least k. Blocks are aligned to their size and do not overlap, so at most one such frame exists.
    /// </summary>
    internal bool TryFindEnclosingBlock(ulong frameNumber, int minimumOrder, out ulong head, out int order)
    {
        for (int k = Math.Max(minimumOrder, 1); k <= BuddyAllocator.MaxOrder; k++)
        {
            ulong candidate = frameNumber & ~((1UL << k) - 1);
            if (candidate != frameNumber && _frames[candidate].Order >= k)
            {
                head = candidate;
                order = _frames[candidate].Order;
                return true;
            }
        }

        head = 0;
        order = 0;
        return false;
    }

    internal ref LargeFolioRecord Record(int index) => ref _records[index];

    internal int AllocateRecord(ulong headFrame)
    {
        int index;
        if (_freeRecord >= 0)
        {
            index = _freeRecord;
            _freeRecord = _records[index].NextFreeRecord;
        }
        else
        {
            if (_recordCount == _records.Length)
            {
                Array.Resize(ref _records, _records.Length * 2);
            }

            index = _recordCount;
        }

        _recordCount++;
        _records[index] = new LargeFolioRecord
        {
            HeadFrame = headFrame,
            EntireMapCount = -1,
            DeferredPrevious = -1,
            DeferredNext = -1,
            NextFreeRecord = -1,
        };
        return index;
    }

    internal void FreeRecord(int index)
    {
        _records[index] = new LargeFolioRecord { NextFreeRecord = _freeRecord, DeferredPrevious = -1, DeferredNext = -1 };
        _freeRecord = index;
        _recordCount--;
    }

    internal static PhysicalAddress AddressOf(ulong frameNumber) => PhysicalAddress.FromFrameNumber(frameNumber);
}
