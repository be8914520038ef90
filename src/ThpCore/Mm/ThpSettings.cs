using System;
using System.Collections.Generic;
using System.Globalization;
using ThpCore.Internal;

namespace ThpCore.Mm;

/// <summary>
/// <c>/sys/kernel/mm/transparent_hugepage/enabled</c>: when an anonymous fault or khugepaged may use a PMD-size THP
/// (Linux: <c>TRANSPARENT_HUGEPAGE_FLAG</c> and <c>TRANSPARENT_HUGEPAGE_REQ_MADV_FLAG</c>).
/// </summary>
/// <remarks>The per-size files <c>hugepages-&lt;N&gt;kB/enabled</c> (mTHP, v6.8+) add <c>inherit</c>; this top-level knob has no such value.</remarks>
public enum ThpEnabled
{
    /// <summary><c>always</c>: every eligible VMA, unless it has <c>MADV_NOHUGEPAGE</c>.</summary>
    Always = 0,

    /// <summary><c>madvise</c>: only VMAs with <c>MADV_HUGEPAGE</c>.</summary>
    Madvise = 1,

    /// <summary><c>never</c>: no THP at fault and no khugepaged collapse (<c>MADV_COLLAPSE</c> still works).</summary>
    Never = 2,
}

/// <summary>
/// <c>/sys/kernel/mm/transparent_hugepage/defrag</c>: how hard a THP allocation at fault may try, by direct
/// reclaim and compaction or by waking kswapd/kcompactd (Linux: the <c>TRANSPARENT_HUGEPAGE_DEFRAG_*</c> flags).
/// </summary>
public enum ThpDefrag
{
    /// <summary><c>always</c>: stall in direct reclaim and compaction (<c>TRANSPARENT_HUGEPAGE_DEFRAG_DIRECT_FLAG</c>).</summary>
    Always = 0,

    /// <summary><c>defer</c>: wake kswapd and kcompactd, fall back to base pages now (<c>..._DEFRAG_KSWAPD_FLAG</c>).</summary>
    Defer = 1,

    /// <summary>
    /// <c>defer+madvise</c>: direct reclaim and compaction for <c>MADV_HUGEPAGE</c> VMAs, <c>defer</c> for the rest
    /// (<c>..._DEFRAG_KSWAPD_OR_MADV_FLAG</c>).
    /// </summary>
    DeferMadvise = 2,

    /// <summary><c>madvise</c>: direct reclaim and compaction only for <c>MADV_HUGEPAGE</c> VMAs (<c>..._DEFRAG_REQ_MADV_FLAG</c>).</summary>
    Madvise = 3,

    /// <summary><c>never</c>: no reclaim or compaction for a THP at fault.</summary>
    Never = 4,
}

/// <summary>
/// The THP knobs of <c>/sys/kernel/mm/transparent_hugepage/</c> and its <c>khugepaged/</c> directory, with
/// Linux's defaults, range checks and sysfs text forms. Immutable: change a copy with <c>with</c>, or with
/// <see cref="Write(string, string)"/>, which takes the text a shell would write to the file.
/// </summary>
/// <remarks>
/// <para>
/// Reference: Linux v6.12, <c>mm/huge_memory.c</c> (the initial <c>transparent_hugepage_flags</c>,
/// <c>enabled_store</c>, <c>defrag_store</c>, <c>single_hugepage_flag_store</c>) and <c>mm/khugepaged.c</c> (the
/// static initialisers, <c>khugepaged_init</c> and the <c>*_store</c> functions). Each property names its source.
/// </para>
/// <para>
/// Every property checks its value in its <c>init</c> accessor, as Linux's store function does, so a
/// <c>with</c> expression cannot make an out-of-range object. Where Linux answers <c>EINVAL</c> because a value is
/// out of range, this type throws <see cref="ArgumentOutOfRangeException"/>; where the text is not a number or not
/// one of the words, <see cref="ArgumentException"/> naming what is accepted.
/// </para>
/// <para>
/// Not modelled: <c>shmem_enabled</c>, the per-size <c>hugepages-&lt;N&gt;kB/</c> directories (mTHP), the
/// <c>transparent_hugepage=</c> boot parameter, and <c>hugepage_init</c>'s rule that a machine with less than
/// 512 MiB of RAM starts with every flag clear (enabled and defrag <c>never</c>, <c>use_zero_page</c> and
/// <c>khugepaged/defrag</c> 0). The read-only counters <c>khugepaged/pages_collapsed</c> and
/// <c>khugepaged/full_scans</c> belong to the khugepaged scanner, not to its settings.
/// </para>
/// </remarks>
public sealed record ThpSettings
{
    /// <summary>
    /// <c>HPAGE_PMD_NR</c> on x86-64 with 4 KiB pages: the PTEs of one page table, and the base pages of one
    /// PMD-size THP (512).
    /// </summary>
    public const int HugePagePmdPages = 512;

    /// <summary>
    /// The largest value of <see cref="MaxPtesNone"/>, <see cref="MaxPtesSwap"/> and <see cref="MaxPtesShared"/>:
    /// <c>HPAGE_PMD_NR - 1</c> = 511, the bound every <c>max_ptes_*_store</c> checks.
    /// </summary>
    public const int MaxPtesLimit = HugePagePmdPages - 1;

    /// <summary><c>hpage_pmd_size</c> (read-only): the bytes of a PMD-size THP, 2 MiB on x86-64.</summary>
    public const int HugePagePmdSize = HugePagePmdPages * 4096;

    private static readonly string[] s_enabledWords = ["always", "madvise", "never"];
    private static readonly string[] s_defragWords = ["always", "defer", "defer+madvise", "madvise", "never"];

    private static readonly string[] s_files =
    [
        "enabled",
        "defrag",
        "use_zero_page",
        "hpage_pmd_size",
        "khugepaged/defrag",
        "khugepaged/max_ptes_none",
        "khugepaged/max_ptes_swap",
        "khugepaged/max_ptes_shared",
        "khugepaged/pages_to_scan",
        "khugepaged/scan_sleep_millisecs",
        "khugepaged/alloc_sleep_millisecs",
    ];

    private readonly ThpEnabled _enabled = ThpEnabled.Always;
    private readonly ThpDefrag _defrag = ThpDefrag.Madvise;
    private readonly uint _pagesToScan = HugePagePmdPages * 8;
    private readonly int _maxPtesNone = HugePagePmdPages - 1;
    private readonly int _maxPtesSwap = HugePagePmdPages / 8;
    private readonly int _maxPtesShared = HugePagePmdPages / 2;

    /// <summary>Linux v6.12's defaults on x86-64, with the upstream Kconfig choice <c>TRANSPARENT_HUGEPAGE_ALWAYS</c>.</summary>
    public static ThpSettings Default { get; } = new();

    /// <summary>
    /// The files <see cref="Read(string)"/> and <see cref="Write(string, string)"/> know, relative to
    /// <c>/sys/kernel/mm/transparent_hugepage/</c>, in the order Linux lists its attributes.
    /// </summary>
    public static IReadOnlyList<string> Files => s_files;

    /// <summary>
    /// <c>enabled</c>. Default <see cref="ThpEnabled.Always"/>: the initial <c>transparent_hugepage_flags</c> in
    /// <c>mm/huge_memory.c</c> follows the Kconfig choice "Transparent Hugepage Support sysfs defaults" in
    /// <c>mm/Kconfig</c>, whose upstream default is <c>TRANSPARENT_HUGEPAGE_ALWAYS</c>. Kernels built with
    /// <c>TRANSPARENT_HUGEPAGE_MADVISE</c> (many distributions) start at <see cref="ThpEnabled.Madvise"/>, and with
    /// <c>TRANSPARENT_HUGEPAGE_NEVER</c> at <see cref="ThpEnabled.Never"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Not a defined value.</exception>
    public ThpEnabled Enabled
    {
        get => _enabled;
        init
        {
            CheckEnabled(value, nameof(Enabled));
            _enabled = value;
        }
    }

    /// <summary>
    /// <c>defrag</c>. Default <see cref="ThpDefrag.Madvise"/>: the initial <c>transparent_hugepage_flags</c> in
    /// <c>mm/huge_memory.c</c> sets <c>TRANSPARENT_HUGEPAGE_DEFRAG_REQ_MADV_FLAG</c>, whatever the Kconfig choice.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Not a defined value.</exception>
    public ThpDefrag Defrag
    {
        get => _defrag;
        init
        {
            CheckDefrag(value, nameof(Defrag));
            _defrag = value;
        }
    }

    /// <summary>
    /// <c>use_zero_page</c>: a read fault in an empty THP-eligible range maps the huge zero page. Default
    /// <see langword="true"/>: the initial <c>transparent_hugepage_flags</c> sets
    /// <c>TRANSPARENT_HUGEPAGE_USE_ZERO_PAGE_FLAG</c>.
    /// </summary>
    public bool UseZeroPage { get; init; } = true;

    /// <summary>
    /// <c>khugepaged/defrag</c>: khugepaged's THP allocations may reclaim and compact (<c>GFP_TRANSHUGE</c> rather
    /// than <c>GFP_TRANSHUGE_LIGHT</c>). Default <see langword="true"/>: the initial
    /// <c>transparent_hugepage_flags</c> sets <c>TRANSPARENT_HUGEPAGE_DEFRAG_KHUGEPAGED_FLAG</c>.
    /// </summary>
    public bool KhugepagedDefrag { get; init; } = true;

    /// <summary>
    /// <c>khugepaged/max_ptes_none</c>: how many empty PTEs (or PTEs of the shared zero page) khugepaged accepts in a
    /// range it collapses. 0 to <see cref="MaxPtesLimit"/>; default <c>HPAGE_PMD_NR - 1</c> = 511
    /// (<c>khugepaged_init</c>). Also the threshold of the underused-THP shrinker (v6.12).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Outside 0..<see cref="MaxPtesLimit"/> (Linux: <c>EINVAL</c>).</exception>
    public int MaxPtesNone
    {
        get => _maxPtesNone;
        init => _maxPtesNone = CheckMaxPtes(value, nameof(MaxPtesNone));
    }

    /// <summary>
    /// <c>khugepaged/max_ptes_swap</c>: how many swapped-out PTEs khugepaged swaps in to collapse a range. 0 to
    /// <see cref="MaxPtesLimit"/>; default <c>HPAGE_PMD_NR / 8</c> = 64 (<c>khugepaged_init</c>).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Outside 0..<see cref="MaxPtesLimit"/> (Linux: <c>EINVAL</c>).</exception>
    public int MaxPtesSwap
    {
        get => _maxPtesSwap;
        init => _maxPtesSwap = CheckMaxPtes(value, nameof(MaxPtesSwap));
    }

    /// <summary>
    /// <c>khugepaged/max_ptes_shared</c>: how many PTEs of pages shared with another process khugepaged accepts. 0 to
    /// <see cref="MaxPtesLimit"/>; default <c>HPAGE_PMD_NR / 2</c> = 256 (<c>khugepaged_init</c>).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Outside 0..<see cref="MaxPtesLimit"/> (Linux: <c>EINVAL</c>).</exception>
    public int MaxPtesShared
    {
        get => _maxPtesShared;
        init => _maxPtesShared = CheckMaxPtes(value, nameof(MaxPtesShared));
    }

    /// <summary>
    /// <c>khugepaged/pages_to_scan</c>: PTEs (or skipped VMAs) khugepaged scans per wake-up. 1 to
    /// <see cref="uint.MaxValue"/>; default <c>HPAGE_PMD_NR * 8</c> = 4096 (<c>khugepaged_init</c>).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">0 (Linux: <c>pages_to_scan_store</c> answers <c>EINVAL</c>).</exception>
    public uint PagesToScan
    {
        get => _pagesToScan;
        init
        {
            if (value == 0)
            {
                ThrowHelper.ThrowArgumentOutOfRange(nameof(PagesToScan), value, "pages_to_scan must be 1 or more.");
            }

            _pagesToScan = value;
        }
    }

    /// <summary>
    /// <c>khugepaged/scan_sleep_millisecs</c>: the pause between two scan passes. Any <see cref="uint"/>
    /// (<c>kstrtouint</c>); default 10000 (static initialiser of <c>khugepaged_scan_sleep_millisecs</c>).
    /// </summary>
    public uint ScanSleepMilliseconds { get; init; } = 10000;

    /// <summary>
    /// <c>khugepaged/alloc_sleep_millisecs</c>: the pause after a failed THP allocation. Any <see cref="uint"/>
    /// (<c>kstrtouint</c>); default 60000 (static initialiser of <c>khugepaged_alloc_sleep_millisecs</c>).
    /// </summary>
    public uint AllocSleepMilliseconds { get; init; } = 60000;

    /// <summary>The word for <paramref name="value"/> in <c>enabled</c>: <c>always</c>, <c>madvise</c> or <c>never</c>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Not a defined value.</exception>
    public static string Name(ThpEnabled value) => s_enabledWords[CheckEnabled(value, nameof(value))];

    /// <summary>The word for <paramref name="value"/> in <c>defrag</c>: <c>always</c>, <c>defer</c>, <c>defer+madvise</c>, <c>madvise</c> or <c>never</c>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Not a defined value.</exception>
    public static string Name(ThpDefrag value) => s_defragWords[CheckDefrag(value, nameof(value))];

    /// <summary>
    /// What reading <c>enabled</c> gives: every word, the current one in brackets, then a newline; for example
    /// <c>"always [madvise] never\n"</c> (<c>enabled_show</c>).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Not a defined value.</exception>
    public static string Format(ThpEnabled value) => FormatChoice(s_enabledWords, CheckEnabled(value, nameof(value)));

    /// <summary>
    /// What reading <c>defrag</c> gives, for example <c>"always defer defer+madvise [madvise] never\n"</c>
    /// (<c>defrag_show</c>).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Not a defined value.</exception>
    public static string Format(ThpDefrag value) => FormatChoice(s_defragWords, CheckDefrag(value, nameof(value)));

    /// <summary>
    /// Parses what may be written to <c>enabled</c>: exactly one word, optionally followed by one newline (as
    /// <c>echo</c> writes it), compared as <c>sysfs_streq</c> does, so <c>"madvise"</c> and <c>"madvise\n"</c> are
    /// accepted but <c>" madvise"</c>, <c>"Madvise"</c> and <c>"mad"</c> are not.
    /// </summary>
    /// <exception cref="ArgumentException">Not one of the words (Linux: <c>EINVAL</c>); the message lists them.</exception>
    public static ThpEnabled ParseEnabled(ReadOnlySpan<char> text) =>
        (ThpEnabled)ParseWord(text, s_enabledWords, "enabled");

    /// <summary>Parses what may be written to <c>defrag</c>, as <see cref="ParseEnabled(ReadOnlySpan{char})"/> does.</summary>
    /// <exception cref="ArgumentException">Not one of the words (Linux: <c>EINVAL</c>); the message lists them.</exception>
    public static ThpDefrag ParseDefrag(ReadOnlySpan<char> text) =>
        (ThpDefrag)ParseWord(text, s_defragWords, "defrag");

    /// <summary>
    /// Parses what reading <c>enabled</c> gives (<see cref="Format(ThpEnabled)"/>), with or without the final
    /// newline, for example a real host's <c>/sys/kernel/mm/transparent_hugepage/enabled</c>.
    /// </summary>
    /// <exception cref="ArgumentException">Not exactly one of Linux's three forms.</exception>
    public static ThpEnabled ParseShownEnabled(ReadOnlySpan<char> text) =>
        (ThpEnabled)ParseShown(text, s_enabledWords, "enabled");

    /// <summary>Parses what reading <c>defrag</c> gives (<see cref="Format(ThpDefrag)"/>), with or without the final newline.</summary>
    /// <exception cref="ArgumentException">Not exactly one of Linux's five forms.</exception>
    public static ThpDefrag ParseShownDefrag(ReadOnlySpan<char> text) =>
        (ThpDefrag)ParseShown(text, s_defragWords, "defrag");

    /// <summary>
    /// What reading <paramref name="file"/> (one of <see cref="Files"/>) gives, byte for byte: the bracketed word
    /// list for <c>enabled</c> and <c>defrag</c>, <c>0</c> or <c>1</c> for flags, a decimal number otherwise, each
    /// followed by a newline.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="file"/> is not one of <see cref="Files"/>.</exception>
    public string Read(string file)
    {
        ArgumentNullException.ThrowIfNull(file);
        return file switch
        {
            "enabled" => Format(Enabled),
            "defrag" => Format(Defrag),
            "use_zero_page" => UseZeroPage ? "1\n" : "0\n",
            "hpage_pmd_size" => Line((uint)HugePagePmdSize),
            "khugepaged/defrag" => KhugepagedDefrag ? "1\n" : "0\n",
            "khugepaged/max_ptes_none" => Line((uint)MaxPtesNone),
            "khugepaged/max_ptes_swap" => Line((uint)MaxPtesSwap),
            "khugepaged/max_ptes_shared" => Line((uint)MaxPtesShared),
            "khugepaged/pages_to_scan" => Line(PagesToScan),
            "khugepaged/scan_sleep_millisecs" => Line(ScanSleepMilliseconds),
            "khugepaged/alloc_sleep_millisecs" => Line(AllocSleepMilliseconds),
            _ => ThrowUnknownFile<string>(file),
        };
    }

    /// <summary>
    /// A copy with <paramref name="text"/> written to <paramref name="file"/>, accepted or refused as Linux's store
    /// function would: one word for <c>enabled</c> and <c>defrag</c> (<c>sysfs_streq</c>); a decimal number for the
    /// others (<c>kstrtouint</c> / <c>kstrtoul</c>: an optional <c>+</c>, digits, an optional newline, nothing else),
    /// then the file's range.
    /// </summary>
    /// <exception cref="ArgumentException">
    /// <paramref name="file"/> is unknown or read-only (<c>hpage_pmd_size</c>), or <paramref name="text"/> is not a
    /// word or number the file accepts.
    /// </exception>
    /// <exception cref="ArgumentOutOfRangeException">The number is outside the file's range (Linux: <c>EINVAL</c>).</exception>
    public ThpSettings Write(string file, string text)
    {
        ArgumentNullException.ThrowIfNull(file);
        ArgumentNullException.ThrowIfNull(text);
        return file switch
        {
            "enabled" => this with { Enabled = ParseEnabled(text) },
            "defrag" => this with { Defrag = ParseDefrag(text) },
            "use_zero_page" => this with { UseZeroPage = ParseFlag(text, file) },
            "khugepaged/defrag" => this with { KhugepagedDefrag = ParseFlag(text, file) },
            "khugepaged/max_ptes_none" => this with { MaxPtesNone = ParseMaxPtes(text, file) },
            "khugepaged/max_ptes_swap" => this with { MaxPtesSwap = ParseMaxPtes(text, file) },
            "khugepaged/max_ptes_shared" => this with { MaxPtesShared = ParseMaxPtes(text, file) },
            "khugepaged/pages_to_scan" => this with { PagesToScan = ParseUInt32(text, file, minimum: 1) },
            "khugepaged/scan_sleep_millisecs" => this with { ScanSleepMilliseconds = ParseUInt32(text, file, minimum: 0) },
            "khugepaged/alloc_sleep_millisecs" => this with { AllocSleepMilliseconds = ParseUInt32(text, file, minimum: 0) },
            "hpage_pmd_size" => ThrowHelper.ThrowArgument<ThpSettings>(nameof(file), "hpage_pmd_size is read-only (mode 0444)."),
            _ => ThrowUnknownFile<ThpSettings>(file),
        };
    }

    private static int CheckEnabled(ThpEnabled value, string paramName)
    {
        if ((uint)value > (uint)ThpEnabled.Never)
        {
            ThrowHelper.ThrowArgumentOutOfRange(paramName, value, "A ThpEnabled is Always, Madvise or Never.");
        }

        return (int)value;
    }

    private static int CheckDefrag(ThpDefrag value, string paramName)
    {
        if ((uint)value > (uint)ThpDefrag.Never)
        {
            ThrowHelper.ThrowArgumentOutOfRange(paramName, value, "A ThpDefrag is Always, Defer, DeferMadvise, Madvise or Never.");
        }

        return (int)value;
    }

    private static int CheckMaxPtes(int value, string paramName)
    {
        if ((uint)value > MaxPtesLimit)
        {
            ThrowHelper.ThrowArgumentOutOfRange(paramName, value, $"{paramName} is 0 to {MaxPtesLimit} (HPAGE_PMD_NR - 1).");
        }

        return value;
    }

    private static string Line(uint value) => value.ToString(CultureInfo.InvariantCulture) + "\n";

    private static string FormatChoice(string[] words, int selected)
    {
        var parts = new string[words.Length];
        for (int i = 0; i < words.Length; i++)
        {
            parts[i] = i == selected ? "[" + words[i] + "]" : words[i];
        }

        return string.Join(' ', parts) + "\n";
    }

    // sysfs_streq: equal, or equal but for one trailing newline.
    private static int ParseWord(ReadOnlySpan<char> text, string[] words, string file)
    {
        ReadOnlySpan<char> word = text.EndsWith("\n") ? text[..^1] : text;
        for (int i = 0; i < words.Length; i++)
        {
            if (word.SequenceEqual(words[i]))
            {
                return i;
            }
        }

        return ThrowHelper.ThrowArgument<int>(
            nameof(text),
            $"{Quote(text)} is not accepted by transparent_hugepage/{file} (Linux: EINVAL); write one of: {string.Join(", ", words)}.");
    }

    private static int ParseShown(ReadOnlySpan<char> text, string[] words, string file)
    {
        for (int i = 0; i < words.Length; i++)
        {
            string shown = FormatChoice(words, i);
            if (text.SequenceEqual(shown) || text.SequenceEqual(shown.AsSpan(0, shown.Length - 1)))
            {
                return i;
            }
        }

        return ThrowHelper.ThrowArgument<int>(
            nameof(text),
            $"{Quote(text)} is not what transparent_hugepage/{file} shows: the words {string.Join(" ", words)} in that order with exactly one in brackets.");
    }

    private static bool ParseFlag(string text, string file)
    {
        ulong value = ParseKernelUnsigned(text, file);
        if (value > 1)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(text), text, $"transparent_hugepage/{file} accepts 0 or 1 (Linux: EINVAL).");
        }

        return value == 1;
    }

    private static int ParseMaxPtes(string text, string file)
    {
        ulong value = ParseKernelUnsigned(text, file);
        if (value > MaxPtesLimit)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(text), text, $"transparent_hugepage/{file} accepts 0 to {MaxPtesLimit} (Linux: EINVAL).");
        }

        return (int)value;
    }

    private static uint ParseUInt32(string text, string file, uint minimum)
    {
        ulong value = ParseKernelUnsigned(text, file);
        if (value < minimum || value > uint.MaxValue)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(text), text, $"transparent_hugepage/{file} accepts {minimum} to {uint.MaxValue} (Linux: EINVAL).");
        }

        return (uint)value;
    }

    // kstrtoull(s, 10, ...): an optional '+', one or more decimal digits, an optional '\n', nothing else. A value
    // past 2^64 - 1 is Linux's ERANGE; it is reported as out of range.
    private static ulong ParseKernelUnsigned(string text, string file)
    {
        ReadOnlySpan<char> digits = text;
        if (digits.StartsWith("+"))
        {
            digits = digits[1..];
        }

        if (digits.EndsWith("\n"))
        {
            digits = digits[..^1];
        }

        if (digits.IsEmpty)
        {
            return ThrowNotANumber(text, file);
        }

        ulong value = 0;
        foreach (char c in digits)
        {
            if (!char.IsAsciiDigit(c))
            {
                return ThrowNotANumber(text, file);
            }

            ulong digit = (ulong)(c - '0');
            if (value > (ulong.MaxValue - digit) / 10)
            {
                ThrowHelper.ThrowArgumentOutOfRange(nameof(text), text, $"transparent_hugepage/{file}: the number does not fit in 64 bits (Linux: ERANGE).");
            }

            value = value * 10 + digit;
        }

        return value;
    }

    private static ulong ThrowNotANumber(string text, string file) =>
        ThrowHelper.ThrowArgument<ulong>(
            nameof(text),
            $"{Quote(text)} is not accepted by transparent_hugepage/{file} (Linux: EINVAL); write a decimal number: an optional '+', digits, an optional newline.");

    private static T ThrowUnknownFile<T>(string file) =>
        ThrowHelper.ThrowArgument<T>(nameof(file), $"\"{file}\" is not a modelled file of /sys/kernel/mm/transparent_hugepage/; the files are: {string.Join(", ", s_files)}.");

    private static string Quote(ReadOnlySpan<char> text) => "\"" + text.ToString().Replace("\n", "\\n", StringComparison.Ordinal) + "\"";
}
