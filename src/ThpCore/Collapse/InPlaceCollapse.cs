using System;
using ThpCore.Diagnostics;
using ThpCore.Internal;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;

namespace ThpCore.Collapse;

/// <summary>
/// In-place collapse: a 2 MiB range whose page table maps subpages 0..511 of one order-9 anonymous folio, in order,
/// is remapped by one PMD leaf pointing at that folio — no allocation, no copy, and pins do not stand in the way.
/// </summary>
/// <remarks>
/// <para>
/// Linux has no such path for anonymous memory (v6.12: <c>collapse_pte_mapped_thp</c> in <c>mm/khugepaged.c</c> wants a
/// file VMA; anonymous ranges are always copied by <c>collapse_huge_page</c>). This one follows
/// <c>collapse_pte_mapped_thp</c> for the checks and the PMD install, <c>__split_huge_pmd_locked</c> run backwards for
/// the folio's counts, David Hildenbrand's anon-exclusive rules (cow.c, Jan 2023) for exclusivity, and FreeBSD's
/// <c>pmap_promote_pde</c> for the optional single-write promotion. See <c>docs/collapse.md</c>.
/// </para>
/// <para>
/// <b>Checks</b>, in this order; the first that fails is the result and nothing changes:
/// </para>
/// <list type="number">
/// <item>a VMA contains <c>address</c> (<see cref="CollapseStatus.VmaNull"/>);</item>
/// <item>the aligned 2 MiB lies inside it (<see cref="CollapseStatus.AddressRange"/>);</item>
/// <item>it is anonymous and not <see cref="VmaFlags.NoHugePage"/> (<see cref="CollapseStatus.VmaCheck"/>); the sysfs
/// <c>enabled</c> knob is not consulted, as <c>collapse_pte_mapped_thp</c> and <c>MADV_COLLAPSE</c> do not;</item>
/// <item>the PMD: a table above it missing or a non-present PMD (<see cref="CollapseStatus.PmdNull"/>), empty
/// (<see cref="CollapseStatus.PmdNone"/>), already a leaf (<see cref="CollapseStatus.PmdMapped"/>);</item>
/// <item>the 512 PTEs, entry by entry in address order, each: none or the zero page
/// (<see cref="CollapseStatus.InPlaceHole"/>), a swap entry (<see cref="CollapseStatus.InPlaceSwapPte"/>), any other
/// non-present entry — migration, PROT_NONE (<see cref="CollapseStatus.PteNonPresent"/>); a frame that is no folio
/// (<see cref="CollapseStatus.PageNull"/>) or a folio that is not anonymous (<see cref="CollapseStatus.PageAnon"/>);
/// another folio or one not of order 9 (<see cref="CollapseStatus.InPlaceMixedFolios"/>); a subpage of the folio at
/// the wrong slot (<see cref="CollapseStatus.InPlaceOutOfOrder"/>); attributes other than A and D differing from
/// entry 0's (<see cref="CollapseStatus.InPlaceMixedAttributes"/>);</item>
/// <item>anon-exclusive: some subpages exclusive and some not (<see cref="CollapseStatus.InPlaceMixedExclusive"/>);
/// all exclusive but the folio mapped elsewhere too (<see cref="CollapseStatus.InPlaceSharedWithOthers"/>); none
/// exclusive but the PTEs writable (<see cref="CollapseStatus.InPlaceWritableShared"/>).</item>
/// </list>
/// <para>
/// The PTE checks first run <see cref="PteRunCheck"/> (vectorized) over the table; only when it finds a mismatch are
/// the entries classified one by one to name the reason. Pins, extra references and the swap cache never refuse: the
/// frames stay where they are, so every pin stays valid.
/// </para>
/// </remarks>
public static partial class Collapser
{
    private const ulong Present = 1UL;
    private const ulong Writable = 1UL << 1;
    private const ulong ProtNone = 1UL << 8;
    private const ulong AccessedDirty = (1UL << 5) | (1UL << 6);

    /// <summary>
    /// Collapses the 2 MiB-aligned range containing <paramref name="address"/> in place (see the type's remarks for
    /// the checks). On success the PMD leaf maps the folio (writable only when every subpage was anon-exclusive),
    /// <c>thp_collapse_inplace</c> is counted, and the TLB invalidation is applied to
    /// <see cref="InPlaceCollapseOptions.Tlb"/> or returned in <see cref="CollapseResult.Invalidation"/>; on a refusal
    /// nothing changes and <c>thp_collapse_inplace_failed</c> is counted (not for <see cref="CollapseStatus.PmdMapped"/>).
    /// </summary>
    /// <param name="space">The address space; its write lock and the node lock are taken.</param>
    /// <param name="address">Any address of the range.</param>
    /// <param name="options">The promotion order and an optional TLB; <see cref="InPlaceCollapseOptions.Default"/> when <see langword="null"/>.</param>
    /// <returns>The outcome: <see cref="CollapseStatus.Succeed"/> with <see cref="CollapsePath.InPlace"/>, or the reason.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="space"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><see cref="InPlaceCollapseOptions.Order"/> is not defined.</exception>
    /// <exception cref="ObjectDisposedException"><paramref name="space"/> was disposed.</exception>
    public static CollapseResult TryCollapseInPlace(AddressSpace space, VirtualAddress address, InPlaceCollapseOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(space);
        return Emit(space, TryCollapseInPlaceCore(space, address, options, countOutcome: true), "InPlace");
    }

    // countOutcome false: a re-form's final step, counted as the re-form's outcome instead.
    private static CollapseResult TryCollapseInPlaceCore(AddressSpace space, VirtualAddress address, InPlaceCollapseOptions? options, bool countOutcome)
    {
        ArgumentNullException.ThrowIfNull(space);
        options ??= InPlaceCollapseOptions.Default;
        if ((uint)options.Order > (uint)PromotionOrder.SingleWrite)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(options), options.Order, "A promotion order is BreakBeforeMake or SingleWrite.");
        }

        ulong chunk = address.Value & ~(HugeSize - 1);
        VirtualAddress start = VirtualAddress.FromRaw(chunk);
        using AddressSpace.LockScope locks = space.EnterWrite(andNode: true);
        space.ThrowIfDisposedForCollapse();
        CollapseStatus status = Check(space, address, chunk, out PhysicalAddress pdeSlot, out ulong pde, out Folio folio, out ulong accessedDirty, out bool exclusive);
        if (status != CollapseStatus.Succeed)
        {
            if (status != CollapseStatus.PmdMapped && countOutcome)
            {
                space.Counters.Count(VmEvent.ThpCollapseInPlaceFailed);
            }

            return new CollapseResult(status, start, CollapsePath.None, PhysicalAddress.Zero);
        }

        ulong firstPte = space.ReadPteTable(pde)[0];
        TlbRangeInvalidation invalidation = space.CommitInPlaceCollapse(
            chunk, pdeSlot, pde, folio, firstPte, accessedDirty, exclusive, options.Order == PromotionOrder.BreakBeforeMake, options.Tlb, options.Cpu);
        if (countOutcome)
        {
            space.Counters.Count(VmEvent.ThpCollapseInPlace);
        }

        return new CollapseResult(CollapseStatus.Succeed, start, CollapsePath.InPlace, folio.Address, invalidation);
    }

    private static CollapseStatus Check(
        AddressSpace space, VirtualAddress address, ulong chunk, out PhysicalAddress pdeSlot, out ulong pde, out Folio folio, out ulong accessedDirty, out bool exclusive)
    {
        folio = default;
        accessedDirty = 0;
        exclusive = false;
        pdeSlot = default;
        pde = 0;
        Vma? vma = space.Vmas.Find(address);
        if (vma is null)
        {
            return CollapseStatus.VmaNull;
        }

        if (vma.Start.Value > chunk || vma.End.Value - chunk < HugeSize)
        {
            return CollapseStatus.AddressRange;
        }

        if ((vma.Flags & VmaFlags.Anonymous) == 0 || (vma.Flags & VmaFlags.NoHugePage) != 0)
        {
            return CollapseStatus.VmaCheck;
        }

        if (!space.TryReadPmd(chunk, out pdeSlot, out pde))
        {
            return CollapseStatus.PmdNull;
        }

        if (pde == 0)
        {
            return CollapseStatus.PmdNone;
        }

        if (AddressSpace.IsPmdLeaf(pde))
        {
            return CollapseStatus.PmdMapped;
        }

        if (!AddressSpace.IsPmdTable(pde))
        {
            // check_pmd_state: a PMD that is not present (a PMD migration entry) is SCAN_PMD_NULL.
            return CollapseStatus.PmdNull;
        }

        ReadOnlySpan<ulong> ptes = space.ReadPteTable(pde);
        int mismatch = PteRunCheck.FindFirstMismatch(ptes, out accessedDirty);
        CollapseStatus status = mismatch >= 0 ? Classify(space, ptes) : FolioOfRun(space, ptes[0], out folio);
        return status != CollapseStatus.Succeed ? status : CheckExclusive(folio, ptes[0], out exclusive);
    }

    // The run holds: entry 0 must start an anonymous order-9 folio.
    private static CollapseStatus FolioOfRun(AddressSpace space, ulong first, out Folio folio)
    {
        ulong frame = (first & PageTableEntry.AddressMask4K) >> 12;
        CollapseStatus status = FolioStatus(space, frame, out folio);
        if (status != CollapseStatus.Succeed)
        {
            return status;
        }

        if (folio.Order != Folio.PmdOrder)
        {
            return CollapseStatus.InPlaceMixedFolios;
        }

        return folio.HeadFrame != frame ? CollapseStatus.InPlaceOutOfOrder : CollapseStatus.Succeed;
    }

    private static CollapseStatus FolioStatus(AddressSpace space, ulong frame, out Folio folio)
    {
        if (frame == space.ZeroPage.HeadFrame)
        {
            folio = default;
            return CollapseStatus.InPlaceHole;
        }

        if (!space.Node.TryGetFolio(PhysicalAddress.FromFrameNumber(frame), out folio))
        {
            return CollapseStatus.PageNull;
        }

        return folio.IsAnon ? CollapseStatus.Succeed : CollapseStatus.PageAnon;
    }

    // The slow path: the first entry, in address order, that breaks the run names the reason.
    private static CollapseStatus Classify(AddressSpace space, ReadOnlySpan<ulong> ptes)
    {
        ulong head = 0;
        for (int i = 0; i < PteRunCheck.Entries; i++)
        {
            ulong entry = ptes[i];
            if (entry == 0)
            {
                return CollapseStatus.InPlaceHole;
            }

            if ((entry & Present) == 0)
            {
                return (entry & ProtNone) == 0 && SwapEntry.TryFromPteRaw(entry, out SwapEntry swap, out _) && swap.IsSwap
                    ? CollapseStatus.InPlaceSwapPte
                    : CollapseStatus.PteNonPresent;
            }

            ulong frame = (entry & PageTableEntry.AddressMask4K) >> 12;
            if (i == 0)
            {
                CollapseStatus first = FolioOfRun(space, entry, out Folio folio);
                if (first != CollapseStatus.Succeed)
                {
                    return first;
                }

                head = folio.HeadFrame;
                continue;
            }

            if (frame != head + (ulong)i)
            {
                if (frame >= head && frame < head + PteRunCheck.Entries)
                {
                    return CollapseStatus.InPlaceOutOfOrder;
                }

                CollapseStatus other = FolioStatus(space, frame, out _);
                return other == CollapseStatus.Succeed ? CollapseStatus.InPlaceMixedFolios : other;
            }

            if (((entry ^ ptes[0]) & ~(PageTableEntry.AddressMask4K | AccessedDirty)) != 0)
            {
                return CollapseStatus.InPlaceMixedAttributes;
            }
        }

        // PteRunCheck found a mismatch the classification does not explain: a bug, not a state.
        return CollapseStatus.Fail;
    }

    // David Hildenbrand's rules: all subpages exclusive (and mapped only here) or none (read-only).
    private static CollapseStatus CheckExclusive(Folio folio, ulong first, out bool exclusive)
    {
        int count = folio.CountAnonExclusivePages();

        exclusive = count == PteRunCheck.Entries;
        if (count != 0 && !exclusive)
        {
            return CollapseStatus.InPlaceMixedExclusive;
        }

        if (exclusive)
        {
            return folio.MapCount != PteRunCheck.Entries ? CollapseStatus.InPlaceSharedWithOthers : CollapseStatus.Succeed;
        }

        return (first & Writable) != 0 ? CollapseStatus.InPlaceWritableShared : CollapseStatus.Succeed;
    }
}
