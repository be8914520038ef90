using System;
using System.Collections.Generic;
using System.Linq;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using ThpCore.Memory;
using Xunit;
using static ThpCore.Tests.Memory.FolioTests;

namespace ThpCore.Tests.Memory;

public sealed class FolioPinTests
{
    private const ulong NodeSize = 8UL << 20;

    [Fact]
    public void Pinning_an_order_zero_folio_adds_the_bias_of_1024_references()
    {
        var node = new MemoryNode(NodeSize);
        Folio folio = Allocate(node, 0);
        Assert.Equal(1024, Folio.PinCountingBias);
        folio.Pin();
        Assert.Equal(1025, folio.RefCount);
        Assert.Equal(1, folio.PinCount);
        Assert.True(folio.MaybeDmaPinned);
        folio.Pin();
        Assert.Equal(2049, folio.RefCount);
        Assert.Equal(2, folio.PinCount);
        folio.Unpin();
        folio.Unpin();
        Assert.Equal(1, folio.RefCount);
        Assert.Equal(0, folio.PinCount);
        Assert.False(folio.MaybeDmaPinned);
    }

    [Fact]
    public void Pinning_a_large_folio_adds_one_reference_and_one_exact_pin()
    {
        var node = new MemoryNode(NodeSize);
        Folio folio = Allocate(node, 9);
        folio.Pin();
        folio.Pin();
        Assert.Equal(3, folio.RefCount);
        Assert.Equal(2, folio.PinCount);
        Assert.True(folio.MaybeDmaPinned);
        folio.Unpin();
        Assert.Equal(2, folio.RefCount);
        Assert.Equal(1, folio.PinCount);
        folio.Unpin();
        Assert.False(folio.MaybeDmaPinned);
        Assert.Equal(0, folio.PinCount);
    }

    [Fact]
    public void Ordinary_references_never_make_a_large_folio_look_pinned()
    {
        var node = new MemoryNode(NodeSize);
        Folio folio = Allocate(node, 2);
        for (int i = 0; i < 5000; i++)
        {
            folio.Get();
        }

        Assert.False(folio.MaybeDmaPinned);
        Assert.Equal(0, folio.PinCount);
        Assert.Throws<InvalidOperationException>(folio.Unpin);
    }

    [Fact]
    public void Ordinary_references_make_an_order_zero_folio_look_pinned_at_1024_a_false_positive_as_in_Linux()
    {
        var node = new MemoryNode(NodeSize);
        Folio folio = Allocate(node, 0);
        for (int i = 0; i < 1022; i++)
        {
            folio.Get();
        }

        Assert.Equal(1023, folio.RefCount);
        Assert.False(folio.MaybeDmaPinned); // false is certain
        folio.Get();
        Assert.Equal(1024, folio.RefCount);
        Assert.True(folio.MaybeDmaPinned); // but nobody pinned it
        Assert.Equal(1, folio.PinCount); // the estimate is fooled too
    }

    [Fact]
    public void Unpinning_an_unpinned_folio_throws_with_a_message()
    {
        var node = new MemoryNode(NodeSize);
        Folio large = Allocate(node, 9);
        var error = Assert.Throws<InvalidOperationException>(large.Unpin);
        Assert.Contains("not pinned", error.Message, StringComparison.Ordinal);
        Assert.Equal(1, large.RefCount);

        Folio small = Allocate(node, 0);
        error = Assert.Throws<InvalidOperationException>(small.Unpin);
        Assert.Contains("not pinned", error.Message, StringComparison.Ordinal);
        Assert.Equal(1, small.RefCount);
    }

    [Fact]
    public void Unpinning_the_last_reference_frees_the_folio()
    {
        var node = new MemoryNode(NodeSize);
        ulong free = node.Buddy.FreeFrames;
        Folio large = Allocate(node, 9);
        large.Pin();
        Assert.False(large.Put());
        large.Unpin();
        Assert.False(large.TryGet());

        Folio small = Allocate(node, 0);
        small.Pin();
        Assert.False(small.Put());
        small.Unpin();
        Assert.False(small.TryGet());
        Assert.Equal(free, node.Buddy.FreeFrames);
    }

    [Fact]
    public void A_pin_reference_cannot_be_put_as_an_ordinary_one_on_a_large_folio()
    {
        var node = new MemoryNode(NodeSize);
        Folio folio = Allocate(node, 9);
        folio.Pin();
        Assert.False(folio.Put());
        Assert.Throws<InvalidOperationException>(() => folio.Put());
        Assert.Equal(1, folio.RefCount);
        Assert.Equal(1, folio.PinCount);
    }

    // ---- The reference-count invariant against a model ----

    private enum Kind
    {
        Get,
        Put,
        Pin,
        Unpin,
        MapPte,         // Get + AddPteMapping
        UnmapPte,       // RemovePteMapping + Put
        MapPmd,         // Get + AddPmdMapping
        UnmapPmd,       // RemovePmdMapping + Put
        AddSwap,
        RemoveSwap,
        HandOverToPte,  // AddPteMapping using a reference already held (do_anonymous_page)
        TakeBackFromPte, // RemovePteMapping keeping the reference
    }

    private readonly record struct Step(Kind Kind, int Page)
    {
        public override string ToString() => Kind is Kind.MapPte or Kind.UnmapPte or Kind.HandOverToPte or Kind.TakeBackFromPte ? $"{Kind}({Page})" : Kind.ToString();
    }

    private sealed record Case(int Order, Step[] Steps)
    {
        public override string ToString() => $"order {Order}: {string.Join(", ", Steps)}";
    }

    private static readonly Gen<Case> Cases =
        from order in Gen.Elements(0, 2, 9)
        from steps in Gen.ListOf(
            from kind in Gen.Frequency(
                (3, Gen.Constant(Kind.Get)),
                (3, Gen.Constant(Kind.Put)),
                (2, Gen.Constant(Kind.Pin)),
                (2, Gen.Constant(Kind.Unpin)),
                (3, Gen.Constant(Kind.MapPte)),
                (3, Gen.Constant(Kind.UnmapPte)),
                (2, Gen.Constant(Kind.MapPmd)),
                (2, Gen.Constant(Kind.UnmapPmd)),
                (1, Gen.Constant(Kind.AddSwap)),
                (1, Gen.Constant(Kind.RemoveSwap)),
                (2, Gen.Constant(Kind.HandOverToPte)),
                (2, Gen.Constant(Kind.TakeBackFromPte)))
            from page in Gen.Choose(0, 3)
            select new Step(kind, page))
        select new Case(order, steps.ToArray());

    /// <summary>
    /// Random sequences of references, pins, mappings and swap-cache changes. A step the model says would break
    /// the invariant is not applied; when it drops references and the folio can tell (everything but an order-0
    /// folio's pins, which hide in the bias), it must refuse the step with an exception and change nothing. After every step the folio
    /// agrees with the model and RefCount ≥ MapCount + pins' references + swap-cache references.
    /// </summary>
    [Property(MaxTest = 300)]
    public Property Reference_counts_never_fall_below_mappings_pins_and_the_swap_cache() =>
        Prop.ForAll(Cases.ToArbitrary(), c =>
        {
            var node = new MemoryNode(NodeSize);
            ulong freeAtStart = node.Buddy.FreeFrames;
            Folio folio = Allocate(node, c.Order);
            var model = new Model(c.Order);
            foreach (Step step in c.Steps)
            {
                Apply(folio, model, step.Kind, step.Page % folio.PageCount, mayFree: false);
                model.Check(folio);
            }

            // Unwind, holding a reference of our own: unmap, unpin, leave the swap cache, put; exactly the last
            // put frees the folio.
            var unwind = new List<Kind> { Kind.Get };
            for (int page = 0; page < model.PteMaps.Length; page++)
            {
                for (int i = model.PteMaps[page]; i > 0; i--)
                {
                    unwind.Add(Kind.TakeBackFromPte);
                }
            }

            unwind.AddRange(Enumerable.Repeat(Kind.UnmapPmd, model.PmdMaps));
            unwind.AddRange(Enumerable.Repeat(Kind.Unpin, model.Pins));
            if (model.Swap)
            {
                unwind.Add(Kind.RemoveSwap);
            }

            foreach (Kind kind in unwind)
            {
                int page = Array.FindIndex(model.PteMaps, n => n > 0);
                Assert.False(Apply(folio, model, kind, Math.Max(page, 0), mayFree: false), $"{kind} freed a folio still referenced");
                model.Check(folio);
            }

            Assert.Equal(model.Extra, folio.RefCount);
            while (model.Extra > 1)
            {
                Assert.False(Apply(folio, model, Kind.Put, 0, mayFree: false));
            }

            Assert.True(Apply(folio, model, Kind.Put, 0, mayFree: true));
            Assert.False(folio.TryGet());
            Assert.Throws<ObjectDisposedException>(() => folio.RefCount);
            Assert.Equal(freeAtStart, node.Buddy.FreeFrames);
            Assert.Equal(0, node.Frames.LargeFolioRecords);
        });

    // Applies one step if the model allows it (and, unless mayFree, if it leaves a reference); returns true
    // when it freed the folio.
    private static bool Apply(Folio folio, Model model, Kind kind, int page, bool mayFree)
    {
        int drops = kind switch
        {
            Kind.Put or Kind.UnmapPte or Kind.UnmapPmd => 1,
            Kind.Unpin => model.Large ? 1 : Folio.PinCountingBias,
            _ => 0,
        };
        if (!mayFree && drops > 0 && model.RefCount == drops)
        {
            return false; // would free mid-sequence; the unwind frees at the end instead
        }

        switch (kind)
        {
            case Kind.Get:
                folio.Get();
                model.Extra++;
                return false;

            case Kind.Put:
                if (model.Extra == 0)
                {
                    ExpectRefusal(folio, model, () => folio.Put(), detectable: model.ExactRequired > model.RefCount - 1);
                    return false;
                }

                model.Extra--;
                return PutAndCompare(folio, model);

            case Kind.Pin:
                folio.Pin();
                model.Pins++;
                return false;

            case Kind.Unpin:
                if (model.Pins == 0)
                {
                    ExpectRefusal(folio, model, folio.Unpin, detectable: model.Large || model.RefCount < Folio.PinCountingBias);
                    return false;
                }

                model.Pins--;
                folio.Unpin();
                return model.RefCount == 0;

            case Kind.MapPte:
                folio.Get();
                folio.AddPteMapping(page);
                model.PteMaps[page]++;
                return false;

            case Kind.UnmapPte:
                if (model.PteMaps[page] == 0)
                {
                    ExpectRefusal(folio, model, () => folio.RemovePteMapping(page), detectable: true);
                    return false;
                }

                folio.RemovePteMapping(page);
                model.PteMaps[page]--;
                return PutAndCompare(folio, model);

            case Kind.MapPmd:
                if (model.Order != Folio.PmdOrder)
                {
                    ExpectRefusal(folio, model, folio.AddPmdMapping, detectable: true);
                    return false;
                }

                folio.Get();
                folio.AddPmdMapping();
                model.PmdMaps++;
                return false;

            case Kind.UnmapPmd:
                if (model.PmdMaps == 0)
                {
                    ExpectRefusal(folio, model, folio.RemovePmdMapping, detectable: true);
                    return false;
                }

                folio.RemovePmdMapping();
                model.PmdMaps--;
                return PutAndCompare(folio, model);

            case Kind.AddSwap:
                if (model.Swap)
                {
                    ExpectRefusal(folio, model, folio.AddToSwapCache, detectable: true);
                    return false;
                }

                folio.AddToSwapCache();
                model.Swap = true;
                return false;

            case Kind.RemoveSwap:
                if (!model.Swap || model.RefCount - model.Pages < 1)
                {
                    ExpectRefusal(folio, model, folio.RemoveFromSwapCache, detectable: true);
                    return false;
                }

                folio.RemoveFromSwapCache();
                model.Swap = false;
                return false;

            case Kind.HandOverToPte:
                if (model.Extra == 0)
                {
                    // Adding is unchecked (Linux's split is one mapping over for a moment): just do not do it.
                    ExpectRefusal(folio, model, () => folio.AddPteMapping(page), detectable: false);
                    return false;
                }

                folio.AddPteMapping(page);
                model.Extra--;
                model.PteMaps[page]++;
                return false;

            case Kind.TakeBackFromPte:
                if (model.PteMaps[page] == 0)
                {
                    ExpectRefusal(folio, model, () => folio.RemovePteMapping(page), detectable: true);
                    return false;
                }

                folio.RemovePteMapping(page);
                model.PteMaps[page]--;
                model.Extra++;
                return false;

            default:
                throw new ArgumentOutOfRangeException(nameof(kind));
        }
    }

    // Drops a reference the model has already given up; it frees exactly when the model says none is left.
    private static bool PutAndCompare(Folio folio, Model model)
    {
        bool freed = folio.Put();
        Assert.Equal(model.RefCount == 0, freed);
        return freed;
    }

    // A step that would break the invariant: refused with InvalidOperationException when the folio can tell,
    // and in every case not applied, so the folio must still agree with the model.
    private static void ExpectRefusal(Folio folio, Model model, Action step, bool detectable)
    {
        if (detectable)
        {
            Exception error = Assert.ThrowsAny<InvalidOperationException>(step);
            Assert.IsNotType<ObjectDisposedException>(error);
            Assert.False(string.IsNullOrWhiteSpace(error.Message));
        }

        model.Check(folio);
    }

    private sealed class Model
    {
        public Model(int order)
        {
            Order = order;
            PteMaps = new int[Math.Min(4, 1 << order)];
        }

        public int Order { get; }

        public int Pages => 1 << Order;

        public bool Large => Order > 0;

        public int Extra { get; set; } = 1; // the allocation's reference

        public int Pins { get; set; }

        public int[] PteMaps { get; }

        public int PmdMaps { get; set; }

        public bool Swap { get; set; }

        public int MapCount => PteMaps.Sum() + PmdMaps;

        public int PinReferences => Pins * (Large ? 1 : Folio.PinCountingBias);

        public int SwapReferences => Swap ? Pages : 0;

        public int RefCount => Extra + MapCount + PinReferences + SwapReferences;

        // What the folio itself can know it needs: all but an order-0 folio's pins.
        public int ExactRequired => MapCount + (Large ? Pins : 0) + SwapReferences;

        public void Check(Folio folio)
        {
            Assert.Equal(RefCount, folio.RefCount);
            Assert.Equal(MapCount, folio.MapCount);
            Assert.Equal(PmdMaps, folio.EntireMapCount);
            for (int i = 0; i < PteMaps.Length; i++)
            {
                Assert.Equal(PteMaps[i], folio.PageMapCount(i));
            }

            Assert.Equal(Swap, folio.IsSwapCache);
            Assert.Equal(Large ? Pins : RefCount / Folio.PinCountingBias, folio.PinCount);
            Assert.Equal(Large ? Pins > 0 : RefCount >= Folio.PinCountingBias, folio.MaybeDmaPinned);
            Assert.True(Pins == 0 || folio.MaybeDmaPinned, "a pinned folio always looks pinned");

            // The invariant.
            Assert.True(folio.RefCount >= folio.MapCount + PinReferences + (folio.IsSwapCache ? folio.PageCount : 0), $"invariant broken: {folio.RefCount} references");
        }
    }
}
