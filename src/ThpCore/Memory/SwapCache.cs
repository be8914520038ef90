using System;
using System.Collections.Generic;
using ThpCore.Internal;

namespace ThpCore.Memory;

/// <content>
/// The device's swap cache (Linux <c>swapper_spaces</c> and <c>mm/swap_state.c</c>): slot → folio, shared by every
/// address space that uses the device.
/// </content>
public sealed partial class SwapDevice
{
    private readonly Dictionary<ulong, Folio> _cache = new();
    private readonly Dictionary<Folio, ulong> _cacheFirstSlot = new();

    /// <summary>The number of slots whose folio is in the swap cache (one per page of each cached folio).</summary>
    public int SwapCacheSlots
    {
        get
        {
            lock (_lock)
            {
                return _cache.Count;
            }
        }
    }

    /// <summary>
    /// Puts <paramref name="folio"/> in the swap cache at the allocated slots <paramref name="firstOffset"/> ..
    /// <paramref name="firstOffset"/> + <see cref="Folio.PageCount"/> − 1, page i at slot first + i (Linux
    /// <c>add_to_swap_cache</c>): the folio gains one reference per page and <see cref="FrameFlags.SwapCache"/>, and each
    /// slot gets <c>SWAP_HAS_CACHE</c>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A slot is the header or beyond the device.</exception>
    /// <exception cref="InvalidOperationException">A slot is free or already cached, or the folio is already in a swap cache.</exception>
    public void AddToSwapCache(Folio folio, ulong firstOffset)
    {
        CheckOffset(firstOffset);
        CheckOffset(firstOffset + (ulong)folio.PageCount - 1);
        lock (_lock)
        {
            for (ulong slot = firstOffset; slot < firstOffset + (ulong)folio.PageCount; slot++)
            {
                if (_map[slot] == 0 || (_map[slot] & HasCache) != 0)
                {
                    ThrowHelper.ThrowInvalidOperation($"Swap device {Type}: slot {ThrowHelper.Hex(slot)} is free or already has a cached folio; {folio} cannot be cached there.");
                }
            }

            folio.AddToSwapCache();
            _cacheFirstSlot.Add(folio, firstOffset);
            for (int i = 0; i < folio.PageCount; i++)
            {
                _map[firstOffset + (ulong)i] |= HasCache;
                _cache.Add(firstOffset + (ulong)i, folio);
            }
        }
    }

    /// <summary>Looks up the folio cached for a slot (Linux <c>swap_cache_get_folio</c> without taking a reference).</summary>
    /// <param name="offset">The slot.</param>
    /// <param name="folio">The cached folio.</param>
    /// <param name="pageIndex">Which page of <paramref name="folio"/> holds the slot's data.</param>
    /// <returns>Whether a folio is cached for the slot.</returns>
    public bool TryGetSwapCacheFolio(ulong offset, out Folio folio, out int pageIndex)
    {
        lock (_lock)
        {
            if (_cache.TryGetValue(offset, out folio))
            {
                pageIndex = (int)(offset - _cacheFirstSlot[folio]);
                return true;
            }

            pageIndex = 0;
            return false;
        }
    }

    /// <summary>The first slot of a cached folio (Linux <c>folio-&gt;swap</c>).</summary>
    /// <returns>Whether <paramref name="folio"/> is in this device's swap cache.</returns>
    public bool TryGetSwapCacheSlot(Folio folio, out ulong firstOffset)
    {
        lock (_lock)
        {
            return _cacheFirstSlot.TryGetValue(folio, out firstOffset);
        }
    }

    /// <summary>
    /// Puts <paramref name="destination"/> in the swap cache in place of <paramref name="source"/>, on the same
    /// slots: the swap-cache part of a migration (Linux's <c>__folio_migrate_mapping</c> replacing the entries of the
    /// swap address space). The destination takes the cache's references; the source drops them.
    /// </summary>
    /// <param name="source">A folio in this device's swap cache.</param>
    /// <param name="destination">A folio of the same order, not in any swap cache.</param>
    /// <exception cref="InvalidOperationException">The source is not in this cache, the destination already is in one, or the orders differ.</exception>
    public void MigrateSwapCache(Folio source, Folio destination)
    {
        lock (_lock)
        {
            if (!_cacheFirstSlot.TryGetValue(source, out ulong first))
            {
                ThrowHelper.ThrowInvalidOperation($"Swap device {Type}: the {source} is not in its swap cache.");
            }

            if (destination.Order != source.Order || destination.IsSwapCache)
            {
                ThrowHelper.ThrowInvalidOperation($"Swap device {Type}: the {destination} cannot replace the {source} in the swap cache (same order, not cached, required).");
            }

            destination.AddToSwapCache();
            _cacheFirstSlot.Remove(source);
            _cacheFirstSlot.Add(destination, first);
            for (int i = 0; i < source.PageCount; i++)
            {
                _cache[first + (ulong)i] = destination;
            }

            source.RemoveFromSwapCache();
        }
    }

    /// <summary>
    /// Takes a folio out of the swap cache (Linux <c>delete_from_swap_cache</c> → <c>put_swap_folio</c>): it drops
    /// the cache's references and <see cref="FrameFlags.SwapCache"/>, and each of its slots loses
    /// <c>SWAP_HAS_CACHE</c>; a slot whose swap count is 0 becomes free. The caller must hold a reference of its own.
    /// </summary>
    /// <exception cref="InvalidOperationException">The folio is not in this device's swap cache, or the caller holds no reference.</exception>
    public void DeleteFromSwapCache(Folio folio)
    {
        lock (_lock)
        {
            DeleteLocked(folio);
        }
    }

    /// <summary>
    /// Whether any slot of a cached folio still has a swap count, that is a swap PTE somewhere holds it (Linux
    /// <c>folio_swapped</c>).
    /// </summary>
    /// <exception cref="InvalidOperationException">The folio is not in this device's swap cache.</exception>
    public bool IsSwapped(Folio folio)
    {
        lock (_lock)
        {
            return SwappedLocked(folio, FirstSlotLocked(folio));
        }
    }

    /// <summary>
    /// Frees the swap space of a cached folio that no swap PTE uses any more (Linux <c>folio_free_swap</c>): it
    /// leaves the swap cache and is marked dirty (its only copy is now in memory). The caller holds a reference.
    /// </summary>
    /// <returns><see langword="false"/> when the folio is not in this device's swap cache or a slot of it is still in use.</returns>
    public bool TryFreeSwap(Folio folio)
    {
        lock (_lock)
        {
            if (!_cacheFirstSlot.TryGetValue(folio, out ulong first) || SwappedLocked(folio, first))
            {
                return false;
            }

            DeleteLocked(folio);
            folio.SetDirty(true);
            return true;
        }
    }

    /// <summary>
    /// Drops one user of a slot whose swap PTE is being zapped (Linux <c>free_swap_and_cache</c>): the swap count goes
    /// down by one (<c>swap_free</c>), and when it reaches 0 while the slot's folio is in the swap cache and no other
    /// slot of that folio is in use, the folio leaves the cache (<c>__try_to_reclaim_swap</c>) and is freed if nothing
    /// else holds it.
    /// </summary>
    /// <remarks>
    /// Linux reclaims the cached folio here only when it is not mapped (<c>TTRS_UNMAPPED</c>) or swap is more than
    /// half full (<c>TTRS_FULL</c>); a mapped one stays cached until reclaim finds it. There is no LRU scan here, so the
    /// folio leaves the cache whenever none of its slots is in use, mapped or not, as the refault path does.
    /// </remarks>
    /// <returns><see langword="true"/> if the slot became free.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="offset"/> is 0 (the header) or not below <see cref="Slots"/>.</exception>
    /// <exception cref="InvalidOperationException">The slot's swap count is already 0.</exception>
    public bool FreeSwapAndCache(ulong offset)
    {
        CheckOffset(offset);
        lock (_lock)
        {
            if (FreeLocked(offset) || (_map[offset] & ~HasCache) != 0 || !_cache.TryGetValue(offset, out Folio folio))
            {
                return _map[offset] == 0;
            }

            if (!SwappedLocked(folio, _cacheFirstSlot[folio]))
            {
                // __try_to_reclaim_swap holds the folio across delete_from_swap_cache, then folio_put.
                folio.Get();
                DeleteLocked(folio);
                folio.SetDirty(true);
                folio.Put();
            }

            return _map[offset] == 0;
        }
    }

    private ulong FirstSlotLocked(Folio folio)
    {
        if (!_cacheFirstSlot.TryGetValue(folio, out ulong first))
        {
            ThrowHelper.ThrowInvalidOperation($"The {folio} is not in the swap cache of swap device {Type}.");
        }

        return first;
    }

    private bool SwappedLocked(Folio folio, ulong first)
    {
        for (ulong slot = first; slot < first + (ulong)folio.PageCount; slot++)
        {
            if ((_map[slot] & ~HasCache) != 0)
            {
                return true;
            }
        }

        return false;
    }

    private void DeleteLocked(Folio folio)
    {
        ulong first = FirstSlotLocked(folio);
        folio.RemoveFromSwapCache();
        _cacheFirstSlot.Remove(folio);
        for (ulong slot = first; slot < first + (ulong)folio.PageCount; slot++)
        {
            _cache.Remove(slot);
            if ((_map[slot] &= ~HasCache) == 0)
            {
                Release(slot);
            }
        }
    }
}
