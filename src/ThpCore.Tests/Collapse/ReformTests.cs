using System;
using System.Collections.Generic;
using System.Linq;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using ThpCore.Collapse;
using ThpCore.Diagnostics;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;
using ThpCore.Tests.Mm;
using Xunit;
using static ThpCore.Tests.Collapse.CollapseFixture;

namespace ThpCore.Tests.Collapse;

public sealed class ReformTests
{
    private const int HoleStart = 100;
    private const int Holes = 40;
    private const int Occupants = 10;
    private static readonly VirtualAddress OtherBase = VirtualAddress.FromRaw(4UL << 30);
    private static readonly VirtualAddress FillerBase = VirtualAddress.FromRaw(8UL << 30);

    // The seed thread's scenario on a full 8 MiB node: a THP at block B, MADV_DONTNEED of 40 pages, the deferred-split
    // shrinker frees them, another address space's small pages take some of them, memory elsewhere is fragmented.
    private sealed class Scenario
    {
        public Scenario(int holes = Holes, Action<Scenario>? occupy = null, bool fragment = true, int holeStart = HoleStart)
        {
            var node = new MemoryNode(8UL << 20);
            Owner = new AddressSpace(node, MmFixtures.Always);
            Other = new AddressSpace(node, MmFixtures.Never);
            Filler = new AddressSpace(node, MmFixtures.Never);
            Start = MapAtBase(Owner, M2);
            Assert.Equal(FaultAction.MappedHugePage, Owner.Access(Start, AccessKind.Write).Fault);
            Fill(Owner, Start, 0, 512);
            Block = AddressSpaceTests.Pde(Owner, Start.Value).Address.FrameNumber;

            Other.Map(16 * M2, Rw, VmaFlags.Anonymous, OtherBase, MapFlags.Fixed);
            Write(Other, OtherBase, 0xB0);

            // Use up every free frame: the filler's small pages.
            Filler.Map(16 * M2, Rw, VmaFlags.Anonymous, FillerBase, MapFlags.Fixed);
            for (ulong va = FillerBase.Value; node.Buddy.FreeFrames > 0; va += K4)
            {
                if (Filler.Access(VirtualAddress.FromRaw(va), AccessKind.Write).Status == AccessStatus.Translated)
                {
                    FillerPages.Add(VirtualAddress.FromRaw(va));
                }
            }

            Owner.Advise(Start.Add((ulong)holeStart * K4), (ulong)holes * K4, Advice.DontNeed);
            Assert.Equal(1, node.ShrinkDeferredSplitQueue());
            Assert.Equal((ulong)holes, node.Buddy.FreeFrames);

            if (occupy is null)
            {
                for (int i = 1; i <= Occupants; i++)
                {
                    Write(Other, OtherBase.Add((ulong)i * K4), (byte)(0xB0 + i));
                }
            }
            else
            {
                occupy(this);
            }

            // Fragment the rest: every eighth filler page goes, far fewer than compaction's 1024-frame gap.
            for (int i = 0; fragment && i < 64 * 8; i += 8)
            {
                Filler.Advise(FillerPages[i], K4, Advice.DontNeed);
            }

            Assert.Equal(0, node.Buddy.FreeBlocks(9) + node.Buddy.FreeBlocks(10));
        }

        public AddressSpace Owner { get; }

        public AddressSpace Other { get; }

        public AddressSpace Filler { get; }

        public VirtualAddress Start { get; }

        public ulong Block { get; }

        public List<VirtualAddress> FillerPages { get; } = [];

        public MemoryNode Node => Owner.Node;

        public AddressSpace[] Spaces => [Owner, Other, Filler];

        public static void Write(AddressSpace space, VirtualAddress va, byte value)
        {
            AccessResult write = space.Access(va, AccessKind.Write);
            Assert.Equal(AccessStatus.Translated, write.Status);
            space.Node.Memory.GetWritableFrame(write.PhysicalAddress.FrameNumber).Fill(value);
        }

        public ulong FrameAt(AddressSpace space, VirtualAddress va) => AddressSpaceTests.Pte(space, va.Value).Address.FrameNumber;

        // Every PTE and PDE of the three spaces' used ranges, the free frames: what a refusal must leave as it was.
        public (ulong[] Entries, ulong Free) Snapshot()
        {
            var entries = new List<ulong>();
            for (int i = 0; i < 512; i++)
            {
                entries.Add(AddressSpaceTests.Pte(Owner, Start.Value + ((ulong)i * K4)).Raw);
                entries.Add(AddressSpaceTests.Pte(Other, OtherBase.Value + ((ulong)i * K4)).Raw);
            }

            entries.AddRange(FillerPages.Select(va => AddressSpaceTests.Pte(Filler, va.Value).Raw));
            entries.Add(AddressSpaceTests.Pde(Owner, Start.Value).Raw);
            return (entries.ToArray(), Node.Buddy.FreeFrames);
        }
    }

    [Fact]
    public void The_seed_scenario_re_forms_the_thp_in_its_block_moving_only_the_occupants_where_copy_collapse_finds_no_block()
    {
        var s = new Scenario();
        int[] occupantSlots = Enumerable.Range(1, Occupants).Select(i => (int)(s.FrameAt(s.Other, OtherBase.Add((ulong)i * K4)) - s.Block)).ToArray();
        Assert.All(occupantSlots, slot => Assert.InRange(slot, HoleStart, HoleStart + Holes - 1));
        Assert.Equal(CollapseStatus.AllocHugePageFail, Collapser.TryCollapseByCopy(s.Owner, s.Start, CollapseContext.MadviseCollapse).Status);
        long otherMigrated = s.Other.Counters.Get(VmEvent.PgMigrateSuccess);

        CollapseResult result = Collapser.TryReformInPlace(s.Owner, s.Start);

        Assert.Equal(new CollapseResult(CollapseStatus.Succeed, s.Start, CollapsePath.Reformed, PhysicalAddress.FromFrameNumber(s.Block), result.Invalidation), result);
        Assert.Equal(new TlbRangeInvalidation(s.Start, M2), result.Invalidation);
        PageTableEntry pde = AddressSpaceTests.Pde(s.Owner, s.Start.Value);
        Assert.True(pde.IsLeaf);
        Assert.Equal(s.Block, pde.Address.FrameNumber);
        Folio thp = s.Node.FolioOf(s.Block);
        Assert.Equal((9, 1, 1, 1), (thp.Order, thp.RefCount, thp.MapCount, thp.EntireMapCount));
        Assert.Equal(1, s.Owner.Counters.Get(VmEvent.ThpCollapseReformed));
        Assert.Equal(Occupants, s.Owner.Counters.Get(VmEvent.ThpCollapseReformMigrated));
        Assert.Equal(0, s.Owner.Counters.Get(VmEvent.ThpCollapseInPlace));
        Assert.Equal(otherMigrated + Occupants, s.Other.Counters.Get(VmEvent.PgMigrateSuccess));

        // The 472 pages in place kept their frames (the PMD maps B) and bytes; the holes read zero.
        for (int i = 0; i < 512; i++)
        {
            uint seen = BitConverter.ToUInt32(s.Node.Memory.ReadFrame(s.Block + (ulong)i)[..4]);
            bool hole = i is >= HoleStart and < HoleStart + Holes;
            Assert.True((hole ? 0u : (uint)i + 0xdead0000u) == seen, $"page {i} reads {seen:x}");
            if (hole)
            {
                Assert.True(s.Node.Memory.ReadFrame(s.Block + (ulong)i).IndexOfAnyExcept((byte)0) < 0);
            }
        }

        // The occupants moved out of B, bytes intact, still mapped by their own space.
        for (int i = 1; i <= Occupants; i++)
        {
            ulong frame = s.FrameAt(s.Other, OtherBase.Add((ulong)i * K4));
            Assert.False(frame >= s.Block && frame < s.Block + 512, $"occupant {i} is still in the block at {frame:x}");
            Assert.True(s.Node.Memory.ReadFrame(frame).IndexOfAnyExcept((byte)(0xB0 + i)) < 0);
        }

        AssertBooks(s.Spaces);
    }

    [Fact]
    public void The_scanner_re_forms_where_the_in_place_check_finds_holes_and_reports_it()
    {
        var s = new Scenario();
        using var scanner = new Khugepaged(MmFixtures.Always);
        Assert.True(scanner.Register(s.Owner));

        KhugepagedScanResult step = scanner.ScanStep();

        Assert.Contains(step.Results, r => r is { Status: CollapseStatus.Succeed, Path: CollapsePath.Reformed });
        Assert.Equal((0L, 1L, 0L, 1L), (scanner.CollapsedInPlace, scanner.Reformed, scanner.CollapsedByCopy, scanner.PagesCollapsed));
        Assert.True(IsHuge(s.Owner, s.Start));
        AssertBooks(s.Spaces);
    }

    [Fact]
    public void The_copy_only_scanner_does_not_re_form_and_finds_no_block()
    {
        var s = new Scenario();
        using var scanner = new Khugepaged(MmFixtures.Always, Khugepaged.CopyOnly);
        Assert.True(scanner.Register(s.Owner));

        KhugepagedScanResult step = scanner.ScanStep();

        Assert.Contains(step.Results, r => r.Status == CollapseStatus.AllocHugePageFail);
        Assert.Equal((0L, 0L), (scanner.Reformed, scanner.PagesCollapsed));
        Assert.False(IsHuge(s.Owner, s.Start));
    }

    [Fact]
    public void A_re_form_writes_one_collapse_event_with_the_path_reformed()
    {
        using var listener = new CollapseEventTests.Listener();
        var s = new Scenario();

        Collapser.TryReformInPlace(s.Owner, s.Start);

        object?[] mine = Assert.Single(listener.Events, e => e.EventId == ThpCoreEventSource.CollapseEventId && (long)e.Payload![0]! == s.Owner.Id).Payload!.ToArray();
        Assert.Equal(new object?[] { s.Owner.Id, s.Start.Value, "Reformed", "Succeed", 1, PhysicalAddress.FromFrameNumber(s.Block).Value }, mine);
    }

    [Fact]
    public void A_pinned_page_in_place_refuses_and_changes_nothing()
    {
        var s = new Scenario();
        using PinHandle pin = s.Owner.Pin(s.Start.Add(7 * K4), K4, write: true);
        var before = s.Snapshot();

        CollapseResult result = Collapser.TryReformInPlace(s.Owner, s.Start);

        Assert.Equal(CollapseStatus.ReformPinned, result.Status);
        Assert.Equal(CollapsePath.None, result.Path);
        AssertUnchanged(s, before);
        AssertBooks(s.Spaces, [pin]);
    }

    [Fact]
    public void A_page_table_in_the_block_refuses_and_changes_nothing()
    {
        // The other space's first page in a fresh 2 MiB needs a page table: it lands in the block's holes.
        var s = new Scenario(occupy: s => Scenario.Write(s.Other, OtherBase.Add(8 * M2), 0xCC));
        Assert.Contains(Enumerable.Range(HoleStart, Holes), i => (s.Node.Frames.Describe(s.Block + (ulong)i).Flags & FrameFlags.PageTable) != 0);
        var before = s.Snapshot();

        Assert.Equal(CollapseStatus.ReformBlockOccupied, Collapser.TryReformInPlace(s.Owner, s.Start).Status);

        AssertUnchanged(s, before);
        Assert.Equal(1, s.Owner.Counters.Get(VmEvent.ThpCollapseReformedFailed));
        AssertBooks(s.Spaces);
    }

    [Fact]
    public void Too_few_pages_in_place_refuse_and_change_nothing()
    {
        var s = new Scenario(holes: 300, occupy: _ => { });
        var before = s.Snapshot();

        Assert.Equal(CollapseStatus.ReformTooFewInPlace, Collapser.TryReformInPlace(s.Owner, s.Start).Status);
        Assert.Equal(CollapseStatus.Succeed, Collapser.TryReformInPlace(s.Owner, s.Start, new ReformOptions { MinInPlace = 212 }).Status);
        Assert.NotEqual(before.Entries, s.Snapshot().Entries);
        AssertBooks(s.Spaces);
    }

    [Fact]
    public void A_range_already_one_pte_mapped_thp_is_handed_to_the_in_place_collapse()
    {
        AddressSpace space = NewSpace(MmFixtures.Always);
        VirtualAddress start = PteMappedThp(space);

        CollapseResult result = Collapser.TryReformInPlace(space, start);

        Assert.Equal((CollapseStatus.Succeed, CollapsePath.InPlace), (result.Status, result.Path));
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpCollapseInPlace));
        Assert.Equal(0, space.Counters.Get(VmEvent.ThpCollapseReformed));
    }

    [Fact]
    public void A_threshold_outside_1_to_512_is_misuse()
    {
        AddressSpace space = NewSpace(MmFixtures.Always);

        Assert.Throws<ArgumentOutOfRangeException>(() => Collapser.TryReformInPlace(space, BaseAddr, new ReformOptions { MinInPlace = 0 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => Collapser.TryReformInPlace(space, BaseAddr, new ReformOptions { MinInPlace = 513 }));
    }

    [Fact]
    public void Misplaced_pages_inside_and_outside_the_block_are_copied_to_their_slots()
    {
        // With only the block's holes free, a fault on slot 120 takes another hole: a misplaced page inside B.
        var s = new Scenario(occupy: s => Scenario.Write(s.Owner, s.Start.Add(120 * K4), 0x78));
        ulong inside = s.FrameAt(s.Owner, s.Start.Add(120 * K4));
        Assert.InRange(inside, s.Block + HoleStart, s.Block + HoleStart + Holes - 1);
        Assert.NotEqual(s.Block + 120, inside);

        // With scattered free frames outside B as well, the allocator's order-0 list serves slot 105 from outside.
        Scenario.Write(s.Owner, s.Start.Add(105 * K4), 0x69);
        ulong outside = s.FrameAt(s.Owner, s.Start.Add(105 * K4));
        Assert.False(outside >= s.Block && outside < s.Block + 512);
        ulong free = s.Node.Buddy.FreeFrames;

        CollapseResult result = Collapser.TryReformInPlace(s.Owner, s.Start);

        Assert.Equal((CollapseStatus.Succeed, CollapsePath.Reformed), (result.Status, result.Path));
        Assert.Equal(1, s.Owner.Counters.Get(VmEvent.ThpCollapseReformMigrated));
        Assert.True(s.Node.Memory.ReadFrame(s.Block + 120).IndexOfAnyExcept((byte)0x78) < 0);
        Assert.True(s.Node.Memory.ReadFrame(s.Block + 105).IndexOfAnyExcept((byte)0x69) < 0);
        Assert.True(s.Node.Memory.ReadFrame(s.Block + 106).IndexOfAnyExcept((byte)0) < 0);

        // The 38 true holes took a frame each; the two pages that had frames (the one outside B, the misplaced one's
        // migration destination) gave theirs back.
        Assert.Equal(free - (Holes - 2), s.Node.Buddy.FreeFrames);
        AssertBooks(s.Spaces);
    }

    [Fact]
    public void A_page_a_fork_child_maps_too_refuses_and_changes_nothing()
    {
        var s = new Scenario();
        AddressSpace child = s.Owner.Fork();
        var before = s.Snapshot();

        Assert.Equal(CollapseStatus.ReformShared, Collapser.TryReformInPlace(s.Owner, s.Start).Status);

        AssertUnchanged(s, before);
        AssertBooks([.. s.Spaces, child]);
    }

    [Fact]
    public void A_swap_pte_refuses_and_changes_nothing()
    {
        var s = new Scenario();
        s.Owner.AttachSwap(new SwapDevice(0, 64));
        s.Owner.Advise(s.Start.Add(300 * K4), K4, Advice.PageOut);
        Assert.False(AddressSpaceTests.Pte(s.Owner, s.Start.Value + (300 * K4)).IsPresent);
        var before = s.Snapshot();

        Assert.Equal(CollapseStatus.InPlaceSwapPte, Collapser.TryReformInPlace(s.Owner, s.Start).Status);

        AssertUnchanged(s, before);
        AssertBooks(s.Spaces);
    }

    [Fact]
    public void No_free_frame_outside_the_block_for_the_occupants_refuses_and_changes_nothing()
    {
        var s = new Scenario(fragment: false);
        Assert.Equal((ulong)(Holes - Occupants), s.Node.Buddy.FreeFrames);
        var before = s.Snapshot();

        Assert.Equal(CollapseStatus.ReformNoFreeFrames, Collapser.TryReformInPlace(s.Owner, s.Start).Status);

        AssertUnchanged(s, before);
        AssertBooks(s.Spaces);
    }

    private static Gen<(int First, int Count, int Occupants, int Touches, bool Fragment)> CaseGen =>
        from first in Gen.Choose(0, 480)
        from count in Gen.Choose(1, Math.Min(300, 512 - first))
        from occupants in Gen.Choose(0, Math.Min(count, 24))
        from touches in Gen.Choose(0, Math.Min(count - occupants, 4))
        from fragment in Gen.Frequency((4, Gen.Constant(true)), (1, Gen.Constant(false)))
        select (first, count, occupants, touches, fragment);

    [Property(MaxTest = 15)]
    public Property Re_form_succeeds_exactly_when_enough_pages_are_in_place_and_the_occupants_have_room_and_keeps_every_byte() =>
        Prop.ForAll(CaseGen.ToArbitrary(), c =>
        {
            var s = new Scenario(c.Count, s =>
            {
                for (int i = 1; i <= c.Occupants; i++)
                {
                    Scenario.Write(s.Other, OtherBase.Add((ulong)i * K4), (byte)i);
                }
            }, c.Fragment, c.First);
            var touched = new Dictionary<int, byte>();
            for (int k = 0; k < c.Touches; k++)
            {
                int slot = c.First + ((k * 7) % c.Count);
                touched[slot] = (byte)(0x40 + k);
                Scenario.Write(s.Owner, s.Start.Add((ulong)slot * K4), touched[slot]);
            }

            // The expectation, from the tables and the frame table alone.
            int inPlace = 0;
            int occupied = 0;
            int freeInBlock = 0;
            for (int i = 0; i < 512; i++)
            {
                PageTableEntry pte = AddressSpaceTests.Pte(s.Owner, s.Start.Value + ((ulong)i * K4));
                if (pte.IsPresent && pte.Address.FrameNumber == s.Block + (ulong)i)
                {
                    inPlace++;
                }
                else if ((s.Node.Frames.Describe(s.Block + (ulong)i).Flags & FrameFlags.Free) != 0)
                {
                    freeInBlock++;
                }
                else
                {
                    occupied++;
                }
            }

            CollapseStatus expected = inPlace < 256 ? CollapseStatus.ReformTooFewInPlace
                : (ulong)occupied > s.Node.Buddy.FreeFrames - (ulong)freeInBlock ? CollapseStatus.ReformNoFreeFrames
                : CollapseStatus.Succeed;
            var before = s.Snapshot();

            CollapseResult result = Collapser.TryReformInPlace(s.Owner, s.Start);

            Assert.Equal(expected, result.Status);
            AssertBooks(s.Spaces);
            if (expected != CollapseStatus.Succeed)
            {
                AssertUnchanged(s, before);
                return;
            }

            Assert.True(IsHuge(s.Owner, s.Start));
            for (int i = 0; i < 512; i++)
            {
                ReadOnlySpan<byte> page = s.Node.Memory.ReadFrame(s.Block + (ulong)i);
                bool hole = i >= c.First && i < c.First + c.Count;
                uint pattern = BitConverter.ToUInt32(page[..4]);
                Assert.True(
                    touched.TryGetValue(i, out byte value) ? page.IndexOfAnyExcept(value) < 0 : hole ? page.IndexOfAnyExcept((byte)0) < 0 : pattern == (uint)i + 0xdead0000u,
                    $"page {i} reads {pattern:x}");
            }

            for (int i = 1; i <= c.Occupants; i++)
            {
                ulong frame = s.FrameAt(s.Other, OtherBase.Add((ulong)i * K4));
                Assert.True(s.Node.Memory.ReadFrame(frame).IndexOfAnyExcept((byte)i) < 0);
            }
        });

    private static void AssertUnchanged(Scenario s, (ulong[] Entries, ulong Free) before)
    {
        (ulong[] entries, ulong free) = s.Snapshot();
        Assert.Equal(before.Free, free);
        Assert.Equal(before.Entries, entries);
    }
}
