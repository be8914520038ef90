using System;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using ThpCore.Internal;
using ThpCore.Memory;
using ThpCore.Paging;

namespace ThpCore.Mm;

/// <content>
/// Primitives for the collapse engine (<c>ThpCore.Collapse</c>), which decides; these only read the tables and carry
/// out a decision. Every member expects the caller to hold the address space's write lock and the node lock
/// (<see cref="EnterWrite"/> with the node).
/// </content>
public sealed partial class AddressSpace
{
    /// <summary>Throws <see cref="ObjectDisposedException"/> when the address space was torn down.</summary>
    internal void ThrowIfDisposedForCollapse() => ThrowIfDisposed();

    /// <summary>
    /// The PDE slot and value for the 2 MiB range at <paramref name="chunk"/>; <see langword="false"/> when a table
    /// above it is missing (Linux's <c>find_pmd_or_thp_or_none</c> giving <c>SCAN_PMD_NULL</c>).
    /// </summary>
    internal bool TryReadPmd(ulong chunk, out PhysicalAddress slot, out ulong pde)
    {
        if (!TryFindPde(chunk, out slot))
        {
            pde = 0;
            return false;
        }

        pde = Read(slot);
        return true;
    }

    /// <summary>Whether a PDE is a PMD leaf (present or PROT_NONE, PS set).</summary>
    internal static bool IsPmdLeaf(ulong pde) => IsHugeLeaf(pde);

    /// <summary>Whether a PDE points at a page table (present, PS clear).</summary>
    internal static bool IsPmdTable(ulong pde) => (pde & P) != 0 && (pde & PS) == 0;

    /// <summary>The 512 entries of the page table a table PDE points at, read in place (no copy).</summary>
    internal ReadOnlySpan<ulong> ReadPteTable(ulong pde) => _memory.ReadFrameWords(FrameOf(pde));

    /// <summary>
    /// Maps the page table's order-9 folio by one PMD leaf where it lies — the checks are the caller's — and returns
    /// the invalidation still due (none when <paramref name="tlb"/> was given).
    /// </summary>
    /// <remarks>
    /// The leaf is built from <paramref name="firstPte"/> as <c>__split_huge_pmd_locked</c> builds PTEs from a PMD,
    /// inverted: P, R/W (only when <paramref name="exclusive"/>), U/S, PWT, PCD, G, XD, the protection key and the
    /// software bits carried, PAT moved from bit 7 to bit 12, PS set, and A and D from <paramref name="accessedDirty"/>
    /// plus whatever walkers set in the PTEs until the table was detached. With <paramref name="breakBeforeMake"/>
    /// the PDE is cleared atomically, the range invalidated (on <paramref name="tlb"/>, if given), then the leaf
    /// written (Linux's <c>pmdp_collapse_flush</c>, then <c>set_pmd_at</c>); otherwise the leaf replaces the PDE in one
    /// atomic write (FreeBSD's <c>pmap_promote_pde</c>) and the invalidation follows. The folio's 512 PTE mappings
    /// become one PMD mapping (<c>folio_remove_rmap_ptes</c>, <c>folio_add_anon_rmap_pmd</c>) and its 512 references
    /// one (pins and swap-cache references untouched); anon-exclusive stays on the head only when
    /// <paramref name="exclusive"/>; the folio leaves the deferred-split queue; D marks it dirty; the detached table
    /// becomes the PMD's deposited table (<c>pgtable_trans_huge_deposit</c>), so a later split needs no memory.
    /// </remarks>
    internal TlbRangeInvalidation CommitInPlaceCollapse(
        ulong chunk, PhysicalAddress pdeSlot, ulong pde, Folio folio, ulong firstPte, ulong accessedDirty, bool exclusive, bool breakBeforeMake, Tlb? tlb, CpuState? cpu)
    {
        if (_deposited.ContainsKey(chunk))
        {
            ThrowHelper.ThrowInvalidOperation($"The range at {ThrowHelper.Hex(chunk)} already has a deposited page table, yet is mapped by a page table.");
        }

        PhysicalAddress table = PhysicalAddress.FromMaskedBits(pde & PageTableEntry.AddressMask4K);
        ulong carried = firstPte & (P | US | PWT | PCD | ProtNone | XD | PageTableEntry.LeafAvailableMask | PageTableEntry.ProtectionKeyMask);
        if (exclusive)
        {
            carried |= firstPte & RW;
        }

        if ((firstPte & PatPte) != 0)
        {
            carried |= PatLarge;
        }

        ulong leaf = folio.Address.Value | carried | PS | (accessedDirty & (A | D));
        var invalidation = new TlbRangeInvalidation(VirtualAddress.FromRaw(chunk), HugeSize);
        if (breakBeforeMake)
        {
            Exchange(pdeSlot, 0);
            leaf |= OrOfAccessedDirty(_memory.ReadFrameWords(table.FrameNumber));
            if (tlb is not null)
            {
                invalidation.ApplyTo(tlb, cpu ?? Cpu);
                invalidation = default;
            }

            Write(pdeSlot, leaf);
        }
        else
        {
            Exchange(pdeSlot, leaf);
            ulong late = OrOfAccessedDirty(_memory.ReadFrameWords(table.FrameNumber)) & ~leaf;
            if (late != 0)
            {
                // A walker set A or D through the old table after the check: fold it in without losing bits a walker
                // may be setting on the new leaf.
                ulong seen = Read(pdeSlot);
                while (_memory.CompareExchangeUInt64(pdeSlot, seen | late, seen) is ulong found && found != seen)
                {
                    seen = found;
                }
            }

            if (tlb is not null)
            {
                invalidation.ApplyTo(tlb, cpu ?? Cpu);
                invalidation = default;
            }

            leaf |= late;
        }

        folio.ConvertPteMappingsToPmd(clearTailExclusive: exclusive);

        folio.RemoveFromDeferredSplitQueue();
        if ((leaf & D) != 0)
        {
            folio.SetDirty(true);
        }

        _deposited[chunk] = table;
        return invalidation;
    }

    // The OR of A and D over a page table, after it was detached: the bits walkers set until then.
    private static ulong OrOfAccessedDirty(ReadOnlySpan<ulong> entries)
    {
        ulong seen = 0;
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            ref ulong start = ref MemoryMarshal.GetReference(entries);
            Vector256<ulong> acc = Vector256<ulong>.Zero;
            for (; i + 4 <= entries.Length; i += 4)
            {
                acc |= Vector256.LoadUnsafe(ref start, (nuint)i);
            }

            Vector128<ulong> folded = acc.GetLower() | acc.GetUpper();
            seen = folded.GetElement(0) | folded.GetElement(1);
        }

        for (; i < entries.Length; i++)
        {
            seen |= entries[i];
        }

        return seen & (A | D);
    }
}
