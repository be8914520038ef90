using System;
using System.Collections.Generic;
using System.Globalization;
using System.Text;
using System.Threading;
using ThpCore.Internal;
using ThpCore.Paging;

namespace ThpCore.Inspection;

/// <summary>
/// Lists every present leaf mapping of one set of IA-32e page tables in physical memory (a guest image or
/// tables built with <see cref="PageTableMapper"/>), following the hardware walk rules from CR3.
/// </summary>
/// <remarks>
/// <para><b>Walk rules.</b> Each path from the root (<see cref="CpuState.RootTable"/>, <see cref="CpuState.PagingMode"/>)
/// is followed as <see cref="PageWalker"/> would: an entry with P = 0 is skipped; a present entry that sets a
/// reserved bit (<see cref="CpuState.ReservedBits"/>) is reported as <see cref="AnomalyKind.ReservedBits"/> and
/// neither its page nor anything below it is listed, because the CPU faults there; a PDE or PDPTE with PS = 1 is
/// a leaf; a table that cannot be read (<see cref="IPhysicalMemory.TryReadUInt64"/> returns
/// <see langword="false"/>) is reported as <see cref="AnomalyKind.EntryOutsideMemory"/> (or
/// <see cref="AnomalyKind.RootOutsideMemory"/>) and skipped. The depth is bounded by the paging mode (4 or 5
/// levels), so no table structure, cyclic or not, can make a path longer. <see cref="Mapping.Rights"/> combines
/// R/W and U/S by AND and XD by OR over the path, exactly as the walker does.</para>
/// <para><b>Order.</b> Mappings stream out lazily in page-table index order, which is canonical address order
/// within each half: the lower half first, then the upper half, as QEMU's <c>info tlb</c> prints them.</para>
/// <para><b>Shared and recursive tables.</b> Real tables are not trees. Every path is a mapping and none is
/// skipped; a table frame reached a second time is reported once as <see cref="AnomalyKind.RepeatedTable"/>
/// (informational). A problem entry (reserved bits, unreadable table) is reported once per entry address and
/// level, for the first path that reaches it; later paths through the same entry skip it silently.</para>
/// <para><b>Bounded work.</b> Hostile tables can expand to billions of leaves, so the enumeration stops at
/// <see cref="EnumerationOptions.MaxLeaves"/> leaves or <see cref="EnumerationOptions.MaxEntriesRead"/> entries
/// read, with an anomaly and <see cref="Stopped"/> set. A subtree that produced no leaf is remembered by
/// (table address, level) and not walked again: it would produce nothing new (its problems are reported once
/// per entry anyway), so a fan-out of empty tables costs one read per entry that points into it. The
/// <see cref="AnomalyKind.RepeatedTable"/> notes for the tables below such a subtree are therefore not
/// repeated either. No memory content makes the enumeration throw or run unbounded.</para>
/// <para><b>Compared with QEMU's <c>info tlb</c></b> (target/i386/monitor.c, <c>tlb_info_la48</c>/<c>la57</c>):
/// QEMU checks no reserved bits, so it follows or prints entries the CPU would fault on (an entry with bits
/// above MAXPHYADDR, XD without EFER.NXE, bits 20:13 of a 2 MiB leaf, …); it ignores PS in a PML4E or PML5E
/// (treating the entry as a table pointer) where this enumerator reports a reserved bit; and it masks table
/// addresses to bits 49:12 where the CPU uses bits 51:12. On tables without such entries both list the same
/// mappings in the same order. A repeated table is listed under every path by both.</para>
/// <para>Not thread-safe. Each enumeration of the sequence <see cref="Enumerate"/> returns starts afresh and resets
/// the counters and <see cref="Anomalies"/>, which describe the latest (possibly partial) enumeration as it
/// proceeds; a caller that stops early leaves both <see cref="Completed"/> and <see cref="Stopped"/> false.</para>
/// </remarks>
public sealed class PageTableEnumerator
{
    private const ulong P = 1UL << 0;
    private const ulong RW = 1UL << 1;
    private const ulong US = 1UL << 2;
    private const ulong PS = 1UL << 7;
    private const ulong XD = 1UL << 63;
    private const long ProgressInterval = 1L << 20;
    private const long CancellationInterval = 1L << 12;

    private readonly IPhysicalMemory _memory;
    private readonly SparsePhysicalMemory? _sparse;
    private readonly CpuState _cpu;
    private readonly EnumerationOptions _options;

    private readonly List<Anomaly> _anomalies = new();

    // Table frame -> (level and virtual address of its first visit), to spot repeats.
    private readonly Dictionary<ulong, (PagingLevel Level, ulong Va)> _visited = new();
    private readonly HashSet<ulong> _repeatReported = new();

    // (entry address, level) of every problem entry already reported.
    private readonly HashSet<(ulong, PagingLevel)> _problemsReported = new();

    // (table address, level) of subtrees that produced no leaf -> the index at which reading the table itself
    // failed, or -1 if it was readable.
    private readonly Dictionary<(ulong, PagingLevel), int> _leafless = new();

    /// <summary>An enumerator over the tables that <paramref name="cpu"/>'s CR3 points to in <paramref name="memory"/>.</summary>
    /// <param name="memory">Physical memory holding the tables.</param>
    /// <param name="cpu">CR3 (the root), CR4.LA57 (the paging mode), EFER.NXE and the CPU features (the reserved bits).</param>
    /// <param name="options">Limits, progress and cancellation; <see langword="null"/> for the defaults.</param>
    /// <exception cref="ArgumentNullException"><paramref name="memory"/> or <paramref name="cpu"/> is null.</exception>
    public PageTableEnumerator(IPhysicalMemory memory, CpuState cpu, EnumerationOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(memory);
        ArgumentNullException.ThrowIfNull(cpu);
        _memory = memory;
        _sparse = memory as SparsePhysicalMemory;
        _cpu = cpu;
        _options = options ?? new EnumerationOptions();
    }

    /// <summary>The anomalies of the latest enumeration, in the order found (at most <see cref="EnumerationOptions.MaxAnomalies"/> plus one limit anomaly).</summary>
    public IReadOnlyList<Anomaly> Anomalies => _anomalies;

    /// <summary>Leaves produced by the latest enumeration so far.</summary>
    public long LeafCount { get; private set; }

    /// <summary>Paging-structure entries read by the latest enumeration so far (reads that failed because no memory backs the address are not counted).</summary>
    public long EntriesRead { get; private set; }

    /// <summary>Whether a limit (<see cref="EnumerationOptions.MaxLeaves"/> or <see cref="EnumerationOptions.MaxEntriesRead"/>) stopped the latest enumeration before its end.</summary>
    public bool Stopped { get; private set; }

    /// <summary>Whether the latest enumeration ran to its end (not stopped by a limit, not abandoned by the caller).</summary>
    public bool Completed { get; private set; }

    /// <summary>
    /// Anomalies found after <see cref="EnumerationOptions.MaxAnomalies"/> were recorded, and so left out of
    /// <see cref="Anomalies"/>. Problem entries found after the cap are not remembered, so one reached by several
    /// paths may be counted more than once here.
    /// </summary>
    public long UnrecordedAnomalies { get; private set; }

    /// <summary>
    /// Every present leaf mapping, streamed in page-table index order (lower half first). See the class remarks
    /// for the walk rules, the limits and what is reported as an anomaly instead.
    /// </summary>
    /// <exception cref="OperationCanceledException">The options' cancellation token was cancelled (checked every 4,096 entries read).</exception>
    public IEnumerable<Mapping> Enumerate()
    {
        foreach (WalkItem item in Walk())
        {
            if (!item.IsPageTable)
            {
                yield return item.Mapping;
            }
        }
    }

    /// <summary>
    /// The enumeration proper. Besides the leaves it yields every readable page table that a valid PDE references,
    /// once per path and before the table's leaves (as an item with <see cref="WalkItem.IsPageTable"/> set, whose
    /// mapping carries the 2 MiB range, the PDE, its address and the rights above the table); the THP analysis
    /// needs the ranges that have a table but no leaf.
    /// </summary>
    internal IEnumerable<WalkItem> Walk()
    {
        Reset();
        PagingMode mode = _cpu.PagingMode;
        int rootLevel = (int)mode;
        ReservedBitMasks masks = _cpu.ReservedBits;
        long maxLeaves = _options.MaxLeaves;
        long maxEntries = _options.MaxEntriesRead;
        IProgress<EnumerationProgress>? progress = _options.Progress;
        CancellationToken cancellation = _options.CancellationToken;

        // Per level (index 1..5): the table being read, the next index in it, the rights and XD combined above
        // it, the virtual address its range starts at, the leaf count when it was entered, the entry that
        // references it, and where reading it failed (-1: not failed).
        var table = new ulong[6];
        var next = new int[6];
        var rights = new ulong[6];
        var xd = new ulong[6];
        var vaBase = new ulong[6];
        var leavesAtEntry = new long[6];
        var parentAddress = new ulong[6];
        var parentRaw = new ulong[6];
        var failedAt = new int[6];

        int level = rootLevel;
        table[level] = _cpu.RootTable.Value;
        rights[level] = RW | US;
        failedAt[level] = -1;

        while (true)
        {
            int index = next[level];
            if (index == 512)
            {
                if (level == rootLevel)
                {
                    break;
                }

                if (LeafCount == leavesAtEntry[level])
                {
                    _leafless[(table[level], (PagingLevel)level)] = failedAt[level];
                }

                level++;
                continue;
            }

            next[level] = index + 1;
            ulong entryAddress = table[level] + ((ulong)index * 8);
            ulong rawVa = vaBase[level] | ((ulong)index << (12 + (9 * (level - 1))));

            if (EntriesRead >= maxEntries)
            {
                StopAt(new Anomaly(
                    AnomalyKind.WorkLimitReached,
                    (PagingLevel)level,
                    Canonical(rawVa, mode),
                    PhysicalAddress.FromMaskedBits(entryAddress),
                    0,
                    string.Create(CultureInfo.InvariantCulture, $"Stopped after reading {EntriesRead:N0} paging-structure entries ({LeafCount:N0} leaves found), before the {((PagingLevel)level).EntryName()} at {Hex(entryAddress)} for {Canonical(rawVa, mode)}; the tables may map more. Raise the limit with EnumerationOptions.MaxEntriesRead.")),
                    progress,
                    rawVa,
                    mode);
                yield break;
            }

            if (!Read(entryAddress, out ulong entry))
            {
                failedAt[level] = index;
                next[level] = 512;
                if (level == rootLevel)
                {
                    RootOutside(entryAddress, index, mode);
                }
                else
                {
                    TableOutside((PagingLevel)(level + 1), parentAddress[level], parentRaw[level], vaBase[level], table[level], index, mode);
                }

                continue;
            }

            EntriesRead++;
            if (EntriesRead % CancellationInterval == 0)
            {
                cancellation.ThrowIfCancellationRequested();
                if (progress is not null && EntriesRead % ProgressInterval == 0)
                {
                    progress.Report(new EnumerationProgress(EntriesRead, LeafCount, Canonical(rawVa, mode)));
                }
            }

            if (index == 0)
            {
                NoteVisit(table[level], (PagingLevel)level, vaBase[level], level == rootLevel ? null : (parentAddress[level], parentRaw[level]), mode);
                if (level == 1)
                {
                    yield return PageTableItem(vaBase[1], parentAddress[1], parentRaw[1], rights[1], xd[1], mode);
                }
            }

            if ((entry & P) == 0)
            {
                continue;
            }

            ulong reserved = masks.ReservedBitsIn((PagingLevel)level, entry);
            if (reserved != 0)
            {
                ReservedBitsFound((PagingLevel)level, entryAddress, entry, reserved, rawVa, masks, mode);
                continue;
            }

            ulong combinedRights = rights[level] & entry;
            ulong combinedXd = xd[level] | (entry & XD);
            if (level == 1 || (level <= 3 && (entry & PS) != 0))
            {
                var leafLevel = (PagingLevel)level;
                if (LeafCount >= maxLeaves)
                {
                    StopAt(new Anomaly(
                        AnomalyKind.LeafLimitReached,
                        leafLevel,
                        Canonical(rawVa, mode),
                        PhysicalAddress.FromMaskedBits(entryAddress),
                        entry,
                        string.Create(CultureInfo.InvariantCulture, $"Stopped after {LeafCount:N0} leaves: the {leafLevel.EntryName()} at {Hex(entryAddress)} maps {Canonical(rawVa, mode)} and the tables may map more. Raise the limit with EnumerationOptions.MaxLeaves.")),
                        progress,
                        rawVa,
                        mode);
                    yield break;
                }

                LeafCount++;
                yield return new WalkItem(
                    false,
                    new Mapping(
                        Canonical(rawVa, mode),
                        leafLevel.LeafPageSize(),
                        new PageTableEntry(leafLevel, entry),
                        PhysicalAddress.FromMaskedBits(entryAddress),
                        PageWalker.CombineRights(combinedRights, combinedXd)));
                continue;
            }

            int child = level - 1;
            ulong childTable = entry & PageTableEntry.AddressMask4K;
            if (_leafless.TryGetValue((childTable, (PagingLevel)child), out int childFailedAt))
            {
                // Walked before and produced nothing; only what concerns this entry itself is new.
                if (_visited.ContainsKey(childTable))
                {
                    NoteVisit(childTable, (PagingLevel)child, rawVa, (entryAddress, entry), mode);
                    if (child == 1)
                    {
                        yield return PageTableItem(rawVa, entryAddress, entry, combinedRights, combinedXd, mode);
                    }
                }

                if (childFailedAt >= 0)
                {
                    TableOutside((PagingLevel)level, entryAddress, entry, rawVa, childTable, childFailedAt, mode);
                }

                continue;
            }

            table[child] = childTable;
            next[child] = 0;
            rights[child] = combinedRights;
            xd[child] = combinedXd;
            vaBase[child] = rawVa;
            leavesAtEntry[child] = LeafCount;
            parentAddress[child] = entryAddress;
            parentRaw[child] = entry;
            failedAt[child] = -1;
            level = child;
        }

        Completed = true;
        progress?.Report(new EnumerationProgress(EntriesRead, LeafCount, Canonical(0, mode)));
    }

    private static VirtualAddress Canonical(ulong rawVa, PagingMode mode) => VirtualAddress.CreateTruncate(rawVa, mode);

    private static WalkItem PageTableItem(ulong rawVa, ulong pdeAddress, ulong pde, ulong andRights, ulong xd, PagingMode mode) =>
        new(
            true,
            new Mapping(
                Canonical(rawVa, mode),
                PageSize.Size2M,
                new PageTableEntry(PagingLevel.Pd, pde),
                PhysicalAddress.FromMaskedBits(pdeAddress),
                PageWalker.CombineRights(andRights, xd)));


    private static string Hex(ulong value) => ThrowHelper.Hex(value);

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);

    private static string Coverage(PagingLevel level) => level switch
    {
        PagingLevel.Pt => "4 KiB",
        PagingLevel.Pd => "2 MiB",
        PagingLevel.Pdpt => "1 GiB",
        PagingLevel.Pml4 => "512 GiB",
        _ => "256 TiB",
    };

    private void Reset()
    {
        _anomalies.Clear();
        _visited.Clear();
        _repeatReported.Clear();
        _problemsReported.Clear();
        _leafless.Clear();
        LeafCount = 0;
        EntriesRead = 0;
        UnrecordedAnomalies = 0;
        Stopped = false;
        Completed = false;
    }

    private bool Read(ulong address, out ulong value) =>
        _sparse is not null
            ? _sparse.TryReadUInt64(PhysicalAddress.FromMaskedBits(address), out value)
            : _memory.TryReadUInt64(PhysicalAddress.FromMaskedBits(address), out value);

    private void Record(Anomaly anomaly)
    {
        if (_anomalies.Count < _options.MaxAnomalies)
        {
            _anomalies.Add(anomaly);
        }
        else
        {
            UnrecordedAnomalies++;
        }
    }

    private void StopAt(Anomaly anomaly, IProgress<EnumerationProgress>? progress, ulong rawVa, PagingMode mode)
    {
        _anomalies.Add(anomaly);
        Stopped = true;
        progress?.Report(new EnumerationProgress(EntriesRead, LeafCount, Canonical(rawVa, mode)));
    }

    /// <summary>Records the first visit of a table frame, or a repeat (once per frame).</summary>
    private void NoteVisit(ulong tableAddress, PagingLevel level, ulong rawVa, (ulong Address, ulong Raw)? parent, PagingMode mode)
    {
        if (!_visited.TryGetValue(tableAddress, out (PagingLevel Level, ulong Va) first))
        {
            _visited.Add(tableAddress, (level, rawVa));
            return;
        }

        if (parent is not { } entry || !_repeatReported.Add(tableAddress))
        {
            return;
        }

        var parentLevel = (PagingLevel)((int)level + 1);
        Record(new Anomaly(
            AnomalyKind.RepeatedTable,
            parentLevel,
            Canonical(rawVa, mode),
            PhysicalAddress.FromMaskedBits(entry.Address),
            entry.Raw,
            $"The {parentLevel.EntryName()} at {Hex(entry.Address)} for {Canonical(rawVa, mode)} references the table at {Hex(tableAddress)} as a {level.TableName()}, which was already reached as a {first.Level.TableName()} for {Canonical(first.Va, mode)} (a shared table or a recursive slot). It is enumerated again under every path; this note is given once per table."));
    }

    private void RootOutside(ulong entryAddress, int index, PagingMode mode)
    {
        PagingLevel rootLevel = mode.RootLevel();
        ulong root = _cpu.RootTable.Value;
        string message = index == 0
            ? Invariant($"CR3 ({Hex(_cpu.Cr3)}) points to a {rootLevel.TableName()} at {Hex(root)}, outside physical memory of {_memory.Size:#,0} bytes; nothing can be enumerated.")
            : Invariant($"The {rootLevel.TableName()} at {Hex(root)} (CR3 {Hex(_cpu.Cr3)}) is only partly inside physical memory of {_memory.Size:#,0} bytes: its entries from {index} on (from {Hex(entryAddress)}) cannot be read and are skipped.");
        Record(new Anomaly(AnomalyKind.RootOutsideMemory, rootLevel, Canonical(0, mode), PhysicalAddress.FromMaskedBits(root), _cpu.Cr3, message));
    }

    /// <summary>
    /// Whether a problem entry is new and should be recorded. Once <see cref="EnumerationOptions.MaxAnomalies"/> are
    /// recorded, entries are no longer remembered (so that garbage cannot fill memory) and new ones are only counted.
    /// </summary>
    private bool IsNewProblem(ulong entryAddress, PagingLevel level)
    {
        if (_anomalies.Count < _options.MaxAnomalies)
        {
            return _problemsReported.Add((entryAddress, level));
        }

        if (!_problemsReported.Contains((entryAddress, level)))
        {
            UnrecordedAnomalies++;
        }

        return false;
    }

    private void TableOutside(PagingLevel parentLevel, ulong parentAddress, ulong parentRaw, ulong rawVa, ulong tableAddress, int failedIndex, PagingMode mode)
    {
        if (!IsNewProblem(parentAddress, parentLevel))
        {
            return;
        }

        PagingLevel tableLevel = parentLevel - 1;
        VirtualAddress va = Canonical(rawVa, mode);
        string message = failedIndex == 0
            ? Invariant($"The {parentLevel.EntryName()} at {Hex(parentAddress)} for {va} references a {tableLevel.TableName()} at {Hex(tableAddress)}, outside physical memory of {_memory.Size:#,0} bytes; its {Coverage(parentLevel)} range is not enumerated.")
            : Invariant($"The {parentLevel.EntryName()} at {Hex(parentAddress)} for {va} references a {tableLevel.TableName()} at {Hex(tableAddress)} that is only partly inside physical memory of {_memory.Size:#,0} bytes: its entries from {failedIndex} on cannot be read and are skipped.");
        Record(new Anomaly(AnomalyKind.EntryOutsideMemory, parentLevel, va, PhysicalAddress.FromMaskedBits(parentAddress), parentRaw, message));
    }

    private void ReservedBitsFound(PagingLevel level, ulong entryAddress, ulong entry, ulong reserved, ulong rawVa, ReservedBitMasks masks, PagingMode mode)
    {
        if (!IsNewProblem(entryAddress, level))
        {
            return;
        }

        VirtualAddress va = Canonical(rawVa, mode);
        bool leaf = level == PagingLevel.Pt || (level <= PagingLevel.Pdpt && (entry & PS) != 0);
        string what = leaf ? $"the {Coverage(level)} page it maps is" : $"nothing in its {Coverage(level)} range is";
        Record(new Anomaly(
            AnomalyKind.ReservedBits,
            level,
            va,
            PhysicalAddress.FromMaskedBits(entryAddress),
            entry,
            $"The {level.EntryName()} at {Hex(entryAddress)} for {va} ({Hex(entry)}) sets reserved bits {Hex(reserved)}: {DescribeReserved(level, entry, reserved, masks)}. A walk through it faults (#PF with RSVD), so {what} listed. QEMU's info tlb does not check reserved bits and would use it."));
    }

    /// <summary>Names the reasons why <paramref name="reserved"/> are reserved, in the SDM's terms.</summary>
    internal static string DescribeReserved(PagingLevel level, ulong entry, ulong reserved, ReservedBitMasks masks)
    {
        var parts = new List<string>(3);
        int m = masks.MaxPhysicalAddressBits;
        ulong aboveMax = ((1UL << PhysicalAddress.ArchitecturalMaxBits) - 1) & ~((1UL << m) - 1);
        if ((reserved & aboveMax) != 0)
        {
            parts.Add($"address bits above MAXPHYADDR {m} ({Hex(reserved & aboveMax)})");
        }

        if ((reserved & XD) != 0)
        {
            parts.Add("XD (bit 63) while EFER.NXE = 0");
        }

        if ((reserved & PS) != 0)
        {
            parts.Add(level >= PagingLevel.Pml4
                ? $"PS (bit 7), reserved in a {level.EntryName()}"
                : "PS (bit 7) in a PDPTE on a CPU without 1 GiB pages");
        }

        if ((reserved & (1UL << 8)) != 0)
        {
            parts.Add($"bit 8, reserved by AMD in a {level.EntryName()}");
        }

        ulong lowBits = reserved & 0x3FFF_E000UL;
        if (lowBits != 0 && (entry & PS) != 0)
        {
            parts.Add(level == PagingLevel.Pd
                ? $"bits 20:13 of a 2 MiB leaf ({Hex(lowBits)})"
                : $"bits 29:13 of a 1 GiB leaf ({Hex(lowBits)})");
        }

        if (parts.Count == 0)
        {
            parts.Add("bits this CPU reserves");
        }

        var sb = new StringBuilder();
        for (int i = 0; i < parts.Count; i++)
        {
            sb.Append(i == 0 ? string.Empty : i == parts.Count - 1 ? " and " : ", ").Append(parts[i]);
        }

        return sb.ToString();
    }
}

/// <summary>
/// One item of <see cref="PageTableEnumerator.Walk"/>: a leaf, or (with <see cref="IsPageTable"/>) a page table
/// about to be read, described by its 2 MiB range, the PDE that references it and the rights above it.
/// </summary>
internal readonly record struct WalkItem(bool IsPageTable, Mapping Mapping);
