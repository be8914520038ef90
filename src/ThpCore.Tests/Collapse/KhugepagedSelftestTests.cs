using System;
using ThpCore.Collapse;
using ThpCore.Diagnostics;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;
using Xunit;
using static ThpCore.Tests.Collapse.CollapseFixture;

namespace ThpCore.Tests.Collapse;

/// <summary>
/// The anonymous-memory scenarios of Linux's <c>tools/testing/selftests/mm/khugepaged.c</c>, each with Linux's outcome,
/// in the khugepaged context (MADV_HUGEPAGE, scan until huge or two more full scans, MADV_NOHUGEPAGE) and the madvise
/// context (<c>enabled=never</c>, MADV_HUGEPAGE, MADV_COLLAPSE retried once on EAGAIN) where the selftest runs both.
/// The harness settings are the selftest's: <c>enabled=madvise</c>, <c>defrag=always</c>, <c>use_zero_page=0</c>.
/// </summary>
public sealed class KhugepagedSelftestTests
{
    private static readonly ThpSettings s_harness = new() { Enabled = ThpEnabled.Madvise, Defrag = ThpDefrag.Always, UseZeroPage = false };

    public enum Context
    {
        Khugepaged,
        Madvise,
    }

    private sealed class Harness
    {
        public Harness(Context context, ThpSettings? settings = null)
        {
            Context = context;
            Settings = settings ?? s_harness;

            // The madvise context writes enabled=never before collapsing; settings are fixed per address space here,
            // and with enabled=madvise and no MADV_HUGEPAGE the set-up faults are 4 KiB either way.
            Space = NewSpace(context == Context.Madvise ? Settings with { Enabled = ThpEnabled.Never } : Settings);
            // Linux v6.12's khugepaged has no anonymous in-place path: these are Linux's outcomes, so copy only.
            Scanner = new Khugepaged(Settings, Khugepaged.CopyOnly);
        }

        public Context Context { get; }

        public ThpSettings Settings { get; }

        public AddressSpace Space { get; }

        public Khugepaged Scanner { get; }

        // c->collapse(msg, p, nr_hpages, expect) for the anonymous memory type.
        public void Collapse(AddressSpace space, VirtualAddress start, int hpages, bool expect)
        {
            Assert.Equal(0, CountHuge(space, start, hpages));
            space.Advise(start, (ulong)hpages * M2, Advice.HugePage);
            if (Context == Context.Khugepaged)
            {
                Scanner.Register(space);
                long target = Scanner.FullScans + 2;
                for (int round = 0; round < 50 && Scanner.FullScans < target && CountHuge(space, start, hpages) < hpages; round++)
                {
                    Scanner.ScanStep();
                }

                space.Advise(start, (ulong)hpages * M2, Advice.NoHugePage);
            }
            else
            {
                bool ok = TryMadviseCollapse(space, start, (ulong)hpages * M2, out string error)
                    || (error.Contains("-EAGAIN", StringComparison.Ordinal) && TryMadviseCollapse(space, start, (ulong)hpages * M2, out error));
                Assert.True(ok == expect, $"MADV_COLLAPSE returned {(ok ? "0" : error)}");
            }

            Assert.Equal(expect ? hpages : 0, CountHuge(space, start, hpages));
            if (space == Space)
            {
                // A forked child's books are checked with its parent by the test.
                AssertBooks(space);
            }
        }

        // alloc_hpage: a faulted 2 MiB collapsed by MADV_COLLAPSE, then MADV_HUGEPAGE.
        public VirtualAddress AllocHpage()
        {
            VirtualAddress p = MapAtBase(Space, M2);
            Fill(Space, p, 0, 512);
            Assert.True(TryMadviseCollapse(Space, p, M2, out string error), error);
            Assert.True(IsHuge(Space, p));
            Space.Advise(p, M2, Advice.HugePage);
            return p;
        }
    }

    private static bool TryMadviseCollapse(AddressSpace space, VirtualAddress start, ulong length, out string error)
    {
        try
        {
            space.Advise(start, length, Advice.Collapse);
            error = string.Empty;
            return true;
        }
        catch (InvalidOperationException e)
        {
            error = e.Message;
            return false;
        }
    }

    [Fact]
    public void Alloc_at_fault_maps_a_THP_and_DONTNEED_of_the_first_page_splits_it()
    {
        AddressSpace space = NewSpace(s_harness with { Enabled = ThpEnabled.Always });
        VirtualAddress p = MapAtBase(space, M2);
        Assert.Equal(FaultAction.MappedHugePage, space.Access(p, AccessKind.Write).Fault);
        Assert.True(IsHuge(space, p));
        space.Advise(p, K4, Advice.DontNeed);
        Assert.False(IsHuge(space, p));
        AssertBooks(space);
    }

    [Theory]
    [InlineData(Context.Khugepaged)]
    [InlineData(Context.Madvise)]
    public void Collapse_full_collapses_four_ranges_of_small_pages_with_the_data(Context context)
    {
        var h = new Harness(context);
        VirtualAddress p = MapAtBase(h.Space, 4 * M2);
        Fill(h.Space, p, 0, 2048);
        h.Collapse(h.Space, p, 4, expect: true);
        Validate(h.Space, p, 2048, 2048);
        Assert.Equal(4, h.Space.Counters.Get(VmEvent.ThpCollapseAlloc));
    }

    [Theory]
    [InlineData(Context.Khugepaged)]
    [InlineData(Context.Madvise)]
    public void Collapse_empty_does_not_collapse_and_MADV_COLLAPSE_fails(Context context)
    {
        var h = new Harness(context);
        VirtualAddress p = MapAtBase(h.Space, M2);
        h.Collapse(h.Space, p, 1, expect: false);
        Assert.Equal(0, h.Space.Counters.Get(VmEvent.ThpCollapseAlloc));
    }

    [Theory]
    [InlineData(Context.Khugepaged)]
    [InlineData(Context.Madvise)]
    public void Collapse_single_pte_entry_collapses_and_zero_fills_the_511_holes(Context context)
    {
        var h = new Harness(context);
        VirtualAddress p = MapAtBase(h.Space, M2);
        Fill(h.Space, p, 0, 1);
        h.Collapse(h.Space, p, 1, expect: true);
        Validate(h.Space, p, 1, 512);
    }

    [Theory]
    [InlineData(Context.Khugepaged)]
    [InlineData(Context.Madvise)]
    public void Collapse_max_ptes_none_refuses_257_holes_for_khugepaged_only_and_accepts_256(Context context)
    {
        var h = new Harness(context, s_harness with { MaxPtesNone = 256 });
        VirtualAddress p = MapAtBase(h.Space, M2);
        Fill(h.Space, p, 0, 512 - 256 - 1);
        h.Collapse(h.Space, p, 1, expect: context == Context.Madvise);
        if (context == Context.Khugepaged)
        {
            Assert.True(h.Space.Counters.Get(VmEvent.ThpScanExceedNonePte) >= 1);
            Validate(h.Space, p, 255, 512);
            Fill(h.Space, p, 0, 512 - 256);
            h.Collapse(h.Space, p, 1, expect: true);
            Validate(h.Space, p, 256, 512);
        }
        else
        {
            Validate(h.Space, p, 255, 512);
        }
    }

    [Theory]
    [InlineData(Context.Khugepaged)]
    [InlineData(Context.Madvise)]
    public void Collapse_swapin_single_pte_swaps_the_page_in_and_collapses(Context context)
    {
        var h = new Harness(context);
        VirtualAddress p = MapAtBase(h.Space, M2);
        Fill(h.Space, p, 0, 512);
        h.Space.Advise(p, K4, Advice.PageOut);
        Assert.False(AddressSpaceTestsPte(h.Space, p).IsPresent);
        Assert.Equal(1UL, h.Space.Swap!.UsedSlots);
        h.Collapse(h.Space, p, 1, expect: true);
        Assert.Equal(0UL, h.Space.Swap!.UsedSlots);
        Validate(h.Space, p, 512, 512);
    }

    [Theory]
    [InlineData(Context.Khugepaged)]
    [InlineData(Context.Madvise)]
    public void Collapse_max_ptes_swap_refuses_65_swap_entries_for_khugepaged_only_and_accepts_64(Context context)
    {
        var h = new Harness(context);
        VirtualAddress p = MapAtBase(h.Space, M2);
        Fill(h.Space, p, 0, 512);
        h.Space.Advise(p, 65 * K4, Advice.PageOut);
        Assert.Equal(65UL, h.Space.Swap!.UsedSlots);
        h.Collapse(h.Space, p, 1, expect: context == Context.Madvise);
        Validate(h.Space, p, 512, 512);
        if (context == Context.Khugepaged)
        {
            Assert.True(h.Space.Counters.Get(VmEvent.ThpScanExceedSwapPte) >= 1);
            Fill(h.Space, p, 0, 512);
            h.Space.Advise(p, 64 * K4, Advice.PageOut);
            Assert.Equal(64UL, h.Space.Swap!.UsedSlots);
            h.Collapse(h.Space, p, 1, expect: true);
            Validate(h.Space, p, 512, 512);
        }
    }

    [Theory]
    [InlineData(Context.Khugepaged)]
    [InlineData(Context.Madvise)]
    public void Collapse_single_pte_entry_compound_copies_the_one_page_and_frees_the_old_THP(Context context)
    {
        var h = new Harness(context);
        VirtualAddress p = h.AllocHpage();
        Folio old = FolioAt(h.Space, p);
        h.Space.Advise(p, M2, Advice.NoHugePage);
        h.Space.Advise(p.Add(K4), M2 - K4, Advice.DontNeed);
        CollapseAndCheckCopied(h, p, old, filled: 1);
    }

    [Theory]
    [InlineData(Context.Khugepaged)]
    [InlineData(Context.Madvise)]
    public void Collapse_full_of_compound_copies_a_fully_PTE_mapped_THP_into_a_new_one(Context context)
    {
        var h = new Harness(context);
        VirtualAddress p = h.AllocHpage();
        Folio old = FolioAt(h.Space, p);
        h.Space.Advise(p, K4, Advice.NoHugePage);
        h.Space.Advise(p, M2, Advice.NoHugePage);
        Assert.Single(h.Space.Vmas.All);
        CollapseAndCheckCopied(h, p, old, filled: 512);
    }

    [Theory]
    [InlineData(Context.Khugepaged)]
    [InlineData(Context.Madvise)]
    public void Collapse_fork_collapses_the_child_copying_the_shared_page_and_leaves_the_parent_small(Context context)
    {
        var h = new Harness(context);
        VirtualAddress p = MapAtBase(h.Space, M2);
        Fill(h.Space, p, 0, 1);
        AddressSpace child = h.Space.Fork();
        Assert.False(IsHuge(child, p));
        Fill(child, p, 1, 2);
        h.Collapse(child, p, 1, expect: true);
        Validate(child, p, 2, 512);
        Assert.False(IsHuge(h.Space, p));
        Validate(h.Space, p, 1, 1);
        Folio parentPage = FolioAt(h.Space, p);
        Assert.Equal(1, parentPage.MapCount);
        AssertBooks(h.Space, child);
    }

    [Fact]
    public void Madvise_collapse_existing_thps_succeeds_again_on_the_PMD_mapped_range()
    {
        var h = new Harness(Context.Madvise);
        VirtualAddress p = MapAtBase(h.Space, M2);
        Fill(h.Space, p, 0, 512);
        h.Collapse(h.Space, p, 1, expect: true);
        MadviseCollapseResult again = Collapser.MadviseCollapse(h.Space, p, M2);
        Assert.Equal(0, again.Errno);
        Assert.Equal(CollapseStatus.PmdMapped, Assert.Single(again.Regions).Status);
        Assert.True(IsHuge(h.Space, p));
        Validate(h.Space, p, 512, 512);
    }

    // Linux's anonymous collapse allocates and copies: the range maps a new THP and the old one is freed.
    private static void CollapseAndCheckCopied(Harness h, VirtualAddress p, Folio old, int filled)
    {
        h.Collapse(h.Space, p, 1, expect: true);
        Assert.NotEqual(old.HeadFrame, FolioAt(h.Space, p).HeadFrame);
        Assert.True((h.Space.Node.Frames.Describe(old.HeadFrame).Flags & FrameFlags.Free) != 0);
        Validate(h.Space, p, filled, 512);
    }

    private static PageTableEntry AddressSpaceTestsPte(AddressSpace space, VirtualAddress va) => ThpCore.Tests.Mm.AddressSpaceTests.Pte(space, va.Value);
}
