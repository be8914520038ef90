using System;
using System.Collections.Generic;
using ThpCore.Diagnostics;
using ThpCore.Internal;
using ThpCore.Memory;
using ThpCore.Paging;

namespace ThpCore.Mm;

/// <summary>Swap-out of anonymous folios and swap-in faults.</summary>
/// <remarks>
/// <para>
/// <b>Model.</b> One <see cref="SwapDevice"/> per address space (<see cref="AttachSwap"/>). The swap cache is owned by
/// the address space, a map from swap slot to folio; Linux's swap cache is global, indexed by swap entry (an xarray per
/// 64 MiB of each device). A slot's swap count is the number of swap PTEs holding it; Linux also sets
/// <c>SWAP_HAS_CACHE</c> in the slot while the folio is in the swap cache, which is not modelled: a slot is freed when
/// its last swap PTE is refaulted or zapped, even while the folio is still cached.
/// </para>
/// <para>
/// <b>Swap-out</b> (<see cref="SwapOut"/>) is the anonymous path of Linux's <c>shrink_folio_list</c>: <c>add_to_swap</c>
/// (an order-9 folio takes one wholly free 512-slot cluster, <c>thp_swpout</c>), the write of every page
/// (<c>pswpout</c>), then <c>try_to_unmap</c> with <c>TTU_SPLIT_HUGE_PMD</c>: a PMD mapping is split first
/// (<c>thp_split_pmd</c>) and every PTE of the folio becomes the swap PTE of its page's slot, with the exclusive bit
/// when the page was anon-exclusive (which it stops being: <c>folio_try_share_anon_rmap_pte</c>). Finally the folio,
/// held only by the swap cache, is removed from it and freed (<c>__remove_mapping</c>), unless the caller asks to keep
/// it cached. Linux writes the pages after unmapping them and may free the folio much later; the order here changes no
/// result.
/// </para>
/// <para>
/// <b>Swap-in</b> (the fault handler, <c>do_swap_page</c>): a page whose folio is still in the swap cache is mapped by
/// one PTE to that page of the folio (a minor fault), however large the folio; Linux since v6.10 maps the whole large
/// folio at once when all its PTEs hold its swap entries in order (not modelled; the end state after every page is
/// touched is the same). Otherwise a new order-0 page is read from the slot (<c>pswpin</c>, <c>pgmajfault</c>). The
/// PTE is writable when the VMA is and the swap PTE was exclusive (or, for a page read from swap, its slot had no other
/// user), and dirty only on a write fault. The slot's count is dropped (<c>swap_free</c>), and a cached folio none of
/// whose slots is still in use leaves the swap cache (<c>folio_free_swap</c>; Linux does this eagerly only when
/// <c>should_try_to_free_swap</c> or swap is nearly full, and otherwise leaves it to reclaim).
/// </para>
/// <para>
/// <b>Not modelled yet.</b> Zapping a swap PTE (munmap, <c>MADV_DONTNEED</c>) does not free its slot, and
/// <see cref="Fork"/> does not duplicate swap entries (<c>swap_duplicate</c>); a THP without a free cluster is not split
/// and swapped page by page.
/// </para>
/// </remarks>
public sealed partial class AddressSpace
{
    private readonly Dictionary<ulong, SwapCacheEntry> _swapCache = new();
    private SwapDevice? _swap;

    /// <summary>The swap device attached by <see cref="AttachSwap"/>; otherwise <see langword="null"/>.</summary>
    public SwapDevice? Swap => _swap;

    /// <summary>The number of swap slots whose folio is in this address space's swap cache.</summary>
    public int SwapCacheSlots => _swapCache.Count;

    /// <summary>Attaches the swap device that <see cref="SwapOut"/> writes to; an address space has at most one.</summary>
    /// <param name="device">The device.</param>
    /// <exception cref="InvalidOperationException">A device is already attached.</exception>
    public void AttachSwap(SwapDevice device)
    {
        using LockScope locks = EnterWrite(andNode: true);
        ArgumentNullException.ThrowIfNull(device);
        if (_swap is not null)
        {
            ThrowHelper.ThrowInvalidOperation($"Swap device {_swap.Type} is already attached; an address space has one.");
        }

        _swap = device;
    }

    /// <summary>Looks up the folio in the swap cache for a slot of the attached device.</summary>
    /// <param name="slot">The swap slot.</param>
    /// <param name="folio">The cached folio, when there is one.</param>
    /// <returns>Whether the slot's folio is in the swap cache.</returns>
    public bool TryGetSwapCacheFolio(ulong slot, out Folio folio)
    {
        using LockScope locks = EnterRead(andNode: true);
        if (_swapCache.TryGetValue(slot, out SwapCacheEntry entry))
        {
            folio = entry.Folio;
            return true;
        }

        folio = default;
        return false;
    }

    /// <summary>
    /// Swaps out the anonymous folio mapping <paramref name="address"/>, as reclaim does (see the type's remarks): the
    /// folio must be mapped only here, within one folio size of <paramref name="address"/>, and not pinned.
    /// </summary>
    /// <param name="address">An address the folio maps.</param>
    /// <param name="keepInSwapCache">
    /// Keep the folio in the swap cache (reclaim has written it but not freed it yet), so that a refault maps it again
    /// without reading; otherwise it is freed and its frames go back to the buddy allocator.
    /// </param>
    /// <returns>The outcome; a refusal changes nothing but, for a THP without a free cluster, <c>thp_swpout_fallback</c>.</returns>
    /// <exception cref="InvalidOperationException">No swap device is attached.</exception>
    public SwapOutResult SwapOut(VirtualAddress address, bool keepInSwapCache = false)
    {
        using LockScope locks = EnterWrite(andNode: true);
        SwapDevice device = _swap ?? ThrowHelper.ThrowInvalidOperation<SwapDevice>("No swap device is attached (AttachSwap).");
        Vma? vma = Vmas.Find(address);
        ulong va = address.Value & ~(PageSize4K - 1);
        if (vma is null || !TryFindPde(va, out PhysicalAddress pdeSlot))
        {
            return Refused(SwapOutStatus.NotMapped);
        }

        ulong pde = Read(pdeSlot);
        ulong frame;
        if (IsHugeLeaf(pde))
        {
            if (IsHugeZero(pde))
            {
                return Refused(SwapOutStatus.NotAnonymous);
            }

            frame = ((pde & PageTableEntry.AddressMask2M) >> 12) + ((va >> 12) & 0x1FF);
        }
        else
        {
            ulong pte = (pde & P) == 0 ? 0 : Read(PteSlot(PhysicalAddress.FromMaskedBits(pde & PageTableEntry.AddressMask4K), va));
            if (!IsMapped(pte))
            {
                return Refused(SwapOutStatus.NotMapped);
            }

            frame = FrameOf(pte);
            if (frame == ZeroPage.HeadFrame)
            {
                return Refused(SwapOutStatus.NotAnonymous);
            }
        }

        Folio folio = Node.FolioOf(frame);
        if (!folio.IsAnon)
        {
            return Refused(SwapOutStatus.NotAnonymous);
        }

        if (folio.Order is not (0 or Folio.PmdOrder))
        {
            return Refused(SwapOutStatus.UnsupportedOrder);
        }

        if (folio.IsSwapCache)
        {
            return Refused(SwapOutStatus.AlreadyInSwapCache);
        }

        if (folio.MaybeDmaPinned)
        {
            return Refused(SwapOutStatus.Pinned);
        }

        if (folio.IsOnDeferredSplitQueue || folio.IsPartiallyMapped)
        {
            return Refused(SwapOutStatus.PartiallyMapped);
        }

        ulong window = (ulong)folio.PageCount * PageSize4K;
        ulong from = Math.Max(vma.Start.Value, va >= window ? va - window + PageSize4K : 0);
        ulong to = Math.Min(vma.End.Value, va + window);
        List<ulong> hugeChunks = new();
        List<ulong> pteAddresses = new();
        CollectMappings(folio, from, to, hugeChunks, pteAddresses);
        if (folio.MapCount != hugeChunks.Count + pteAddresses.Count)
        {
            return Refused(SwapOutStatus.Shared);
        }

        ulong first;
        if (folio.IsLarge)
        {
            if (!device.TryAllocateCluster(out first))
            {
                Counters.Count(VmEvent.ThpSwpOutFallback);
                return Refused(SwapOutStatus.NoSwapSpace);
            }

            Counters.Count(VmEvent.ThpSwpOut);
        }
        else if (!device.TryAllocate(out first))
        {
            return Refused(SwapOutStatus.NoSwapSpace);
        }

        // add_to_swap, then the write of every page.
        folio.AddToSwapCache();
        for (int i = 0; i < folio.PageCount; i++)
        {
            _swapCache.Add(first + (ulong)i, new SwapCacheEntry(folio, first));
            device.StoreContents(first + (ulong)i, folio.ReadPage(i));
            Counters.Count(VmEvent.PswpOut);
        }

        // try_to_unmap(TTU_SPLIT_HUGE_PMD): split each PMD mapping, then every PTE becomes a swap PTE.
        foreach (ulong chunk in hugeChunks)
        {
            TryFindPde(chunk, out PhysicalAddress slot);
            SplitLocked(chunk, slot, Read(slot));
            for (ulong i = 0; i < 512; i++)
            {
                pteAddresses.Add(chunk + (i * PageSize4K));
            }
        }

        foreach (ulong pteVa in pteAddresses)
        {
            TryFindPde(pteVa, out PhysicalAddress slot);
            PhysicalAddress pteSlot = PteSlot(PhysicalAddress.FromMaskedBits(Read(slot) & PageTableEntry.AddressMask4K), pteVa);
            int index = (int)(FrameOf(Read(pteSlot)) - folio.HeadFrame);
            bool exclusive = folio.IsAnonExclusive(index);
            Write(pteSlot, device.EntryFor(first + (ulong)index).ToPteRaw(exclusive));
            folio.SetAnonExclusive(index, false);
            folio.RemovePteMapping(index);
            folio.Put();
        }

        if (!keepInSwapCache)
        {
            // __remove_mapping: the isolation reference is the last one once the swap cache lets go.
            folio.Get();
            RemoveFromSwapCache(folio, first);
            folio.Put();
        }

        return new SwapOutResult(SwapOutStatus.SwappedOut, first, folio.PageCount);
    }

    private static SwapOutResult Refused(SwapOutStatus status) => new(status, 0, 0);

    // The PMD chunks and PTE addresses in [from, to) that map folio.
    private void CollectMappings(Folio folio, ulong from, ulong to, List<ulong> hugeChunks, List<ulong> pteAddresses)
    {
        ulong head = folio.HeadFrame;
        ulong end = head + (ulong)folio.PageCount;
        for (ulong chunk = from & ~(HugeSize - 1); chunk < to; chunk += HugeSize)
        {
            if (!TryFindPde(chunk, out PhysicalAddress pdeSlot))
            {
                continue;
            }

            ulong pde = Read(pdeSlot);
            if (IsHugeLeaf(pde))
            {
                if (!IsHugeZero(pde) && ((pde & PageTableEntry.AddressMask2M) >> 12) == head)
                {
                    hugeChunks.Add(chunk);
                }

                continue;
            }

            if ((pde & P) == 0)
            {
                continue;
            }

            PhysicalAddress table = PhysicalAddress.FromMaskedBits(pde & PageTableEntry.AddressMask4K);
            for (ulong va = Math.Max(from, chunk); va < Math.Min(to, chunk + HugeSize); va += PageSize4K)
            {
                ulong pte = Read(PteSlot(table, va));
                ulong frame = FrameOf(pte);
                if (IsMapped(pte) && frame >= head && frame < end)
                {
                    pteAddresses.Add(va);
                }
            }
        }
    }

    private void RemoveFromSwapCache(Folio folio, ulong first)
    {
        folio.RemoveFromSwapCache();
        for (int i = 0; i < folio.PageCount; i++)
        {
            _swapCache.Remove(first + (ulong)i);
        }
    }

    // do_swap_page for a PTE that is neither none nor present. Returns null for VM_FAULT_OOM.
    private FaultAction? SwapInFault(Vma vma, PhysicalAddress slot, ulong pte, bool write)
    {
        if (!SwapEntry.TryFromPteRaw(pte, out SwapEntry entry, out bool exclusive) || !entry.IsSwap
            || _swap is not SwapDevice device || entry.Type != device.Type)
        {
            return ThrowHelper.ThrowInvalidOperation<FaultAction?>($"The PTE {ThrowHelper.Hex(pte)} is not a swap entry of the attached swap device.");
        }

        ulong offset = entry.Offset;
        Folio folio;
        int index;
        bool cached = _swapCache.TryGetValue(offset, out SwapCacheEntry cacheEntry);
        if (cached)
        {
            folio = cacheEntry.Folio;
            index = (int)(offset - cacheEntry.FirstSlot);
            folio.Get();
        }
        else
        {
            if (!Node.TryAllocateFolio(0, out folio))
            {
                return null;
            }

            index = 0;
            device.ReadContents(offset, folio.GetWritablePage(0));
            exclusive |= device.SwapCount(offset) == 1;
            Counters.Count(VmEvent.PswpIn);
            Counters.Count(VmEvent.PgMajFault);
        }

        folio.AddPteMapping(index);
        if (exclusive)
        {
            folio.SetAnonExclusive(index, true);
        }

        ulong bits = LeafRights(vma.Protection, writable: false);
        if (exclusive && (vma.Protection & Protection.Write) != 0)
        {
            bits |= RW | (write ? D : 0);
        }

        Write(slot, ((folio.HeadFrame + (ulong)index) << 12) | bits);
        device.Free(offset);
        if (cached && !AnySlotInUse(device, cacheEntry.FirstSlot, folio.PageCount))
        {
            RemoveFromSwapCache(folio, cacheEntry.FirstSlot);
        }

        return FaultAction.SwapIn;
    }

    private static bool AnySlotInUse(SwapDevice device, ulong first, int count)
    {
        for (int i = 0; i < count; i++)
        {
            if (device.SwapCount(first + (ulong)i) != 0)
            {
                return true;
            }
        }

        return false;
    }

    private readonly record struct SwapCacheEntry(Folio Folio, ulong FirstSlot);
}
