using System;
using System.Linq;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using ThpCore.Memory;
using Xunit;
using static ThpCore.Tests.Memory.FolioTests;

namespace ThpCore.Tests.Memory;

public sealed class FolioJoinTests
{
    private const ulong NodeSize = 8UL << 20;
    private const int Pages = 512;

    // An order-9 folio whose page i is mapped mapCounts[i] times (one reference each), allocation reference dropped.
    private static Folio MappedThp(MemoryNode node, Func<int, int> mapCounts)
    {
        Folio folio = Allocate(node, 9);
        for (int i = 0; i < Pages; i++)
        {
            for (int m = 0; m < mapCounts(i); m++)
            {
                folio.AddPteMapping(i);
                folio.Get();
            }
        }

        folio.Put();
        return folio;
    }

    // 512 order-0 folios, page i mapped once, made by splitting a mapped THP.
    private static ulong MappedSmallPages(MemoryNode node)
    {
        Folio thp = MappedThp(node, _ => 1);
        Assert.True(node.TrySplitFolio(thp, extraReferences: 0).Split);
        return thp.HeadFrame;
    }

    private static FrameInfo[] Snapshot(MemoryNode node, ulong first) =>
        Enumerable.Range(0, Pages).Select(i => node.Frames.Describe(first + (ulong)i)).ToArray();

    [Fact]
    public void Joining_split_pages_makes_one_order_9_folio_with_the_sum_of_references_and_per_page_state()
    {
        var node = new MemoryNode(NodeSize);
        ulong head = MappedSmallPages(node);
        node.FolioOf(head + 3).AddPteMapping(0);
        node.FolioOf(head + 3).Get();
        node.FolioOf(head + 7).SetAnonExclusive(0, true);
        node.FolioOf(head + 9).SetDirty(true);
        int records = node.Frames.LargeFolioRecords;
        ulong free = node.Buddy.FreeFrames;

        FolioJoinRefusal refusal = node.TryJoinFolio(head, out Folio folio);

        Assert.Equal(FolioJoinRefusal.None, refusal);
        Assert.Equal(9, folio.Order);
        Assert.Equal(head, folio.HeadFrame);
        Assert.Equal(513, folio.RefCount);
        Assert.Equal(513, folio.MapCount);
        Assert.Equal(0, folio.EntireMapCount);
        Assert.Equal(0, folio.PinCount);
        Assert.Equal(2, folio.PageMapCount(3));
        Assert.Equal(1, folio.PageMapCount(4));
        Assert.True(folio.IsAnonExclusive(7));
        Assert.False(folio.IsAnonExclusive(8));
        Assert.True(folio.IsDirty);
        Assert.True(folio.IsAnon);
        Assert.False(folio.IsOnDeferredSplitQueue);
        Assert.Equal(records + 1, node.Frames.LargeFolioRecords);
        Assert.Equal(free, node.Buddy.FreeFrames);
        Assert.Equal(head, node.FolioOf(head + 300).HeadFrame);
        Assert.Equal(FrameFlags.Tail, node.Frames.Describe(head + 300).Flags);
    }

    [Fact]
    public void A_joined_folio_is_freed_whole_when_its_mappings_go()
    {
        var node = new MemoryNode(NodeSize);
        ulong head = MappedSmallPages(node);
        ulong free = node.Buddy.FreeFrames;
        Assert.Equal(FolioJoinRefusal.None, node.TryJoinFolio(head, out Folio folio));

        for (int i = 0; i < Pages; i++)
        {
            folio.RemovePteMapping(i);
            folio.Put();
        }

        Assert.Equal(free + Pages, node.Buddy.FreeFrames);
        Assert.Equal(FrameFlags.Free, node.Frames.Describe(head).Flags);
        Assert.Equal(0, node.Frames.LargeFolioRecords);
    }

    [Fact]
    public void A_misaligned_head_is_refused()
    {
        var node = new MemoryNode(NodeSize);
        ulong head = MappedSmallPages(node);

        Assert.Equal(FolioJoinRefusal.NotAligned, node.TryJoinFolio(head + 1, out Folio folio));
        Assert.Equal(default, folio);
    }

    [Fact]
    public void Frames_past_the_node_are_misuse()
    {
        var node = new MemoryNode(NodeSize);

        Assert.Throws<ArgumentOutOfRangeException>(() => node.TryJoinFolio(node.Frames.FrameCount - 512 + 512, out _));
    }

    public static TheoryData<string, FolioJoinRefusal> Refusals => new()
    {
        { "pin", FolioJoinRefusal.Pinned },
        { "get", FolioJoinRefusal.UnexpectedReferences },
        { "swapcache", FolioJoinRefusal.SwapCache },
        { "lazyfree", FolioJoinRefusal.MixedSwapBacked },
        { "unmapped", FolioJoinRefusal.UnexpectedReferences },
        { "free", FolioJoinRefusal.NotAFolio },
        { "pagetable", FolioJoinRefusal.NotAFolio },
        { "large", FolioJoinRefusal.LargeFolio },
        { "file", FolioJoinRefusal.NotAnonymous },
    };

    [Theory]
    [MemberData(nameof(Refusals))]
    public void Each_precondition_refuses_and_changes_nothing(string spoil, FolioJoinRefusal expected)
    {
        var node = new MemoryNode(NodeSize);
        ulong head = MappedSmallPages(node);
        const int Victim = 200;
        Folio page = node.FolioOf(head + Victim);
        switch (spoil)
        {
            case "pin": page.Pin(); break;
            case "get": page.Get(); break;
            case "swapcache": page.AddToSwapCache(); break;
            case "lazyfree": page.SetSwapBacked(false); break;
            case "unmapped":
                page.Get();
                page.RemovePteMapping(0);
                page.Put();
                break;
            default:
                // Replace the page by something else on the same frame.
                page.RemovePteMapping(0);
                Assert.True(page.Put());
                if (spoil == "pagetable")
                {
                    Assert.True(node.TryAllocateFrame(out var frame));
                    Assert.Equal(head + Victim, frame.FrameNumber);
                }
                else if (spoil == "large")
                {
                    node.FolioOf(head + Victim + 1).RemovePteMapping(0);
                    Assert.True(node.FolioOf(head + Victim + 1).Put());
                    Assert.True(node.TryAllocateFolioAt(head + Victim, 1, out _));
                }
                else if (spoil == "file")
                {
                    Assert.True(node.TryAllocateFolioAt(head + Victim, 0, out _, anon: false));
                }

                break;
        }

        FrameInfo[] before = Snapshot(node, head);
        int records = node.Frames.LargeFolioRecords;

        Assert.Equal(expected, node.TryJoinFolio(head, out Folio folio));

        Assert.Equal(default, folio);
        Assert.Equal(before, Snapshot(node, head));
        Assert.Equal(records, node.Frames.LargeFolioRecords);
    }

    private static Gen<(int[] MapCounts, bool[] Exclusive, bool Dirty, bool Lru, bool LazyFree)> StateGen =>
        from maps in Gen.Frequency((4, Gen.Constant(1)), (1, Gen.Choose(2, 3))).ArrayOf(Pages)
        from exclusive in Gen.Elements(true, false).ArrayOf(Pages)
        from dirty in Gen.Elements(true, false)
        from lru in Gen.Elements(true, false)
        from lazy in Gen.Elements(true, false)
        select (maps, exclusive, dirty, lru, lazy);

    [Property(MaxTest = 40)]
    public Property Split_then_join_restores_every_frame_s_metadata() =>
        Prop.ForAll(StateGen.ToArbitrary(), state =>
        {
            var node = new MemoryNode(NodeSize);
            Folio thp = MappedThp(node, i => state.MapCounts[i]);
            for (int i = 0; i < Pages; i++)
            {
                thp.SetAnonExclusive(i, state.Exclusive[i]);
            }

            thp.SetDirty(state.Dirty);
            thp.SetLru(state.Lru);
            thp.SetSwapBacked(!state.LazyFree);
            FrameInfo[] before = Snapshot(node, thp.HeadFrame);
            int refs = thp.RefCount;
            int records = node.Frames.LargeFolioRecords;

            Assert.True(node.TrySplitFolio(thp, extraReferences: 0).Split);
            Assert.Equal(FolioJoinRefusal.None, node.TryJoinFolio(thp.HeadFrame, out Folio joined));

            Assert.Equal(before, Snapshot(node, thp.HeadFrame));
            Assert.Equal(thp, joined);
            Assert.Equal(refs, joined.RefCount);
            Assert.Equal(state.MapCounts.Sum(), joined.MapCount);
            Assert.Equal(state.LazyFree, !joined.IsSwapBacked);
            Assert.Equal(records, node.Frames.LargeFolioRecords);
        });
}
