using System;
using ThpCore.Diagnostics;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;
using Xunit;

namespace ThpCore.Tests.Mm;

/// <summary>The seed thread's scenario 5: MADV_DONTNEED of a few pages inside a THP, then the deferred-split shrinker.</summary>
public sealed class PteMappedThpScenarioTests
{
    private const ulong Page = 4096;

    [Fact]
    public void DontNeed_inside_a_THP_leaves_it_PTE_mapped_with_holes_and_the_shrinker_splits_it_and_frees_exactly_the_holes()
    {
        var node = new MemoryNode(32UL << 20);
        var space = new AddressSpace(node);
        VirtualAddress start = space.Map(2UL << 20, Protection.Read | Protection.Write);

        AccessResult first = space.Access(start, AccessKind.Write);
        Assert.Equal(FaultAction.MappedHugePage, first.Fault);
        ulong headFrame = first.PhysicalAddress.FrameNumber;

        // Mark pages 0 and 100 with bytes that must survive everything below.
        node.Memory.GetWritableFrame(headFrame)[7] = 0xA5;
        node.Memory.GetWritableFrame(headFrame + 100)[9] = 0x5A;

        // DONTNEED pages 10, 11 and 12: the PMD is split, three PTEs cleared, the folio queued as partially mapped.
        space.Advise(start.Add(10 * Page), 3 * Page, Advice.DontNeed);
        Folio thp = node.FolioOf(headFrame);
        Assert.Equal(9, thp.Order);
        Assert.Equal(509, thp.MapCount);
        Assert.Equal(509, thp.RefCount);
        Assert.True(thp.IsOnDeferredSplitQueue);
        Assert.True(thp.IsPartiallyMapped);
        Assert.Equal(1, node.DeferredSplitCount);

        ulong freeBefore = node.Buddy.FreeFrames;
        int split = node.ShrinkDeferredSplitQueue(counters: space.Counters);

        Assert.Equal(1, split);
        Assert.Equal(0, node.DeferredSplitCount);
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpSplitPage));
        Assert.Equal(freeBefore + 3, node.Buddy.FreeFrames);
        for (ulong hole = 10; hole <= 12; hole++)
        {
            Assert.True((node.Frames.Describe(headFrame + hole).Flags & FrameFlags.Free) != 0, $"page {hole} should be free");
        }

        // Every other page is now an order-0 folio held by its one PTE, still mapped where it was.
        foreach (ulong index in new ulong[] { 0, 9, 13, 100, 511 })
        {
            Folio small = node.FolioOf(headFrame + index);
            Assert.Equal(0, small.Order);
            Assert.Equal(1, small.RefCount);
            Assert.Equal(1, small.MapCount);
            AccessResult again = space.Access(start.Add(index * Page), AccessKind.Read);
            Assert.Equal(FaultAction.None, again.Fault);
            Assert.Equal((headFrame + index) * Page, again.PhysicalAddress.Value);
        }

        Assert.Equal(0xA5, node.Memory.ReadFrame(headFrame)[7]);
        Assert.Equal(0x5A, node.Memory.ReadFrame(headFrame + 100)[9]);

        // A hole reads as the zero page again.
        Assert.Equal(FaultAction.MappedZeroPage, space.Access(start.Add(11 * Page), AccessKind.Read).Fault);
    }
}
