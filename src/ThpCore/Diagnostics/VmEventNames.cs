using System;
using System.Diagnostics.CodeAnalysis;
using ThpCore.Internal;

namespace ThpCore.Diagnostics;

/// <summary>The <c>/proc/vmstat</c> spelling of each <see cref="VmEvent"/> (<c>vmstat_text</c> in <c>mm/vmstat.c</c>, Linux v6.12), followed by ThpCore's own events in the same style.</summary>
public static class VmEventNames
{
    /// <summary>The number of <see cref="VmEvent"/> members; they are numbered 0 to <c>Count - 1</c>.</summary>
    public const int Count = (int)VmEvent.ThpCollapseReformMigrated + 1;

    // Indexed by VmEvent, in vmstat_text order.
    private static readonly string[] s_names =
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

        // ThpCore's own events, after Linux's (no /proc/vmstat has them).
        "thp_collapse_inplace",
        "thp_collapse_inplace_failed",
        "thp_collapse_reformed",
        "thp_collapse_reformed_failed",
        "thp_collapse_reform_migrated",
    ];

    /// <summary>The event's name as <c>/proc/vmstat</c> prints it, e.g. <c>thp_scan_exceed_share_pte</c>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="vmEvent"/> is not a defined value.</exception>
    public static string Name(VmEvent vmEvent) => s_names[CheckEvent(vmEvent, nameof(vmEvent))];

    /// <summary>Finds the event whose <c>/proc/vmstat</c> name is exactly <paramref name="name"/> (case-sensitive, as Linux prints it).</summary>
    /// <returns><see langword="true"/> when <paramref name="name"/> is one of the names of <see cref="Name(VmEvent)"/>.</returns>
    public static bool TryParse(ReadOnlySpan<char> name, out VmEvent vmEvent)
    {
        for (int i = 0; i < s_names.Length; i++)
        {
            if (name.SequenceEqual(s_names[i]))
            {
                vmEvent = (VmEvent)i;
                return true;
            }
        }

        vmEvent = default;
        return false;
    }

    /// <summary>Returns the event's index into a per-event array, or throws when it is not a defined value.</summary>
    internal static int CheckEvent(VmEvent vmEvent, string paramName)
    {
        if ((uint)vmEvent >= Count)
        {
            ThrowUndefined(vmEvent, paramName);
        }

        return (int)vmEvent;
    }

    [DoesNotReturn]
    private static void ThrowUndefined(VmEvent vmEvent, string paramName) =>
        ThrowHelper.ThrowArgumentOutOfRange(paramName, vmEvent, $"A VmEvent is 0 to {Count - 1}.");
}
