using System;
using System.Collections.Generic;
using System.Globalization;
using ThpCore.Internal;
using ThpCore.Paging;

namespace ThpCore.Inspection;

/// <summary>
/// Finds THP facts in a set of page tables: how many leaves of each size, which 2 MiB ranges are PMD-mapped, which
/// PTE-mapped ranges could be collapsed in place, and which would need only a few pages moved first.
/// </summary>
/// <remarks>
/// <para>The tables are enumerated with <see cref="PageTableEnumerator"/> (same walk rules, limits and anomalies).
/// Every 2 MiB-aligned range mapped by a 2 MiB leaf is <see cref="CollapseVerdict.PmdMapped"/>. For every valid
/// PDE that references a page table, the 512 PTEs are judged in this order:</para>
/// <list type="number">
/// <item>Presence: fewer than 512 − <see cref="ThpAnalysisOptions.MaxMoves"/> present → not a candidate ("only 37
/// of 512 PTEs present"). A PTE with reserved bits counts as absent (the CPU faults on it).</item>
/// <item>Attributes: every present PTE must equal the majority in everything but the frame, A and D: R/W, U/S,
/// XD, PWT, PCD, PAT, G, the protection key and the software bits. A difference means the range is not one
/// uniform mapping, which moving pages cannot fix → not a candidate, naming the first differing PTE ("attributes
/// differ: PTE 17 read-only while PTE 0 writable").</item>
/// <item>Frames: the 2 MiB-aligned block B that most present PTEs i map in place (frame = B + i × 4 KiB) is chosen.
/// All 512 in place → <see cref="CollapseVerdict.CollapsibleInPlace"/>; otherwise with 1 to
/// <see cref="ThpAnalysisOptions.MaxMoves"/> pages missing or misplaced → <see cref="CollapseVerdict.ReformableInPlace"/>;
/// otherwise not a candidate ("frames not contiguous: best aligned run has 12 of 512 in place").</item>
/// </list>
/// <para>Only the page tables are looked at. Whether the frames belong to one order-9 folio, are anonymous,
/// pinned, exclusive or shared, and whether the range lies in one VMA, are kernel facts an image does not
/// reveal through its tables; a verdict is therefore a necessary condition for collapse, not a sufficient one.</para>
/// </remarks>
public static class ThpAnalyzer
{
    private const int Entries = 512;
    private const ulong P = 1UL << 0;
    private const ulong RW = 1UL << 1;
    private const ulong US = 1UL << 2;
    private const ulong PWT = 1UL << 3;
    private const ulong PCD = 1UL << 4;
    private const ulong A = 1UL << 5;
    private const ulong D = 1UL << 6;
    private const ulong Pat = 1UL << 7;
    private const ulong G = 1UL << 8;
    private const ulong XD = 1UL << 63;
    private const ulong Block2M = (1UL << 21) - 1;

    /// <summary>Everything a PTE's attributes are compared on: all bits but the frame (51:12), A and D.</summary>
    private const ulong AttributeMask = ~(PageTableEntry.AddressMask4K | A | D);

    /// <summary>Enumerates the tables of <paramref name="cpu"/> in <paramref name="memory"/> and judges every 2 MiB range.</summary>
    /// <param name="memory">Physical memory holding the tables.</param>
    /// <param name="cpu">CR3, paging mode and the features that decide reserved bits.</param>
    /// <param name="options">The re-form limit; <see langword="null"/> for the defaults.</param>
    /// <param name="enumeration">Enumeration limits, progress and cancellation; <see langword="null"/> for the defaults.</param>
    /// <exception cref="ArgumentNullException"><paramref name="memory"/> or <paramref name="cpu"/> is null.</exception>
    /// <exception cref="OperationCanceledException">The enumeration's cancellation token was cancelled.</exception>
    public static ThpReport Analyze(IPhysicalMemory memory, CpuState cpu, ThpAnalysisOptions? options = null, EnumerationOptions? enumeration = null)
    {
        ArgumentNullException.ThrowIfNull(memory);
        ArgumentNullException.ThrowIfNull(cpu);
        int maxMoves = (options ?? new ThpAnalysisOptions()).MaxMoves;
        var enumerator = new PageTableEnumerator(memory, cpu, enumeration);
        var ranges = new List<RangeVerdict>();
        long leaves4K = 0;
        long leaves2M = 0;
        long leaves1G = 0;

        var ptes = new ulong[Entries];
        bool open = false;
        ulong openStart = 0;
        VirtualAddress openAddress = default;

        foreach (WalkItem item in enumerator.Walk())
        {
            Mapping mapping = item.Mapping;
            if (item.IsPageTable)
            {
                Close();
                Open(mapping.Address);
                continue;
            }

            switch (mapping.Size)
            {
                case PageSize.Size4K:
                    leaves4K++;
                    if (!open || (mapping.Address.Value & ~Block2M) != openStart)
                    {
                        // Cannot happen: the walk announces every page table before its leaves.
                        Close();
                        Open(mapping.Address.AlignDown(PageSize.Size2M));
                    }

                    ptes[(int)((mapping.Address.Value >> 12) & 0x1FF)] = mapping.Leaf.Raw;
                    break;
                case PageSize.Size2M:
                    leaves2M++;
                    Close();
                    ranges.Add(new RangeVerdict(mapping.Address, CollapseVerdict.PmdMapped, 0, 0, 0, mapping.Frame, $"mapped by a 2 MiB leaf (PDE) at {mapping.Frame}"));
                    break;
                default:
                    leaves1G++;
                    Close();
                    break;
            }
        }

        // A limit that stopped the walk inside a page table leaves that table's range half read.
        if (open && enumerator.Stopped && enumerator.Anomalies[^1].Level == PagingLevel.Pt)
        {
            ranges.Add(new RangeVerdict(openAddress, CollapseVerdict.NotCandidate, 0, 0, 0, null, "not analysed: the enumeration stopped inside this range"));
            open = false;
        }

        Close();
        return new ThpReport(leaves4K, leaves2M, leaves1G, ranges, enumerator.Anomalies, enumerator.Stopped, enumerator.EntriesRead);

        void Open(VirtualAddress start)
        {
            Array.Clear(ptes);
            open = true;
            openAddress = start;
            openStart = start.Value;
        }

        void Close()
        {
            if (open)
            {
                ranges.Add(Judge(openAddress, ptes, maxMoves));
                open = false;
            }
        }
    }

    /// <summary>The verdict on one page table's 512 PTEs (0 where absent), as described in the class remarks.</summary>
    internal static RangeVerdict Judge(VirtualAddress start, ReadOnlySpan<ulong> ptes, int maxMoves)
    {
        Span<ulong> keys = stackalloc ulong[Entries];
        int present = 0;
        for (int i = 0; i < Entries; i++)
        {
            if ((ptes[i] & P) != 0)
            {
                keys[present++] = ptes[i] & AttributeMask;
            }
        }

        keys = keys[..present];
        keys.Sort();
        (ulong majority, int majorityCount) = Majority(ptes, keys);
        (int inPlace, ulong? block) = BestBlock(ptes, majority);
        int moves = Entries - inPlace;
        PhysicalAddress? baseAddress = block is ulong b ? PhysicalAddress.CreateTruncate(b) : null;
        RangeVerdict Verdict(CollapseVerdict verdict, string reason) => new(start, verdict, present, inPlace, moves, baseAddress, reason);

        if (Entries - present > maxMoves)
        {
            return Verdict(
                CollapseVerdict.NotCandidate,
                present == 0
                    ? "no PTE present (an empty page table)"
                    : Invariant($"only {present} of 512 PTEs present (re-forming would fill {Entries - present} pages; the limit is {maxMoves})"));
        }

        if (majorityCount != present)
        {
            return Verdict(CollapseVerdict.NotCandidate, "attributes differ: " + DescribeAttributeDifference(ptes, majority, present - majorityCount, present));
        }

        if (inPlace == Entries)
        {
            return Verdict(CollapseVerdict.CollapsibleInPlace, $"all 512 PTEs map the 2 MiB block at {baseAddress} in order with equal attributes");
        }

        int holes = Entries - present;
        int misplaced = present - inPlace;
        if (moves <= maxMoves)
        {
            return Verdict(
                CollapseVerdict.ReformableInPlace,
                Invariant($"{inPlace} of 512 PTEs in place in the 2 MiB block at {baseAddress}; re-forming needs {moves} moves ({holes} missing, {misplaced} misplaced)"));
        }

        return Verdict(
            CollapseVerdict.NotCandidate,
            block is null
                ? "frames not contiguous: no present PTE maps its own slot of a 2 MiB-aligned block"
                : Invariant($"frames not contiguous: best aligned run has {inPlace} of 512 in place (at {baseAddress}); re-forming would need {moves} moves, the limit is {maxMoves}"));
    }

    /// <summary>
    /// The attributes most present PTEs share and how many share them; on a tie, those of the lowest-numbered PTE.
    /// <paramref name="sortedKeys"/> holds the attributes of every present PTE, sorted.
    /// </summary>
    private static (ulong Key, int Count) Majority(ReadOnlySpan<ulong> ptes, ReadOnlySpan<ulong> sortedKeys)
    {
        if (sortedKeys.IsEmpty)
        {
            return (0, 0);
        }

        if (sortedKeys[0] == sortedKeys[^1])
        {
            return (sortedKeys[0], sortedKeys.Length);
        }

        ulong majority = 0;
        int majorityCount = 0;
        for (int i = 0; i < Entries; i++)
        {
            if ((ptes[i] & P) == 0)
            {
                continue;
            }

            ulong key = ptes[i] & AttributeMask;
            int count = Count(sortedKeys, key);
            if (count > majorityCount)
            {
                majority = key;
                majorityCount = count;
            }
        }

        return (majority, majorityCount);
    }

    /// <summary>
    /// The 2 MiB-aligned block that most present PTEs with the <paramref name="majority"/> attributes map in place,
    /// and how many do (the lowest block on a tie); no block if none does.
    /// </summary>
    private static (int Count, ulong? Block) BestBlock(ReadOnlySpan<ulong> ptes, ulong majority)
    {
        Span<ulong> blocks = stackalloc ulong[Entries];
        int n = 0;
        for (int i = 0; i < Entries; i++)
        {
            ulong pte = ptes[i];
            ulong frame = pte & PageTableEntry.AddressMask4K;
            ulong offset = (ulong)i << 12;
            if ((pte & P) != 0 && (pte & AttributeMask) == majority && frame >= offset && ((frame - offset) & Block2M) == 0)
            {
                blocks[n++] = frame - offset;
            }
        }

        blocks = blocks[..n];
        blocks.Sort();
        int bestCount = 0;
        ulong? best = null;
        for (int i = 0; i < n;)
        {
            int j = i + 1;
            while (j < n && blocks[j] == blocks[i])
            {
                j++;
            }

            if (j - i > bestCount)
            {
                bestCount = j - i;
                best = blocks[i];
            }

            i = j;
        }

        return (bestCount, best);
    }

    /// <summary>Names the first present PTE whose attributes differ from the majority, against the first that has them.</summary>
    private static string DescribeAttributeDifference(ReadOnlySpan<ulong> ptes, ulong majority, int differing, int present)
    {
        int odd = -1;
        int reference = -1;
        for (int i = 0; i < Entries && (odd < 0 || reference < 0); i++)
        {
            if ((ptes[i] & P) == 0)
            {
                continue;
            }

            if ((ptes[i] & AttributeMask) == majority)
            {
                reference = reference < 0 ? i : reference;
            }
            else
            {
                odd = odd < 0 ? i : odd;
            }
        }

        (string oddText, string referenceText) = DescribeDifference(ptes[odd], ptes[reference]);
        return Invariant($"PTE {odd} {oddText} while PTE {reference} {referenceText} ({differing} of {present} present PTEs differ from the majority)");
    }

    private static int Count(ReadOnlySpan<ulong> sorted, ulong key)
    {
        int first = sorted.BinarySearch(key);
        int lo = first;
        while (lo > 0 && sorted[lo - 1] == key)
        {
            lo--;
        }

        int hi = first;
        while (hi + 1 < sorted.Length && sorted[hi + 1] == key)
        {
            hi++;
        }

        return hi - lo + 1;
    }

    /// <summary>Words for the first attribute in which two PTEs differ, most significant for a mapping first.</summary>
    private static (string, string) DescribeDifference(ulong a, ulong b)
    {
        ulong diff = (a ^ b) & AttributeMask;
        if ((diff & RW) != 0)
        {
            return (Writable(a), Writable(b));
        }

        if ((diff & US) != 0)
        {
            return (User(a), User(b));
        }

        if ((diff & XD) != 0)
        {
            return (Execute(a), Execute(b));
        }

        if ((diff & (PWT | PCD | Pat)) != 0)
        {
            return (MemoryType(a), MemoryType(b));
        }

        if ((diff & G) != 0)
        {
            return (Global(a), Global(b));
        }

        if ((diff & PageTableEntry.ProtectionKeyMask) != 0)
        {
            return (Key(a), Key(b));
        }

        if ((diff & PageTableEntry.LeafAvailableMask) != 0)
        {
            return (Software(a), Software(b));
        }

        return ("has bits " + ThrowHelper.Hex(a & AttributeMask), "has " + ThrowHelper.Hex(b & AttributeMask));

        static string Writable(ulong pte) => (pte & RW) != 0 ? "writable" : "read-only";
        static string User(ulong pte) => (pte & US) != 0 ? "user" : "supervisor-only";
        static string Execute(ulong pte) => (pte & XD) != 0 ? "no-execute" : "executable";
        static string Global(ulong pte) => (pte & G) != 0 ? "global" : "not global";
        static string MemoryType(ulong pte) => Invariant($"uses PAT entry {((pte & Pat) != 0 ? 4 : 0) + ((pte & PCD) != 0 ? 2 : 0) + ((pte & PWT) != 0 ? 1 : 0)}");
        static string Key(ulong pte) => Invariant($"has protection key {(pte & PageTableEntry.ProtectionKeyMask) >> 59}");
        static string Software(ulong pte) => "has software bits " + ThrowHelper.Hex(pte & PageTableEntry.LeafAvailableMask);
    }

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
