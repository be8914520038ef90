using System;
using System.Collections.Generic;
using System.Linq;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using ThpCore.Diagnostics;
using ThpCore.Memory;
using Xunit;
using static ThpCore.Tests.Memory.FolioTests;

namespace ThpCore.Tests.Memory;

public sealed class FolioSplitTests
{
    private const ulong NodeSize = 16UL << 20;

    [Fact]
    public void Splitting_an_unmapped_folio_the_caller_references_keeps_the_head_and_frees_every_other_page()
    {
        var node = new MemoryNode(NodeSize);
        Folio folio = Allocate(node, 9);
        folio.GetWritablePage(0)[0] = 0x5A;
        folio.GetWritablePage(7)[0] = 0x77;
        ulong freeBefore = node.Buddy.FreeFrames;
        int recordsBefore = node.Frames.LargeFolioRecords;

        FolioSplitResult result = node.TrySplitFolio(folio);

        Assert.Equal(new FolioSplitResult(true, FolioSplitRefusal.None, 511), result);
        Assert.Equal(freeBefore + 511, node.Buddy.FreeFrames);
        Assert.Equal(recordsBefore - 1, node.Frames.LargeFolioRecords);
        Folio head = node.FolioOf(folio.HeadFrame);
        Assert.Equal(0, head.Order);
        Assert.Equal(1, head.RefCount);
        Assert.Equal(0x5A, head.ReadPage(0)[0]);
        Assert.True(head.IsAnon);
        for (ulong frame = folio.HeadFrame + 1; frame < folio.HeadFrame + 512; frame++)
        {
            Assert.Equal(FrameFlags.Free, node.Frames.Describe(frame).Flags);
            Assert.True(node.Memory.ReadFrame(frame).IndexOfAnyExcept((byte)0) < 0);
        }

        Assert.True(head.Put());
        Assert.Equal(freeBefore + 512, node.Buddy.FreeFrames);
    }

    [Fact]
    public void Splitting_a_pte_mapped_folio_with_holes_keeps_the_mapped_pages_and_frees_the_holes()
    {
        var node = new MemoryNode(NodeSize);
        Folio folio = Allocate(node, 9);
        int[] mapped = [0, 5, 17, 200, 511];
        foreach (int index in mapped)
        {
            folio.AddPteMapping(index);
            folio.Get();
            folio.GetWritablePage(index).Fill((byte)(index + 1));
        }

        folio.GetWritablePage(6).Fill(0xEE);
        folio.SetAnonExclusive(5, true);
        folio.SetDirty(true);
        folio.SetLru(true);
        folio.QueueForDeferredSplit(partiallyMapped: true);
        Assert.Equal(mapped.Length + 1, folio.RefCount);
        ulong freeBefore = node.Buddy.FreeFrames;

        FolioSplitResult result = node.TrySplitFolio(folio);

        int holes = 512 - mapped.Length;
        Assert.Equal(new FolioSplitResult(true, FolioSplitRefusal.None, holes), result);
        Assert.Equal(freeBefore + (ulong)holes, node.Buddy.FreeFrames);
        Assert.Equal(0, node.DeferredSplitCount);
        foreach (int index in mapped)
        {
            Folio page = node.FolioOf(folio.HeadFrame + (ulong)index);
            Assert.Equal(0, page.Order);
            Assert.Equal(page.HeadFrame, folio.HeadFrame + (ulong)index);
            Assert.Equal(index == 0 ? 2 : 1, page.RefCount);
            Assert.Equal(1, page.MapCount);
            Assert.True(page.IsAnon && page.IsDirty && page.IsLru);
            Assert.False(page.IsSwapCache);
            Assert.Equal(index == 5, page.IsAnonExclusive(0));
            Assert.True(page.ReadPage(0).IndexOfAnyExcept((byte)(index + 1)) < 0);
        }

        Assert.Equal(FrameFlags.Free, node.Frames.Describe(folio.HeadFrame + 6).Flags);
        Assert.True(node.Memory.ReadFrame(folio.HeadFrame + 6).IndexOfAnyExcept((byte)0) < 0);
    }

    [Fact]
    public void A_folio_in_the_swap_cache_splits_into_pages_that_each_keep_one_swap_cache_reference()
    {
        var node = new MemoryNode(NodeSize);
        Folio folio = Allocate(node, 4);
        folio.AddPteMapping(3);
        folio.Get();
        folio.AddToSwapCache();
        ulong freeBefore = node.Buddy.FreeFrames;

        Assert.Equal(new FolioSplitResult(true, FolioSplitRefusal.None, 0), node.TrySplitFolio(folio));

        Assert.Equal(freeBefore, node.Buddy.FreeFrames);
        for (int i = 0; i < 16; i++)
        {
            Folio page = node.FolioOf(folio.HeadFrame + (ulong)i);
            Assert.True(page.IsSwapCache);
            Assert.Equal((i == 3 ? 1 : 0) + 1 + (i == 0 ? 1 : 0), page.RefCount);
        }
    }

    public static TheoryData<string> Refusals => new() { "pmd", "pin", "get" };

    [Theory]
    [MemberData(nameof(Refusals))]
    public void A_pmd_mapped_pinned_or_extra_referenced_folio_is_refused_and_nothing_changes(string why)
    {
        var node = new MemoryNode(NodeSize);
        Folio folio = Allocate(node, 9);
        folio.AddPteMapping(1);
        folio.Get();
        folio.QueueForDeferredSplit(partiallyMapped: true);
        FolioSplitRefusal expected;
        switch (why)
        {
            case "pmd":
                folio.AddPmdMapping();
                folio.Get();
                expected = FolioSplitRefusal.PmdMapped;
                break;
            case "pin":
                folio.Pin();
                expected = FolioSplitRefusal.Pinned;
                break;
            default:
                folio.Get();
                expected = FolioSplitRefusal.UnexpectedReferences;
                break;
        }

        ulong freeBefore = node.Buddy.FreeFrames;
        int refCount = folio.RefCount;
        int mapCount = folio.MapCount;
        var counters = new VmEventCounters();

        Assert.Equal(new FolioSplitResult(false, expected, 0), node.TrySplitFolio(folio, counters: counters));

        Assert.Equal(freeBefore, node.Buddy.FreeFrames);
        Assert.Equal(refCount, folio.RefCount);
        Assert.Equal(mapCount, folio.MapCount);
        Assert.Equal(folio, node.FolioOf(folio.HeadFrame + 300));
        Assert.True(folio.IsOnDeferredSplitQueue && folio.IsPartiallyMapped);

        // A PMD mapping alone is no failure for Linux's split (it splits the PMD first): counted only for the others.
        Assert.Equal(why == "pmd" ? 0 : 1, counters.Get(VmEvent.ThpSplitPageFailed));
        Assert.Equal(0, counters.Get(VmEvent.ThpSplitPage));
    }

    [Fact]
    public void A_caller_claiming_a_reference_it_does_not_hold_is_refused()
    {
        var node = new MemoryNode(NodeSize);
        Folio folio = Allocate(node, 9);

        Assert.Equal(FolioSplitRefusal.UnexpectedReferences, node.TrySplitFolio(folio, extraReferences: 2).Refusal);
        Assert.Equal(1, folio.RefCount);
        Assert.Equal(9, folio.Order);
    }

    [Fact]
    public void An_order_zero_or_freed_folio_is_refused_and_not_counted()
    {
        var node = new MemoryNode(NodeSize);
        var counters = new VmEventCounters();
        Folio small = Allocate(node, 0);
        Folio gone = Allocate(node, 9);
        gone.Put();

        Assert.Equal(FolioSplitRefusal.NotLarge, node.TrySplitFolio(small, counters: counters).Refusal);
        Assert.Equal(FolioSplitRefusal.Freed, node.TrySplitFolio(gone, counters: counters).Refusal);
        Assert.Equal(0, counters.Get(VmEvent.ThpSplitPageFailed));
    }

    [Fact]
    public void Splits_count_thp_split_page_for_pmd_order_folios_only()
    {
        var node = new MemoryNode(NodeSize);
        var counters = new VmEventCounters();
        Folio huge = Allocate(node, 9);
        Folio medium = Allocate(node, 4);
        Folio pinned = Allocate(node, 4);
        pinned.Pin();

        Assert.True(node.TrySplitFolio(huge, counters: counters).Split);
        Assert.True(node.TrySplitFolio(medium, counters: counters).Split);
        Assert.False(node.TrySplitFolio(pinned, counters: counters).Split);
        Assert.Equal(1, counters.Get(VmEvent.ThpSplitPage));
        Assert.Equal(0, counters.Get(VmEvent.ThpSplitPageFailed));
    }

    [Fact]
    public void Argument_errors_throw()
    {
        var node = new MemoryNode(NodeSize);
        var other = new MemoryNode(NodeSize);
        Folio folio = Allocate(other, 9);

        Assert.Throws<ArgumentException>(() => node.TrySplitFolio(folio));
        Assert.Throws<ArgumentOutOfRangeException>(() => other.TrySplitFolio(folio, extraReferences: -1));
        Assert.Throws<InvalidOperationException>(() => node.TrySplitFolio(default));
        Assert.Throws<ArgumentOutOfRangeException>(() => node.ShrinkDeferredSplitQueue(-1));
    }

    [Fact]
    public void The_shrinker_splits_partially_mapped_folios_oldest_first_and_leaves_unsplittable_ones_queued()
    {
        var node = new MemoryNode(NodeSize);
        var counters = new VmEventCounters();
        Folio a = PartiallyMapped(node, [0, 1, 2]);
        Folio b = PartiallyMapped(node, [10]);
        b.Pin();
        Folio c = PartiallyMapped(node, [100, 511]);
        Folio d = Allocate(node, 9);
        d.QueueForDeferredSplit(partiallyMapped: false);
        Assert.Equal([a, b, c, d], node.DeferredSplitQueue);
        ulong freeBefore = node.Buddy.FreeFrames;

        Assert.Equal(1, node.ShrinkDeferredSplitQueue(maxFolios: 1, counters));
        Assert.Equal(freeBefore + 509, node.Buddy.FreeFrames);
        Assert.Equal([b, c, d], node.DeferredSplitQueue);

        Assert.Equal(1, node.ShrinkDeferredSplitQueue(counters: counters));

        // c split (510 unmapped pages, the head among them: the shrinker holds no reference of its own), b put back,
        // d (queued at fault time, not partially mapped) dropped from the queue unsplit.
        Assert.Equal(freeBefore + 509 + 510, node.Buddy.FreeFrames);
        Assert.Equal([b], node.DeferredSplitQueue);
        Assert.True(b.IsPartiallyMapped);
        Assert.Equal(9, d.Order);
        Assert.False(d.IsOnDeferredSplitQueue);
        Assert.Equal(1, node.FolioOf(c.HeadFrame + 100).RefCount);
        Assert.Equal(1, node.FolioOf(a.HeadFrame).RefCount);
        Assert.Equal(2, counters.Get(VmEvent.ThpSplitPage));
        Assert.Equal(1, counters.Get(VmEvent.ThpSplitPageFailed));
    }

    [Fact]
    public void The_shrinker_puts_a_folio_it_cannot_split_back_at_the_tail()
    {
        var node = new MemoryNode(NodeSize);
        Folio a = PartiallyMapped(node, [3]);
        a.Get();
        Folio b = PartiallyMapped(node, [4]);
        Folio c = PartiallyMapped(node, [5]);

        Assert.Equal(1, node.ShrinkDeferredSplitQueue(maxFolios: 2));

        Assert.Equal([c, a], node.DeferredSplitQueue);
        Assert.Equal(0, node.ShrinkDeferredSplitQueue(maxFolios: 0));
        Assert.Equal(2, node.DeferredSplitCount);
    }

    [Property(MaxTest = 60)]
    public Property A_split_succeeds_exactly_when_nothing_forbids_it_and_accounts_for_every_frame() =>
        Prop.ForAll(Arb.From(ScenarioGen), scenario =>
        {
            string? problem = Run(scenario);
            return problem is null ? true.ToProperty() : false.ToProperty().Label(problem);
        });

    private sealed record Scenario(bool[] Mapped, bool Pmd, int Pins, int Extra, bool SwapCache, int Caller, bool Queue)
    {
        public override string ToString() =>
            $"mapped {string.Join(",", Mapped.Select((m, i) => (m, i)).Where(p => p.m).Select(p => p.i))}; pmd {Pmd}; pins {Pins}; extra {Extra}; swap {SwapCache}; caller {Caller}; queue {Queue}";
    }

    private static readonly Gen<Scenario> ScenarioGen =
        from density in Gen.Elements(0.0, 0.01, 0.3, 0.9, 1.0)
        from seed in Gen.Choose(0, int.MaxValue)
        from pmd in Gen.Frequency((4, Gen.Constant(false)), (1, Gen.Constant(true)))
        from pins in Gen.Frequency((4, Gen.Constant(0)), (1, Gen.Choose(1, 2)))
        from extra in Gen.Frequency((4, Gen.Constant(0)), (1, Gen.Choose(1, 2)))
        from swap in Gen.Frequency((4, Gen.Constant(false)), (1, Gen.Constant(true)))
        from caller in Gen.Choose(0, 1)
        from queue in Gen.Elements(false, true)
        select new Scenario(Pattern(density, seed), pmd, pins, extra, swap, caller, queue);

    private static bool[] Pattern(double density, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, 512).Select(_ => random.NextDouble() < density).ToArray();
    }

    private static string? Run(Scenario s)
    {
        var node = new MemoryNode(NodeSize);
        Folio folio = Allocate(node, 9);
        for (int i = 0; i < 512; i++)
        {
            if (s.Mapped[i])
            {
                folio.AddPteMapping(i);
                folio.Get();
                folio.GetWritablePage(i)[1] = (byte)i;
            }
        }

        if (s.Pmd)
        {
            folio.AddPmdMapping();
            folio.Get();
        }

        for (int i = 0; i < s.Pins; i++)
        {
            folio.Pin();
        }

        for (int i = 0; i < s.Extra; i++)
        {
            folio.Get();
        }

        if (s.SwapCache)
        {
            folio.AddToSwapCache();
        }

        if (s.Queue)
        {
            folio.QueueForDeferredSplit(partiallyMapped: true);
        }

        // The caller's own reference is the allocation's; drop it unless something else keeps the folio alive.
        int caller = s.Caller;
        if (caller == 0 && folio.RefCount > 1)
        {
            folio.Put();
        }
        else
        {
            caller = 1;
        }

        ulong freeBefore = node.Buddy.FreeFrames;
        int refCount = folio.RefCount;
        bool expectSplit = !s.Pmd && s.Pins == 0 && s.Extra == 0;
        var counters = new VmEventCounters();

        FolioSplitResult result = node.TrySplitFolio(folio, caller, counters);

        if (result.Split != expectSplit)
        {
            return $"split {result.Split} ({result.Refusal}), expected {expectSplit}";
        }

        if (!expectSplit)
        {
            bool unchanged = folio.RefCount == refCount && node.Buddy.FreeFrames == freeBefore && result.PagesFreed == 0
                && node.FolioOf(folio.HeadFrame + 511) == folio
                && counters.Get(VmEvent.ThpSplitPageFailed) == (s.Pins == 0 && s.Extra == 0 ? 0 : 1); // not for a PMD mapping alone
            return unchanged ? null : "a refused split changed something";
        }

        int expectedFree = 0;
        for (int i = 0; i < 512; i++)
        {
            ulong frame = folio.HeadFrame + (ulong)i;
            int expected = (s.Mapped[i] ? 1 : 0) + (s.SwapCache ? 1 : 0) + (i == 0 ? caller : 0);
            FrameInfo info = node.Frames.Describe(frame);
            if (expected == 0)
            {
                expectedFree++;
                if (info.Flags != FrameFlags.Free)
                {
                    return $"page {i} should be free, is {info.Flags}";
                }

                continue;
            }

            Folio page = node.FolioOf(frame);
            if (page.Order != 0 || page.HeadFrame != frame || page.RefCount != expected || page.MapCount != (s.Mapped[i] ? 1 : 0)
                || page.IsSwapCache != s.SwapCache || page.IsOnDeferredSplitQueue)
            {
                return $"page {i}: order {page.Order}, refs {page.RefCount} (expected {expected}), maps {page.MapCount}";
            }

            if (s.Mapped[i] && page.ReadPage(0)[1] != (byte)i)
            {
                return $"page {i} lost its bytes";
            }
        }

        if (result.PagesFreed != expectedFree || node.Buddy.FreeFrames != freeBefore + (ulong)expectedFree)
        {
            return $"freed {result.PagesFreed}, free frames rose by {node.Buddy.FreeFrames - freeBefore}, expected {expectedFree}";
        }

        return node.DeferredSplitCount == 0 && counters.Get(VmEvent.ThpSplitPage) == 1 ? null : "queue or counter wrong";
    }

    // An order-9 folio mapped by PTEs at the given pages, each mapping holding its reference, the allocation's
    // reference dropped, queued as partially mapped (what a partial munmap leaves behind).
    private static Folio PartiallyMapped(MemoryNode node, int[] pages)
    {
        Folio folio = Allocate(node, 9);
        foreach (int index in pages)
        {
            folio.AddPteMapping(index);
            folio.Get();
        }

        folio.Put();
        folio.QueueForDeferredSplit(partiallyMapped: true);
        return folio;
    }
}
