using System;
using ThpCore.Internal;

namespace ThpCore.Memory;

/// <summary>
/// Linux's external-fragmentation figures for a request of one order, as <c>fill_contig_page_info</c>,
/// <c>unusable_free_index</c> and <c>__fragmentation_index</c> in <c>mm/vmstat.c</c> compute them from the free-block
/// counts (<c>/proc/buddyinfo</c>). The two indices are integers in thousandths with Linux's truncating division, so
/// they equal the numbers <c>/sys/kernel/debug/extfrag/unusable_index</c> and <c>extfrag_index</c> print, times 1000.
/// </summary>
/// <param name="Order">The order of the request the figures are for.</param>
/// <param name="FreePages">Free frames: the sum over orders of free blocks times 2^order (<c>info-&gt;free_pages</c>).</param>
/// <param name="FreeBlocksTotal">Free blocks of every order (<c>info-&gt;free_blocks_total</c>).</param>
/// <param name="FreeBlocksSuitable">
/// How many blocks of <paramref name="Order"/> the free blocks of that order and above could supply: the sum over
/// orders <c>o &gt;= Order</c> of free blocks times 2^(o - Order) (<c>info-&gt;free_blocks_suitable</c>).
/// </param>
/// <param name="UnusableFreeIndex">
/// The share of free memory that cannot serve the request, in thousandths (<c>unusable_free_index</c>):
/// <c>(FreePages - (FreeBlocksSuitable &lt;&lt; Order)) * 1000 / FreePages</c>, and 1000 when nothing is free.
/// 0 means no fragmentation, 1000 all free memory unusable.
/// </param>
/// <param name="FragmentationIndex">
/// Why a request of <paramref name="Order"/> would fail, in thousandths (<c>__fragmentation_index</c>): -1000 when a
/// suitable block is free (the request would not fail); 0 when nothing is free; otherwise
/// <c>1000 - (1000 + FreePages * 1000 / 2^Order) / FreeBlocksTotal</c>, towards 0 for lack of memory and towards
/// 1000 for fragmentation. With few free blocks the formula goes below 0 (one free frame and an order-1 request give
/// -500), as it does in Linux. Linux's compaction passes over a zone whose index is from 0 to
/// <c>vm.extfrag_threshold</c> (default 500): reclaim, not compaction, is what such a request needs.
/// </param>
public readonly record struct FragmentationFigures(
    int Order,
    ulong FreePages,
    long FreeBlocksTotal,
    long FreeBlocksSuitable,
    int UnusableFreeIndex,
    int FragmentationIndex)
{
    /// <summary><see cref="UnusableFreeIndex"/> as a fraction from 0 to 1.</summary>
    public double UnusableFreeIndexValue => UnusableFreeIndex / 1000.0;

    /// <summary><see cref="FragmentationIndex"/> as a fraction: -1 when a suitable block is free, otherwise at most 1.</summary>
    public double FragmentationIndexValue => FragmentationIndex / 1000.0;

    /// <summary>
    /// Linux's figures for a request of <paramref name="order"/> from the number of free blocks of each order
    /// (<c>fill_contig_page_info</c> followed by <c>unusable_free_index</c> and <c>__fragmentation_index</c>).
    /// </summary>
    /// <param name="order">The request's order, 0 to <see cref="BuddyAllocator.MaxOrder"/>.</param>
    /// <param name="freeBlocks">Free blocks per order, indexed by order; at most <see cref="BuddyAllocator.MaxOrder"/> + 1 entries.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="order"/> is outside 0 to <see cref="BuddyAllocator.MaxOrder"/>.</exception>
    /// <exception cref="ArgumentException"><paramref name="freeBlocks"/> has too many entries or a negative one.</exception>
    public static FragmentationFigures Compute(int order, ReadOnlySpan<long> freeBlocks)
    {
        BuddyAllocator.CheckOrder(order, nameof(order));
        if (freeBlocks.Length > BuddyAllocator.MaxOrder + 1)
        {
            ThrowHelper.ThrowArgument(nameof(freeBlocks), $"There are {BuddyAllocator.MaxOrder + 1} orders; {freeBlocks.Length} counts were given.");
        }

        // fill_contig_page_info
        ulong freePages = 0;
        long total = 0;
        long suitable = 0;
        for (int o = 0; o < freeBlocks.Length; o++)
        {
            long blocks = freeBlocks[o];
            if (blocks < 0)
            {
                ThrowHelper.ThrowArgument(nameof(freeBlocks), $"The count of free blocks of order {o} is negative ({blocks}).");
            }

            total += blocks;
            freePages += (ulong)blocks << o;
            if (o >= order)
            {
                suitable += blocks << (o - order);
            }
        }

        // unusable_free_index: no free memory counts as all free memory unusable.
        int unusable = freePages == 0
            ? 1000
            : (int)((freePages - ((ulong)suitable << order)) * 1000 / freePages);

        // __fragmentation_index
        int fragmentation;
        if (total == 0)
        {
            fragmentation = 0;
        }
        else if (suitable != 0)
        {
            fragmentation = -1000;
        }
        else
        {
            ulong requested = 1UL << order;
            fragmentation = 1000 - (int)((1000 + (freePages * 1000 / requested)) / (ulong)total);
        }

        return new FragmentationFigures(order, freePages, total, suitable, unusable, fragmentation);
    }
}
