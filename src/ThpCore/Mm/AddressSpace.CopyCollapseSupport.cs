using System;
using ThpCore.Internal;
using ThpCore.Memory;
using ThpCore.Paging;

namespace ThpCore.Mm;

/// <summary>What the PDE of a 2 MiB range holds, as <c>find_pmd_or_thp_or_none</c> classifies it.</summary>
internal enum PmdKind
{
    /// <summary>No upper-level table reaches the range, or the PDE is not present (a PMD migration entry): <c>SCAN_PMD_NULL</c>.</summary>
    Null,

    /// <summary>The PDE is empty: <c>SCAN_PMD_NONE</c>.</summary>
    None,

    /// <summary>The PDE is a leaf (a THP or the huge zero page): <c>SCAN_PMD_MAPPED</c>.</summary>
    Huge,

    /// <summary>The PDE points to a page table.</summary>
    Table,
}

/// <content>
/// The primitives the copy collapse (<c>ThpCore.Collapse</c>, Linux's <c>collapse_huge_page</c>) needs from the address
/// space. Every method here expects the caller to hold the address space's lock for writing and the node lock.
/// </content>
public sealed partial class AddressSpace
{
    /// <summary>
    /// Set by the collapse layer (a module initializer): runs <c>MADV_COLLAPSE</c> over a range and returns 0 or a
    /// negative errno. Mm never references the collapse types; <see cref="Advise"/> calls through this hook.
    /// </summary>
    internal static Func<AddressSpace, VirtualAddress, ulong, int>? CollapseAdvice { get; set; }

    /// <summary>The name of a negative errno <see cref="CollapseAdvice"/> returns, for messages.</summary>
    internal static string ErrnoText(int errno) => errno switch
    {
        -22 => "-EINVAL",
        -12 => "-ENOMEM",
        -11 => "-EAGAIN",
        -16 => "-EBUSY",
        _ => errno.ToString(System.Globalization.CultureInfo.InvariantCulture),
    };

    /// <summary>Whether a PTE is present for Linux (<c>pte_present</c> on x86: P or PROT_NONE).</summary>
    internal static bool PtePresent(ulong pte) => IsMapped(pte);

    /// <summary>Whether a PTE is writable (<c>pte_write</c>).</summary>
    internal static bool PteWritable(ulong pte) => (pte & RW) != 0;

    /// <summary>Whether a PTE is young (<c>pte_young</c>: the accessed bit).</summary>
    internal static bool PteYoung(ulong pte) => (pte & A) != 0;

    /// <summary>The frame number a present PTE maps.</summary>
    internal static ulong PteFrame(ulong pte) => FrameOf(pte);

    /// <summary><c>folio_likely_mapped_shared</c> (v6.12), as the reclaim paths use it.</summary>
    internal static bool FolioLikelyMappedShared(Folio folio) => LikelyMappedShared(folio);

    /// <summary>
    /// <c>thp_vma_allowable_order(vma, vm_flags, tva_flags, PMD_ORDER)</c> for an anonymous VMA: never with
    /// <see cref="VmaFlags.NoHugePage"/>; with <paramref name="enforceSysfs"/> (<c>TVA_ENFORCE_SYSFS</c>, khugepaged)
    /// also the <c>enabled</c> mode. The <c>anon_vma</c> condition is not modelled.
    /// </summary>
    internal bool HugePagesAllowed(Vma vma, bool enforceSysfs)
    {
        if ((vma.Flags & VmaFlags.Anonymous) == 0 || (vma.Flags & VmaFlags.NoHugePage) != 0)
        {
            return false;
        }

        return !enforceSysfs || ThpAllowed(vma);
    }

    /// <summary>
    /// Classifies the PDE of the 2 MiB range at <paramref name="chunk"/> and, for a page table, copies its 512 PTEs
    /// into <paramref name="ptes"/> (the PTE lock held: the node lock).
    /// </summary>
    internal PmdKind ReadPteTableLocked(ulong chunk, Span<ulong> ptes)
    {
        if (!TryFindPde(chunk, out PhysicalAddress pdeSlot))
        {
            return PmdKind.Null;
        }

        ulong pde = Read(pdeSlot);
        if (pde == 0)
        {
            return PmdKind.None;
        }

        if (!IsMapped(pde))
        {
            return PmdKind.Null;
        }

        if ((pde & PS) != 0)
        {
            return PmdKind.Huge;
        }

        PhysicalAddress table = PhysicalAddress.FromMaskedBits(pde & PageTableEntry.AddressMask4K);
        for (int i = 0; i < 512; i++)
        {
            ptes[i] = Read(table.Add((ulong)i * 8));
        }

        return PmdKind.Table;
    }

    /// <summary>Whether a PTE holds a swap entry of the attached device (<c>is_swap_pte</c> less migration entries).</summary>
    internal bool IsSwapPteOfDevice(ulong pte) => IsSwapPte(pte, out _);

    /// <summary>
    /// Swaps in the page of the swap PTE at <paramref name="va"/> through the swap-in fault path (<c>do_swap_page</c>,
    /// as <c>__collapse_huge_page_swapin</c> calls it: not a write fault). Returns <see langword="false"/> when memory
    /// ran out (<c>VM_FAULT_OOM</c>); a PTE that is no longer a swap PTE is left alone (true).
    /// </summary>
    internal bool SwapInForCollapseLocked(ulong va)
    {
        Vma? vma = Vmas.Find(VirtualAddress.FromRaw(va));
        if (vma is null || !TryFindPde(va, out PhysicalAddress pdeSlot))
        {
            return true;
        }

        ulong pde = Read(pdeSlot);
        if ((pde & P) == 0 || (pde & PS) != 0)
        {
            return true;
        }

        PhysicalAddress slot = PteSlot(PhysicalAddress.FromMaskedBits(pde & PageTableEntry.AddressMask4K), va);
        ulong pte = Read(slot);
        return !IsSwapPte(pte, out _) || SwapInFault(vma, slot, pte, write: false) is not null;
    }

    /// <summary>
    /// The order-9 allocation of <c>alloc_charge_folio</c>: from the free lists, then, when <paramref name="mayCompact"/>
    /// (<c>GFP_TRANSHUGE</c>: MADV_COLLAPSE always, khugepaged with <c>khugepaged/defrag</c> 1), after one direct
    /// compaction (<c>compact_stall</c> and its outcome are counted). Direct reclaim is not modelled.
    /// </summary>
    internal bool TryAllocateHugeForCollapse(bool mayCompact, out Folio folio) => TryAllocateHuge(mayCompact, anon: true, out folio);

    /// <summary>
    /// The end of <c>collapse_huge_page</c> for the range at <paramref name="chunk"/>, whose 512 PTEs have passed the
    /// isolation checks and hold no swap entry: <c>pmdp_collapse_flush</c> (the PDE is cleared first, break-before-make),
    /// <c>__collapse_huge_page_copy</c> (every present page copied into <paramref name="folio"/>, the rest zeroed),
    /// <c>__collapse_huge_page_copy_succeeded</c> (each old PTE cleared, its rmap and reference dropped, so the old
    /// pages are freed unless mapped elsewhere), then <c>folio_add_new_anon_rmap(RMAP_EXCLUSIVE)</c>, the old table
    /// deposited (<c>pgtable_trans_huge_deposit</c>) and the PMD set (<c>set_pmd_at</c>): P, U/S, A, D
    /// (<c>pmd_mkdirty</c>), PS, R/W when the VMA is writable (<c>maybe_pmd_mkwrite</c>), XD unless executable.
    /// <paramref name="folio"/>'s one reference becomes the PMD mapping's.
    /// </summary>
    internal void InstallCollapsedLocked(ulong chunk, Folio folio, Vma vma)
    {
        if (!TryFindPde(chunk, out PhysicalAddress pdeSlot) || !IsMapped(Read(pdeSlot)) || (Read(pdeSlot) & PS) != 0)
        {
            ThrowHelper.ThrowInvalidOperation($"No page table maps the range at {ThrowHelper.Hex(chunk)} to collapse.");
        }

        ulong pde = Exchange(pdeSlot, 0);
        PhysicalAddress table = PhysicalAddress.FromMaskedBits(pde & PageTableEntry.AddressMask4K);
        for (int i = 0; i < 512; i++)
        {
            ulong pte = Read(table.Add((ulong)i * 8));
            ulong destination = folio.HeadFrame + (ulong)i;
            if (IsMapped(pte) && FrameOf(pte) != ZeroPage.HeadFrame && _memory.IsMaterialized(FrameOf(pte)))
            {
                _memory.ReadFrame(FrameOf(pte)).CopyTo(_memory.GetWritableFrame(destination));
            }
            else if (pte != 0 && !IsMapped(pte))
            {
                ThrowHelper.ThrowInvalidOperation($"PTE {i} of the range at {ThrowHelper.Hex(chunk)} is not present ({ThrowHelper.Hex(pte)}); it cannot be copied.");
            }
            else if (_memory.IsMaterialized(destination))
            {
                // clear_user_highpage: a frame from the allocator may hold stale bytes only if it was written since.
                _memory.GetWritableFrame(destination).Clear();
            }
        }

        for (int i = 0; i < 512; i++)
        {
            PhysicalAddress slot = table.Add((ulong)i * 8);
            ulong pte = Read(slot);
            Write(slot, 0);
            if (IsMapped(pte))
            {
                ReleasePte(pte);
            }
        }

        folio.AddPmdMapping();
        folio.SetAnonExclusive(0, true);
        _deposited[chunk] = table;
        ulong bits = P | US | A | D | PS;
        if ((vma.Protection & Protection.Write) != 0)
        {
            bits |= RW;
        }

        if ((vma.Protection & Protection.Execute) == 0)
        {
            bits |= XD;
        }

        Write(pdeSlot, folio.Address.Value | bits);
    }
}
