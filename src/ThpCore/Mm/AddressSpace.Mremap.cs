using System;
using ThpCore.Internal;
using ThpCore.Paging;

namespace ThpCore.Mm;

/// <content><c>mremap</c>: <see cref="Remap"/>.</content>
public sealed partial class AddressSpace
{
    /// <summary>
    /// Resizes or moves <c>[oldAddress, oldAddress + oldLength)</c> like
    /// <c>mremap(oldAddress, oldLength, newLength, flags, newAddress)</c>.
    /// </summary>
    /// <param name="oldAddress">The start of the range; a multiple of 4 KiB.</param>
    /// <param name="oldLength">A non-zero multiple of 4 KiB (Linux page-aligns both lengths up and gives a zero
    /// <paramref name="oldLength"/> of a private mapping <c>-EINVAL</c>; here a length that is not a multiple is rejected).</param>
    /// <param name="newLength">A non-zero multiple of 4 KiB.</param>
    /// <param name="flags"><see cref="RemapFlags.MayMove"/>, optionally with <see cref="RemapFlags.Fixed"/>.</param>
    /// <param name="newAddress">The destination with <see cref="RemapFlags.Fixed"/>, and only then (Linux ignores it
    /// otherwise; here it is rejected).</param>
    /// <returns>The start of the range after the call: <paramref name="oldAddress"/> when it was resized in place.</returns>
    /// <remarks>
    /// <para>
    /// The cases are <c>do_mremap</c>'s, in its order. Without <see cref="RemapFlags.Fixed"/>: a range that does not grow
    /// keeps its address and loses its tail as by <see cref="Unmap"/>; a range that grows is first checked to lie in one
    /// VMA (<c>vma_to_resize</c>), then, when it ends where its VMA ends and the range after it is free below
    /// <see cref="VmaList.TaskSize"/> (<c>vma_expandable</c>), its VMA is extended (merging with a compatible next VMA);
    /// otherwise, with <see cref="RemapFlags.MayMove"/>, it is moved to a free range found as <see cref="Map"/> finds
    /// one (Linux passes the range's page offset to <c>get_unmapped_area</c>, which aligns a 2 MiB-multiple length to
    /// it; here the alignment is <see cref="Map"/>'s), and without it the call fails. With
    /// <see cref="RemapFlags.Fixed"/> (<c>mremap_to</c>): the destination is unmapped as by <see cref="Unmap"/>, a
    /// shrinking range loses its tail, and the rest is moved to <paramref name="newAddress"/>.
    /// </para>
    /// <para>
    /// A move (<c>move_vma</c>) inserts a VMA at the destination with the source's rights, flags and page offset
    /// (<c>copy_vma</c>; it merges with compatible neighbours, so a range moved away and back re-merges), moves the page
    /// table entries (<c>move_page_tables</c>) and removes the source range's VMAs. Walking the source 2 MiB extent by
    /// extent, where an extent is cut at 2 MiB boundaries of both the source and the destination: a PMD leaf whose extent
    /// is a whole aligned 2 MiB on both sides moves as one entry with its deposited table (<c>move_huge_pmd</c>); a PMD
    /// leaf in a shorter extent is split first (<c>split_huge_pmd</c>, counted as <c>thp_split_pmd</c>) and its PTEs in
    /// the extent move one by one (<c>move_ptes</c>); a whole aligned page table moves as one PDE
    /// (<c>move_normal_pmd</c>, x86 has <c>CONFIG_HAVE_MOVE_PMD</c>). Entries keep their bits (A, D, rights; Linux also sets soft-dirty on them, which is not modelled); folios
    /// keep their references and map counts, and a PTE-mapped THP stays PTE-mapped where it lands. The grown part of a
    /// moved range is not populated.
    /// </para>
    /// <para>
    /// <b>Page tables.</b> <c>move_huge_pmd</c> and <c>move_normal_pmd</c> need a none destination PMD, which
    /// <c>free_pgtables</c> guarantees for a whole 2 MiB that no VMA covered. After the move the source's VMAs are removed
    /// and its page tables freed as <see cref="Unmap"/> frees them (<c>move_vma</c> → <c>do_vmi_munmap</c> →
    /// <c>free_pgtables</c>), keeping those a neighbouring VMA shares.
    /// </para>
    /// <para>
    /// <b>Not modelled:</b> <c>MREMAP_DONTUNMAP</c>, <c>VM_LOCKED</c> population and accounting, <c>RLIMIT_AS</c>,
    /// <c>VM_ACCOUNT</c>, <c>mseal</c>, the PUD-level move and the realignment of an unaligned move
    /// (<c>can_align_down</c>). Every refusal is checked before anything changes (Linux's <c>mremap_to</c> has already
    /// unmapped the destination when it finds the source bad). Running out of page-table memory in the middle of a move
    /// throws with the move half done (Linux moves the entries back).
    /// </para>
    /// </remarks>
    /// <exception cref="ArgumentException">Linux's <c>-EINVAL</c>: a flag other than <see cref="RemapFlags.MayMove"/> and
    /// <see cref="RemapFlags.Fixed"/>, <see cref="RemapFlags.Fixed"/> without <see cref="RemapFlags.MayMove"/> or without
    /// <paramref name="newAddress"/>, <paramref name="newAddress"/> without <see cref="RemapFlags.Fixed"/>, an address that is
    /// not a multiple of 4 KiB, a zero or unaligned length, a range ending above <see cref="VmaList.TaskSize"/>, or a
    /// destination overlapping the source.</exception>
    /// <exception cref="InvalidOperationException">Linux's <c>-EFAULT</c>: no VMA contains <paramref name="oldAddress"/>,
    /// or a range to be moved or grown runs past the end of its VMA; Linux's <c>-ENOMEM</c>: the range cannot grow in
    /// place and <see cref="RemapFlags.MayMove"/> is not given, no free range is large enough, or page tables ran out.</exception>
    public VirtualAddress Remap(VirtualAddress oldAddress, ulong oldLength, ulong newLength, RemapFlags flags = RemapFlags.None, VirtualAddress? newAddress = null)
    {
        using LockScope locks = EnterWrite(andNode: true);
        ThrowIfDisposed();
        if ((flags & ~(RemapFlags.MayMove | RemapFlags.Fixed)) != 0)
        {
            ThrowHelper.ThrowArgument(nameof(flags), $"Remap flags {flags} have bits other than MayMove (1) and Fixed (2) (-EINVAL).");
        }

        bool isFixed = (flags & RemapFlags.Fixed) != 0;
        if (isFixed && (flags & RemapFlags.MayMove) == 0)
        {
            ThrowHelper.ThrowArgument(nameof(flags), "Fixed needs MayMove (-EINVAL).");
        }

        if (isFixed != newAddress.HasValue)
        {
            ThrowHelper.ThrowArgument(nameof(newAddress), isFixed ? "Fixed needs a new address (-EINVAL)." : "A new address is only taken with Fixed.");
        }

        ulong oldEnd = CheckRange(oldAddress, oldLength);
        if (newLength == 0 || (newLength & (PageSize4K - 1)) != 0)
        {
            ThrowHelper.ThrowArgument(nameof(newLength), $"New length {ThrowHelper.Hex(newLength)} is not a non-zero multiple of 4 KiB (-EINVAL).");
        }

        ulong target = 0;
        if (newAddress is VirtualAddress fixedAddress)
        {
            // mremap_to's checks.
            target = fixedAddress.Value;
            if ((target & (PageSize4K - 1)) != 0)
            {
                ThrowHelper.ThrowArgument(nameof(newAddress), $"New address {fixedAddress} is not a multiple of 4 KiB (-EINVAL).");
            }

            if (newLength > Vmas.TaskSize || target > Vmas.TaskSize - newLength)
            {
                ThrowHelper.ThrowArgument(nameof(newLength), $"[{fixedAddress}, +{ThrowHelper.Hex(newLength)}) ends above {ThrowHelper.Hex(Vmas.TaskSize)} (-EINVAL).");
            }

            if (oldEnd > target && target + newLength > oldAddress.Value)
            {
                ThrowHelper.ThrowArgument(nameof(newAddress), $"[{fixedAddress}, +{ThrowHelper.Hex(newLength)}) overlaps [{oldAddress}, {VirtualAddress.FromRaw(oldEnd)}) (-EINVAL).");
            }
        }

        Vma? vma = Vmas.Find(oldAddress);
        if (vma is null)
        {
            ThrowHelper.ThrowInvalidOperation($"No VMA contains {oldAddress} (-EFAULT).");
            return default;
        }

        if (isFixed)
        {
            // mremap_to: shrink first, then vma_to_resize on what is left.
            ulong moved = Math.Min(oldLength, newLength);
            CheckWithinVma(vma, oldAddress, moved);
            Unmap(VirtualAddress.FromRaw(target), newLength);
            if (oldLength > newLength)
            {
                Unmap(oldAddress.Add(newLength), oldLength - newLength);
            }

            MoveRange(oldAddress, moved, VirtualAddress.FromRaw(target), newLength);
            return VirtualAddress.FromRaw(target);
        }

        if (oldLength >= newLength)
        {
            if (oldLength > newLength)
            {
                Unmap(oldAddress.Add(newLength), oldLength - newLength);
            }

            return oldAddress;
        }

        CheckWithinVma(vma, oldAddress, oldLength);
        ulong newEnd = oldAddress.Value + newLength;
        if (oldEnd == vma.End.Value && newLength <= Vmas.TaskSize - oldAddress.Value
            && Vmas.FindIntersecting(vma.End, VirtualAddress.FromRaw(newEnd)).Count == 0)
        {
            // vma_expandable, then the VMA is extended (vma_merge_extend).
            Vmas.Insert(new Vma(vma.End, VirtualAddress.FromRaw(newEnd), vma.Protection, vma.Flags, vma.PageOffset + vma.PageCount, vma.AnonVmaId));
            return oldAddress;
        }

        if ((flags & RemapFlags.MayMove) == 0)
        {
            ThrowHelper.ThrowInvalidOperation($"[{oldAddress}, {VirtualAddress.FromRaw(oldEnd)}) cannot grow in place to {ThrowHelper.Hex(newLength)} bytes and may not move (-ENOMEM).");
        }

        VirtualAddress? found = newLength > MmapBase - MmapMinAddress
            ? null
            : Vmas.FindFreeRangeForAnonymous(newLength, VirtualAddress.FromRaw(MmapMinAddress), VirtualAddress.FromRaw(MmapBase));
        if (found is not VirtualAddress destination)
        {
            ThrowHelper.ThrowInvalidOperation($"No free range of {ThrowHelper.Hex(newLength)} bytes (-ENOMEM).");
            return default;
        }

        MoveRange(oldAddress, oldLength, destination, newLength);
        return destination;
    }

    private static void CheckWithinVma(Vma vma, VirtualAddress address, ulong length)
    {
        // vma_to_resize: "We can't remap across vm area boundaries".
        if (length > vma.End.Value - address.Value)
        {
            ThrowHelper.ThrowInvalidOperation($"[{address}, +{ThrowHelper.Hex(length)}) runs past the end of {vma} (-EFAULT).");
        }
    }

    // move_vma: copy_vma, move_page_tables, then unmap the source range's VMAs (their entries have all moved) and free
    // the source's page tables as do_vmi_munmap's free_pgtables does.
    private void MoveRange(VirtualAddress source, ulong length, VirtualAddress destination, ulong newLength)
    {
        Vma vma = Vmas.Find(source)!;
        Vmas.Insert(new Vma(destination, destination.Add(newLength), vma.Protection, vma.Flags, vma.PageOffsetOf(source), vma.AnonVmaId));
        MovePageTables(source.Value, destination.Value, length);
        Vmas.Remove(source, source.Add(length));
        FreePgTablesAfterUnmap(source.Value, source.Value + length);
    }

    private void MovePageTables(ulong oldAddress, ulong newAddress, ulong length)
    {
        ulong oldEnd = oldAddress + length;
        ulong extent;
        for (; oldAddress < oldEnd; oldAddress += extent, newAddress += extent)
        {
            // get_extent: up to the next 2 MiB boundary of the source and of the destination.
            extent = Math.Min(Math.Min(HugeSize - (oldAddress & (HugeSize - 1)), oldEnd - oldAddress), HugeSize - (newAddress & (HugeSize - 1)));
            if (!TryFindPde(oldAddress, out PhysicalAddress oldSlot))
            {
                continue;
            }

            ulong oldPde = Read(oldSlot);
            if (oldPde == 0)
            {
                continue;
            }

            if (!TryFindPde(newAddress, out PhysicalAddress newSlot, allocate: true))
            {
                ThrowHelper.ThrowInvalidOperation("No free frame for a page table at the destination (-ENOMEM).");
            }

            if (IsHugeLeaf(oldPde))
            {
                ulong oldChunk = oldAddress & ~(HugeSize - 1);
                if (extent == HugeSize && TryEmptyDestinationPmd(newSlot))
                {
                    // move_huge_pmd: the leaf and its deposited table move; the folio is untouched.
                    Write(oldSlot, 0);
                    Write(newSlot, oldPde);
                    _deposited[newAddress] = _deposited[oldChunk];
                    _deposited.Remove(oldChunk);
                    continue;
                }

                SplitLocked(oldChunk, oldSlot, oldPde);
                oldPde = Read(oldSlot);
            }
            else if (extent == HugeSize && TryEmptyDestinationPmd(newSlot))
            {
                // move_normal_pmd: the whole page table moves.
                Write(oldSlot, 0);
                Write(newSlot, oldPde);
                continue;
            }

            ulong newPde = Read(newSlot);
            if (newPde == 0)
            {
                if (!Node.TryAllocateFrame(out PhysicalAddress table))
                {
                    ThrowHelper.ThrowInvalidOperation("No free frame for a page table at the destination (-ENOMEM).");
                }

                newPde = table.Value | TableEntryFlags;
                Write(newSlot, newPde);
            }

            // move_ptes.
            PhysicalAddress oldTable = PhysicalAddress.FromMaskedBits(oldPde & PageTableEntry.AddressMask4K);
            PhysicalAddress newTable = PhysicalAddress.FromMaskedBits(newPde & PageTableEntry.AddressMask4K);
            for (ulong offset = 0; offset < extent; offset += PageSize4K)
            {
                PhysicalAddress from = PteSlot(oldTable, oldAddress + offset);
                ulong pte = Read(from);
                if (pte != 0)
                {
                    Write(from, 0);
                    Write(PteSlot(newTable, newAddress + offset), pte);
                }
            }
        }
    }

    // move_huge_pmd and move_normal_pmd need the destination PMD to be none (Linux WARNs and falls back to moving PTEs
    // otherwise). The destination range has no VMA, and free_pgtables freed every table there that no neighbouring VMA
    // shares, so a whole destination 2 MiB has no page table.
    private bool TryEmptyDestinationPmd(PhysicalAddress slot) => Read(slot) == 0;
}
