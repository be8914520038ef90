using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Linq;
using System.Threading;
using ThpCore.Inspection;
using ThpCore.Paging;
using ThpCore.Tests.Paging;
using Xunit;
using static ThpCore.Tests.Inspection.InspectionTestSupport;

namespace ThpCore.Tests.Inspection;

public sealed class PageTableEnumeratorTests
{
    private const PageTableFlags Pr = PageTableFlags.Present;
    private const PageTableFlags W = PageTableFlags.Writable;
    private const PageTableFlags U = PageTableFlags.User;

    private const ulong P = TestTables.P;
    private const ulong RW = TestTables.RW;
    private const ulong US = TestTables.US;
    private const ulong PS = TestTables.PS;
    private const ulong XD = TestTables.XD;
    private const ulong Open = TestTables.Open;

    [Theory]
    [InlineData(PagingMode.FourLevel)]
    [InlineData(PagingMode.FiveLevel)]
    public void Every_mapped_page_comes_out_once_in_canonical_order_lower_half_first(PagingMode mode)
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, CpuState cpu) = NewMapper(mode);
        int bits = mode.VirtualAddressBits();
        ulong lowerEnd = 1UL << (bits - 1);
        ulong upperStart = ~(lowerEnd - 1);
        var pages = new (ulong Va, PageSize Size, ulong Frame, PageTableFlags Flags)[]
        {
            (upperStart + 0x4000_0000, PageSize.Size1G, 0x8000_0000, Pr | W),
            (0x0040_1000, PageSize.Size4K, 0x1234_5000, Pr | W | U),
            (lowerEnd - 0x1000, PageSize.Size4K, 0x5000, Pr | U),
            (0x0040_0000, PageSize.Size4K, 0x1234_4000, Pr | U),
            (ulong.MaxValue - 0x3FFF_FFFF, PageSize.Size1G, 0xC000_0000, Pr | W),
            (0x0060_0000, PageSize.Size2M, 0x4020_0000, Pr | W | U),
            (upperStart, PageSize.Size4K, 0x6000, Pr | W),
            (0x0040_0000_0000, PageSize.Size1G, 0x80_0000_0000, Pr | W | U),
            (upperStart + 0x0880_0020_0000, PageSize.Size2M, 0x20_0000, Pr | W | PageTableFlags.Global),
            (lowerEnd - 0x20_0000 - 0x4000_0000, PageSize.Size2M, 0x7FE0_0000, Pr | W | U),
        };
        foreach ((ulong va, PageSize size, ulong frame, PageTableFlags flags) in pages)
        {
            mapper.Map(VirtualAddress.Create(va, mode), PhysicalAddress.Create(frame), size, flags).Ignore();
        }

        (List<Mapping> mappings, PageTableEnumerator enumerator) = EnumerateAll(memory, cpu);

        var expected = pages.OrderBy(p => p.Va).ToList();
        Assert.Equal(expected.Select(p => p.Va), mappings.Select(m => m.Address.Value));
        for (int i = 0; i < expected.Count; i++)
        {
            (ulong va, PageSize size, ulong frame, PageTableFlags flags) = expected[i];
            Mapping mapping = mappings[i];
            Assert.Equal(size, mapping.Size);
            Assert.Equal(frame, mapping.Frame.Value);
            Assert.Equal(size.LeafLevel(), mapping.Leaf.Level);
            var rights = ((flags & W) != 0 ? EffectiveRights.Writable : 0) | ((flags & U) != 0 ? EffectiveRights.User : 0);
            Assert.Equal(rights, mapping.Rights);
            Assert.True(mapper.TryGetLeaf(mapping.Address, out PageTableEntry leaf, out PhysicalAddress at));
            Assert.Equal(leaf, mapping.Leaf);
            Assert.Equal(at, mapping.EntryAddress);
        }

        Assert.Empty(enumerator.Anomalies);
        Assert.Equal(pages.Length, enumerator.LeafCount);
        Assert.True(enumerator.Completed);
        Assert.False(enumerator.Stopped);
    }

    [Fact]
    public void A_full_page_table_gives_512_consecutive_pages_and_reads_each_entry_once()
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, CpuState cpu) = NewMapper(PagingMode.FourLevel);
        for (ulong i = 0; i < 512; i++)
        {
            mapper.Map(VirtualAddress.Create(0x7F00_0000_0000 + (i << 12)), PhysicalAddress.Create(0x4000_0000 + (i << 12)), PageSize.Size4K, Pr | W | U).Ignore();
        }

        (List<Mapping> mappings, PageTableEnumerator enumerator) = EnumerateAll(memory, cpu);

        Assert.Equal(512, mappings.Count);
        Assert.All(mappings.Select((m, i) => (m, i)), x => Assert.Equal(0x7F00_0000_0000UL + ((ulong)x.i << 12), x.m.Address.Value));
        Assert.All(mappings.Select((m, i) => (m, i)), x => Assert.Equal(0x4000_0000UL + ((ulong)x.i << 12), x.m.Frame.Value));

        // PML4, PDPT, PD and PT: 4 tables of 512 entries, each read exactly once.
        Assert.Equal(4 * 512, enumerator.EntriesRead);
    }

    [Fact]
    public void Rights_are_ANDed_for_RW_and_US_and_ORed_for_XD_over_the_whole_path()
    {
        var t = new TestTables();
        ulong readOnlyAbove = 0x0080_0000_0000; // PML4 slot 1
        ulong xdInPde = 0x0100_0000_0000; // slot 2
        ulong supervisorLeaf = 0x0180_0000_0000; // slot 3
        ulong bigLeaf = 0x0200_0000_0000; // slot 4
        t.Map(readOnlyAbove, PageSize.Size4K, 0x1000_0000, P | RW | US, level => level == PagingLevel.Pdpt ? P | US : Open);
        t.Map(xdInPde, PageSize.Size4K, 0x1000_1000, P | RW | US, level => level == PagingLevel.Pd ? Open | XD : Open);
        t.Map(supervisorLeaf, PageSize.Size4K, 0x1000_2000, P | RW);
        t.Map(bigLeaf, PageSize.Size2M, 0x1020_0000, P | RW | US | XD);
        CpuState cpu = t.Cpu();

        (List<Mapping> mappings, PageTableEnumerator enumerator) = EnumerateAll(t.Memory, cpu);

        Assert.Equal(
            new[]
            {
                (readOnlyAbove, EffectiveRights.User),
                (xdInPde, EffectiveRights.Writable | EffectiveRights.User | EffectiveRights.ExecuteDisable),
                (supervisorLeaf, EffectiveRights.Writable),
                (bigLeaf, EffectiveRights.Writable | EffectiveRights.User | EffectiveRights.ExecuteDisable),
            },
            mappings.Select(m => (m.Address.Value, m.Rights)));
        Assert.All(mappings, m => AssertWalkerAgrees(t.Memory, cpu, m));
        Assert.Empty(enumerator.Anomalies);
    }

    [Fact]
    public void An_entry_with_reserved_bits_is_an_anomaly_and_nothing_below_it_is_listed_though_QEMU_would_list_it()
    {
        var t = new TestTables();
        ulong good = 0x0000_0000_0040_0000;
        ulong badPde = 0x0000_0000_4000_0000; // PDPT index 1
        ulong bad2M = 0x0000_0000_8000_0000; // PDPT index 2
        ulong psInPml4 = 0x0000_0180_0000_0000; // PML4 index 3
        t.Map(good, PageSize.Size4K, 0x2000_0000, Open);
        t.Map(good + 0x1000, PageSize.Size4K, 0x2000_1000, Open);
        t.Map(badPde, PageSize.Size4K, 0x2000_2000, Open);
        t.Or(badPde, PagingLevel.Pd, 1UL << 51); // above MAXPHYADDR 46
        t.Map(bad2M, PageSize.Size2M, 0x2020_0000, Open);
        t.Or(bad2M, PagingLevel.Pd, 1UL << 13); // bits 20:13 of a 2 MiB leaf
        t.Map(psInPml4, PageSize.Size1G, 0x4000_0000, Open);
        t.Or(psInPml4, PagingLevel.Pml4, PS);
        CpuState cpu = t.Cpu();

        (List<Mapping> mappings, PageTableEnumerator enumerator) = EnumerateAll(t.Memory, cpu);

        Assert.Equal(new[] { good, good + 0x1000 }, mappings.Select(m => m.Address.Value));
        Assert.All(enumerator.Anomalies, a => Assert.Equal(AnomalyKind.ReservedBits, a.Kind));
        Assert.Equal(
            new[] { (PagingLevel.Pd, badPde), (PagingLevel.Pd, bad2M), (PagingLevel.Pml4, psInPml4) },
            enumerator.Anomalies.Select(a => (a.Level, a.Address.Value)));
        Assert.Equal(t.EntryAddress(badPde, PagingLevel.Pd), enumerator.Anomalies[0].EntryAddress.Value);
        Assert.Equal(t.Get(badPde, PagingLevel.Pd), enumerator.Anomalies[0].Raw);
        Assert.Contains("above MAXPHYADDR 46 (0x8000000000000)", enumerator.Anomalies[0].Message, StringComparison.Ordinal);
        Assert.Contains("bits 20:13 of a 2 MiB leaf (0x2000)", enumerator.Anomalies[1].Message, StringComparison.Ordinal);
        Assert.Contains("the 2 MiB page it maps is", enumerator.Anomalies[1].Message, StringComparison.Ordinal);
        Assert.Contains("PS (bit 7), reserved in a PML4E", enumerator.Anomalies[2].Message, StringComparison.Ordinal);
        Assert.All(enumerator.Anomalies, a => Assert.Contains("QEMU's info tlb does not check reserved bits", a.Message, StringComparison.Ordinal));

        // The walker faults at exactly those entries with RSVD.
        foreach (Anomaly anomaly in enumerator.Anomalies)
        {
            WalkResult result = PageWalker.Translate(cpu, t.Memory, anomaly.Address, AccessKind.Read, Privilege.Supervisor, new WalkOptions { Probe = true }, null);
            Assert.Equal(WalkStatus.PageFault, result.Status);
            Assert.Equal(anomaly.Level, result.FaultLevel);
            Assert.True((result.ErrorCode & PageFaultErrorCode.ReservedBit) != 0);
        }
    }

    [Fact]
    public void XD_is_a_reserved_bit_without_EFER_NXE_and_a_right_with_it()
    {
        var t = new TestTables();
        t.Map(0x1000, PageSize.Size4K, 0x3000_0000, Open | XD);
        t.Map(0x2000, PageSize.Size4K, 0x3000_1000, Open);

        (List<Mapping> withNxe, _) = EnumerateAll(t.Memory, t.Cpu(nxe: true));
        (List<Mapping> withoutNxe, PageTableEnumerator enumerator) = EnumerateAll(t.Memory, t.Cpu(nxe: false));

        Assert.Equal(new[] { EffectiveRights.Writable | EffectiveRights.User | EffectiveRights.ExecuteDisable, EffectiveRights.Writable | EffectiveRights.User }, withNxe.Select(m => m.Rights));
        Assert.Equal(0x2000UL, Assert.Single(withoutNxe).Address.Value);
        Anomaly anomaly = Single(enumerator, AnomalyKind.ReservedBits);
        Assert.Equal(PagingLevel.Pt, anomaly.Level);
        Assert.Contains("XD (bit 63) while EFER.NXE = 0", anomaly.Message, StringComparison.Ordinal);
        Assert.Contains("the 4 KiB page it maps is", anomaly.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_table_outside_memory_is_reported_at_the_entry_that_references_it_and_the_rest_is_listed()
    {
        var t = new TestTables();
        t.Map(0x1000, PageSize.Size4K, 0x3000_0000, Open);
        ulong pde = t.EnsureEntry(0x20_0000, PagingLevel.Pd);
        t.Write(pde, 0x1_0000_0000UL | Open); // a PT at 4 GiB, beyond the 1 GiB of memory
        t.Map(0x40_0000, PageSize.Size4K, 0x3000_2000, Open);

        (List<Mapping> mappings, PageTableEnumerator enumerator) = EnumerateAll(t.Memory, t.Cpu());

        Assert.Equal(new[] { 0x1000UL, 0x40_0000UL }, mappings.Select(m => m.Address.Value));
        Anomaly anomaly = Assert.Single(enumerator.Anomalies);
        Assert.Equal(AnomalyKind.EntryOutsideMemory, anomaly.Kind);
        Assert.Equal(PagingLevel.Pd, anomaly.Level);
        Assert.Equal(0x20_0000UL, anomaly.Address.Value);
        Assert.Equal(pde, anomaly.EntryAddress.Value);
        Assert.Equal(0x1_0000_0000UL | Open, anomaly.Raw);
        Assert.Equal(
            "The PDE at 0x102008 for 0x200000 references a PT at 0x100000000, outside physical memory of 1,073,741,824 bytes; its 2 MiB range is not enumerated.",
            anomaly.Message);
        Assert.True(enumerator.Completed);
    }

    [Fact]
    public void A_table_only_partly_inside_memory_lists_its_readable_part()
    {
        var t = new TestTables();
        for (ulong i = 0; i < 512; i += 64)
        {
            t.Map(i << 12, PageSize.Size4K, 0x3000_0000 + (i << 12), Open);
        }

        ulong pt = t.EntryAddress(0, PagingLevel.Pt);
        var memory = new HoleyMemory(t.Memory, pt + (256 * 8), pt + 4096);

        (List<Mapping> mappings, PageTableEnumerator enumerator) = EnumerateAll(memory, t.Cpu());

        Assert.Equal(new ulong[] { 0, 64, 128, 192 }, mappings.Select(m => m.Address.Value >> 12));
        Anomaly anomaly = Single(enumerator, AnomalyKind.EntryOutsideMemory);
        Assert.Equal(PagingLevel.Pd, anomaly.Level);
        Assert.Contains("its entries from 256 on cannot be read", anomaly.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_root_outside_memory_is_one_anomaly_and_no_mapping()
    {
        var t = new TestTables();
        t.Map(0x1000, PageSize.Size4K, 0x3000_0000, Open);
        CpuState cpu = t.Cpu().WithCr3(0x8000_0000); // 2 GiB, beyond the 1 GiB of memory

        (List<Mapping> mappings, PageTableEnumerator enumerator) = EnumerateAll(t.Memory, cpu);

        Assert.Empty(mappings);
        Anomaly anomaly = Assert.Single(enumerator.Anomalies);
        Assert.Equal(AnomalyKind.RootOutsideMemory, anomaly.Kind);
        Assert.Equal(PagingLevel.Pml4, anomaly.Level);
        Assert.Equal(0x8000_0000UL, anomaly.EntryAddress.Value);
        Assert.Equal(0x8000_0000UL, anomaly.Raw);
        Assert.Contains("outside physical memory", anomaly.Message, StringComparison.Ordinal);
        Assert.Equal(0, enumerator.EntriesRead);
        Assert.True(enumerator.Completed);
        Assert.False(enumerator.Stopped);
    }

    [Fact]
    public void A_recursive_PML4_slot_gives_exactly_the_extra_mappings_a_CPU_would_see()
    {
        var t = new TestTables();
        t.Map(0x40_0000, PageSize.Size4K, 0x3000_0000, Open);
        ulong root = t.Root;
        ulong pdpt = t.Tables[1];
        ulong pd = t.Tables[2];
        ulong pt = t.Tables[3];
        t.Write(root + (510 * 8), root | P | RW); // recursive slot 510, supervisor-only
        CpuState cpu = t.Cpu();

        (List<Mapping> mappings, PageTableEnumerator enumerator) = EnumerateAll(t.Memory, cpu);

        // Indices (PML4, PDPT, PD, PT) of each path, its frame and the leaf's entry address, worked out by hand:
        // (0,0,2,0) the page itself; (510,0,0,2) the PT seen as a page through PD[2]; (510,510,0,0) the PD seen
        // through PDPT[0]; (510,510,510,0) the PDPT through PML4[0]; (510,510,510,510) the PML4 itself.
        var expected = new (ulong Va, ulong Frame, ulong EntryAddress, EffectiveRights Rights)[]
        {
            (0x0000_0000_0040_0000, 0x3000_0000, pt, EffectiveRights.Writable | EffectiveRights.User),
            (0xFFFF_FF00_0000_2000, pt, pd + (2 * 8), EffectiveRights.Writable),
            (0xFFFF_FF7F_8000_0000, pd, pdpt, EffectiveRights.Writable),
            (0xFFFF_FF7F_BFC0_0000, pdpt, root, EffectiveRights.Writable),
            (0xFFFF_FF7F_BFDF_E000, root, root + (510 * 8), EffectiveRights.Writable),
        };
        Assert.Equal(expected, mappings.Select(m => (m.Address.Value, m.Frame.Value, m.EntryAddress.Value, m.Rights)));
        Assert.All(mappings, m => Assert.Equal(PageSize.Size4K, m.Size));
        Assert.All(mappings, m => AssertWalkerAgrees(t.Memory, cpu, m));

        // The PML4, the PDPT and the PD are each reached again by another path: one note per table frame.
        Assert.All(enumerator.Anomalies, a => Assert.Equal(AnomalyKind.RepeatedTable, a.Kind));
        Assert.Equal(new[] { root, pdpt, pd }, enumerator.Anomalies.Select(a => ReferencedTable(a)));
        Assert.All(enumerator.Anomalies, a => Assert.True(a.IsInformational));
        Assert.Contains("as a PDPT, which was already reached as a PML4 for 0x0", enumerator.Anomalies[0].Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_table_shared_under_many_entries_is_listed_under_every_path_and_noted_once()
    {
        var t = new TestTables();
        ulong region = 0x4000_0000; // PDPT index 1
        t.Map(region, PageSize.Size4K, 0x3000_0000, Open);
        t.Map(region + 0x5000, PageSize.Size4K, 0x3000_5000, Open);
        t.Map(region + 0x1FF000, PageSize.Size4K, 0x301F_F000, Open);
        ulong sharedPde = t.Get(region, PagingLevel.Pd);
        ulong pd = t.EntryAddress(region, PagingLevel.Pd);
        for (ulong i = 1; i < 512; i++)
        {
            t.Write(pd + (i * 8), sharedPde);
        }

        // The whole PD is shared too, under the PDPTE for 0x8000_0000.
        ulong pdpte = t.Get(region, PagingLevel.Pdpt);
        t.Write(t.EntryAddress(0x8000_0000, PagingLevel.Pdpt), pdpte);
        CpuState cpu = t.Cpu();

        (List<Mapping> mappings, PageTableEnumerator enumerator) = EnumerateAll(t.Memory, cpu);

        var expected = new List<(ulong, ulong)>();
        foreach (ulong gig in new ulong[] { 0x4000_0000, 0x8000_0000 })
        {
            for (ulong pde = 0; pde < 512; pde++)
            {
                foreach ((ulong offset, ulong frame) in new[] { (0x0UL, 0x3000_0000UL), (0x5000UL, 0x3000_5000UL), (0x1FF000UL, 0x301F_F000UL) })
                {
                    expected.Add((gig + (pde << 21) + offset, frame));
                }
            }
        }

        Assert.Equal(expected, mappings.Select(m => (m.Address.Value, m.Frame.Value)));
        Assert.All(mappings.Where((_, i) => i % 97 == 0), m => AssertWalkerAgrees(t.Memory, cpu, m));
        Assert.Equal(
            new[] { (PagingLevel.Pd, pd + 8, sharedPde), (PagingLevel.Pdpt, t.EntryAddress(0x8000_0000, PagingLevel.Pdpt), pdpte) },
            enumerator.Anomalies.Select(a => (a.Level, a.EntryAddress.Value, a.Raw)));
        Assert.All(enumerator.Anomalies, a => Assert.Equal(AnomalyKind.RepeatedTable, a.Kind));
    }

    [Fact]
    public void A_fan_out_to_512_to_the_fourth_leaves_stops_at_MaxLeaves_quickly()
    {
        SparsePhysicalMemory memory = FanOut(ptes: (i, pt) => 0x4000_0000UL + ((ulong)i << 12) | Open, out CpuState cpu);
        var options = new EnumerationOptions { MaxLeaves = 300_000 };
        var watch = Stopwatch.StartNew();

        (List<Mapping> mappings, PageTableEnumerator enumerator) = EnumerateAll(memory, cpu, options);

        watch.Stop();
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(2), $"took {watch.Elapsed}");
        Assert.Equal(300_000, mappings.Count);
        Assert.Equal(300_000, enumerator.LeafCount);

        // The work is the leaves plus one PDE per page table and a few entries above: 300,000 + 586 + 2 + 1.
        Assert.Equal(300_000 + 1 + 586 + 2 + 1, enumerator.EntriesRead);
        Assert.True(enumerator.Stopped);
        Assert.False(enumerator.Completed);
        Anomaly last = enumerator.Anomalies[^1];
        Assert.Equal(AnomalyKind.LeafLimitReached, last.Kind);
        Assert.Equal(mappings[^1].Address.Value + 0x1000, last.Address.Value);
        Assert.StartsWith("Stopped after 300,000 leaves: the PTE at ", last.Message, StringComparison.Ordinal);
        Assert.EndsWith("Raise the limit with EnumerationOptions.MaxLeaves.", last.Message, StringComparison.Ordinal);

        // 300,000 leaves span two PDPTEs of the first PML4E: the PD and the PT were reached again, each noted once.
        Assert.Equal(2, enumerator.Anomalies.Count(a => a.Kind == AnomalyKind.RepeatedTable));
    }

    [Fact]
    public void MaxEntriesRead_bounds_the_work_on_a_fan_out()
    {
        SparsePhysicalMemory memory = FanOut(ptes: (i, pt) => 0x4000_0000UL + ((ulong)i << 12) | Open, out CpuState cpu);

        (List<Mapping> mappings, PageTableEnumerator enumerator) = EnumerateAll(memory, cpu, new EnumerationOptions { MaxEntriesRead = 100_000 });

        Assert.Equal(100_000, enumerator.EntriesRead);
        Assert.True(enumerator.Stopped);
        Anomaly last = enumerator.Anomalies[^1];
        Assert.Equal(AnomalyKind.WorkLimitReached, last.Kind);
        Assert.StartsWith("Stopped after reading 100,000 paging-structure entries (", last.Message, StringComparison.Ordinal);
        Assert.EndsWith("Raise the limit with EnumerationOptions.MaxEntriesRead.", last.Message, StringComparison.Ordinal);
        Assert.Equal(enumerator.LeafCount, mappings.Count);
        Assert.InRange(mappings.Count, 99_000, 100_000);
    }

    [Fact]
    public void A_leaf_limit_equal_to_the_number_of_leaves_does_not_stop_and_one_less_does()
    {
        var t = new TestTables();
        for (ulong i = 0; i < 10; i++)
        {
            t.Map(i << 12, PageSize.Size4K, 0x3000_0000 + (i << 12), Open);
        }

        (List<Mapping> all, PageTableEnumerator exact) = EnumerateAll(t.Memory, t.Cpu(), new EnumerationOptions { MaxLeaves = 10 });
        (List<Mapping> cut, PageTableEnumerator short1) = EnumerateAll(t.Memory, t.Cpu(), new EnumerationOptions { MaxLeaves = 9 });
        (List<Mapping> none, PageTableEnumerator zero) = EnumerateAll(t.Memory, t.Cpu(), new EnumerationOptions { MaxLeaves = 0 });

        Assert.Equal(10, all.Count);
        Assert.False(exact.Stopped);
        Assert.Empty(exact.Anomalies);
        Assert.Equal(9, cut.Count);
        Assert.True(short1.Stopped);
        Assert.Equal(0x9000UL, Single(short1, AnomalyKind.LeafLimitReached).Address.Value);
        Assert.Empty(none);
        Assert.True(zero.Stopped);
    }

    [Fact]
    public void A_fan_out_of_empty_tables_is_memoized_and_costs_one_read_per_distinct_entry()
    {
        SparsePhysicalMemory memory = FanOut(ptes: (i, pt) => 0, out CpuState cpu);
        var watch = Stopwatch.StartNew();

        (List<Mapping> mappings, PageTableEnumerator enumerator) = EnumerateAll(memory, cpu);

        watch.Stop();
        Assert.Empty(mappings);
        Assert.True(enumerator.Completed);
        Assert.Equal(4 * 512, enumerator.EntriesRead);
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(2), $"took {watch.Elapsed}");
        Assert.Equal(3, enumerator.Anomalies.Count(a => a.Kind == AnomalyKind.RepeatedTable));
    }

    [Fact]
    public void A_fan_out_onto_reserved_entries_reports_each_entry_once_and_ends()
    {
        // 512 PTEs that each set bit 51 (above MAXPHYADDR), reached by 512^3 paths.
        SparsePhysicalMemory memory = FanOut(ptes: (i, pt) => (1UL << 51) | ((ulong)i << 12) | Open, out CpuState cpu);

        (List<Mapping> mappings, PageTableEnumerator enumerator) = EnumerateAll(memory, cpu);

        Assert.Empty(mappings);
        Assert.True(enumerator.Completed);
        Assert.Equal(512, enumerator.Anomalies.Count(a => a.Kind == AnomalyKind.ReservedBits));
        Assert.Equal(512, enumerator.Anomalies.Where(a => a.Kind == AnomalyKind.ReservedBits).Select(a => a.EntryAddress).Distinct().Count());
        Assert.Equal(4 * 512, enumerator.EntriesRead);
    }

    [Fact]
    public void A_fan_out_onto_a_table_outside_memory_reports_each_referencing_entry_once_and_ends()
    {
        var memory = new SparsePhysicalMemory(1UL << 20);
        ulong pml4 = 0x1000;
        ulong pdpt = 0x2000;
        ulong pd = 0x3000;
        for (ulong i = 0; i < 512; i++)
        {
            memory.WriteUInt64(PhysicalAddress.Create(pml4 + (i * 8)), pdpt | Open);
            memory.WriteUInt64(PhysicalAddress.Create(pdpt + (i * 8)), pd | Open);
            memory.WriteUInt64(PhysicalAddress.Create(pd + (i * 8)), 0x1000_0000UL | Open); // a PT at 256 MiB: outside
        }

        (List<Mapping> mappings, PageTableEnumerator enumerator) = EnumerateAll(memory, CpuState.Create(pml4));

        Assert.Empty(mappings);
        Assert.True(enumerator.Completed);
        Assert.Equal(512, enumerator.Anomalies.Count(a => a.Kind == AnomalyKind.EntryOutsideMemory));
        Assert.Equal(3 * 512, enumerator.EntriesRead);
    }

    [Fact]
    public void MaxAnomalies_caps_the_list_and_counts_the_rest()
    {
        SparsePhysicalMemory memory = FanOut(ptes: (i, pt) => (1UL << 51) | Open, out CpuState cpu);

        (_, PageTableEnumerator enumerator) = EnumerateAll(memory, cpu, new EnumerationOptions { MaxAnomalies = 100 });

        Assert.Equal(100, enumerator.Anomalies.Count);
        Assert.Equal(512 + 3 - 100, enumerator.UnrecordedAnomalies);
    }

    [Fact]
    public void Progress_is_reported_about_every_million_entries_and_at_the_end()
    {
        SparsePhysicalMemory memory = FanOut(ptes: (i, pt) => 0x4000_0000UL + ((ulong)i << 12) | Open, out CpuState cpu);
        var progress = new RecordingProgress<EnumerationProgress>();

        var enumerator = new PageTableEnumerator(memory, cpu, new EnumerationOptions { MaxEntriesRead = 2_200_000, Progress = progress });

        long count = enumerator.Enumerate().LongCount();

        Assert.Equal(count, enumerator.LeafCount);
        Assert.Equal(new long[] { 1L << 20, 2L << 20, 2_200_000 }, progress.Reports.Select(r => r.EntriesRead));
        Assert.All(progress.Reports, r => Assert.InRange(r.Leaves, r.EntriesRead - 10_000, r.EntriesRead));
        Assert.True(progress.Reports[1].Position > progress.Reports[0].Position);
        Assert.True(enumerator.Stopped);
    }

    [Fact]
    public void Cancellation_throws_within_a_few_thousand_entries()
    {
        SparsePhysicalMemory memory = FanOut(ptes: (i, pt) => 0x4000_0000UL + ((ulong)i << 12) | Open, out CpuState cpu);
        using var source = new CancellationTokenSource();
        source.Cancel();
        var enumerator = new PageTableEnumerator(memory, cpu, new EnumerationOptions { CancellationToken = source.Token });

        Assert.Throws<OperationCanceledException>(() => enumerator.Enumerate().Count());
        Assert.Equal(4096, enumerator.EntriesRead);
    }

    [Fact]
    public void Enumerating_again_starts_afresh()
    {
        var t = new TestTables();
        t.Map(0x1000, PageSize.Size4K, 0x3000_0000, Open | (1UL << 51));
        t.Map(0x2000, PageSize.Size4K, 0x3000_1000, Open);
        var enumerator = new PageTableEnumerator(t.Memory, t.Cpu());

        List<Mapping> first = enumerator.Enumerate().ToList();
        long reads = enumerator.EntriesRead;
        List<Mapping> second = enumerator.Enumerate().ToList();

        Assert.Equal(first, second);
        Assert.Equal(reads, enumerator.EntriesRead);
        Assert.Single(enumerator.Anomalies);
        Assert.Equal(1, enumerator.LeafCount);
    }

    [Fact]
    public void Options_reject_negative_limits_and_the_constructor_rejects_nulls()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new EnumerationOptions { MaxLeaves = -1 });
        Assert.Throws<ArgumentOutOfRangeException>(() => new EnumerationOptions { MaxEntriesRead = -1 });
        Assert.Throws<ArgumentOutOfRangeException>(() => new EnumerationOptions { MaxAnomalies = -1 });
        Assert.Equal(10_000_000, new EnumerationOptions().MaxLeaves);
        Assert.Equal(1_000_000_000, new EnumerationOptions().MaxEntriesRead);
        var memory = new SparsePhysicalMemory(1UL << 20);
        Assert.Throws<ArgumentNullException>(() => new PageTableEnumerator(null!, CpuState.Create(0)));
        Assert.Throws<ArgumentNullException>(() => new PageTableEnumerator(memory, null!));
    }

    [Fact]
    public void Five_level_tables_give_57_bit_canonical_addresses_in_both_halves()
    {
        var t = new TestTables(PagingMode.FiveLevel);
        t.Map(0x00FF_FFFF_FFFF_F000, PageSize.Size4K, 0x3000_0000, Open);
        t.Map(0xFF00_0000_0000_0000, PageSize.Size4K, 0x3000_1000, Open);
        t.Map(0x0001_0000_0000_0000, PageSize.Size1G, 0x4000_0000, Open);
        CpuState cpu = t.Cpu();

        (List<Mapping> mappings, _) = EnumerateAll(t.Memory, cpu);

        Assert.Equal(new[] { 0x0001_0000_0000_0000UL, 0x00FF_FFFF_FFFF_F000UL, 0xFF00_0000_0000_0000UL }, mappings.Select(m => m.Address.Value));
        Assert.All(mappings, m => AssertWalkerAgrees(t.Memory, cpu, m));
    }

    /// <summary>
    /// PML4 → 512 × the same PDPT → 512 × the same PD → 512 × the same PT, whose 512 entries
    /// <paramref name="ptes"/> writes: 512⁴ paths.
    /// </summary>
    private static SparsePhysicalMemory FanOut(Func<int, ulong, ulong> ptes, out CpuState cpu)
    {
        var memory = new SparsePhysicalMemory(1UL << 20);
        ulong pml4 = 0x1000;
        ulong pdpt = 0x2000;
        ulong pd = 0x3000;
        ulong pt = 0x4000;
        for (int i = 0; i < 512; i++)
        {
            ulong offset = (ulong)i * 8;
            memory.WriteUInt64(PhysicalAddress.Create(pml4 + offset), pdpt | Open);
            memory.WriteUInt64(PhysicalAddress.Create(pdpt + offset), pd | Open);
            memory.WriteUInt64(PhysicalAddress.Create(pd + offset), pt | Open);
            memory.WriteUInt64(PhysicalAddress.Create(pt + offset), ptes(i, pt));
        }

        cpu = CpuState.Create(pml4);
        return memory;
    }

    private static ulong ReferencedTable(Anomaly anomaly) => anomaly.Raw & TestTables.TableAddressBits;
}
