using System;
using System.Collections.Generic;
using ThpCore.Diagnostics;
using ThpCore.Internal;
using ThpCore.Memory;

namespace ThpCore.Mm;

/// <summary>How a compaction run ended (the subset of Linux's <c>enum compact_result</c> the model can reach).</summary>
public enum CompactionStatus : byte
{
    /// <summary>
    /// Not run: too few free frames for migration targets (<c>COMPACT_SKIPPED</c>; Linux's
    /// <c>__compaction_suitable</c> wants the order-0 watermark plus <c>compact_gap(order)</c> = 2^(order+1) free pages;
    /// the model has no watermarks and asks only for the gap).
    /// </summary>
    Skipped,

    /// <summary>A free block of the requested order exists (<c>COMPACT_SUCCESS</c>), possibly before anything moved.</summary>
    Success,

    /// <summary>The migrate and free scanners met (<c>COMPACT_COMPLETE</c>); for a requested order, no such free block was made.</summary>
    Complete,
}

/// <summary>What one compaction run did.</summary>
/// <param name="Status">How it ended.</param>
/// <param name="BlocksScanned">Pageblocks (2 MiB) the migrate scanner looked at (Linux counts pages in <c>compact_migrate_scanned</c>).</param>
/// <param name="PagesMigrated">Pages moved (each also counted in <c>pgmigrate_success</c> of the address space that maps it).</param>
/// <param name="MigrationFailures">Pages whose migration was refused after they were chosen.</param>
/// <param name="FreePagesIsolated">Free pages the free scanner took as migration targets (<c>compact_isolated</c> counts these and the migrated ones).</param>
public readonly record struct CompactionResult(CompactionStatus Status, int BlocksScanned, int PagesMigrated, int MigrationFailures, int FreePagesIsolated);

/// <summary>
/// Memory compaction over one <see cref="MemoryNode"/> (Linux <c>mm/compaction.c</c>, <c>compact_zone</c>): a
/// migrate scanner walks 2 MiB pageblocks up from the bottom and migrates the anonymous 4 KiB folios it finds into free
/// pages that a free scanner takes from the top, until a free block of the requested order exists or the scanners
/// meet. Used by the fault handler's direct compaction (<see cref="ThpSettings.Defrag"/>) and by hosts, like writing
/// to <c>/proc/sys/vm/compact_memory</c>.
/// </summary>
/// <remarks>
/// <para>
/// Movable: an anonymous order-0 folio mapped only by address spaces of one fork family on this node, neither maybe
/// DMA-pinned nor holding references beyond its mappings and the swap cache (Linux's
/// <c>isolate_migratepages_block</c> skips a page whose reference count exceeds its map count). Unmovable: page tables,
/// zero pages, reserved frames, pinned or otherwise referenced folios (a swap-cache folio is taken, and migration
/// checks its references). A THP's pageblock is skipped whole (Linux skips compound pages of pageblock order). The free
/// scanner never takes a page from a free block of the requested order or larger (pageblock order for a full run:
/// <c>suitable_migration_target</c> since v6.9) nor from a pageblock at or below the migrate scanner.
/// </para>
/// <para>
/// Simplified: no zones, migrate types, watermarks, skip hints, deferral (<c>defer_compaction</c>), priorities or
/// async/sync modes. A run for an order (direct compaction, kcompactd) behaves as asynchronous direct compaction's
/// <c>skip_on_failure</c>: a pageblock holding an unmovable page is left before anything in it moves, so no page is
/// migrated without a chance of freeing its block. A full run (<c>order</c> −1, <c>compact_memory</c>) moves every
/// movable page it reaches. Folios larger than order 0 and smaller than 9 do not exist in the model.
/// </para>
/// </remarks>
public static class Compaction
{
    /// <summary>The pageblock order on x86-64 with THP (<c>pageblock_order</c> = <c>HPAGE_PMD_ORDER</c>).</summary>
    public const int PageblockOrder = 9;

    private const ulong PageblockFrames = 1UL << PageblockOrder;

    /// <summary>
    /// Compacts <paramref name="node"/>: with <paramref name="order"/> −1 the whole node (<c>compact_node</c> from
    /// <c>/proc/sys/vm/compact_memory</c>, never skipped), otherwise until a free block of 2^<paramref name="order"/>
    /// frames exists.
    /// </summary>
    /// <param name="node">The node; its address spaces are found through their fork families.</param>
    /// <param name="order">−1, or 1 to <see cref="BuddyAllocator.MaxOrder"/>.</param>
    /// <returns>What the run did.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="node"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="order"/> is not −1 or 1 to <see cref="BuddyAllocator.MaxOrder"/>.</exception>
    public static CompactionResult Compact(MemoryNode node, int order = -1)
    {
        ArgumentNullException.ThrowIfNull(node);
        if (order != -1 && (order < 1 || order > BuddyAllocator.MaxOrder))
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(order), order, $"Compaction runs for an order of 1 to {BuddyAllocator.MaxOrder}, or −1 for the whole node; {order} is neither.");
        }

        // The node lock stands for the page-table locks of every address space it rewrites (no mmap lock, as in Linux).
        lock (node.SyncRoot)
        {
            return Run(node, order);
        }
    }

    /// <summary>
    /// Direct compaction for an allocation of <paramref name="order"/> that just failed
    /// (<c>__alloc_pages_direct_compact</c>): counts <c>compact_stall</c> unless skipped, then
    /// <c>compact_success</c> or <c>compact_fail</c> by whether a block of the order is now free.
    /// </summary>
    internal static bool TryDirect(MemoryNode node, int order, VmEventCounters counters)
    {
        CompactionResult result = Run(node, order);
        if (result.Status == CompactionStatus.Skipped)
        {
            return false;
        }

        counters.Count(VmEvent.CompactStall);
        bool success = HasFreeBlock(node, order);
        counters.Count(success ? VmEvent.CompactSuccess : VmEvent.CompactFail);
        return success;
    }

    private static bool HasFreeBlock(MemoryNode node, int order)
    {
        for (int o = order; o <= BuddyAllocator.MaxOrder; o++)
        {
            if (node.Buddy.FreeBlocks(o) > 0)
            {
                return true;
            }
        }

        return false;
    }

    private static CompactionResult Run(MemoryNode node, int order)
    {
        if (order >= 0)
        {
            if (HasFreeBlock(node, order))
            {
                return new CompactionResult(CompactionStatus.Success, 0, 0, 0, 0);
            }

            if (node.Buddy.FreeFrames < 2UL << order)
            {
                return new CompactionResult(CompactionStatus.Skipped, 0, 0, 0, 0);
            }
        }

        Dictionary<ulong, AddressSpace> owners = MappedFolioOwners(node);
        // suitable_migration_target (v6.9+): a free page in a buddy block of at least cc->order (pageblock_order for a
        // full run) is what compaction is making, not a target.
        var scan = new FreeScanner(node, order > 0 ? order : PageblockOrder);
        int blocks = 0;
        int migrated = 0;
        int failures = 0;
        ulong blockCount = node.Frames.FrameCount / PageblockFrames;
        var movable = new List<Folio>();
        for (ulong block = 0; block < blockCount && block < scan.Block; block++)
        {
            blocks++;
            movable.Clear();
            if (!ClassifyBlock(node, block, owners, movable, out bool allMovable) || (order >= 0 && !allMovable))
            {
                continue;
            }

            foreach (Folio folio in movable)
            {
                if (!scan.TryTake(block, out Folio destination))
                {
                    break;
                }

                if (owners[folio.HeadFrame].MigrateForCompaction(folio, destination))
                {
                    migrated++;
                }
                else
                {
                    failures++;
                }
            }

            if (order >= 0 && HasFreeBlock(node, order))
            {
                return new CompactionResult(CompactionStatus.Success, blocks, migrated, failures, scan.Isolated);
            }
        }

        return new CompactionResult(order >= 0 && HasFreeBlock(node, order) ? CompactionStatus.Success : CompactionStatus.Complete, blocks, migrated, failures, scan.Isolated);
    }

    // isolate_migratepages_block: the block's movable folios in address order; false when there is nothing to move
    // (wholly free, or a THP). allMovable: no page of the block is unmovable.
    private static bool ClassifyBlock(MemoryNode node, ulong block, Dictionary<ulong, AddressSpace> owners, List<Folio> movable, out bool allMovable)
    {
        allMovable = true;
        ulong first = block * PageblockFrames;
        for (ulong frame = first; frame < first + PageblockFrames; frame++)
        {
            FrameInfo info = node.Frames.Describe(frame);
            if ((info.Flags & FrameFlags.Free) != 0)
            {
                continue;
            }

            if ((info.Flags & (FrameFlags.PageTable | FrameFlags.Reserved)) != 0 || !node.TryGetFolio(ThpCore.Paging.PhysicalAddress.FromFrameNumber(frame), out Folio folio))
            {
                allMovable = false;
                continue;
            }

            if (folio.Order >= PageblockOrder)
            {
                return false;
            }

            // isolate_migratepages_block: an anonymous folio without a mapping (not in the swap cache) holding references
            // beyond its mappings is skipped; a swap-cache folio is isolated and its references checked by migration.
            if (folio.Order == 0 && folio.IsAnon && owners.ContainsKey(folio.HeadFrame) && !folio.MaybeDmaPinned
                && (folio.IsSwapCache || folio.RefCount == folio.MapCount))
            {
                movable.Add(folio);
            }
            else
            {
                allMovable = false;
            }
        }

        return movable.Count > 0;
    }

    // Which address space (of which family) maps each mapped anonymous folio: the walk that stands in for following
    // folio->mapping to its anon_vma. A folio mapped by two families (impossible for private anonymous memory) keeps the first.
    internal static Dictionary<ulong, AddressSpace> MappedFolioOwners(MemoryNode node)
    {
        var owners = new Dictionary<ulong, AddressSpace>();
        foreach (AnonFamily family in AnonFamily.OnNode(node))
        {
            AddressSpace[] members = family.Members();
            if (members.Length == 0)
            {
                continue;
            }

            foreach (AddressSpace member in members)
            {
                member.CollectMappedHeads(members[0], owners);
            }
        }

        return owners;
    }

    // isolate_freepages: free pages from the top pageblock down, never from a wholly free pageblock, never at or
    // below the migrate scanner's block.
    private sealed class FreeScanner
    {
        private readonly MemoryNode _node;
        private ulong _frame;

        private readonly int _keepOrder;

        public FreeScanner(MemoryNode node, int keepOrder)
        {
            _node = node;
            _keepOrder = keepOrder;
            _frame = node.Frames.FrameCount / PageblockFrames * PageblockFrames;
            Block = _frame / PageblockFrames;
        }

        // The pageblock the free scanner is in (one past the last until it starts).
        public ulong Block { get; private set; }

        public int Isolated { get; private set; }

        public bool TryTake(ulong migrateBlock, out Folio destination)
        {
            while (_frame > (migrateBlock + 1) * PageblockFrames)
            {
                ulong frame = _frame - 1;
                Block = frame / PageblockFrames;
                FrameInfo info = _node.Frames.Describe(frame);
                if ((info.Flags & FrameFlags.Free) != 0 && _node.Frames.Describe(info.HeadFrame).Order >= _keepOrder)
                {
                    // A free block of the order being made is skipped whole.
                    _frame = info.HeadFrame;
                    Block = _frame / PageblockFrames;
                    continue;
                }

                _frame--;
                if ((info.Flags & FrameFlags.Free) != 0 && _node.TryAllocateFolioAt(frame, 0, out destination))
                {
                    Isolated++;
                    return true;
                }
            }

            Block = migrateBlock;
            destination = default;
            return false;
        }
    }
}
