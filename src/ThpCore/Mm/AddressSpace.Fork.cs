using System;
using ThpCore.Internal;
using ThpCore.Memory;
using ThpCore.Paging;

namespace ThpCore.Mm;

public sealed partial class AddressSpace
{
    // The child of Fork: same node, mode, settings and counters; its own root table and VMA list; the parent's zero
    // pages (Linux has one 4 KiB and one huge zero page per system; here the child joins the parent's fork family,
    // which frees them when its last member is disposed).
    private AddressSpace(AddressSpace parent)
    {
        Node = parent.Node;
        _memory = parent._memory;
        _mode = parent._mode;
        Settings = parent.Settings;
        Counters = parent.Counters;
        Vmas = new VmaList(parent._mode, parent.Vmas.StackGuardGap);
        MmapBase = parent.MmapBase;
        if (!Node.TryAllocateFrame(out PhysicalAddress root))
        {
            ThrowHelper.ThrowInvalidOperation("The node has no free frame for the child's root page table (fork: -ENOMEM).");
        }

        Root = root;
        ZeroPage = parent.ZeroPage;
        _swap = parent._swap;
        Cpu = CpuState.Create(root.Value, _mode == PagingMode.FiveLevel ? Cr4Flags.Pae | Cr4Flags.La57 : Cr4Flags.Pae);
        _family = parent._family.Join(this);
    }

    /// <summary>
    /// Creates a child address space like <c>fork</c> (<c>dup_mmap</c> → <c>copy_page_range</c>): same node, settings and
    /// counters, a copy of every VMA, and page tables that share the parent's anonymous pages copy-on-write.
    /// </summary>
    /// <remarks>
    /// <para>
    /// <b>PTEs</b> (<c>copy_present_pte</c>). A page that is anon-exclusive and may be DMA-pinned
    /// (<see cref="Folio.MaybeDmaPinned"/>; Linux's <c>folio_try_dup_anon_rmap_pte</c> fails with <c>-EBUSY</c>) is copied
    /// at once into a new order-0 page mapped writable, dirty and exclusive in the child (<c>copy_present_page</c>); the
    /// parent keeps its writable PTE. Any other anonymous page loses its anon-exclusive flag, gains a reference and a
    /// PTE mapping, and both PTEs lose R/W (the parent's by <c>ptep_set_wrprotect</c>); the child's PTE is also made old
    /// (A clear, <c>pte_mkold</c>); D is kept. The 4 KiB zero page is copied as is (read-only, no reference).
    /// </para>
    /// <para>
    /// <b>PMD leaves</b> (<c>copy_huge_pmd</c>). A THP whose head is anon-exclusive and that may be pinned makes
    /// <c>folio_try_dup_anon_rmap_pmd</c> fail: the parent's PMD is split (<c>thp_split_pmd</c>) and the 512 PTEs are
    /// copied as above, so a pinned THP leaves the parent PTE-mapped and the child with 512 copied pages. Otherwise
    /// the head's anon-exclusive flag is cleared, the folio gains a PMD mapping (entire map count) and a reference, both
    /// PMDs lose R/W, the child's is made old, and the child gets its own deposited table. The huge zero page is shared
    /// read-only, with a deposited table and no reference (<c>set_huge_zero_folio</c>: a fresh entry, not made old).
    /// </para>
    /// <para>
    /// <b>Simplified.</b> The VMAs are copied as they are, anonymous VMA ids included: there is no <c>anon_vma</c> tree
    /// (Linux's <c>anon_vma_fork</c> links the child's VMAs to the parent's <c>anon_vma</c> and gives them their own).
    /// Every VMA's page tables are copied (Linux skips VMAs without an <c>anon_vma</c>, which have no pages anyway, and
    /// <c>MADV_DONTFORK</c>/<c>MADV_WIPEONFORK</c> are not modelled). The mm is assumed to have <c>MMF_HAS_PINNED</c>, so
    /// <see cref="Folio.MaybeDmaPinned"/> alone decides (<c>folio_needs_cow_for_dma</c>). The child shares the
    /// parent's zero pages (it joins the parent's fork family; see <see cref="Dispose"/>). When memory runs out
    /// part-way, the partly built child is torn down as <see cref="Dispose"/> does and
    /// <see cref="InvalidOperationException"/> is thrown (Linux: <c>dup_mmap</c> fails, the child's mm is put, fork returns
    /// <c>-ENOMEM</c>); the parent's entries keep the write protection the copy gave them.
    /// </para>
    /// </remarks>
    /// <returns>The child.</returns>
    /// <exception cref="InvalidOperationException">The node ran out of frames for the child's page tables or copies.</exception>
    public AddressSpace Fork()
    {
        using LockScope locks = EnterWrite(andNode: true);
        ThrowIfDisposed();
        AddressSpace child = new(this);
        try
        {
            foreach (Vma vma in Vmas.All)
            {
                // dup_mmap: memory locks are not inherited (VM_LOCKED cleared on the child's VMA).
                child.Vmas.Insert(vma with { Flags = vma.Flags & ~VmaFlags.Locked });
            }

            foreach (Vma vma in Vmas.All)
            {
                CopyPageRange(child, vma);
            }
        }
        catch (InvalidOperationException)
        {
            // dup_mmap failing: the half-built child is torn down (mmput → exit_mmap) and fork returns -ENOMEM. The
            // parent keeps the write protection and shared marks the copy gave its entries, as in Linux.
            child.TearDown();
            throw;
        }

        return child;
    }

    // copy_page_range for one VMA.
    private void CopyPageRange(AddressSpace child, Vma vma)
    {
        ulong start = vma.Start.Value;
        ulong end = vma.End.Value;
        for (ulong chunk = start & ~(HugeSize - 1); chunk < end; chunk += HugeSize)
        {
            if (!TryFindPde(chunk, out PhysicalAddress pdeSlot))
            {
                continue;
            }

            ulong pde = Read(pdeSlot);
            if (IsHugeLeaf(pde))
            {
                if (CopyHugePmd(child, chunk, pdeSlot, pde))
                {
                    continue;
                }

                // -EAGAIN: split the parent's PMD and copy its PTEs.
                SplitLocked(chunk, pdeSlot, pde);
                pde = Read(pdeSlot);
            }

            if ((pde & P) == 0)
            {
                continue;
            }

            PhysicalAddress table = PhysicalAddress.FromMaskedBits(pde & PageTableEntry.AddressMask4K);
            PhysicalAddress childTable = default;
            ulong to = Math.Min(end, chunk + HugeSize);
            for (ulong va = Math.Max(start, chunk); va < to; va += PageSize4K)
            {
                PhysicalAddress slot = PteSlot(table, va);
                ulong pte = Read(slot);
                if (!IsMapped(pte))
                {
                    if (pte != 0 && TryCopySwapPte(slot, pte, out ulong childSwapPte))
                    {
                        childTable = childTable.Value == 0 ? child.EnsurePteTable(chunk) : childTable;
                        Write(PteSlot(childTable, va), childSwapPte);
                    }

                    continue;
                }

                if (childTable.Value == 0)
                {
                    childTable = child.EnsurePteTable(chunk);
                }

                Write(PteSlot(childTable, va), CopyPresentPte(vma, slot, pte));
            }
        }
    }

    // copy_huge_pmd. False when the folio may be pinned and is exclusive (-EAGAIN: the caller splits).
    private bool CopyHugePmd(AddressSpace child, ulong chunk, PhysicalAddress pdeSlot, ulong pde)
    {
        bool zero = IsHugeZero(pde);
        if (!zero)
        {
            Folio folio = Node.FolioOf((pde & PageTableEntry.AddressMask2M) >> 12);
            if (folio.IsAnonExclusive(0) && folio.MaybeDmaPinned)
            {
                return false;
            }
        }

        if (!child.TryFindPde(chunk, out PhysicalAddress childSlot, allocate: true) || !Node.TryAllocateFrame(out PhysicalAddress deposit))
        {
            ThrowHelper.ThrowInvalidOperation("The node ran out of frames while copying page tables (fork: -ENOMEM).");
            return false;
        }

        child._deposited[chunk] = deposit;
        if (!zero)
        {
            Folio folio = Node.FolioOf((pde & PageTableEntry.AddressMask2M) >> 12);
            folio.SetAnonExclusive(0, false);
            folio.Get();
            folio.AddPmdMapping();
            Write(pdeSlot, pde & ~RW);
            pde &= ~(RW | A);
        }

        // set_huge_zero_folio builds the huge zero page's PMD afresh from vm_page_prot, so it is not made old.
        child.Write(childSlot, pde);
        return true;
    }

    // copy_present_pte: returns the child's PTE, write-protecting the parent's when the page becomes shared.
    private ulong CopyPresentPte(Vma vma, PhysicalAddress slot, ulong pte)
    {
        ulong frame = FrameOf(pte);
        if (frame == ZeroPage.HeadFrame)
        {
            return pte & ~A;
        }

        Folio folio = Node.FolioOf(frame);
        int index = (int)(frame - folio.HeadFrame);
        if (folio.IsAnonExclusive(index) && folio.MaybeDmaPinned)
        {
            // copy_present_page: the child gets its own copy now; the parent keeps its writable, exclusive page.
            if (!Node.TryAllocateFolio(0, out Folio copy))
            {
                ThrowHelper.ThrowInvalidOperation("The node ran out of frames while copying a pinned page (fork: -ENOMEM).");
            }

            folio.ReadPage(index).CopyTo(copy.GetWritablePage(0));
            copy.AddPteMapping(0);
            copy.SetAnonExclusive(0, true);
            return Reprotect(copy.Address.Value | P | US | A | D, vma.Protection, zeroPage: false);
        }

        folio.SetAnonExclusive(index, false);
        folio.Get();
        folio.AddPteMapping(index);
        Write(slot, pte & ~RW);
        return pte & ~(RW | A);
    }

    // The page table for chunk, allocating it and the tables above it when missing.
    private PhysicalAddress EnsurePteTable(ulong chunk)
    {
        if (!TryFindPde(chunk, out PhysicalAddress pdeSlot, allocate: true))
        {
            ThrowHelper.ThrowInvalidOperation("The node ran out of frames while copying page tables (fork: -ENOMEM).");
        }

        ulong pde = Read(pdeSlot);
        if (pde == 0)
        {
            if (!Node.TryAllocateFrame(out PhysicalAddress table))
            {
                ThrowHelper.ThrowInvalidOperation("The node ran out of frames while copying page tables (fork: -ENOMEM).");
            }

            pde = table.Value | TableEntryFlags;
            Write(pdeSlot, pde);
        }

        return PhysicalAddress.FromMaskedBits(pde & PageTableEntry.AddressMask4K);
    }

    // do_huge_pmd_wp_page on an anonymous THP: reuse when the head is anon-exclusive, or when the refcount shows this
    // PMD as the only user (then mark it exclusive). False: the caller splits the PMD and falls back to 4 KiB COW.
    private bool CanReuseHugePmd(ulong pde)
    {
        Folio folio = Node.FolioOf((pde & PageTableEntry.AddressMask2M) >> 12);
        if (folio.IsAnonExclusive(0))
        {
            return true;
        }

        if (folio.RefCount != 1)
        {
            return false;
        }

        folio.SetAnonExclusive(0, true);
        return true;
    }

    // do_wp_page on a read-only PTE of an anonymous page (not the zero page): reuse an exclusive page, or an order-0
    // page whose refcount is 1 (wp_can_reuse_anon_folio; it is marked exclusive); otherwise wp_page_copy. A page of a
    // large folio that is not exclusive is always copied (Linux before v6.16; v6.16's __wp_can_reuse_large_anon_folio
    // also reuses when every reference is a mapping of this mm, which needs per-mm map counts that are not modelled).
    // Returns null for VM_FAULT_OOM.
    private FaultAction? WriteProtectFault(Vma vma, PhysicalAddress slot, ulong pte)
    {
        ulong frame = FrameOf(pte);
        Folio folio = Node.FolioOf(frame);
        int index = (int)(frame - folio.HeadFrame);
        if (!folio.IsAnonExclusive(index) && (folio.IsLarge || folio.RefCount != 1))
        {
            if (!Node.TryAllocateFolio(0, out Folio copy))
            {
                return null;
            }

            folio.ReadPage(index).CopyTo(copy.GetWritablePage(0));
            copy.AddPteMapping(0);
            copy.SetAnonExclusive(0, true);

            // Clear-and-flush, install the copy, then drop the old page's mapping and reference.
            Write(slot, 0);
            Write(slot, copy.Address.Value | LeafRights(vma.Protection, writable: true));
            ReleasePte(pte);
            return FaultAction.CopiedPage;
        }

        folio.SetAnonExclusive(index, true);
        Write(slot, pte | RW | D | A);
        return FaultAction.None;
    }

    // Whether a PTE maps an anon-exclusive page (can_change_pte_writable for private anonymous memory).
    private bool IsExclusivePte(ulong pte)
    {
        ulong frame = FrameOf(pte);
        Folio folio = Node.FolioOf(frame);
        return folio.IsAnonExclusive((int)(frame - folio.HeadFrame));
    }
}
