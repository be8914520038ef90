using System;
using System.Threading;
using ThpCore.Internal;
using ThpCore.Paging;

namespace ThpCore.Inspection;

/// <summary>Limits, progress reporting and cancellation for <see cref="PageTableEnumerator"/>.</summary>
/// <remarks>
/// Page tables in a guest image are data, and hostile or corrupt data can describe far more mappings than
/// exist: one page table shared under every entry of every level maps 512⁴ = 68.7 billion pages. The two limits
/// bound the output and the work; each stops the enumeration with an anomaly that says which limit to raise.
/// <para>The name is also that of <c>System.IO.EnumerationOptions</c>: a file that imports both namespaces needs
/// an alias, such as <c>using EnumerationOptions = ThpCore.Inspection.EnumerationOptions;</c>.</para>
/// </remarks>
public sealed record EnumerationOptions
{
    private readonly long _maxLeaves = 10_000_000;
    private readonly long _maxEntriesRead = 1_000_000_000;
    private readonly int _maxAnomalies = 100_000;

    /// <summary>
    /// The most leaves to produce (default 10,000,000, about 38 GiB of 4 KiB pages). When a further leaf is found
    /// the enumeration stops with <see cref="AnomalyKind.LeafLimitReached"/>; exactly this many have been produced.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Negative.</exception>
    public long MaxLeaves
    {
        get => _maxLeaves;
        init => _maxLeaves = NonNegative(value, nameof(MaxLeaves));
    }

    /// <summary>
    /// The most paging-structure entries to read (default 1,000,000,000). Reaching it stops the enumeration with
    /// <see cref="AnomalyKind.WorkLimitReached"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Negative.</exception>
    public long MaxEntriesRead
    {
        get => _maxEntriesRead;
        init => _maxEntriesRead = NonNegative(value, nameof(MaxEntriesRead));
    }

    /// <summary>
    /// The most anomalies to record (default 100,000), so that garbage tables cannot fill memory with messages.
    /// Further ones are counted in <see cref="PageTableEnumerator.UnrecordedAnomalies"/>; the limit anomalies
    /// (<see cref="AnomalyKind.LeafLimitReached"/>, <see cref="AnomalyKind.WorkLimitReached"/>) are always recorded.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Negative.</exception>
    public int MaxAnomalies
    {
        get => _maxAnomalies;
        init => _maxAnomalies = (int)NonNegative(value, nameof(MaxAnomalies));
    }

    /// <summary>Receives progress roughly every 1,048,576 entries read, and once at the end.</summary>
    public IProgress<EnumerationProgress>? Progress { get; init; }

    /// <summary>Checked every 4,096 entries read; cancellation throws <see cref="OperationCanceledException"/> from the enumeration.</summary>
    public CancellationToken CancellationToken { get; init; }

    private static long NonNegative(long value, string name)
    {
        if (value < 0)
        {
            ThrowHelper.ThrowArgumentOutOfRange(name, value, $"{name} must not be negative.");
        }

        return value;
    }
}

/// <summary>How far an enumeration has got.</summary>
/// <param name="EntriesRead">Paging-structure entries read so far.</param>
/// <param name="Leaves">Leaves produced so far.</param>
/// <param name="Position">The canonical virtual address of the entry being read.</param>
public readonly record struct EnumerationProgress(long EntriesRead, long Leaves, VirtualAddress Position);
