using System;
using System.Collections.Generic;
using ThpCore.Internal;
using ThpCore.Paging;

namespace ThpCore.Inspection;

/// <summary>What <see cref="ThpAnalyzer"/> concludes about one 2 MiB-aligned virtual range.</summary>
public enum CollapseVerdict
{
    /// <summary>Mapped by one 2 MiB leaf (a PDE with PS = 1; Linux: a PMD-mapped THP).</summary>
    PmdMapped,

    /// <summary>
    /// A page table whose 512 PTEs are all present, map frames B, B + 4 KiB, … B + 511 × 4 KiB of one 2 MiB-aligned
    /// physical block B in order, and agree on every attribute except A and D: one PDE could replace the table
    /// without moving a byte (a PTE-mapped THP that collapses in place).
    /// </summary>
    CollapsibleInPlace,

    /// <summary>
    /// Not collapsible as it is, but all present PTEs agree on their attributes and, for the best 2 MiB-aligned
    /// block B, between 1 and <see cref="ThpAnalysisOptions.MaxMoves"/> of the 512 pages are missing or sit in the
    /// wrong frame: filling and migrating only those would re-form the THP in place.
    /// </summary>
    ReformableInPlace,

    /// <summary>Neither; <see cref="RangeVerdict.Reason"/> says why.</summary>
    NotCandidate,
}

/// <summary>The verdict on one 2 MiB-aligned virtual range that is mapped by a page table or by a 2 MiB leaf.</summary>
/// <param name="Start">The canonical virtual address of the range.</param>
/// <param name="Verdict">The conclusion.</param>
/// <param name="PresentPtes">Present, valid PTEs in the page table (0 for a 2 MiB leaf, which has none). PTEs with reserved bits are not counted: the CPU faults on them.</param>
/// <param name="InPlace">Present PTEs i whose frame is <paramref name="Base"/> + i × 4 KiB (0 for a 2 MiB leaf).</param>
/// <param name="Moves">512 − <paramref name="InPlace"/> for a page table: the pages to fill or migrate to re-form the THP at <paramref name="Base"/> (0 for a 2 MiB leaf).</param>
/// <param name="Base">
/// The 2 MiB-aligned physical block: the 2 MiB leaf's frame, or for a page table the block that most present PTEs
/// map in place (the lowest such block on a tie); <see langword="null"/> when no present PTE maps its own slot of
/// any aligned block.
/// </param>
/// <param name="Reason">Why, in a sentence fragment such as "only 37 of 512 PTEs present".</param>
public readonly record struct RangeVerdict(VirtualAddress Start, CollapseVerdict Verdict, int PresentPtes, int InPlace, int Moves, PhysicalAddress? Base, string Reason);

/// <summary>Options of <see cref="ThpAnalyzer"/>.</summary>
public sealed record ThpAnalysisOptions
{
    private readonly int _maxMoves = 64;

    /// <summary>
    /// The most pages a re-form in place may fill or migrate for a range to count as
    /// <see cref="CollapseVerdict.ReformableInPlace"/>; 0 to 511, default 64.
    /// </summary>
    /// <remarks>
    /// 64 is khugepaged's default <c>max_ptes_swap</c> (HPAGE_PMD_NR / 8): the number of pages Linux is willing to
    /// bring back one by one for a single collapse. It also matches the case that motivates re-forming (an
    /// allocator that sub-released "some tens" of 4 KiB pages of a THP with MADV_DONTNEED), and bounds the copy to
    /// 256 KiB, an eighth of what a copy collapse moves.
    /// </remarks>
    /// <exception cref="ArgumentOutOfRangeException">Outside 0..511.</exception>
    public int MaxMoves
    {
        get => _maxMoves;
        init
        {
            if ((uint)value > 511)
            {
                ThrowHelper.ThrowArgumentOutOfRange(nameof(MaxMoves), value, "MaxMoves is 0 to 511 (at least one of the 512 pages must already be in place).");
            }

            _maxMoves = value;
        }
    }
}

/// <summary>What <see cref="ThpAnalyzer.Analyze"/> found: leaves by size, and a verdict per 2 MiB range.</summary>
public sealed class ThpReport
{
    internal ThpReport(long leaves4K, long leaves2M, long leaves1G, IReadOnlyList<RangeVerdict> ranges, IReadOnlyList<Anomaly> anomalies, bool stopped, long entriesRead)
    {
        Leaves4K = leaves4K;
        Leaves2M = leaves2M;
        Leaves1G = leaves1G;
        Ranges = ranges;
        Anomalies = anomalies;
        Stopped = stopped;
        EntriesRead = entriesRead;
        foreach (RangeVerdict range in ranges)
        {
            switch (range.Verdict)
            {
                case CollapseVerdict.PmdMapped:
                    PmdMapped++;
                    break;
                case CollapseVerdict.CollapsibleInPlace:
                    CollapsibleInPlace++;
                    break;
                case CollapseVerdict.ReformableInPlace:
                    ReformableInPlace++;
                    break;
                default:
                    NotCandidate++;
                    break;
            }
        }
    }

    /// <summary>4 KiB leaves (present, valid PTEs) over all paths.</summary>
    public long Leaves4K { get; }

    /// <summary>2 MiB leaves.</summary>
    public long Leaves2M { get; }

    /// <summary>1 GiB leaves.</summary>
    public long Leaves1G { get; }

    /// <summary>
    /// One verdict per 2 MiB-aligned virtual range mapped by a page table (a valid PDE referencing a readable PT,
    /// even one with no present PTE) or by a 2 MiB leaf, in enumeration order. 1 GiB leaves have none; a PDE whose
    /// PT lies outside memory has none either (it is an <see cref="AnomalyKind.EntryOutsideMemory"/> anomaly).
    /// </summary>
    public IReadOnlyList<RangeVerdict> Ranges { get; }

    /// <summary>Ranges mapped by a 2 MiB leaf.</summary>
    public int PmdMapped { get; }

    /// <summary>Ranges whose page table could be replaced by one PDE without moving anything.</summary>
    public int CollapsibleInPlace { get; }

    /// <summary>Ranges that filling or migrating at most <see cref="ThpAnalysisOptions.MaxMoves"/> pages would make collapsible.</summary>
    public int ReformableInPlace { get; }

    /// <summary>Ranges that are neither.</summary>
    public int NotCandidate { get; }

    /// <summary>The enumeration's anomalies (see <see cref="PageTableEnumerator.Anomalies"/>).</summary>
    public IReadOnlyList<Anomaly> Anomalies { get; }

    /// <summary>Whether a limit stopped the enumeration, so that the report covers only part of the tables.</summary>
    public bool Stopped { get; }

    /// <summary>Paging-structure entries read.</summary>
    public long EntriesRead { get; }
}
