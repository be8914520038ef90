using System;
using System.Collections.Generic;
using System.Threading;
using ThpCore.Internal;

namespace ThpCore.Memory;

/// <summary>
/// A swap area in miniature (Linux <c>struct swap_info_struct</c>): a run of 4 KiB slots, a swap count per slot
/// (<c>swap_map</c>), 512-slot clusters for swapping out a PMD-sized folio whole, and the slots' contents, kept
/// sparsely.
/// </summary>
/// <remarks>
/// <para>
/// Reference kernel v6.12. Slot 0 holds the swap header and is never handed out (<c>swap_map[0] = SWAP_MAP_BAD</c>
/// in <c>setup_swap_map</c>), so <see cref="FreeSlots"/> + <see cref="UsedSlots"/> = <see cref="Slots"/> − 1.
/// A cluster is <see cref="ClusterSize"/> = 512 naturally aligned slots (<c>SWAPFILE_CLUSTER</c> =
/// <c>HPAGE_PMD_NR</c> with <c>CONFIG_THP_SWAP</c>); a whole-cluster allocation needs a cluster with every slot
/// free, so the cluster holding slot 0 and a partial cluster at the end never qualify.
/// </para>
/// <para>
/// Differences from Linux: one-slot allocation takes the lowest free slot of the first cluster that is already
/// partly used, and only if there is none the lowest slot of the first free cluster. This keeps free clusters for
/// THPs as the v6.12 allocator's non-full cluster lists do, without its per-CPU and per-order state. The swap count
/// has no limit (Linux stores up to <c>SWAP_MAP_MAX</c> = 0x3e in the map and continues in extra pages), and the
/// <c>SWAP_HAS_CACHE</c> flag is not kept here: the swap cache's reference is the caller's to count.
/// </para>
/// <para>
/// <b>Swap cache.</b> The device also holds its part of Linux's swap cache (<c>swapper_spaces</c>: global, indexed by
/// swap entry, so every address space using the device shares it): slot → folio for folios that are being or have
/// been written to it (<see cref="AddToSwapCache"/>). A cached slot carries <c>SWAP_HAS_CACHE</c>: it is not free
/// while its folio is cached, even when its swap count (<see cref="SwapCount"/>, the swap PTEs holding it) is 0.
/// </para>
/// <para><b>Threads.</b> Every member takes one lock; the device may be shared. Swap-cache members change folios under
/// the node's lock while holding the device's (device lock first).</para>
/// </remarks>
public sealed partial class SwapDevice
{
    /// <summary>Slots in a cluster: 512 (Linux <c>SWAPFILE_CLUSTER</c> = <c>HPAGE_PMD_NR</c>).</summary>
    public const int ClusterSize = 512;

    /// <summary>Bytes in a slot: one 4 KiB page.</summary>
    public const int PageSize = 4096;

    // SWAP_HAS_CACHE (Linux 0x40 in swap_map): the slot's folio is in the swap cache. The rest of the word is the count.
    private const uint HasCache = 1u << 31;

    private readonly object _lock = new();
    private readonly uint[] _map;
    private readonly int[] _clusterFree;
    private readonly Dictionary<ulong, byte[]> _contents = new();

    // v6.12's swap zeromap (si->zeromap): slots of an all-zero folio, recorded instead of written.
    private readonly HashSet<ulong> _zeromap = new();
    private ulong _freeSlots;
    private long _clusterAllocations;
    private long _clusterFailures;

    /// <summary>A swap device of type <paramref name="type"/> with <paramref name="slots"/> slots, slot 0 the header.</summary>
    /// <exception cref="ArgumentOutOfRangeException">
    /// <paramref name="type"/> is not 0..<see cref="SwapEntry.MaxSwapFiles"/> − 1, or <paramref name="slots"/> is not
    /// 2..<see cref="Array.MaxLength"/>.
    /// </exception>
    public SwapDevice(int type, ulong slots)
    {
        if ((uint)type >= SwapEntry.MaxSwapFiles)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(type), type, $"A swap device type is 0..{SwapEntry.MaxSwapFiles - 1} (MAX_SWAPFILES = {SwapEntry.MaxSwapFiles}); {type} is not.");
        }

        if (slots < 2 || slots > (ulong)Array.MaxLength)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(slots), slots, $"A swap device has 2..{Array.MaxLength} slots (slot 0 is the header); {slots} is not.");
        }

        Type = type;
        Slots = slots;
        _map = new uint[slots];
        ulong clusters = (slots + ClusterSize - 1) / ClusterSize;
        _clusterFree = new int[clusters];
        for (ulong c = 0; c < clusters; c++)
        {
            _clusterFree[c] = (int)(Math.Min(slots, (c + 1) * ClusterSize) - (c * ClusterSize));
        }

        _clusterFree[0]--;
        _freeSlots = slots - 1;
    }

    /// <summary>The device's type: the <see cref="SwapEntry.Type"/> of its entries.</summary>
    public int Type { get; }

    /// <summary>All slots, the header included.</summary>
    public ulong Slots { get; }

    /// <summary>Slots that can be allocated.</summary>
    public ulong FreeSlots
    {
        get
        {
            lock (_lock)
            {
                return _freeSlots;
            }
        }
    }

    /// <summary>Slots with a swap count above 0 (Linux <c>inuse_pages</c>).</summary>
    public ulong UsedSlots
    {
        get
        {
            lock (_lock)
            {
                return Slots - 1 - _freeSlots;
            }
        }
    }

    /// <summary>Successful <see cref="TryAllocateCluster"/> calls (a THP swapped out whole: <c>thp_swpout</c>).</summary>
    public long ClusterAllocations => Interlocked.Read(ref _clusterAllocations);

    /// <summary>Failed <see cref="TryAllocateCluster"/> calls (the THP must be split: <c>thp_swpout_fallback</c>).</summary>
    public long ClusterFailures => Interlocked.Read(ref _clusterFailures);

    /// <summary>Slots whose contents are held (written with a page that is not all zeros).</summary>
    public int StoredPages
    {
        get
        {
            lock (_lock)
            {
                return _contents.Count;
            }
        }
    }

    /// <summary>
    /// Allocates one slot with swap count 1 (Linux <c>folio_alloc_swap</c> for an order-0 folio).
    /// </summary>
    /// <returns><see langword="false"/> if no slot is free.</returns>
    public bool TryAllocate(out ulong offset)
    {
        lock (_lock)
        {
            int cluster = -1;
            int firstFree = -1;
            for (int c = 0; c < _clusterFree.Length; c++)
            {
                int free = _clusterFree[c];
                if (free > 0 && free < ClusterSize)
                {
                    cluster = c;
                    break;
                }

                if (free > 0 && firstFree < 0)
                {
                    firstFree = c;
                }
            }

            if (cluster < 0)
            {
                cluster = firstFree;
            }

            if (cluster < 0)
            {
                offset = 0;
                return false;
            }

            ulong start = Math.Max(1UL, (ulong)cluster * ClusterSize);
            ulong end = Math.Min(Slots, ((ulong)cluster + 1) * ClusterSize);
            for (ulong slot = start; slot < end; slot++)
            {
                if (_map[slot] == 0)
                {
                    _map[slot] = 1;
                    _clusterFree[cluster]--;
                    _freeSlots--;
                    offset = slot;
                    return true;
                }
            }

            offset = 0;
            return ThrowHelper.ThrowInvalidOperation<bool>($"Swap device {Type}: cluster {cluster} counts free slots but has none (internal error).");
        }
    }

    /// <summary>
    /// Allocates a whole free cluster, <see cref="ClusterSize"/> slots starting at a multiple of 512, each with swap
    /// count 1 (Linux <c>folio_alloc_swap</c> for a PMD-sized folio with <c>CONFIG_THP_SWAP</c>). Counts
    /// <see cref="ClusterAllocations"/> or <see cref="ClusterFailures"/>.
    /// </summary>
    /// <returns><see langword="false"/> if no cluster has all its slots free.</returns>
    public bool TryAllocateCluster(out ulong firstOffset)
    {
        lock (_lock)
        {
            for (int c = 0; c < _clusterFree.Length; c++)
            {
                if (_clusterFree[c] == ClusterSize)
                {
                    firstOffset = (ulong)c * ClusterSize;
                    _map.AsSpan((int)firstOffset, ClusterSize).Fill(1);
                    _clusterFree[c] = 0;
                    _freeSlots -= ClusterSize;
                    _clusterAllocations++;
                    return true;
                }
            }

            _clusterFailures++;
            firstOffset = 0;
            return false;
        }
    }

    /// <summary>The swap count of slot <paramref name="offset"/>: 0 if free (Linux <c>swap_count</c>).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="offset"/> is 0 (the header) or not below <see cref="Slots"/>.</exception>
    public uint SwapCount(ulong offset)
    {
        CheckOffset(offset);
        lock (_lock)
        {
            return _map[offset] & ~HasCache;
        }
    }

    /// <summary>Adds one to the swap count of an allocated slot: another PTE holds its entry, e.g. after fork (Linux <c>swap_duplicate</c>).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="offset"/> is 0 (the header) or not below <see cref="Slots"/>.</exception>
    /// <exception cref="InvalidOperationException">The slot is free.</exception>
    public void Duplicate(ulong offset)
    {
        CheckOffset(offset);
        lock (_lock)
        {
            if (_map[offset] == 0)
            {
                ThrowHelper.ThrowInvalidOperation($"Swap device {Type}: cannot duplicate slot {ThrowHelper.Hex(offset)}: it is free (swap count 0).");
            }

            if ((_map[offset] & ~HasCache) == ~HasCache)
            {
                ThrowHelper.ThrowInvalidOperation($"Swap device {Type}: the swap count of slot {ThrowHelper.Hex(offset)} is at its limit {~HasCache}.");
            }

            _map[offset]++;
        }
    }

    /// <summary>
    /// Takes one from the swap count of an allocated slot (Linux <c>swap_free</c>). At 0 the slot returns to the
    /// free pool and its contents are dropped, unless its folio is in the swap cache (<c>SWAP_HAS_CACHE</c>): then
    /// it stays allocated until the folio leaves the cache.
    /// </summary>
    /// <returns><see langword="true"/> if the slot became free.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="offset"/> is 0 (the header) or not below <see cref="Slots"/>.</exception>
    /// <exception cref="InvalidOperationException">The slot's swap count is already 0.</exception>
    public bool Free(ulong offset)
    {
        CheckOffset(offset);
        lock (_lock)
        {
            return FreeLocked(offset);
        }
    }

    private bool FreeLocked(ulong offset)
    {
        if ((_map[offset] & ~HasCache) == 0)
        {
            ThrowHelper.ThrowInvalidOperation($"Swap device {Type}: cannot free slot {ThrowHelper.Hex(offset)}: its swap count is already 0.");
        }

        return --_map[offset] == 0 && Release(offset);
    }

    // The slot has neither users nor a cached folio: back to the free pool, contents dropped.
    private bool Release(ulong offset)
    {
        _clusterFree[offset / ClusterSize]++;
        _freeSlots++;
        _contents.Remove(offset);
        _zeromap.Remove(offset);
        return true;
    }

    /// <summary>
    /// Records that slots <paramref name="first"/> .. + <paramref name="count"/> − 1 hold an all-zero folio instead of
    /// writing it (Linux v6.12 <c>swap_writepage</c> → <c>swap_zeromap_folio_set</c>): no I/O, and a read of such a
    /// slot fills zeros (<c>swap_read_folio_zeromap</c>). Freeing a slot, or writing it, clears its mark.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A slot is 0 (the header) or not below <see cref="Slots"/>, or <paramref name="count"/> is not positive.</exception>
    /// <exception cref="InvalidOperationException">A slot is free.</exception>
    public void MarkZeroFilled(ulong first, int count)
    {
        if (count <= 0)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(count), count, "A zero-filled folio covers at least one slot.");
        }

        CheckOffset(first);
        CheckOffset(first + (ulong)count - 1);
        lock (_lock)
        {
            for (ulong slot = first; slot < first + (ulong)count; slot++)
            {
                CheckInUse(slot, "mark");
            }

            for (ulong slot = first; slot < first + (ulong)count; slot++)
            {
                _contents.Remove(slot);
                _zeromap.Add(slot);
            }
        }
    }

    /// <summary>Whether slot <paramref name="offset"/> is marked zero-filled (<see cref="MarkZeroFilled"/>).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="offset"/> is 0 (the header) or not below <see cref="Slots"/>.</exception>
    public bool IsZeroFilled(ulong offset)
    {
        CheckOffset(offset);
        lock (_lock)
        {
            return _zeromap.Contains(offset);
        }
    }

    /// <summary>
    /// Writes a page to an allocated slot (swap-out I/O). A page of zeros is not stored: the slot then reads back as
    /// zeros and costs nothing.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="offset"/> is 0 (the header) or not below <see cref="Slots"/>.</exception>
    /// <exception cref="ArgumentException"><paramref name="page"/> is not <see cref="PageSize"/> bytes.</exception>
    /// <exception cref="InvalidOperationException">The slot is free.</exception>
    public void StoreContents(ulong offset, ReadOnlySpan<byte> page)
    {
        CheckOffset(offset);
        if (page.Length != PageSize)
        {
            ThrowHelper.ThrowArgument(nameof(page), $"A swap slot holds {PageSize} bytes; the page given has {page.Length}.");
        }

        lock (_lock)
        {
            CheckInUse(offset, "write to");
            _zeromap.Remove(offset); // swap_zeromap_folio_clear before the write
            if (!page.ContainsAnyExcept((byte)0))
            {
                _contents.Remove(offset);
                return;
            }

            if (!_contents.TryGetValue(offset, out byte[]? stored))
            {
                stored = new byte[PageSize];
                _contents.Add(offset, stored);
            }

            page.CopyTo(stored);
        }
    }

    /// <summary>Reads the page of an allocated slot (swap-in I/O): zeros if nothing was written.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="offset"/> is 0 (the header) or not below <see cref="Slots"/>.</exception>
    /// <exception cref="ArgumentException"><paramref name="destination"/> is not <see cref="PageSize"/> bytes.</exception>
    /// <exception cref="InvalidOperationException">The slot is free.</exception>
    public void ReadContents(ulong offset, Span<byte> destination)
    {
        CheckOffset(offset);
        if (destination.Length != PageSize)
        {
            ThrowHelper.ThrowArgument(nameof(destination), $"A swap slot holds {PageSize} bytes; the destination has {destination.Length}.");
        }

        lock (_lock)
        {
            CheckInUse(offset, "read from");
            if (_contents.TryGetValue(offset, out byte[]? stored))
            {
                stored.CopyTo(destination);
            }
            else
            {
                destination.Clear();
            }
        }
    }

    /// <summary>The swap entry of slot <paramref name="offset"/> on this device.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="offset"/> is 0 (the header) or not below <see cref="Slots"/>.</exception>
    public SwapEntry EntryFor(ulong offset)
    {
        CheckOffset(offset);
        return SwapEntry.Swap(Type, offset);
    }

    private void CheckOffset(ulong offset)
    {
        if (offset == 0)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(offset), offset, $"Slot 0 of swap device {Type} is the swap header and is never allocated.");
        }

        if (offset >= Slots)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(offset), offset, $"Offset {ThrowHelper.Hex(offset)} is beyond swap device {Type}, whose slots are 1..{ThrowHelper.Hex(Slots - 1)}.");
        }
    }

    private void CheckInUse(ulong offset, string verb)
    {
        if (_map[offset] == 0)
        {
            ThrowHelper.ThrowInvalidOperation($"Swap device {Type}: cannot {verb} slot {ThrowHelper.Hex(offset)}: it is free (swap count 0).");
        }
    }
}
