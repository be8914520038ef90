using System;
using System.Linq;
using ThpCore.Inspection;
using ThpCore.Paging;
using Xunit;
using static ThpCore.Tests.Inspection.InspectionTestSupport;

namespace ThpCore.Tests.Inspection;

public sealed class ThpAnalyzerTests
{
    private const PageTableFlags Pr = PageTableFlags.Present;
    private const PageTableFlags W = PageTableFlags.Writable;
    private const PageTableFlags U = PageTableFlags.User;
    private const PageTableFlags A = PageTableFlags.Accessed;
    private const PageTableFlags D = PageTableFlags.Dirty;

    private const ulong Range = 0x7F00_0020_0000;
    private const ulong Block = 0x4020_0000;

    [Fact]
    public void A_2M_leaf_is_PMD_mapped()
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, CpuState cpu) = NewMapper(PagingMode.FourLevel);
        mapper.Map(VirtualAddress.Create(Range), PhysicalAddress.Create(Block), PageSize.Size2M, Pr | W | U).Ignore();

        ThpReport report = ThpAnalyzer.Analyze(memory, cpu);

        RangeVerdict range = Assert.Single(report.Ranges);
        Assert.Equal(new RangeVerdict(VirtualAddress.Create(Range), CollapseVerdict.PmdMapped, 0, 0, 0, PhysicalAddress.Create(Block), "mapped by a 2 MiB leaf (PDE) at 0x40200000"), range);
        Assert.Equal((0L, 1L, 0L), (report.Leaves4K, report.Leaves2M, report.Leaves1G));
        Assert.Equal(1, report.PmdMapped);
    }

    [Fact]
    public void A_PTE_mapped_THP_in_order_in_an_aligned_block_is_collapsible_in_place()
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, CpuState cpu) = NewMapper(PagingMode.FourLevel);
        MapRun(mapper, i => Block + ((ulong)i << 12));

        ThpReport report = ThpAnalyzer.Analyze(memory, cpu);

        RangeVerdict range = Assert.Single(report.Ranges);
        Assert.Equal(CollapseVerdict.CollapsibleInPlace, range.Verdict);
        Assert.Equal((512, 512, 0), (range.PresentPtes, range.InPlace, range.Moves));
        Assert.Equal(PhysicalAddress.Create(Block), range.Base);
        Assert.Equal("all 512 PTEs map the 2 MiB block at 0x40200000 in order with equal attributes", range.Reason);
        Assert.Equal(512, report.Leaves4K);
        Assert.Equal(1, report.CollapsibleInPlace);
    }

    [Fact]
    public void Accessed_and_dirty_bits_that_differ_do_not_prevent_collapse()
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, CpuState cpu) = NewMapper(PagingMode.FourLevel);
        MapRun(mapper, i => Block + ((ulong)i << 12), i => Pr | W | U | (i % 3 == 0 ? A : 0) | (i % 5 == 0 ? A | D : 0));

        RangeVerdict range = Assert.Single(ThpAnalyzer.Analyze(memory, cpu).Ranges);

        Assert.Equal(CollapseVerdict.CollapsibleInPlace, range.Verdict);
    }

    [Fact]
    public void A_PTE_mapped_THP_with_holes_is_reformable_with_one_move_per_hole()
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, CpuState cpu) = NewMapper(PagingMode.FourLevel);
        MapRun(mapper, i => Block + ((ulong)i << 12), skip: i => i is 0 or 3 or 100 or 101 or 102 or 300 or 511);

        RangeVerdict range = Assert.Single(ThpAnalyzer.Analyze(memory, cpu).Ranges);

        Assert.Equal(CollapseVerdict.ReformableInPlace, range.Verdict);
        Assert.Equal((505, 505, 7), (range.PresentPtes, range.InPlace, range.Moves));
        Assert.Equal(PhysicalAddress.Create(Block), range.Base);
        Assert.Equal("505 of 512 PTEs in place in the 2 MiB block at 0x40200000; re-forming needs 7 moves (7 missing, 0 misplaced)", range.Reason);
    }

    [Fact]
    public void One_misplaced_frame_is_reformable_with_one_move()
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, CpuState cpu) = NewMapper(PagingMode.FourLevel);
        MapRun(mapper, i => i == 100 ? 0x9000_0000UL : Block + ((ulong)i << 12));

        ThpReport report = ThpAnalyzer.Analyze(memory, cpu);

        RangeVerdict range = Assert.Single(report.Ranges);
        Assert.Equal(CollapseVerdict.ReformableInPlace, range.Verdict);
        Assert.Equal((512, 511, 1), (range.PresentPtes, range.InPlace, range.Moves));
        Assert.EndsWith("needs 1 moves (0 missing, 1 misplaced)", range.Reason, StringComparison.Ordinal);
        Assert.Equal(1, report.ReformableInPlace);
    }

    [Fact]
    public void Two_swapped_frames_need_two_moves()
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, CpuState cpu) = NewMapper(PagingMode.FourLevel);
        MapRun(mapper, i => Block + ((ulong)(i switch { 7 => 8, 8 => 7, _ => i }) << 12));

        RangeVerdict range = Assert.Single(ThpAnalyzer.Analyze(memory, cpu).Ranges);

        Assert.Equal((CollapseVerdict.ReformableInPlace, 510, 2), (range.Verdict, range.InPlace, range.Moves));
    }

    [Fact]
    public void Mixed_rights_are_not_a_candidate_and_the_reason_names_the_PTE()
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, CpuState cpu) = NewMapper(PagingMode.FourLevel);
        MapRun(mapper, i => Block + ((ulong)i << 12), i => i == 17 ? Pr | U : Pr | W | U);

        RangeVerdict range = Assert.Single(ThpAnalyzer.Analyze(memory, cpu).Ranges);

        Assert.Equal(CollapseVerdict.NotCandidate, range.Verdict);
        Assert.Equal("attributes differ: PTE 17 read-only while PTE 0 writable (1 of 512 present PTEs differ from the majority)", range.Reason);
        Assert.Equal(511, range.InPlace); // in place and with the majority's attributes
    }

    [Fact]
    public void When_the_first_PTE_is_the_odd_one_the_reason_blames_it_against_the_majority()
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, CpuState cpu) = NewMapper(PagingMode.FourLevel);
        MapRun(mapper, i => Block + ((ulong)i << 12), i => i == 0 ? Pr | W : Pr | W | U);

        RangeVerdict range = Assert.Single(ThpAnalyzer.Analyze(memory, cpu).Ranges);

        Assert.Equal("attributes differ: PTE 0 supervisor-only while PTE 1 user (1 of 512 present PTEs differ from the majority)", range.Reason);
    }

    [Theory]
    [InlineData("execute", "PTE 9 no-execute while PTE 0 executable")]
    [InlineData("global", "PTE 9 global while PTE 0 not global")]
    [InlineData("pat", "PTE 9 uses PAT entry 4 while PTE 0 uses PAT entry 0")]
    [InlineData("pcd", "PTE 9 uses PAT entry 2 while PTE 0 uses PAT entry 0")]
    [InlineData("key", "PTE 9 has protection key 3 while PTE 0 has protection key 0")]
    public void Every_attribute_but_A_and_D_must_be_equal(string attribute, string expected)
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, CpuState cpu) = NewMapper(PagingMode.FourLevel);
        for (int i = 0; i < 512; i++)
        {
            bool odd = i == 9;
            PageTableFlags flags = Pr | W | U
                | (odd && attribute == "execute" ? PageTableFlags.ExecuteDisable : 0)
                | (odd && attribute == "global" ? PageTableFlags.Global : 0)
                | (odd && attribute == "pcd" ? PageTableFlags.CacheDisable : 0);
            mapper.Map(
                VirtualAddress.Create(Range + ((ulong)i << 12)),
                PhysicalAddress.Create(Block + ((ulong)i << 12)),
                PageSize.Size4K,
                flags,
                pat: odd && attribute == "pat",
                protectionKey: odd && attribute == "key" ? 3 : 0).Ignore();
        }

        RangeVerdict range = Assert.Single(ThpAnalyzer.Analyze(memory, cpu).Ranges);

        Assert.Equal(CollapseVerdict.NotCandidate, range.Verdict);
        Assert.Equal($"attributes differ: {expected} (1 of 512 present PTEs differ from the majority)", range.Reason);
    }

    [Fact]
    public void Software_bits_must_be_equal_too()
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, CpuState cpu) = NewMapper(PagingMode.FourLevel);
        MapRun(mapper, i => Block + ((ulong)i << 12));
        Assert.True(mapper.TryGetLeaf(VirtualAddress.Create(Range + (5 << 12)), out PageTableEntry leaf, out PhysicalAddress at));
        memory.WriteUInt64(at, leaf.WithAvailableBits(0x200).Raw);

        RangeVerdict range = Assert.Single(ThpAnalyzer.Analyze(memory, cpu).Ranges);

        Assert.Equal("attributes differ: PTE 5 has software bits 0x200 while PTE 0 has software bits 0x0 (1 of 512 present PTEs differ from the majority)", range.Reason);
    }

    [Fact]
    public void Too_many_holes_is_not_a_candidate()
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, CpuState cpu) = NewMapper(PagingMode.FourLevel);
        MapRun(mapper, i => Block + ((ulong)i << 12), skip: i => i % 5 == 0);

        RangeVerdict range = Assert.Single(ThpAnalyzer.Analyze(memory, cpu).Ranges);

        Assert.Equal(CollapseVerdict.NotCandidate, range.Verdict);
        Assert.Equal("only 409 of 512 PTEs present (re-forming would fill 103 pages; the limit is 64)", range.Reason);
        Assert.Equal((409, 409, 103), (range.PresentPtes, range.InPlace, range.Moves));
    }

    [Fact]
    public void Too_many_misplaced_frames_is_not_a_candidate_unless_MaxMoves_allows_it()
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, CpuState cpu) = NewMapper(PagingMode.FourLevel);
        const ulong otherBlock = 0x8000_0000;
        MapRun(mapper, i => (i < 300 ? Block : otherBlock) + ((ulong)i << 12));

        RangeVerdict range = Assert.Single(ThpAnalyzer.Analyze(memory, cpu).Ranges);
        RangeVerdict lenient = Assert.Single(ThpAnalyzer.Analyze(memory, cpu, new ThpAnalysisOptions { MaxMoves = 212 }).Ranges);

        Assert.Equal(CollapseVerdict.NotCandidate, range.Verdict);
        Assert.Equal("frames not contiguous: best aligned run has 300 of 512 in place (at 0x40200000); re-forming would need 212 moves, the limit is 64", range.Reason);
        Assert.Equal(CollapseVerdict.ReformableInPlace, lenient.Verdict);
        Assert.Equal(212, lenient.Moves);
    }

    [Fact]
    public void Frames_that_are_contiguous_but_not_2M_aligned_are_not_a_candidate()
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, CpuState cpu) = NewMapper(PagingMode.FourLevel);
        MapRun(mapper, i => Block + 0x1000 + ((ulong)i << 12));

        RangeVerdict range = Assert.Single(ThpAnalyzer.Analyze(memory, cpu).Ranges);

        Assert.Equal(CollapseVerdict.NotCandidate, range.Verdict);
        Assert.Null(range.Base);
        Assert.Equal((0, 512), (range.InPlace, range.Moves));
        Assert.Equal("frames not contiguous: no present PTE maps its own slot of a 2 MiB-aligned block", range.Reason);
    }

    [Fact]
    public void An_empty_page_table_is_a_range_with_no_PTE_present()
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, CpuState cpu) = NewMapper(PagingMode.FourLevel);
        mapper.Map(VirtualAddress.Create(Range), PhysicalAddress.Create(Block), PageSize.Size4K, Pr | W).Ignore();
        mapper.Unmap(VirtualAddress.Create(Range)).Flush.Ignore();

        RangeVerdict range = Assert.Single(ThpAnalyzer.Analyze(memory, cpu).Ranges);

        Assert.Equal((CollapseVerdict.NotCandidate, 0, "no PTE present (an empty page table)"), (range.Verdict, range.PresentPtes, range.Reason));
    }

    [Fact]
    public void A_PTE_with_reserved_bits_counts_as_absent()
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, CpuState cpu) = NewMapper(PagingMode.FourLevel);
        MapRun(mapper, i => Block + ((ulong)i << 12));
        Assert.True(mapper.TryGetLeaf(VirtualAddress.Create(Range + (3 << 12)), out PageTableEntry leaf, out PhysicalAddress at));
        memory.WriteUInt64(at, leaf.Raw | (1UL << 50));

        ThpReport report = ThpAnalyzer.Analyze(memory, cpu);

        RangeVerdict range = Assert.Single(report.Ranges);
        Assert.Equal((CollapseVerdict.ReformableInPlace, 511, 1), (range.Verdict, range.PresentPtes, range.Moves));
        Assert.Equal(AnomalyKind.ReservedBits, Assert.Single(report.Anomalies).Kind);
        Assert.Equal(511, report.Leaves4K);
    }

    [Fact]
    public void A_mixed_address_space_gets_one_verdict_per_2M_range_in_address_order_and_counts_leaves_by_size()
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, CpuState cpu) = NewMapper(PagingMode.FourLevel);
        mapper.Map(VirtualAddress.Create(0xFFFF_8880_0000_0000), PhysicalAddress.Create(0x1_0000_0000), PageSize.Size1G, Pr | W).Ignore();
        mapper.Map(VirtualAddress.Create(0x7F00_0060_0000), PhysicalAddress.Create(0x4060_0000), PageSize.Size2M, Pr | W | U).Ignore();
        MapRun(mapper, i => Block + ((ulong)i << 12), range: 0x7F00_0020_0000);
        MapRun(mapper, i => 0x4040_0000 + ((ulong)i << 12), range: 0x7F00_0040_0000, skip: i => i == 42);
        MapRun(mapper, i => 0x4080_0000 + ((ulong)i << 12), range: 0x7F00_0080_0000, skip: i => i > 0);

        ThpReport report = ThpAnalyzer.Analyze(memory, cpu);

        Assert.Equal(
            new[]
            {
                (0x7F00_0020_0000UL, CollapseVerdict.CollapsibleInPlace),
                (0x7F00_0040_0000UL, CollapseVerdict.ReformableInPlace),
                (0x7F00_0060_0000UL, CollapseVerdict.PmdMapped),
                (0x7F00_0080_0000UL, CollapseVerdict.NotCandidate),
            },
            report.Ranges.Select(r => (r.Start.Value, r.Verdict)));
        Assert.Equal((512L + 511 + 1, 1L, 1L), (report.Leaves4K, report.Leaves2M, report.Leaves1G));
        Assert.Equal((1, 1, 1, 1), (report.PmdMapped, report.CollapsibleInPlace, report.ReformableInPlace, report.NotCandidate));
        Assert.False(report.Stopped);
        Assert.Empty(report.Anomalies);
        Assert.True(report.EntriesRead > 0);
    }

    [Fact]
    public void A_range_where_a_limit_stopped_the_walk_is_marked_not_analysed()
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, CpuState cpu) = NewMapper(PagingMode.FourLevel);
        MapRun(mapper, i => Block + ((ulong)i << 12));
        MapRun(mapper, i => 0x4040_0000 + ((ulong)i << 12), range: 0x7F00_0040_0000);

        ThpReport report = ThpAnalyzer.Analyze(memory, cpu, enumeration: new EnumerationOptions { MaxLeaves = 600 });

        Assert.True(report.Stopped);
        Assert.Equal(600, report.Leaves4K);
        Assert.Equal(
            new[] { (CollapseVerdict.CollapsibleInPlace, "all 512 PTEs map the 2 MiB block at 0x40200000 in order with equal attributes"), (CollapseVerdict.NotCandidate, "not analysed: the enumeration stopped inside this range") },
            report.Ranges.Select(r => (r.Verdict, r.Reason)));
        Assert.Equal(AnomalyKind.LeafLimitReached, report.Anomalies[^1].Kind);
    }

    [Fact]
    public void A_limit_reached_between_ranges_leaves_the_last_range_judged()
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, CpuState cpu) = NewMapper(PagingMode.FourLevel);
        MapRun(mapper, i => Block + ((ulong)i << 12));
        mapper.Map(VirtualAddress.Create(0x7F00_0040_0000), PhysicalAddress.Create(0x4040_0000), PageSize.Size2M, Pr | W | U).Ignore();

        ThpReport report = ThpAnalyzer.Analyze(memory, cpu, enumeration: new EnumerationOptions { MaxLeaves = 512 });

        Assert.True(report.Stopped);
        Assert.Equal(CollapseVerdict.CollapsibleInPlace, Assert.Single(report.Ranges).Verdict);
    }

    [Fact]
    public void A_page_table_shared_by_two_PDEs_is_judged_once_per_range()
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, CpuState cpu) = NewMapper(PagingMode.FourLevel);
        MapRun(mapper, i => Block + ((ulong)i << 12));
        Assert.True(mapper.TryGetLeaf(VirtualAddress.Create(Range), out _, out PhysicalAddress pte));
        ulong pdeAddress = FindPde(memory, cpu, pte);
        memory.WriteUInt64(PhysicalAddress.Create(pdeAddress + 8), ((IPhysicalMemory)memory).ReadUInt64(PhysicalAddress.Create(pdeAddress)));

        ThpReport report = ThpAnalyzer.Analyze(memory, cpu);

        Assert.Equal(
            new[] { (Range, CollapseVerdict.CollapsibleInPlace), (Range + 0x20_0000, CollapseVerdict.CollapsibleInPlace) },
            report.Ranges.Select(r => (r.Start.Value, r.Verdict)));
        Assert.Equal(1024, report.Leaves4K);
        Assert.Equal(AnomalyKind.RepeatedTable, Assert.Single(report.Anomalies).Kind);
    }

    [Fact]
    public void A_PDE_whose_page_table_is_outside_memory_has_no_range_only_an_anomaly()
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, CpuState cpu) = NewMapper(PagingMode.FourLevel);
        MapRun(mapper, i => Block + ((ulong)i << 12));
        Assert.True(mapper.TryGetLeaf(VirtualAddress.Create(Range), out _, out PhysicalAddress pte));
        ulong pdeAddress = FindPde(memory, cpu, pte);
        memory.WriteUInt64(PhysicalAddress.Create(pdeAddress + 8), 0x10_0000_0000UL | 0x7); // a PT at 64 GiB

        ThpReport report = ThpAnalyzer.Analyze(memory, cpu);

        Assert.Equal(Range, Assert.Single(report.Ranges).Start.Value);
        Anomaly anomaly = Assert.Single(report.Anomalies);
        Assert.Equal((AnomalyKind.EntryOutsideMemory, Range + 0x20_0000), (anomaly.Kind, anomaly.Address.Value));
    }

    [Fact]
    public void MaxMoves_is_0_to_511()
    {
        Assert.Equal(64, new ThpAnalysisOptions().MaxMoves);
        Assert.Equal(0, new ThpAnalysisOptions { MaxMoves = 0 }.MaxMoves);
        Assert.Equal(511, new ThpAnalysisOptions { MaxMoves = 511 }.MaxMoves);
        Assert.Throws<ArgumentOutOfRangeException>(() => new ThpAnalysisOptions { MaxMoves = 512 });
        Assert.Throws<ArgumentOutOfRangeException>(() => new ThpAnalysisOptions { MaxMoves = -1 });
        Assert.Throws<ArgumentNullException>(() => ThpAnalyzer.Analyze(null!, CpuState.Create(0)));
        Assert.Throws<ArgumentNullException>(() => ThpAnalyzer.Analyze(new SparsePhysicalMemory(4096), null!));
    }

    [Fact]
    public void With_MaxMoves_0_a_single_hole_is_not_a_candidate()
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, CpuState cpu) = NewMapper(PagingMode.FourLevel);
        MapRun(mapper, i => Block + ((ulong)i << 12), skip: i => i == 1);

        RangeVerdict range = Assert.Single(ThpAnalyzer.Analyze(memory, cpu, new ThpAnalysisOptions { MaxMoves = 0 }).Ranges);

        Assert.Equal("only 511 of 512 PTEs present (re-forming would fill 1 pages; the limit is 0)", range.Reason);
    }

    /// <summary>The address of the PDE that references the page table holding <paramref name="pte"/>, found with a probe walk.</summary>
    private static ulong FindPde(SparsePhysicalMemory memory, CpuState cpu, PhysicalAddress pte)
    {
        var trace = new WalkTrace();
        PageWalker.Translate(cpu, memory, VirtualAddress.Create(Range), AccessKind.Read, Privilege.Supervisor, new WalkOptions { Probe = true }, trace);
        Assert.Equal(pte, trace.Steps[^1].EntryAddress);
        return trace.Steps[^2].EntryAddress.Value;
    }

    private static void MapRun(
        PageTableMapper mapper,
        Func<int, ulong> frame,
        Func<int, PageTableFlags>? flags = null,
        Func<int, bool>? skip = null,
        ulong range = Range)
    {
        for (int i = 0; i < 512; i++)
        {
            if (skip?.Invoke(i) == true)
            {
                continue;
            }

            mapper.Map(
                VirtualAddress.Create(range + ((ulong)i << 12)),
                PhysicalAddress.Create(frame(i)),
                PageSize.Size4K,
                flags?.Invoke(i) ?? Pr | W | U).Ignore();
        }
    }
}
