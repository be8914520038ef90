using System;
using System.Collections.Generic;
using ThpCore.Diagnostics;
using ThpCore.Internal;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;

namespace ThpCore.Collapse;

/// <summary>Options of <see cref="Collapser.TryReformInPlace"/>.</summary>
public sealed record ReformOptions
{
    /// <summary>The default: at least 256 of 512 pages in place, the in-place defaults for the final PMD install.</summary>
    public static ReformOptions Default { get; } = new();

    /// <summary>
    /// The fewest PTEs i that must map frame B + i of the target block B (1 to 512; 256, half the range, unless set).
    /// Below it a re-form would move as much as a copy collapse and is refused (<see cref="CollapseStatus.ReformTooFewInPlace"/>).
    /// </summary>
    public int MinInPlace { get; init; } = 256;

    /// <summary>The promotion order, TLB and CPU of the final in-place PMD install; <see cref="InPlaceCollapseOptions.Default"/> when <see langword="null"/>.</summary>
    public InPlaceCollapseOptions? InPlace { get; init; }
}

/// <content>
/// Re-form in place: ThpCore's own operation, with no Linux counterpart (see <c>docs/collapse.md</c>, "Re-form in place").
/// </content>
public static partial class Collapser
{
    /// <summary>
    /// Re-forms the 2 MiB range containing <paramref name="address"/> into a THP in the aligned physical block where
    /// most of its pages already are: the missing and misplaced pages are copied into their frames of that block (its
    /// movable occupants migrated out first), the 512 order-0 pages are joined into one order-9 folio
    /// (<see cref="MemoryNode.TryJoinFolio"/>) and mapped by one PMD where it lies. It succeeds where no free 2 MiB block
    /// exists. ThpCore's own operation: Linux has none (its only anonymous collapse, <c>collapse_huge_page</c>, copies
    /// into a new THP).
    /// </summary>
    /// <remarks>
    /// <para>
    /// The VMA and PMD checks are the in-place collapse's (<see cref="TryCollapseInPlace"/>). A range that is already
    /// one PTE-mapped order-9 folio in order, or that in-place collapse refuses for any reason but a hole or pages of
    /// several folios, is handed to <see cref="TryCollapseInPlace"/> and its result returned (path
    /// <see cref="CollapsePath.InPlace"/>).
    /// </para>
    /// <para>
    /// Otherwise every check runs before anything moves, the first failing one the result: each PTE, in address order —
    /// a swap entry (<see cref="CollapseStatus.InPlaceSwapPte"/>), another non-present entry: migration, PROT_NONE
    /// (<see cref="CollapseStatus.PteNonPresent"/>), no folio (<see cref="CollapseStatus.PageNull"/>), not anonymous
    /// (<see cref="CollapseStatus.PageAnon"/>), part of a large folio (<see cref="CollapseStatus.InPlaceMixedFolios"/>:
    /// run the deferred-split shrinker first), maybe pinned (<see cref="CollapseStatus.ReformPinned"/>), mapped more than
    /// once or not anon-exclusive (<see cref="CollapseStatus.ReformShared"/>), in the swap cache
    /// (<see cref="CollapseStatus.ReformSwapCache"/>), other references (<see cref="CollapseStatus.PageCount"/>),
    /// attributes other than A and D differing (<see cref="CollapseStatus.InPlaceMixedAttributes"/>), lazyfree mixed
    /// with swap-backed (<see cref="CollapseStatus.ReformMixedLazyFree"/>); then the target block B, the aligned block
    /// with the most PTEs i mapping frame B + i (the lowest on a tie), needs <see cref="ReformOptions.MinInPlace"/> of
    /// them (<see cref="CollapseStatus.ReformTooFewInPlace"/>); each frame of B a slot needs is free or a movable
    /// occupant — an order-0 anonymous folio mapped only by one fork family, not maybe pinned, with no references beyond
    /// its mappings and the swap cache, compaction's rule (<see cref="CollapseStatus.ReformBlockOccupied"/>); and the
    /// node has a free frame outside B for each occupant (<see cref="CollapseStatus.ReformNoFreeFrames"/>).
    /// </para>
    /// <para>
    /// A refusal counts <c>thp_collapse_reformed_failed</c> and changes nothing. A step failing after pages began to move
    /// gives <see cref="CollapseStatus.ReformInterrupted"/>: the moves are kept, the range stays PTE-mapped, the books
    /// balance. Success counts <c>thp_collapse_reformed</c> (not <c>thp_collapse_inplace</c>) and one
    /// <c>thp_collapse_reform_migrated</c> per occupant moved; the final in-place install's TLB invalidation is applied to
    /// <see cref="InPlaceCollapseOptions.Tlb"/> or returned, and covers the rewritten PTEs too.
    /// </para>
    /// </remarks>
    /// <param name="space">The address space; its write lock and the node lock are taken.</param>
    /// <param name="address">Any address of the range.</param>
    /// <param name="options">The threshold and the final install's options; <see cref="ReformOptions.Default"/> when <see langword="null"/>.</param>
    /// <returns>The outcome: <see cref="CollapseStatus.Succeed"/> with <see cref="CollapsePath.Reformed"/> (or <see cref="CollapsePath.InPlace"/> when handed over), or the reason.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="space"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><see cref="ReformOptions.MinInPlace"/> is outside 1 to 512.</exception>
    /// <exception cref="ObjectDisposedException"><paramref name="space"/> was disposed.</exception>
    public static CollapseResult TryReformInPlace(AddressSpace space, VirtualAddress address, ReformOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(space);
        options ??= ReformOptions.Default;
        if (options.MinInPlace is < 1 or > PtesPerTable)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(options), options.MinInPlace, $"MinInPlace must be 1 to {PtesPerTable}; {options.MinInPlace} is not.");
        }

        ulong chunk = address.Value & ~(HugeSize - 1);
        using AddressSpace.LockScope locks = space.EnterWrite(andNode: true);
        space.ThrowIfDisposedForCollapse();
        CollapseStatus status = Check(space, address, chunk, out _, out ulong pde, out _, out _, out _);
        if (status is not (CollapseStatus.InPlaceHole or CollapseStatus.InPlaceMixedFolios))
        {
            return TryCollapseInPlace(space, address, options.InPlace);
        }

        CollapseResult result = ReformLocked(space, address, chunk, pde, options);
        space.Counters.Count(result.Status == CollapseStatus.Succeed ? VmEvent.ThpCollapseReformed : VmEvent.ThpCollapseReformedFailed);
        return Emit(space, result, "Reformed");
    }

    private static CollapseResult ReformLocked(AddressSpace space, VirtualAddress address, ulong chunk, ulong pde, ReformOptions options)
    {
        VirtualAddress start = VirtualAddress.FromRaw(chunk);
        ReadOnlySpan<ulong> ptes = space.ReadPteTable(pde);
        CollapseStatus status = CheckReformPtes(space, ptes, options.MinInPlace, out ulong block, out ulong attributes, out bool lazyFree);
        var slots = new List<int>();
        var occupants = new List<(Folio, AddressSpace)>();
        if (status == CollapseStatus.Succeed)
        {
            status = CheckBlock(space, ptes, block, slots, occupants);
        }

        if (status != CollapseStatus.Succeed)
        {
            return Refused(status, start);
        }

        bool filled = space.ReformFillBlockLocked(chunk, block, slots, occupants, attributes, lazyFree, out int migrated);
        space.Counters.Add(VmEvent.ThpCollapseReformMigrated, migrated);
        if (!filled || space.Node.TryJoinFolio(block, out _) != FolioJoinRefusal.None)
        {
            return Refused(CollapseStatus.ReformInterrupted, start);
        }

        CollapseResult placed = TryCollapseInPlaceCore(space, address, options.InPlace, countOutcome: false);
        return placed.Status == CollapseStatus.Succeed
            ? placed with { Path = CollapsePath.Reformed }
            : Refused(CollapseStatus.ReformInterrupted, start);
    }

    // The per-PTE checks and the choice of the target block: the aligned block B where most PTEs i map frame B + i.
    private static CollapseStatus CheckReformPtes(AddressSpace space, ReadOnlySpan<ulong> ptes, int minInPlace, out ulong block, out ulong attributes, out bool lazyFree)
    {
        block = 0;
        attributes = 0;
        lazyFree = false;
        bool first = true;
        ulong zero = space.ZeroPage.HeadFrame;
        var inPlace = new Dictionary<ulong, int>();
        for (int i = 0; i < ptes.Length; i++)
        {
            ulong pte = ptes[i];
            if (pte == 0 || ((pte & Present) != 0 && AddressSpace.PteFrame(pte) == zero))
            {
                continue;
            }

            if ((pte & Present) == 0)
            {
                return (pte & ProtNone) == 0 && SwapEntry.TryFromPteRaw(pte, out SwapEntry swap, out _) && swap.IsSwap
                    ? CollapseStatus.InPlaceSwapPte
                    : CollapseStatus.PteNonPresent;
            }

            ulong frame = AddressSpace.PteFrame(pte);
            CollapseStatus page = CheckReformPage(space, frame);
            if (page != CollapseStatus.Succeed)
            {
                return page;
            }

            Folio folio = space.Node.FolioOf(frame);
            ulong bits = pte & ~(PageTableEntry.AddressMask4K | AccessedDirty);
            if (first)
            {
                attributes = bits;
                lazyFree = !folio.IsSwapBacked;
                first = false;
            }
            else if (bits != attributes)
            {
                return CollapseStatus.InPlaceMixedAttributes;
            }
            else if (lazyFree == folio.IsSwapBacked)
            {
                return CollapseStatus.ReformMixedLazyFree;
            }

            if ((frame & (PtesPerTable - 1)) == (ulong)i)
            {
                inPlace[frame - (ulong)i] = inPlace.GetValueOrDefault(frame - (ulong)i) + 1;
            }
        }

        int best = 0;
        foreach ((ulong candidate, int count) in inPlace)
        {
            if (count > best || (count == best && candidate < block))
            {
                (block, best) = (candidate, count);
            }
        }

        return best >= minInPlace ? CollapseStatus.Succeed : CollapseStatus.ReformTooFewInPlace;
    }

    // A present page of the range: an order-0 anonymous folio mapped by this PTE alone, unpinned, exclusive, not cached.
    private static CollapseStatus CheckReformPage(AddressSpace space, ulong frame)
    {
        CollapseStatus status = FolioStatus(space, frame, out Folio folio);
        if (status != CollapseStatus.Succeed)
        {
            return status;
        }

        if (folio.IsLarge)
        {
            return CollapseStatus.InPlaceMixedFolios;
        }

        if (folio.MaybeDmaPinned)
        {
            return CollapseStatus.ReformPinned;
        }

        if (folio.MapCount != 1 || !folio.IsAnonExclusive(0))
        {
            return CollapseStatus.ReformShared;
        }

        if (folio.IsSwapCache)
        {
            return CollapseStatus.ReformSwapCache;
        }

        return folio.RefCount != folio.MapCount ? CollapseStatus.PageCount : CollapseStatus.Succeed;
    }

    // The frames of block the range still needs: free, or movable occupants to migrate out (compaction's rule).
    private static CollapseStatus CheckBlock(AddressSpace space, ReadOnlySpan<ulong> ptes, ulong block, List<int> slots, List<(Folio, AddressSpace)> occupants)
    {
        MemoryNode node = space.Node;
        if (block + PtesPerTable > node.Frames.FrameCount)
        {
            return CollapseStatus.ReformBlockOccupied;
        }

        Dictionary<ulong, AddressSpace>? owners = null;
        ulong free = 0;
        for (int i = 0; i < PtesPerTable; i++)
        {
            ulong frame = block + (ulong)i;
            ulong pte = ptes[i];
            if ((pte & Present) != 0 && AddressSpace.PteFrame(pte) == frame)
            {
                continue;
            }

            slots.Add(i);
            if ((node.Frames.Describe(frame).Flags & FrameFlags.Free) != 0)
            {
                free++;
                continue;
            }

            if (frame == space.ZeroPage.HeadFrame || !node.TryGetFolio(PhysicalAddress.FromFrameNumber(frame), out Folio occupant)
                || occupant.IsLarge || !occupant.IsAnon || occupant.MaybeDmaPinned
                || !(occupant.IsSwapCache || occupant.RefCount == occupant.MapCount))
            {
                return CollapseStatus.ReformBlockOccupied;
            }

            owners ??= space.MappedFolioOwnersOnNode();
            if (!owners.TryGetValue(frame, out AddressSpace? owner))
            {
                return CollapseStatus.ReformBlockOccupied;
            }

            occupants.Add((occupant, owner));
        }

        return (ulong)occupants.Count > node.Buddy.FreeFrames - free ? CollapseStatus.ReformNoFreeFrames : CollapseStatus.Succeed;
    }
}
