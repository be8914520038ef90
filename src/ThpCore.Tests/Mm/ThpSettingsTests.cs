using System;
using System.Linq;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using ThpCore.Mm;
using Xunit;

namespace ThpCore.Tests.Mm;

public sealed class ThpSettingsTests
{
    [Fact]
    public void Defaults_are_Linux_v6_12s()
    {
        ThpSettings settings = ThpSettings.Default;

        // mm/huge_memory.c, initial transparent_hugepage_flags; mm/Kconfig default choice TRANSPARENT_HUGEPAGE_ALWAYS.
        Assert.Equal(ThpEnabled.Always, settings.Enabled);
        // mm/huge_memory.c: TRANSPARENT_HUGEPAGE_DEFRAG_REQ_MADV_FLAG is set.
        Assert.Equal(ThpDefrag.Madvise, settings.Defrag);
        // mm/huge_memory.c: TRANSPARENT_HUGEPAGE_USE_ZERO_PAGE_FLAG and TRANSPARENT_HUGEPAGE_DEFRAG_KHUGEPAGED_FLAG are set.
        Assert.True(settings.UseZeroPage);
        Assert.True(settings.KhugepagedDefrag);
        // mm/khugepaged.c khugepaged_init: HPAGE_PMD_NR * 8, HPAGE_PMD_NR - 1, HPAGE_PMD_NR / 8, HPAGE_PMD_NR / 2.
        Assert.Equal(4096u, settings.PagesToScan);
        Assert.Equal(511, settings.MaxPtesNone);
        Assert.Equal(64, settings.MaxPtesSwap);
        Assert.Equal(256, settings.MaxPtesShared);
        // mm/khugepaged.c static initialisers.
        Assert.Equal(10000u, settings.ScanSleepMilliseconds);
        Assert.Equal(60000u, settings.AllocSleepMilliseconds);
        Assert.Equal(settings, new ThpSettings());
    }

    [Fact]
    public void Reading_the_default_files_gives_Linuxs_text()
    {
        ThpSettings settings = ThpSettings.Default;
        Assert.Equal("[always] madvise never\n", settings.Read("enabled"));
        Assert.Equal("always defer defer+madvise [madvise] never\n", settings.Read("defrag"));
        Assert.Equal("1\n", settings.Read("use_zero_page"));
        Assert.Equal("2097152\n", settings.Read("hpage_pmd_size"));
        Assert.Equal("1\n", settings.Read("khugepaged/defrag"));
        Assert.Equal("511\n", settings.Read("khugepaged/max_ptes_none"));
        Assert.Equal("64\n", settings.Read("khugepaged/max_ptes_swap"));
        Assert.Equal("256\n", settings.Read("khugepaged/max_ptes_shared"));
        Assert.Equal("4096\n", settings.Read("khugepaged/pages_to_scan"));
        Assert.Equal("10000\n", settings.Read("khugepaged/scan_sleep_millisecs"));
        Assert.Equal("60000\n", settings.Read("khugepaged/alloc_sleep_millisecs"));
        Assert.Equal(ThpSettings.Files, ThpSettings.Files.Where(f => settings.Read(f).EndsWith('\n')));
    }

    [Theory]
    [InlineData(ThpEnabled.Always, "always", "[always] madvise never\n")]
    [InlineData(ThpEnabled.Madvise, "madvise", "always [madvise] never\n")]
    [InlineData(ThpEnabled.Never, "never", "always madvise [never]\n")]
    public void Enabled_has_Linuxs_word_and_shown_form(ThpEnabled value, string word, string shown)
    {
        Assert.Equal(word, ThpSettings.Name(value));
        Assert.Equal(shown, ThpSettings.Format(value));
        Assert.Equal(value, ThpSettings.ParseEnabled(word));
        Assert.Equal(value, ThpSettings.ParseEnabled(word + "\n"));
        Assert.Equal(value, ThpSettings.ParseShownEnabled(shown));
        Assert.Equal(value, ThpSettings.ParseShownEnabled(shown.TrimEnd('\n')));
    }

    [Theory]
    [InlineData(ThpDefrag.Always, "always", "[always] defer defer+madvise madvise never\n")]
    [InlineData(ThpDefrag.Defer, "defer", "always [defer] defer+madvise madvise never\n")]
    [InlineData(ThpDefrag.DeferMadvise, "defer+madvise", "always defer [defer+madvise] madvise never\n")]
    [InlineData(ThpDefrag.Madvise, "madvise", "always defer defer+madvise [madvise] never\n")]
    [InlineData(ThpDefrag.Never, "never", "always defer defer+madvise madvise [never]\n")]
    public void Defrag_has_Linuxs_word_and_shown_form(ThpDefrag value, string word, string shown)
    {
        Assert.Equal(word, ThpSettings.Name(value));
        Assert.Equal(shown, ThpSettings.Format(value));
        Assert.Equal(value, ThpSettings.ParseDefrag(word));
        Assert.Equal(value, ThpSettings.ParseDefrag(word + "\n"));
        Assert.Equal(value, ThpSettings.ParseShownDefrag(shown));
    }

    [Theory]
    [InlineData("")]
    [InlineData("\n")]
    [InlineData(" madvise")]
    [InlineData("madvise ")]
    [InlineData("madvise\n\n")]
    [InlineData("Madvise")]
    [InlineData("mad")]
    [InlineData("always madvise")]
    [InlineData("always [madvise] never")]
    [InlineData("inherit")]
    public void Enabled_refuses_what_sysfs_streq_refuses_and_names_the_accepted_words(string text)
    {
        var error = Assert.Throws<ArgumentException>(() => ThpSettings.ParseEnabled(text));
        Assert.Equal("text", error.ParamName);
        Assert.Contains("write one of: always, madvise, never.", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("defer+")]
    [InlineData("defer madvise")]
    [InlineData("defer+madvise\r\n")]
    public void Defrag_refuses_anything_but_one_word(string text)
    {
        var error = Assert.Throws<ArgumentException>(() => ThpSettings.ParseDefrag(text));
        Assert.Contains("write one of: always, defer, defer+madvise, madvise, never.", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("[always] [madvise] never")]
    [InlineData("always madvise never")]
    [InlineData("madvise [always] never")]
    [InlineData("always  [madvise] never")]
    public void The_shown_form_must_be_exactly_Linuxs(string text) =>
        Assert.Throws<ArgumentException>(() => ThpSettings.ParseShownEnabled(text));

    [Fact]
    public void Writing_a_file_returns_a_changed_copy()
    {
        ThpSettings settings = ThpSettings.Default
            .Write("enabled", "madvise\n")
            .Write("defrag", "defer+madvise")
            .Write("use_zero_page", "0\n")
            .Write("khugepaged/defrag", "+0")
            .Write("khugepaged/max_ptes_none", "0")
            .Write("khugepaged/max_ptes_swap", "511\n")
            .Write("khugepaged/max_ptes_shared", "007")
            .Write("khugepaged/pages_to_scan", "4294967295")
            .Write("khugepaged/scan_sleep_millisecs", "0")
            .Write("khugepaged/alloc_sleep_millisecs", "1\n");

        Assert.Equal(
            ThpSettings.Default with
            {
                Enabled = ThpEnabled.Madvise,
                Defrag = ThpDefrag.DeferMadvise,
                UseZeroPage = false,
                KhugepagedDefrag = false,
                MaxPtesNone = 0,
                MaxPtesSwap = 511,
                MaxPtesShared = 7,
                PagesToScan = uint.MaxValue,
                ScanSleepMilliseconds = 0,
                AllocSleepMilliseconds = 1,
            },
            settings);
        Assert.Equal("always [madvise] never\n", settings.Read("enabled"));
        Assert.Equal("7\n", settings.Read("khugepaged/max_ptes_shared"));
        Assert.Equal(ThpEnabled.Always, ThpSettings.Default.Enabled);
    }

    [Theory]
    [InlineData("khugepaged/max_ptes_none", "512")]
    [InlineData("khugepaged/max_ptes_swap", "512")]
    [InlineData("khugepaged/max_ptes_shared", "1000")]
    [InlineData("khugepaged/pages_to_scan", "0")]
    [InlineData("khugepaged/pages_to_scan", "4294967296")]
    [InlineData("khugepaged/scan_sleep_millisecs", "4294967296")]
    [InlineData("khugepaged/alloc_sleep_millisecs", "99999999999")]
    [InlineData("use_zero_page", "2")]
    [InlineData("khugepaged/defrag", "10")]
    [InlineData("khugepaged/max_ptes_none", "18446744073709551616")]
    public void Numbers_outside_Linuxs_range_are_refused(string file, string text)
    {
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => ThpSettings.Default.Write(file, text));
        Assert.Contains(file, error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("")]
    [InlineData("\n")]
    [InlineData("+")]
    [InlineData("-1")]
    [InlineData(" 1")]
    [InlineData("1 ")]
    [InlineData("0x10")]
    [InlineData("1\n\n")]
    [InlineData("++1")]
    [InlineData("one")]
    public void Text_kstrtoul_refuses_is_refused_with_what_is_accepted(string text)
    {
        var error = Assert.Throws<ArgumentException>(() => ThpSettings.Default.Write("khugepaged/max_ptes_none", text));
        Assert.IsNotType<ArgumentOutOfRangeException>(error);
        Assert.Contains("write a decimal number", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Unknown_and_read_only_files_are_refused()
    {
        var unknown = Assert.Throws<ArgumentException>(() => ThpSettings.Default.Read("shmem_enabled"));
        Assert.Contains("khugepaged/max_ptes_none", unknown.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => ThpSettings.Default.Write("khugepaged/pages_collapsed", "1"));
        var readOnly = Assert.Throws<ArgumentException>(() => ThpSettings.Default.Write("hpage_pmd_size", "4096"));
        Assert.Contains("read-only", readOnly.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Properties_check_their_range_as_Linuxs_store_functions_do()
    {
        Assert.Equal(0, (ThpSettings.Default with { MaxPtesNone = 0 }).MaxPtesNone);
        Assert.Equal(511, (ThpSettings.Default with { MaxPtesShared = 511 }).MaxPtesShared);
        Assert.Equal(1u, (ThpSettings.Default with { PagesToScan = 1 }).PagesToScan);

        Assert.Equal("MaxPtesNone", Assert.Throws<ArgumentOutOfRangeException>(() => ThpSettings.Default with { MaxPtesNone = 512 }).ParamName);
        Assert.Equal("MaxPtesNone", Assert.Throws<ArgumentOutOfRangeException>(() => ThpSettings.Default with { MaxPtesNone = -1 }).ParamName);
        Assert.Equal("MaxPtesSwap", Assert.Throws<ArgumentOutOfRangeException>(() => ThpSettings.Default with { MaxPtesSwap = 512 }).ParamName);
        Assert.Equal("MaxPtesShared", Assert.Throws<ArgumentOutOfRangeException>(() => ThpSettings.Default with { MaxPtesShared = 512 }).ParamName);
        Assert.Equal("PagesToScan", Assert.Throws<ArgumentOutOfRangeException>(() => ThpSettings.Default with { PagesToScan = 0 }).ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => ThpSettings.Default with { Enabled = (ThpEnabled)3 });
        Assert.Throws<ArgumentOutOfRangeException>(() => ThpSettings.Default with { Defrag = (ThpDefrag)(-1) });
        Assert.Throws<ArgumentOutOfRangeException>(() => ThpSettings.Name((ThpDefrag)5));
        Assert.Throws<ArgumentOutOfRangeException>(() => ThpSettings.Format((ThpEnabled)3));
    }

    // As a shell would copy settings: `echo $(cat f) > f` for numbers, the bracketed word for enabled and defrag
    // (writing the whole shown line back is refused, as in Linux).
    [Property]
    public Property Every_setting_reads_back_as_written() =>
        Prop.ForAll(
            SettingsGen().ToArbitrary(),
            settings => ThpSettings.Files
                .Where(f => f != "hpage_pmd_size")
                .Aggregate(ThpSettings.Default with { Enabled = ThpEnabled.Never, PagesToScan = 1 }, (s, f) => s.Write(f, WrittenForm(settings, f)))
                .Equals(settings));

    [Fact]
    public void Writing_back_the_shown_line_is_refused_as_in_Linux() =>
        Assert.Throws<ArgumentException>(() => ThpSettings.Default.Write("defrag", ThpSettings.Default.Read("defrag")));

    private static string WrittenForm(ThpSettings settings, string file) => file switch
    {
        "enabled" => ThpSettings.Name(settings.Enabled) + "\n",
        "defrag" => ThpSettings.Name(settings.Defrag) + "\n",
        _ => settings.Read(file),
    };

    [Property]
    public Property Shown_forms_parse_back_to_their_value() =>
        Prop.ForAll(
            Gen.Elements(Enum.GetValues<ThpDefrag>()).ToArbitrary(),
            Gen.Elements(Enum.GetValues<ThpEnabled>()).ToArbitrary(),
            (defrag, enabled) =>
                ThpSettings.ParseShownDefrag(ThpSettings.Format(defrag)) == defrag
                && ThpSettings.ParseShownEnabled(ThpSettings.Format(enabled)) == enabled
                && ThpSettings.ParseDefrag(ThpSettings.Name(defrag)) == defrag
                && ThpSettings.ParseEnabled(ThpSettings.Name(enabled)) == enabled);

    private static Gen<ThpSettings> SettingsGen() =>
        from enabled in Gen.Elements(Enum.GetValues<ThpEnabled>())
        from defrag in Gen.Elements(Enum.GetValues<ThpDefrag>())
        from zero in ArbMap.Default.GeneratorFor<bool>()
        from khugepagedDefrag in ArbMap.Default.GeneratorFor<bool>()
        from none in Gen.Choose(0, 511)
        from swap in Gen.Choose(0, 511)
        from shared in Gen.Choose(0, 511)
        from scan in ArbMap.Default.GeneratorFor<uint>()
        from scanSleep in ArbMap.Default.GeneratorFor<uint>()
        from allocSleep in ArbMap.Default.GeneratorFor<uint>()
        select new ThpSettings
        {
            Enabled = enabled,
            Defrag = defrag,
            UseZeroPage = zero,
            KhugepagedDefrag = khugepagedDefrag,
            MaxPtesNone = none,
            MaxPtesSwap = swap,
            MaxPtesShared = shared,
            PagesToScan = Math.Max(scan, 1u),
            ScanSleepMilliseconds = scanSleep,
            AllocSleepMilliseconds = allocSleep,
        };
}
