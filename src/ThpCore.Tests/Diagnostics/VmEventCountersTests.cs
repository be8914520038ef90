using System;
using System.Collections.Generic;
using System.Diagnostics.Metrics;
using System.Linq;
using System.Threading;
using System.Threading.Tasks;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using ThpCore.Diagnostics;
using Xunit;

namespace ThpCore.Tests.Diagnostics;

public sealed class VmEventCountersTests
{
    // The /proc/vmstat names, in vmstat_text order, copied by hand from Linux v6.12 mm/vmstat.c (the events the model
    // counts; the THP block is complete, thp_split_pud included as on x86-64).
    private static readonly string[] s_linuxNames =
    [
        "pswpin",
        "pswpout",
        "pglazyfree",
        "pgfault",
        "pgmajfault",
        "pglazyfreed",
        "pgmigrate_success",
        "pgmigrate_fail",
        "thp_migration_success",
        "thp_migration_fail",
        "thp_migration_split",
        "compact_stall",
        "compact_fail",
        "compact_success",
        "thp_fault_alloc",
        "thp_fault_fallback",
        "thp_fault_fallback_charge",
        "thp_collapse_alloc",
        "thp_collapse_alloc_failed",
        "thp_file_alloc",
        "thp_file_fallback",
        "thp_file_fallback_charge",
        "thp_file_mapped",
        "thp_split_page",
        "thp_split_page_failed",
        "thp_deferred_split_page",
        "thp_underused_split_page",
        "thp_split_pmd",
        "thp_scan_exceed_none_pte",
        "thp_scan_exceed_swap_pte",
        "thp_scan_exceed_share_pte",
        "thp_split_pud",
        "thp_zero_page_alloc",
        "thp_zero_page_alloc_failed",
        "thp_swpout",
        "thp_swpout_fallback",
        "swpin_zero",
        "swpout_zero",
        "thp_collapse_inplace", // ThpCore's own events follow Linux's
        "thp_collapse_inplace_failed",
        "thp_collapse_reformed",
        "thp_collapse_reformed_failed",
        "thp_collapse_reform_migrated",
    ];

    private static IEnumerable<VmEvent> AllEvents => Enumerable.Range(0, VmEventNames.Count).Select(i => (VmEvent)i);

    [Fact]
    public void Names_are_the_proc_vmstat_spellings_in_Linux_order()
    {
        Assert.Equal(VmEventNames.Count, s_linuxNames.Length);
        Assert.Equal(s_linuxNames, AllEvents.Select(VmEventNames.Name));
        Assert.Equal(VmEventNames.Count, Enum.GetValues<VmEvent>().Length);
    }

    [Theory]
    [InlineData(VmEvent.ThpFaultAlloc, "thp_fault_alloc")]
    [InlineData(VmEvent.ThpFaultFallbackCharge, "thp_fault_fallback_charge")]
    [InlineData(VmEvent.ThpCollapseAllocFailed, "thp_collapse_alloc_failed")]
    [InlineData(VmEvent.ThpUnderusedSplitPage, "thp_underused_split_page")]
    [InlineData(VmEvent.ThpScanExceedSharedPte, "thp_scan_exceed_share_pte")]
    [InlineData(VmEvent.ThpSwpOutFallback, "thp_swpout_fallback")]
    [InlineData(VmEvent.PgMajFault, "pgmajfault")]
    [InlineData(VmEvent.CompactStall, "compact_stall")]
    public void Name_gives_the_exact_spelling(VmEvent vmEvent, string name)
    {
        Assert.Equal(name, VmEventNames.Name(vmEvent));
        Assert.True(VmEventNames.TryParse(name, out VmEvent parsed));
        Assert.Equal(vmEvent, parsed);
    }

    [Theory]
    [InlineData("thp_scan_exceed_shared_pte")]
    [InlineData("THP_FAULT_ALLOC")]
    [InlineData("thp_fault_alloc ")]
    [InlineData("")]
    public void TryParse_refuses_names_Linux_does_not_print(string name) =>
        Assert.False(VmEventNames.TryParse(name, out _));

    [Fact]
    public void Undefined_events_are_refused()
    {
        var counters = new VmEventCounters();
        Assert.Throws<ArgumentOutOfRangeException>(() => VmEventNames.Name((VmEvent)VmEventNames.Count));
        Assert.Throws<ArgumentOutOfRangeException>(() => counters.Count((VmEvent)(-1)));
        Assert.Throws<ArgumentOutOfRangeException>(() => counters.Get((VmEvent)VmEventNames.Count));
        Assert.Throws<ArgumentOutOfRangeException>(() => counters.Add((VmEvent)1000, 1));
    }

    [Fact]
    public void Count_Add_Get_and_Reset()
    {
        var counters = new VmEventCounters();
        counters.Count(VmEvent.ThpSplitPmd);
        counters.Count(VmEvent.ThpSplitPmd);
        counters.Add(VmEvent.PgFault, 512);
        counters.Add(VmEvent.PgFault, 0);

        Assert.Equal(2, counters.Get(VmEvent.ThpSplitPmd));
        Assert.Equal(512, counters.Get(VmEvent.PgFault));
        Assert.Equal(0, counters.Get(VmEvent.ThpSplitPage));

        counters.Reset();
        Assert.All(AllEvents, e => Assert.Equal(0, counters.Get(e)));
    }

    [Fact]
    public void Add_refuses_a_negative_delta()
    {
        var counters = new VmEventCounters();
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => counters.Add(VmEvent.PgFault, -1));
        Assert.Equal("delta", error.ParamName);
        Assert.Equal(0, counters.Get(VmEvent.PgFault));
    }

    [Fact]
    public void Concurrent_counts_from_several_threads_sum_exactly()
    {
        const int Threads = 8;
        const int PerThread = 200_000;
        var counters = new VmEventCounters();
        using var start = new Barrier(Threads);

        Parallel.For(0, Threads, new ParallelOptions { MaxDegreeOfParallelism = Threads }, t =>
        {
            start.SignalAndWait();
            for (int i = 0; i < PerThread; i++)
            {
                counters.Count(VmEvent.ThpFaultAlloc);
                counters.Add(VmEvent.PgFault, 3);
                counters.Count((VmEvent)(i % VmEventNames.Count));
            }
        });

        Assert.Equal((long)Threads * PerThread * 3, counters.Get(VmEvent.PgFault) - ExtraFromRoundRobin(VmEvent.PgFault));
        Assert.Equal((long)Threads * PerThread, counters.Get(VmEvent.ThpFaultAlloc) - ExtraFromRoundRobin(VmEvent.ThpFaultAlloc));
        Assert.Equal((long)Threads * PerThread * 5, AllEvents.Sum(counters.Get));

        static long ExtraFromRoundRobin(VmEvent e) =>
            (long)Threads * Enumerable.Range(0, PerThread).Count(i => i % VmEventNames.Count == (int)e);
    }

    [Fact]
    public void Count_allocates_nothing()
    {
        var counters = new VmEventCounters();
        counters.Count(VmEvent.ThpSplitPmd); // JIT the call first.
        counters.Add(VmEvent.PgFault, 1);

        long allocated = Allocations.SteadyState(() =>
        {
            for (int i = 0; i < 10_000; i++)
            {
                counters.Count(VmEvent.ThpSplitPmd);
                counters.Add(VmEvent.PgFault, 2);
            }
        });

        Assert.Equal(0, allocated);
        Assert.Equal(40_001, counters.Get(VmEvent.ThpSplitPmd));
    }

    [Fact]
    public void ToVmstatText_prints_every_event_as_name_space_value_newline_in_Linux_order()
    {
        var counters = new VmEventCounters();
        counters.Add(VmEvent.PswpIn, 7);
        counters.Count(VmEvent.ThpSwpOutFallback);
        counters.Add(VmEvent.ThpScanExceedSharedPte, 1234567890123);

        string text = counters.ToVmstatText();

        Assert.StartsWith("pswpin 7\npswpout 0\npglazyfree 0\npgfault 0\n", text, StringComparison.Ordinal);
        Assert.Contains("\nthp_scan_exceed_share_pte 1234567890123\nthp_split_pud 0\n", text, StringComparison.Ordinal);
        Assert.EndsWith("\nthp_swpout 0\nthp_swpout_fallback 1\nswpin_zero 0\nswpout_zero 0\nthp_collapse_inplace 0\nthp_collapse_inplace_failed 0\nthp_collapse_reformed 0\nthp_collapse_reformed_failed 0\nthp_collapse_reform_migrated 0\n", text, StringComparison.Ordinal);
        string[] lines = text.Split('\n');
        Assert.Equal(VmEventNames.Count + 1, lines.Length);
        Assert.Equal("", lines[^1]);
        Assert.Equal(s_linuxNames, lines[..^1].Select(l => l[..l.IndexOf(' ', StringComparison.Ordinal)]));
    }

    [Fact]
    public void A_snapshot_does_not_change_and_Since_gives_what_happened_in_between()
    {
        var counters = new VmEventCounters();
        counters.Add(VmEvent.PgFault, 10);
        VmEventSnapshot before = counters.Snapshot();

        counters.Add(VmEvent.PgFault, 5);
        counters.Count(VmEvent.ThpSplitPmd);
        VmEventSnapshot after = counters.Snapshot();

        Assert.Equal(10, before[VmEvent.PgFault]);
        Assert.Equal(15, after[VmEvent.PgFault]);
        VmEventSnapshot delta = after.Since(before);
        Assert.Equal(
            new[] { KeyValuePair.Create(VmEvent.PgFault, 5L), KeyValuePair.Create(VmEvent.ThpSplitPmd, 1L) },
            delta.NonZero());
        Assert.Equal(counters.ToVmstatText(), after.ToVmstatText());
    }

    [Fact]
    public void A_MeterListener_receives_every_counter_under_its_instrument_name()
    {
        var counters = new VmEventCounters();
        counters.Add(VmEvent.ThpFaultAlloc, 3);
        counters.Count(VmEvent.ThpScanExceedSharedPte);

        using var meter = new Meter(VmEventCounters.MeterName);
        var seen = new Dictionary<string, long>();
        var units = new HashSet<string?>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (ReferenceEquals(instrument.Meter, meter))
            {
                units.Add(instrument.Unit);
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, state) => seen[instrument.Name] = value);
        listener.Start();

        counters.PublishTo(meter);
        listener.RecordObservableInstruments();

        Assert.Equal(VmEventNames.Count, seen.Count);
        Assert.Equal(3, seen["thpcore.vmstat.thp_fault_alloc"]);
        Assert.Equal(1, seen["thpcore.vmstat.thp_scan_exceed_share_pte"]);
        Assert.Equal(0, seen["thpcore.vmstat.thp_split_pmd"]);
        Assert.Equal(new HashSet<string?> { "{event}" }, units);

        // Observable: the listener reads the live value on each collection.
        counters.Add(VmEvent.ThpFaultAlloc, 4);
        listener.RecordObservableInstruments();
        Assert.Equal(7, seen["thpcore.vmstat.thp_fault_alloc"]);
    }

    [Property]
    public Property Counts_equal_the_number_of_increments_per_event() =>
        Prop.ForAll(
            Gen.Choose(0, VmEventNames.Count - 1).ArrayOf().ToArbitrary(),
            indices =>
            {
                var counters = new VmEventCounters();
                foreach (int i in indices)
                {
                    counters.Count((VmEvent)i);
                }

                return AllEvents.All(e => counters.Get(e) == indices.Count(i => i == (int)e));
            });
}
