using System;
using System.Collections.Generic;
using System.Linq;
using ThpCore.Diagnostics;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;
using Xunit;

namespace ThpCore.Tests.Mm;

/// <summary>
/// Compaction and the fault handler's defrag policy: a THP fault on a node with free memory but no free 2 MiB block
/// compacts (or not) as Linux's <c>vma_thp_gfp_mask</c> says for each <c>defrag</c> value.
/// </summary>
public sealed class CompactionTests
{
    private const ulong K4 = 4096;
    private const ulong M2 = 2UL << 20;

    // 12 MiB = 6 pageblocks. A space with THP off fills all free memory with 4 KiB pages, then drops all but every
    // 64th: every pageblock keeps a few pages, so no 2 MiB block is free although most memory is.
    private sealed class Fragmented
    {
        public Fragmented(bool pinKept = false)
        {
            Node = new MemoryNode(12UL << 20);
            Filler = new AddressSpace(Node, new ThpSettings { Enabled = ThpEnabled.Never });
            Start = Filler.Map(12UL << 20, Protection.Read | Protection.Write);
            // Page tables first, all in the lowest pageblock: the model has no migrate types to keep unmovable
            // allocations out of the blocks that data fills.
            for (ulong chunk = 0; chunk < 6; chunk++)
            {
                Assert.Equal(AccessStatus.Translated, Filler.Access(Start.Add(chunk * M2), AccessKind.Read).Status);
            }

            ulong pages = 0;
            while (Node.Buddy.FreeFrames > 0)
            {
                AccessResult result = Filler.Access(Start.Add((pages * K4) + 8), AccessKind.Write);
                if (result.Status != AccessStatus.Translated)
                {
                    break;
                }

                Node.Memory.GetWritableFrame(result.PhysicalAddress.FrameNumber)[8] = (byte)(pages % 251);
                if (pages % 64 == 0)
                {
                    Kept[pages] = PhysicalAddress.FromFrameNumber(result.PhysicalAddress.FrameNumber);
                }

                pages++;
            }

            for (ulong page = 0; page < pages; page += 64)
            {
                Filler.Advise(Start.Add((page + 1) * K4), Math.Min(63, pages - page - 1) * K4, Advice.DontNeed);
            }

            if (pinKept)
            {
                foreach (ulong page in Kept.Keys)
                {
                    Pins.Add(Filler.Pin(Start.Add(page * K4), K4, write: true));
                }
            }

            Assert.True(Node.Buddy.FreeFrames > 1024, $"{Node.Buddy.FreeFrames} free frames");
            for (int order = Folio.PmdOrder; order <= BuddyAllocator.MaxOrder; order++)
            {
                Assert.Equal(0, Node.Buddy.FreeBlocks(order));
            }
        }

        public MemoryNode Node { get; }

        public AddressSpace Filler { get; }

        public VirtualAddress Start { get; }

        public Dictionary<ulong, PhysicalAddress> Kept { get; } = new();

        public List<PinHandle> Pins { get; } = new();

        public void AssertKeptBytes(AddressSpace space, ulong start)
        {
            foreach (ulong page in Kept.Keys)
            {
                AccessResult read = space.Access(VirtualAddress.FromRaw(start + (page * K4) + 8), AccessKind.Read);
                Assert.Equal(AccessStatus.Translated, read.Status);
                Assert.Equal((byte)(page % 251), space.Node.Memory.ReadFrame(read.PhysicalAddress.FrameNumber)[8]);
            }
        }

        public int KeptMoved() => Kept.Count(k => Physical(Filler, Start.Value + (k.Key * K4)) != k.Value);
    }

    private static PhysicalAddress Write(AddressSpace space, ulong va, byte value)
    {
        AccessResult result = space.Access(VirtualAddress.FromRaw(va + 8), AccessKind.Write);
        Assert.Equal(AccessStatus.Translated, result.Status);
        space.Node.Memory.GetWritableFrame(result.PhysicalAddress.FrameNumber)[8] = value;
        return PhysicalAddress.FromFrameNumber(result.PhysicalAddress.FrameNumber);
    }

    private static PhysicalAddress Physical(AddressSpace space, ulong va)
    {
        AccessResult result = space.Access(VirtualAddress.FromRaw(va), AccessKind.Read);
        Assert.Equal(AccessStatus.Translated, result.Status);
        return PhysicalAddress.FromFrameNumber(result.PhysicalAddress.FrameNumber);
    }

    private static (AddressSpace Space, VirtualAddress Start) ThpSpace(MemoryNode node, ThpDefrag defrag, ThpEnabled enabled = ThpEnabled.Always, VmaFlags flags = VmaFlags.Anonymous)
    {
        var space = new AddressSpace(node, new ThpSettings { Enabled = enabled, Defrag = defrag, UseZeroPage = false });
        return (space, space.Map(M2, Protection.Read | Protection.Write, flags));
    }

    [Fact]
    public void Defrag_always_compacts_at_the_fault_and_maps_a_THP_with_every_moved_byte_intact()
    {
        var world = new Fragmented();
        (AddressSpace space, VirtualAddress start) = ThpSpace(world.Node, ThpDefrag.Always);

        AccessResult fault = space.Access(start, AccessKind.Write);

        Assert.Equal(AccessStatus.Translated, fault.Status);
        Assert.Equal(PageSize.Size2M, fault.PageSize);
        Assert.Equal(FaultAction.MappedHugePage, fault.Fault);
        Assert.Equal(1, space.Counters.Get(VmEvent.CompactStall));
        Assert.Equal(1, space.Counters.Get(VmEvent.CompactSuccess));
        Assert.Equal(0, space.Counters.Get(VmEvent.CompactFail));
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpFaultAlloc));
        Assert.Equal(0, space.Counters.Get(VmEvent.ThpFaultFallback));

        // The pages that moved were the filler's (its counters count them), and they kept their bytes.
        int moved = world.KeptMoved();
        Assert.InRange(moved, 1, world.Kept.Count);
        Assert.Equal(moved, world.Filler.Counters.Get(VmEvent.PgMigrateSuccess));
        world.AssertKeptBytes(world.Filler, world.Start.Value);
        Assert.Null(AddressSpaceProperties.CheckBooks(new List<AddressSpace> { world.Filler, space }));
    }

    [Theory]
    [InlineData(ThpDefrag.Never)]
    [InlineData(ThpDefrag.Defer)]
    [InlineData(ThpDefrag.Madvise)]
    [InlineData(ThpDefrag.DeferMadvise)]
    public void Without_direct_reclaim_the_fault_falls_back_without_compacting(ThpDefrag defrag)
    {
        var world = new Fragmented();
        (AddressSpace space, VirtualAddress start) = ThpSpace(world.Node, defrag);

        AccessResult fault = space.Access(start, AccessKind.Write);

        Assert.Equal(PageSize.Size4K, fault.PageSize);
        Assert.Equal(FaultAction.FellBackToSmallPage, fault.Fault);
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpFaultFallback));
        Assert.Equal(0, space.Counters.Get(VmEvent.CompactStall));
        Assert.Equal(0, world.KeptMoved());
    }

    [Theory]
    [InlineData(ThpDefrag.Madvise)]
    [InlineData(ThpDefrag.DeferMadvise)]
    public void Madvise_and_defer_madvise_compact_for_a_MADV_HUGEPAGE_vma(ThpDefrag defrag)
    {
        var world = new Fragmented();
        (AddressSpace space, VirtualAddress start) = ThpSpace(world.Node, defrag, ThpEnabled.Madvise, VmaFlags.Anonymous | VmaFlags.HugePage);

        AccessResult fault = space.Access(start, AccessKind.Write);

        Assert.Equal(PageSize.Size2M, fault.PageSize);
        Assert.Equal(1, space.Counters.Get(VmEvent.CompactStall));
        Assert.Equal(1, space.Counters.Get(VmEvent.CompactSuccess));
        world.AssertKeptBytes(world.Filler, world.Start.Value);
    }

    [Fact]
    public void A_pinned_page_in_every_block_makes_compaction_fail_without_moving_anything()
    {
        var world = new Fragmented(pinKept: true);
        (AddressSpace space, VirtualAddress start) = ThpSpace(world.Node, ThpDefrag.Always);

        AccessResult fault = space.Access(start, AccessKind.Write);

        Assert.Equal(FaultAction.FellBackToSmallPage, fault.Fault);
        Assert.Equal(1, space.Counters.Get(VmEvent.CompactStall));
        Assert.Equal(1, space.Counters.Get(VmEvent.CompactFail));
        Assert.Equal(0, space.Counters.Get(VmEvent.CompactSuccess));
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpFaultFallback));
        Assert.Equal(0, world.KeptMoved());
        Assert.Equal(0, world.Filler.Counters.Get(VmEvent.PgMigrateSuccess) + world.Filler.Counters.Get(VmEvent.PgMigrateFail));
        world.Pins.ForEach(p => p.Dispose());
    }

    [Fact]
    public void Too_little_free_memory_skips_compaction_and_counts_no_stall()
    {
        var world = new Fragmented();
        MemoryNode node = world.Node;
        var eater = new AddressSpace(node, new ThpSettings { Enabled = ThpEnabled.Never });
        VirtualAddress start = eater.Map(12UL << 20, Protection.Read | Protection.Write);
        for (ulong page = 0; node.Buddy.FreeFrames >= 1020; page++)
        {
            Write(eater, start.Value + (page * K4), 1);
        }

        (AddressSpace space, VirtualAddress thp) = ThpSpace(node, ThpDefrag.Always);
        AccessResult fault = space.Access(thp, AccessKind.Write);

        Assert.Equal(FaultAction.FellBackToSmallPage, fault.Fault);
        Assert.Equal(0, space.Counters.Get(VmEvent.CompactStall));
        Assert.Equal(CompactionStatus.Skipped, Compaction.Compact(node, Folio.PmdOrder).Status);
    }

    [Fact]
    public void The_huge_zero_page_compacts_whatever_defrag_says()
    {
        var world = new Fragmented();
        var space = new AddressSpace(world.Node, new ThpSettings { Enabled = ThpEnabled.Always, Defrag = ThpDefrag.Never, UseZeroPage = true });
        VirtualAddress start = space.Map(M2, Protection.Read | Protection.Write);

        AccessResult read = space.Access(start, AccessKind.Read);

        Assert.Equal(FaultAction.MappedHugeZeroPage, read.Fault);
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpZeroPageAlloc));
        Assert.Equal(1, space.Counters.Get(VmEvent.CompactStall));
        Assert.Equal(1, space.Counters.Get(VmEvent.CompactSuccess));
    }

    [Fact]
    public void Full_compaction_moves_every_movable_page_above_the_free_pages_and_frees_whole_blocks()
    {
        var world = new Fragmented();
        AddressSpace child = world.Filler.Fork();

        CompactionResult result = Compaction.Compact(world.Node);

        Assert.Equal(CompactionStatus.Complete, result.Status);
        Assert.True(result.PagesMigrated > 0, $"{result}");
        Assert.Equal(0, result.MigrationFailures);
        Assert.True(world.Node.Buddy.FreeBlocks(Folio.PmdOrder) + world.Node.Buddy.FreeBlocks(Folio.PmdOrder + 1) > 0);
        world.AssertKeptBytes(world.Filler, world.Start.Value);
        world.AssertKeptBytes(child, world.Start.Value);

        // Shared pages moved once, for both processes: the parent and the child still map the same frame.
        foreach (ulong page in world.Kept.Keys)
        {
            Assert.Equal(Physical(world.Filler, world.Start.Value + (page * K4)), Physical(child, world.Start.Value + (page * K4)));
        }

        Assert.Null(AddressSpaceProperties.CheckBooks(new List<AddressSpace> { world.Filler, child }));
    }

    [Fact]
    public void Compaction_for_an_order_already_free_moves_nothing()
    {
        var node = new MemoryNode(8UL << 20);
        CompactionResult result = Compaction.Compact(node, Folio.PmdOrder);
        Assert.Equal(new CompactionResult(CompactionStatus.Success, 0, 0, 0, 0), result);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-2)]
    [InlineData(11)]
    public void Bad_orders_throw(int order) =>
        Assert.Throws<ArgumentOutOfRangeException>(() => Compaction.Compact(new MemoryNode(4UL << 20), order));
}
