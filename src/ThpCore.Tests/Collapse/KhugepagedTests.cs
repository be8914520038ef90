using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Threading;
using ThpCore.Collapse;
using ThpCore.Diagnostics;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;
using Xunit;
using static ThpCore.Tests.Collapse.CollapseFixture;

namespace ThpCore.Tests.Collapse;

/// <summary>The scanner: <c>khugepaged_do_scan</c> / <c>khugepaged_scan_mm_slot</c> accounting, figures, back-off, background mode.</summary>
public sealed class KhugepagedTests
{
    private static readonly ThpSettings s_madvise = new() { Enabled = ThpEnabled.Madvise };

    // Two eligible 2 MiB ranges at BaseAddr, then an ineligible (NOHUGEPAGE) VMA above, all faulted as 4 KiB pages.
    private static (AddressSpace Space, VirtualAddress Start) TwoRangesAndAnIneligibleVma(MemoryNodeFactory? node = null)
    {
        AddressSpace space = node?.Invoke() ?? NewSpace(s_madvise);
        VirtualAddress start = MapAtBase(space, 2 * M2);
        Fill(space, start, 0, 1024);
        space.Advise(start, 2 * M2, Advice.HugePage);
        VirtualAddress other = space.Map(M2, Rw, VmaFlags.Anonymous | VmaFlags.NoHugePage, start.Add(4 * M2), MapFlags.Fixed);
        Fill(space, other, 0, 1);
        return (space, start);
    }

    private delegate AddressSpace MemoryNodeFactory();

    [Fact]
    public void Progress_is_512_per_range_1_per_visit_and_skipped_VMA_and_the_cursor_persists_between_steps()
    {
        (AddressSpace space, VirtualAddress start) = TwoRangesAndAnIneligibleVma();
        var scanner = new Khugepaged(s_madvise);
        Assert.True(scanner.Register(space));
        Assert.False(scanner.Register(space));

        // Visit 1: 1 + range 0 collapsed (the visit ends); visit 2: 1 + range 1 collapsed; budget 600 spent.
        KhugepagedScanResult first = scanner.ScanStep(600);
        Assert.Equal(1026, first.Progress);
        Assert.Equal(2, first.Results.Count);
        Assert.All(first.Results, r => Assert.Equal(CollapseStatus.Succeed, r.Status));
        Assert.Equal(0, first.FullScans);
        Assert.Equal(2, CountHuge(space, start, 2));

        // Visit 3: 1 + the NOHUGEPAGE VMA skipped (1): out of VMAs, full scan; visit 4 from the head: 1 + range 0 (PMD-mapped).
        KhugepagedScanResult second = scanner.ScanStep(3);
        Assert.Equal(2 + 513, second.Progress);
        Assert.Equal(CollapseStatus.PmdMapped, Assert.Single(second.Results).Status);
        Assert.Equal(1, second.FullScans);
        Assert.Equal(2, scanner.PagesCollapsed);
        Assert.Equal(2, scanner.CollapsedByCopy);
        Assert.Equal(0, scanner.CollapsedInPlace);
        Assert.Equal(1, scanner.FullScans);
        Assert.Equal("2\n", scanner.Read("khugepaged/pages_collapsed"));
        Assert.Equal("1\n", scanner.Read("khugepaged/full_scans"));
        Assert.Throws<ArgumentException>(() => scanner.Read("khugepaged/max_ptes_none"));
        AssertBooks(space);
    }

    [Fact]
    public void A_round_stops_when_the_cursor_reaches_the_head_twice_or_nothing_is_registered()
    {
        var scanner = new Khugepaged(s_madvise);
        Assert.Equal(100, scanner.ScanStep(100).Progress);
        Assert.Equal(0, scanner.FullScans);

        AddressSpace space = NewSpace(s_madvise);
        space.Map(M2, Rw);
        scanner.Register(space);
        KhugepagedScanResult step = scanner.ScanStep(4096);
        Assert.Equal(4096, step.Progress); // 1 + 1 (skipped VMA), wrap, then the head again: the round ends
        Assert.Equal(1, step.FullScans);
        Assert.Empty(step.Results);

        var never = new Khugepaged(s_madvise with { Enabled = ThpEnabled.Never });
        never.Register(space);
        Assert.Equal(0, never.ScanStep(4096).FullScans);
    }

    [Fact]
    public void Allocation_failures_back_off_and_the_second_ends_the_round()
    {
        var reserved = new List<(ulong, ulong)>();
        for (ulong block = 0; block < 32; block++)
        {
            reserved.Add(((block * 512) + 100, 1));
        }

        (AddressSpace space, VirtualAddress start) = TwoRangesAndAnIneligibleVma(() =>
        {
            var s = new AddressSpace(new MemoryNode(64UL << 20, reserved), s_madvise);
            s.AttachSwap(new SwapDevice(0, 64));
            return s;
        });
        var scanner = new Khugepaged(s_madvise);
        scanner.Register(space);
        KhugepagedScanResult step = scanner.ScanStep(4096);
        Assert.Equal(2, step.AllocationFailures);
        Assert.True(step.ShouldBackOff);
        Assert.Equal(1026, step.Progress);
        Assert.All(step.Results, r => Assert.Equal(CollapseStatus.AllocHugePageFail, r.Status));
        Assert.Equal(0, scanner.PagesCollapsed);
        Validate(space, start, 1024, 1024);
    }

    [Fact]
    public void The_in_place_strategy_goes_first_and_copy_is_the_fallback()
    {
        (AddressSpace space, VirtualAddress start) = TwoRangesAndAnIneligibleVma();
        var asked = new List<VirtualAddress>();
        CollapseResult InPlace(AddressSpace s, VirtualAddress a)
        {
            asked.Add(a);
            if (a == start)
            {
                // Stand-in for an in-place collapse: do the work another way and report it in place.
                CollapseResult done = Collapser.TryCollapseByCopy(s, a, CollapseContext.MadviseCollapse);
                return done with { Path = CollapsePath.InPlace };
            }

            return new CollapseResult(CollapseStatus.InPlaceMixedFolios, a, CollapsePath.None, PhysicalAddress.Zero);
        }

        var scanner = new Khugepaged(s_madvise, InPlace);
        scanner.Register(space);
        KhugepagedScanResult step = scanner.ScanStep(4096);
        Assert.Equal([start, start.Add(M2)], asked);
        Assert.Equal([CollapsePath.InPlace, CollapsePath.Copy], [step.Results[0].Path, step.Results[1].Path]);
        Assert.Equal(1, scanner.CollapsedInPlace);
        Assert.Equal(1, scanner.CollapsedByCopy);
        Assert.Equal(2, scanner.PagesCollapsed);
    }

    [Fact]
    public void Unregistered_and_disposed_spaces_leave_the_list()
    {
        (AddressSpace a, _) = TwoRangesAndAnIneligibleVma();
        (AddressSpace b, VirtualAddress bStart) = TwoRangesAndAnIneligibleVma();
        var scanner = new Khugepaged(s_madvise);
        scanner.Register(a);
        scanner.Register(b);
        a.Dispose();
        KhugepagedScanResult step = scanner.ScanStep(4096);
        Assert.Equal([b], scanner.Registered);
        Assert.Equal(2, CountHuge(b, bStart, 2));
        Assert.True(step.Results.Count >= 2);
        Assert.True(scanner.Unregister(b));
        Assert.False(scanner.Unregister(b));
        Assert.Empty(scanner.Registered);
    }

    [Fact]
    public void The_background_mode_collapses_while_another_thread_reads_and_stops()
    {
        (AddressSpace space, VirtualAddress start) = TwoRangesAndAnIneligibleVma();
        using var scanner = new Khugepaged(s_madvise with { ScanSleepMilliseconds = 1 });
        scanner.Register(space);
        scanner.Start();
        Assert.True(scanner.IsRunning);
        Assert.Throws<InvalidOperationException>(() => scanner.Start());
        var clock = Stopwatch.StartNew();
        while (scanner.PagesCollapsed < 2 && clock.Elapsed < TimeSpan.FromSeconds(10))
        {
            // Translations only: a physical address goes stale when a collapse by copy frees the old page (a TLB entry
            // without shootdown, docs/address-space.md), so the bytes are checked once the scanner has stopped.
            for (int i = 0; i < 1024; i += 7)
            {
                Assert.Equal(AccessStatus.Translated, space.Access(start.Add((ulong)i * K4), AccessKind.Read).Status);
            }

            Thread.Sleep(1);
        }

        scanner.Stop();
        Assert.False(scanner.IsRunning);
        Assert.Equal(2, CountHuge(space, start, 2));
        Validate(space, start, 1024, 1024);
        AssertBooks(space);
    }

    [Fact]
    public void By_default_the_scanner_collapses_a_fully_PTE_mapped_THP_in_place_where_Linux_copies()
    {
        var space = new AddressSpace(new MemoryNode(64UL << 20), s_madvise);
        VirtualAddress start = space.Map(M2, Protection.Read | Protection.Write, VmaFlags.Anonymous | VmaFlags.HugePage);
        AccessResult fault = space.Access(start.Add(8), AccessKind.Write);
        Assert.Equal(PageSize.Size2M, fault.PageSize);
        space.Node.Memory.WriteUInt64(fault.PhysicalAddress, 0xC0FFEE);
        space.Protect(start.Add(K4), K4, Protection.Read);
        space.Protect(start.Add(K4), K4, Protection.Read | Protection.Write); // re-merged, PTE-mapped
        ulong free = space.Node.Buddy.FreeFrames;

        var scanner = new Khugepaged(s_madvise);
        scanner.Register(space);
        KhugepagedScanResult step = scanner.ScanStep(4096);

        CollapseResult result = Assert.Single(step.Results);
        Assert.Equal((CollapseStatus.Succeed, CollapsePath.InPlace), (result.Status, result.Path));
        Assert.Equal(fault.PhysicalAddress.Value & ~(M2 - 1), result.Folio.Value); // the same frames
        Assert.Equal((1L, 0L, 1L), (scanner.CollapsedInPlace, scanner.CollapsedByCopy, scanner.PagesCollapsed));
        Assert.Equal(0, space.Counters.Get(VmEvent.ThpCollapseAlloc));
        Assert.Equal(free, space.Node.Buddy.FreeFrames); // nothing allocated, the table kept as the deposit
        AccessResult read = space.Access(start.Add(8), AccessKind.Read);
        Assert.Equal(PageSize.Size2M, read.PageSize);
        Assert.Equal(0xC0FFEEUL, ((IPhysicalMemory)space.Node.Memory).ReadUInt64(read.PhysicalAddress));
    }

}
