using System;
using System.Collections.Generic;
using ThpCore.Diagnostics;
using ThpCore.Internal;
using ThpCore.Memory;
using ThpCore.Paging;

namespace ThpCore.Mm;

/// <summary>Swap-out of anonymous folios, swap-in faults, and the life of swap PTEs (zap, fork).</summary>
/// <remarks>
/// <para>
/// <b>Model.</b> One <see cref="SwapDevice"/> per address space (<see cref="AttachSwap"/>); a child of
/// <see cref="Fork"/> uses its parent's. The swap cache belongs to the device (Linux's <c>swapper_spaces</c> is
/// global, indexed by swap entry), so every address space on one device shares it. A slot's swap count is the
/// number of swap PTEs holding it, and a cached slot carries <c>SWAP_HAS_CACHE</c> (it stays allocated while its
/// folio is cached).
/// </para>
/// <para>
/// <b>Swap-out</b> (<see cref="SwapOut"/>, and <see cref="Advice.PageOut"/>) is the anonymous path of Linux's
/// <c>shrink_folio_list</c> for one folio mapped only here (see <c>ShrinkFolio</c>): a lazyfree folio is discarded
/// while clean; otherwise <c>add_to_swap</c> (an order-9 folio takes one wholly free 512-slot cluster; without one
/// the folio is split and its pages go one by one, <c>thp_swpout_fallback</c>), the write of every page
/// (<c>pswpout</c>, and <c>thp_swpout</c> for a THP, as <c>count_swpout_vm_event</c>), then <c>try_to_unmap</c>
/// with <c>TTU_SPLIT_HUGE_PMD</c>: a PMD mapping is split (<c>thp_split_pmd</c>) and every PTE of the folio becomes
/// the swap PTE of its page's slot, with the exclusive bit when the page was anon-exclusive (which it stops being:
/// <c>folio_try_share_anon_rmap_pte</c>). Finally the folio, held only by the swap cache, is removed from it and
/// freed (<c>__remove_mapping</c>), unless the caller asks to keep it cached. Linux writes the pages after unmapping
/// them; the order here changes no result.
/// </para>
/// <para>
/// <b>Swap-in</b> (the fault handler, <c>do_swap_page</c>): a page whose folio is in the swap cache is mapped by one
/// PTE to that page of the folio (a minor fault), however large the folio (Linux since v6.10 maps a whole large folio
/// at once when all its PTEs hold its entries in order; not modelled, the end state after every page is touched is
/// the same). Otherwise a new order-0 page is read from the slot (<c>pswpin</c>, <c>pgmajfault</c>): with swap count 1
/// it bypasses the swap cache (a <c>SWP_SYNCHRONOUS_IO</c> device, such as zram) and is certainly exclusive; a slot
/// shared after fork goes through the swap cache (<c>swapin_readahead</c>), so the other users find the same folio.
/// The slot's count is dropped (<c>swap_free</c>), and a cached folio none of whose slots is still in use leaves the
/// cache (<c>folio_free_swap</c>; Linux does this at once only when <c>should_try_to_free_swap</c> says so and
/// otherwise leaves it to reclaim, which is not modelled). The page is mapped exclusive (and writable, if the VMA is;
/// dirty only on a write) when the swap PTE was exclusive, the page is fresh, or the fault holds the only reference
/// (<c>folio_ref_count == 1</c>); otherwise read-only and shared, and a write then copies it (<c>do_wp_page</c>).
/// </para>
/// <para>
/// <b>Zap and fork.</b> Zapping a swap PTE (munmap, <c>MADV_DONTNEED</c>, <c>MADV_FREE</c>) clears it and calls
/// <see cref="SwapDevice.FreeSwapAndCache"/> (<c>zap_nonpresent_ptes</c> → <c>free_swap_and_cache</c>). Fork copies
/// it (<c>copy_nonpresent_pte</c>): <c>swap_duplicate</c> (count + 1), and an exclusive swap PTE in the parent loses
/// its exclusive bit; the child's is not exclusive either. Migration entries are left to the migration code.
/// </para>
/// </remarks>
public sealed partial class AddressSpace
{
    private SwapDevice? _swap;

    /// <summary>The swap device attached by <see cref="AttachSwap"/> (or inherited from the parent of <see cref="Fork"/>); otherwise <see langword="null"/>.</summary>
    public SwapDevice? Swap => _swap;

    /// <summary>The number of slots of the attached device whose folio is in its swap cache, which all address spaces using the device share.</summary>
    public int SwapCacheSlots => _swap?.SwapCacheSlots ?? 0;

    /// <summary>Attaches the swap device that <see cref="SwapOut"/> writes to; an address space has at most one.</summary>
    /// <param name="device">The device.</param>
    /// <exception cref="InvalidOperationException">A device is already attached.</exception>
    public void AttachSwap(SwapDevice device)
    {
        using LockScope locks = EnterWrite(andNode: true);
        ThrowIfDisposed();
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
        ThrowIfDisposed();
        if (_swap is SwapDevice device)
        {
            return device.TryGetSwapCacheFolio(slot, out folio, out _);
        }

        folio = default;
        return false;
    }

    /// <summary>
    /// Reclaims the anonymous folio mapping <paramref name="address"/>, as <c>shrink_folio_list</c> does (see the
    /// type's remarks): the folio must be mapped only here, within one folio size of <paramref name="address"/>, and
    /// not pinned. A lazyfree folio (after <see cref="Advice.Free"/>) is discarded while clean. An order-9 folio without
    /// a free cluster is split and its pages swapped out one by one.
    /// </summary>
    /// <param name="address">An address the folio maps.</param>
    /// <param name="keepInSwapCache">
    /// Keep the folio in the swap cache (reclaim has written it but not freed it yet), so that a refault maps it again
    /// without reading; otherwise it is freed and its frames go back to the buddy allocator.
    /// </param>
    /// <returns>The outcome; a refusal changes nothing.</returns>
    /// <exception cref="InvalidOperationException">No swap device is attached.</exception>
    public SwapOutResult SwapOut(VirtualAddress address, bool keepInSwapCache = false)
    {
        using LockScope locks = EnterWrite(andNode: true);
        ThrowIfDisposed();
        if (_swap is null)
        {
            ThrowHelper.ThrowInvalidOperation("No swap device is attached (AttachSwap).");
        }

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

        if ((vma.Flags & VmaFlags.Locked) != 0)
        {
            // shrink_folio_list: !folio_evictable → activate_locked; an mlocked folio is never reclaimed.
            return Refused(SwapOutStatus.Mlocked);
        }

        return ShrinkFolio(folio, hugeChunks, pteAddresses, keepInSwapCache);
    }

    private static SwapOutResult Refused(SwapOutStatus status) => new(status, 0, 0);

    // shrink_folio_list for one anonymous folio whose every mapping is listed (PMD chunks, PTE addresses), after
    // isolation; the caller has checked that nothing else maps it. Reclaim here holds no isolation reference, so
    // Linux's "refcount == mapcount + 1" checks read "refcount == mapcount".
    private SwapOutResult ShrinkFolio(Folio folio, List<ulong> hugeChunks, List<ulong> pteAddresses, bool keepInSwapCache)
    {
        if (!folio.IsSwapBacked)
        {
            return DiscardLazyFree(folio, hugeChunks, pteAddresses);
        }

        if (folio.IsSwapCache)
        {
            return Refused(SwapOutStatus.AlreadyInSwapCache);
        }

        if (folio.MaybeDmaPinned)
        {
            return Refused(SwapOutStatus.Pinned);
        }

        if (folio.IsLarge)
        {
            // can_split_folio(folio, 1): refused (activate_locked) when anything but the mappings holds it.
            if (folio.RefCount != folio.MapCount)
            {
                return Refused(SwapOutStatus.ExtraReferences);
            }

            // Split partially mapped folios right away: the unmapped pages are freed without I/O.
            if (folio.IsOnDeferredSplitQueue && folio.IsPartiallyMapped)
            {
                return SplitAndSwapOutPages(folio, hugeChunks, pteAddresses, keepInSwapCache, fallback: false);
            }
        }

        ulong first = 0;
        bool allocated = _swap is SwapDevice device && (folio.IsLarge ? device.TryAllocateCluster(out first) : device.TryAllocate(out first));
        if (!allocated)
        {
            // add_to_swap failed: an order-0 folio stays (activate_locked_split); a large one falls back to its pages.
            return folio.IsLarge
                ? SplitAndSwapOutPages(folio, hugeChunks, pteAddresses, keepInSwapCache, fallback: true)
                : Refused(_swap is null ? SwapOutStatus.NoSwapDevice : SwapOutStatus.NoSwapSpace);
        }

        SwapOutWhole(folio, first, hugeChunks, pteAddresses, keepInSwapCache);
        return new SwapOutResult(SwapOutStatus.SwappedOut, first, folio.PageCount);
    }

    // add_to_swap's cache insertion, the write of every page, try_to_unmap, and __remove_mapping unless kept.
    private void SwapOutWhole(Folio folio, ulong first, List<ulong> hugeChunks, List<ulong> pteAddresses, bool keepInSwapCache)
    {
        SwapDevice device = _swap!;
        device.AddToSwapCache(folio, first);
        if (IsZeroFilled(folio))
        {
            // swap_writepage: an all-zero folio is only recorded in the zeromap; no I/O, so no pswpout or thp_swpout.
            device.MarkZeroFilled(first, folio.PageCount);
            Counters.Add(VmEvent.SwpOutZero, folio.PageCount);
        }
        else
        {
            for (int i = 0; i < folio.PageCount; i++)
            {
                device.StoreContents(first + (ulong)i, folio.ReadPage(i));
            }

            // count_swpout_vm_event at writeout.
            if (folio.Order == Folio.PmdOrder)
            {
                Counters.Count(VmEvent.ThpSwpOut);
            }

            Counters.Add(VmEvent.PswpOut, folio.PageCount);
        }

        foreach (ulong pteVa in UnmapPmds(hugeChunks, pteAddresses))
        {
            PhysicalAddress pteSlot = PteSlotOf(pteVa);
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
            device.DeleteFromSwapCache(folio);
            folio.Put();
        }
    }

    // The fallback of shrink_folio_list: split_folio_to_list (a PMD mapping split first, as unmap_folio does), then each
    // page that is still mapped makes its own pass: add_to_swap of one slot, or kept when none is left.
    private SwapOutResult SplitAndSwapOutPages(Folio folio, List<ulong> hugeChunks, List<ulong> pteAddresses, bool keepInSwapCache, bool fallback)
    {
        List<ulong> pages = UnmapPmds(hugeChunks, pteAddresses);
        FolioSplitResult split = SplitWithReference(folio);
        if (!split.Split)
        {
            return new SwapOutResult(SwapOutStatus.SplitFailed, 0, 0, split.Refusal);
        }

        if (fallback && folio.Order == Folio.PmdOrder)
        {
            Counters.Count(VmEvent.ThpSwpOutFallback);
        }

        ulong firstSlot = 0;
        int written = 0;
        List<ulong> one = new(1);
        List<ulong> none = new(0);
        foreach (ulong pageVa in pages)
        {
            if (_swap is not SwapDevice device || !device.TryAllocate(out ulong slot))
            {
                continue;
            }

            one.Clear();
            one.Add(pageVa);
            SwapOutWhole(Node.FolioOf(FrameOf(Read(PteSlotOf(pageVa)))), slot, none, one, keepInSwapCache);
            firstSlot = written++ == 0 ? slot : firstSlot;
        }

        SwapOutStatus status = written == pages.Count ? SwapOutStatus.SwappedOut : _swap is null ? SwapOutStatus.NoSwapDevice : SwapOutStatus.NoSwapSpace;
        return new SwapOutResult(status, firstSlot, written, FolioSplitRefusal.None, Split: true);
    }

    // split_folio with the caller's reference: taken, used as the split's extra reference, then put on the head page.
    private FolioSplitResult SplitWithReference(Folio folio)
    {
        folio.Get();
        FolioSplitResult split = Node.TrySplitFolio(folio, 1, Counters);
        (split.Split ? Node.FolioOf(folio.HeadFrame) : folio).Put();
        return split;
    }

    // try_to_unmap's TTU_SPLIT_HUGE_PMD: splits each PMD mapping and returns every PTE address that maps the folio.
    private List<ulong> UnmapPmds(List<ulong> hugeChunks, List<ulong> pteAddresses)
    {
        List<ulong> all = new(pteAddresses);
        foreach (ulong chunk in hugeChunks)
        {
            TryFindPde(chunk, out PhysicalAddress slot);
            SplitLocked(chunk, slot, Read(slot));
            for (ulong i = 0; i < 512; i++)
            {
                all.Add(chunk + (i * PageSize4K));
            }
        }

        return all;
    }

    // The PTE slot of a mapped address whose page table exists.
    private PhysicalAddress PteSlotOf(ulong va)
    {
        TryFindPde(va, out PhysicalAddress slot);
        return PteSlot(PhysicalAddress.FromMaskedBits(Read(slot) & PageTableEntry.AddressMask4K), va);
    }

    // The PMD chunks and PTE addresses in [from, to) that map folio.
    private void CollectMappings(Folio folio, ulong from, ulong to, List<ulong> hugeChunks, List<ulong> pteAddresses)
    {
        ulong head = folio.HeadFrame;
        ulong end = head + (ulong)folio.PageCount;
        foreach ((ulong chunk, ulong lo, ulong hi, PhysicalAddress pdeSlot) in PdesOf(from, to))
        {
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
            for (ulong va = lo; va < hi; va += PageSize4K)
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

    // do_swap_page for a PTE that is neither none nor present. Returns null for VM_FAULT_OOM.
    private FaultAction? SwapInFault(Vma vma, PhysicalAddress slot, ulong pte, bool write)
    {
        if (!SwapEntry.TryFromPteRaw(pte, out SwapEntry entry, out bool exclusive) || !entry.IsSwap
            || _swap is not SwapDevice device || entry.Type != device.Type)
        {
            return ThrowHelper.ThrowInvalidOperation<FaultAction?>($"The PTE {ThrowHelper.Hex(pte)} is not a swap entry of the attached swap device.");
        }

        ulong offset = entry.Offset;
        bool fresh = false;
        if (device.TryGetSwapCacheFolio(offset, out Folio folio, out int index))
        {
            folio.Get();
        }
        else
        {
            if (!Node.TryAllocateFolio(0, out folio))
            {
                return null;
            }

            index = 0;
            if (device.IsZeroFilled(offset))
            {
                // swap_read_folio_zeromap: the new page stays zero, no I/O.
                Counters.Count(VmEvent.SwpInZero);
            }
            else
            {
                device.ReadContents(offset, folio.GetWritablePage(0));
                Counters.Count(VmEvent.PswpIn);
            }

            Counters.Count(VmEvent.PgMajFault);
            if (device.SwapCount(offset) == 1)
            {
                // SWP_SYNCHRONOUS_IO with __swap_count == 1: the swap cache is skipped; a fresh page is exclusive.
                fresh = true;
            }
            else
            {
                // swapin_readahead: other PTEs share the slot, so the page goes through the swap cache.
                device.AddToSwapCache(folio, offset);
            }
        }

        // swap_free, then folio_free_swap once no slot of the folio is in use (done eagerly here).
        device.Free(offset);
        if (folio.IsSwapCache)
        {
            device.TryFreeSwap(folio);
        }

        exclusive |= fresh || folio.RefCount == 1;
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
        return FaultAction.SwapIn;
    }

    // zap_nonpresent_ptes for [start, end): every swap PTE is cleared and its slot released (free_swap_and_cache).
    // Migration entries are left alone.
    private void ZapSwapPtes(ulong start, ulong end)
    {
        if (_swap is null)
        {
            return;
        }

        foreach ((_, ulong from, ulong to, PhysicalAddress pdeSlot) in PdesOf(start, end))
        {
            ulong pde = Read(pdeSlot);
            if ((pde & P) == 0 || IsHugeLeaf(pde))
            {
                continue;
            }

            PhysicalAddress table = PhysicalAddress.FromMaskedBits(pde & PageTableEntry.AddressMask4K);
            for (ulong va = from; va < to; va += PageSize4K)
            {
                PhysicalAddress slot = PteSlot(table, va);
                ZapSwapPte(slot, Read(slot));
            }
        }
    }

    // Clears one PTE if it holds a swap entry and frees its slot; false (nothing done) for anything else.
    private bool ZapSwapPte(PhysicalAddress slot, ulong pte)
    {
        if (!IsSwapPte(pte, out SwapEntry entry))
        {
            return false;
        }

        Write(slot, 0);
        _swap!.FreeSwapAndCache(entry.Offset);
        return true;
    }

    private bool IsSwapPte(ulong pte, out SwapEntry entry) =>
        SwapEntry.TryFromPteRaw(pte, out entry, out _) && entry.IsSwap && _swap is SwapDevice device && entry.Type == device.Type;

    // copy_nonpresent_pte for a swap PTE: swap_duplicate, and the parent's exclusive bit goes ("mark the swap entry as
    // shared"); the child's copy is not exclusive. False for anything but a swap entry of the attached device.
    private bool TryCopySwapPte(PhysicalAddress slot, ulong pte, out ulong childPte)
    {
        childPte = pte & ~PWT;
        if (!IsSwapPte(pte, out SwapEntry entry))
        {
            return false;
        }

        _swap!.Duplicate(entry.Offset);
        if (childPte != pte)
        {
            Write(slot, childPte);
        }

        return true;
    }

    // is_folio_zero_filled: every page reads as zeros (a frame never written is zero without being read).
    private bool IsZeroFilled(Folio folio)
    {
        for (int i = 0; i < folio.PageCount; i++)
        {
            if (Node.Memory.IsMaterialized(folio.HeadFrame + (ulong)i) && folio.ReadPage(i).ContainsAnyExcept((byte)0))
            {
                return false;
            }
        }

        return true;
    }
}
