using System;
using System.Globalization;
using Spectre.Console;
using ThpCore.Paging;

namespace ThpCore.Cli;

/// <summary>Renders one page walk, level by level, for a reader who is learning paging.</summary>
internal static class WalkRenderer
{
    public static void Render(IAnsiConsole console, WalkTrace trace, in WalkResult result)
    {
        // Four narrow columns so that an 80-column terminal shows each level on one line.
        var table = new Table().Border(TableBorder.Simple)
            .AddColumn("entry [[index]]")
            .AddColumn("at (physical)")
            .AddColumn(new TableColumn("value as read").NoWrap())
            .AddColumn("meaning");

        foreach (WalkStep step in trace.Steps)
        {
            PageTableEntry e = step.Entry;
            string meaning = !e.IsPresent
                ? (e.IsEmpty ? "empty: not present" : "not present")
                : e.DescribeBits() + (e.IsLeaf
                    ? $" -> {e.LeafSize!.Value.ShortName()} {e.Address}"
                    : $" -> {step.Level.Next().TableName()} {e.Address}");
            table.AddRow(
                Markup.Escape($"{step.Level.EntryName()} [{step.Index.ToString(CultureInfo.InvariantCulture)}]"),
                step.EntryAddress.ToString(),
                "0x" + e.Raw.ToString("x16", CultureInfo.InvariantCulture),
                Markup.Escape(meaning));
        }

        console.Write(table);
        foreach (var (address, before, after) in trace.Writes)
        {
            console.MarkupLineInterpolated(
                $"  [grey]CPU sets[/] {DescribeSetBits(before, after),-3} [grey]at[/] {address.ToString()}: 0x{before:x16} -> 0x{after:x16}");
        }

        switch (result.Status)
        {
            case WalkStatus.Translated:
                console.MarkupLineInterpolated(
                    $"  [green]Translated[/] {result.Address.ToString()} -> [bold]{result.PhysicalAddress.ToString()}[/] ({result.PageSize.ShortName()} page, offset 0x{result.Address.PageOffset(result.PageSize):x})");
                console.MarkupLineInterpolated($"  [grey]Rights over all levels: {DescribeRights(result.Rights)}.[/]");
                break;
            case WalkStatus.PageFault:
                console.MarkupLineInterpolated(
                    $"  [red]Page fault[/] at the {result.FaultLevel.EntryName()}: CR2 = {result.Address.ToString()}, error code 0x{(uint)result.ErrorCode:x} = {WalkResult.DescribeErrorCode(result.ErrorCode)}");
                console.MarkupLineInterpolated($"  [grey]{ExplainErrorCode(result.ErrorCode)}[/]");
                break;
            default:
                console.MarkupLineInterpolated($"  [red]{result.ToString()}[/]");
                break;
        }
    }

    private static string DescribeSetBits(ulong before, ulong after)
    {
        ulong set = after & ~before;
        return ((set & (ulong)PageTableFlags.Accessed) != 0 ? "A" : string.Empty)
            + ((set & (ulong)PageTableFlags.Accessed) != 0 && (set & (ulong)PageTableFlags.Dirty) != 0 ? "+" : string.Empty)
            + ((set & (ulong)PageTableFlags.Dirty) != 0 ? "D" : string.Empty);
    }

    private static string DescribeRights(EffectiveRights rights) =>
        ((rights & EffectiveRights.Writable) != 0 ? "writable" : "read-only")
        + ((rights & EffectiveRights.User) != 0 ? ", user" : ", supervisor-only")
        + ((rights & EffectiveRights.ExecuteDisable) != 0 ? ", no execute" : ", executable");

    private static string ExplainErrorCode(PageFaultErrorCode code)
    {
        string cause = (code & PageFaultErrorCode.ReservedBit) != 0 ? "a reserved bit is set in an entry"
            : (code & PageFaultErrorCode.ProtectionKey) != 0 ? "the protection key forbids it"
            : (code & PageFaultErrorCode.Present) != 0 ? "the page is present but the access breaks its rights"
            : "an entry on the way is not present";
        string who = (code & PageFaultErrorCode.User) != 0 ? "a user-mode" : "a supervisor-mode";
        string what = (code & PageFaultErrorCode.InstructionFetch) != 0 ? "instruction fetch"
            : (code & PageFaultErrorCode.Write) != 0 ? "write" : "read";
        return $"P={(uint)code & 1}: {cause}; the access was {who} {what}.";
    }
}
