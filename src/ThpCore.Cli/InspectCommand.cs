using System;
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Text.Json;
using ThpCore.Inspection;
using ThpCore.Paging;
using EnumerationOptions = ThpCore.Inspection.EnumerationOptions;

namespace ThpCore.Cli;

/// <summary><c>thp inspect</c>: every mapping of a guest's page tables, in QEMU's format, as JSON, or as THP facts.</summary>
internal static class InspectCommand
{
    public static Command Create(CliContext context)
    {
        var image = new ImageOptions();
        var infoTlb = new Option<bool>("--info-tlb") { Description = "Print QEMU's 'info tlb' format, byte for byte (diffable with the monitor's output)." };
        var json = new Option<bool>("--json") { Description = "Print JSON: every mapping with page size, entry and rights combined over all levels, then anomalies." };
        var summary = new Option<bool>("--summary") { Description = "Print leaf counts and the THP analysis of every 2 MiB range: PMD-mapped, collapsible in place, re-formable in place, or why not." };
        var limit = new Option<long>("--limit")
        {
            Description = "Stop after this many leaf mappings (hostile tables can expand to billions).",
            HelpName = "N",
            DefaultValueFactory = _ => new EnumerationOptions().MaxLeaves,
        };

        var command = new Command("inspect", "List every present leaf mapping of the page tables in a QEMU memory image, with effective rights, and find where THPs stand.");
        image.AddTo(command);
        command.Options.Add(infoTlb);
        command.Options.Add(json);
        command.Options.Add(summary);
        command.Options.Add(limit);
        command.Validators.Add(result =>
        {
            int modes = (result.GetValue(infoTlb) ? 1 : 0) + (result.GetValue(json) ? 1 : 0) + (result.GetValue(summary) ? 1 : 0);
            if (modes > 1)
            {
                result.AddError("Choose one of --info-tlb, --json and --summary.");
            }
        });

        command.SetAction(parse => Cli.Run(context, () =>
        {
            long maxLeaves = parse.GetValue(limit);
            if (maxLeaves < 1)
            {
                throw new CliException(ExitCodes.Usage, $"--limit: {maxLeaves} is not a positive number of mappings.");
            }

            var (guest, cpu) = image.Open(parse);
            using (guest)
            {
                using var progress = new ProgressLine(context);
                var options = new EnumerationOptions { MaxLeaves = maxLeaves, Progress = progress };
                foreach (string warning in guest.Warnings)
                {
                    context.Error.WriteLine($"warning: {warning}");
                }

                if (parse.GetValue(summary))
                {
                    ThpReport report = ThpAnalyzer.Analyze(guest, cpu, enumeration: options);
                    progress.Clear();
                    WriteSummary(context.Out, guest, cpu, report);
                    return ExitCodes.Success;
                }

                var enumerator = new PageTableEnumerator(guest, cpu, options);
                if (parse.GetValue(infoTlb))
                {
                    InfoTlb.Write(context.Out, enumerator.Enumerate());
                }
                else if (parse.GetValue(json))
                {
                    WriteJson(context.Out, guest, cpu, enumerator);
                }
                else
                {
                    WriteTable(context.Out, cpu, enumerator);
                }

                context.Out.Flush();
                progress.Clear();
                foreach (Anomaly anomaly in enumerator.Anomalies)
                {
                    context.Error.WriteLine($"{(anomaly.Kind == AnomalyKind.RepeatedTable ? "note" : "anomaly")}: {anomaly.Kind} at {anomaly.Level.EntryName()} {anomaly.EntryAddress} (raw 0x{anomaly.Raw:x16}) for {anomaly.Address}: {anomaly.Message}");
                }

                return enumerator.Stopped ? ExitCodes.LimitReached : ExitCodes.Success;
            }
        }));
        return command;
    }

    private static void WriteTable(TextWriter output, CpuState cpu, PageTableEnumerator enumerator)
    {
        output.WriteLine($"# {ImageOptions.Describe(cpu)}");
        output.WriteLine($"{"virtual address",-18}  {"size",-4}  {"physical address",-16}  {"rights",-8}  {"leaf entry",-18}  bits");
        foreach (Mapping m in enumerator.Enumerate())
        {
            output.WriteLine(string.Create(
                CultureInfo.InvariantCulture,
                $"{m.Address.Value:x16}  {m.Size.ShortName(),-4}  {m.Frame.Value,16:x}  {Rights(m.Rights),-8}  {m.Leaf.Raw:x16}    {m.Leaf.DescribeBits()}"));
        }

        output.WriteLine($"# {enumerator.LeafCount:#,0} mappings");
    }

    private static string Rights(EffectiveRights rights) =>
        ((rights & EffectiveRights.User) != 0 ? "user" : "sup") + " "
        + ((rights & EffectiveRights.Writable) != 0 ? "w" : "r")
        + ((rights & EffectiveRights.ExecuteDisable) != 0 ? "-" : "x");

    private static void WriteJson(TextWriter output, GuestImage image, CpuState cpu, PageTableEnumerator enumerator)
    {
        using var stream = new MemoryStream();
        using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = false });
        void FlushTo()
        {
            json.Flush();
            output.Write(System.Text.Encoding.UTF8.GetString(stream.GetBuffer(), 0, (int)stream.Length));
            stream.SetLength(0);
        }

        json.WriteStartObject();
        json.WriteString("image", image.Path);
        json.WriteString("format", image.Format.ToString().ToLowerInvariant());
        json.WriteString("cr3", Hex(cpu.Cr3));
        json.WriteNumber("levels", (int)cpu.PagingMode);
        json.WriteBoolean("nxe", cpu.NoExecuteEnabled);
        json.WriteNumber("maxPhysicalAddressBits", cpu.MaxPhysicalAddressBits);
        json.WriteStartArray("mappings");
        foreach (Mapping m in enumerator.Enumerate())
        {
            json.WriteStartObject();
            json.WriteString("virtualAddress", Hex(m.Address.Value));
            json.WriteString("pageSize", m.Size.ShortName());
            json.WriteNumber("bytes", m.Size.Bytes());
            json.WriteString("physicalAddress", Hex(m.Frame.Value));
            json.WriteString("entry", Hex(m.Leaf.Raw));
            json.WriteString("entryAddress", Hex(m.EntryAddress.Value));
            json.WriteString("level", m.Leaf.Level.EntryName());
            json.WriteBoolean("writable", (m.Rights & EffectiveRights.Writable) != 0);
            json.WriteBoolean("user", (m.Rights & EffectiveRights.User) != 0);
            json.WriteBoolean("executeDisable", (m.Rights & EffectiveRights.ExecuteDisable) != 0);
            json.WriteBoolean("accessed", m.Leaf.IsAccessed);
            json.WriteBoolean("dirty", m.Leaf.IsDirty);
            json.WriteBoolean("global", m.Leaf.IsGlobal);
            json.WriteNumber("patIndex", m.Leaf.PatIndex);
            json.WriteNumber("protectionKey", m.Leaf.ProtectionKey);
            json.WriteEndObject();
            if (stream.Length > 64 * 1024)
            {
                FlushTo();
            }
        }

        json.WriteEndArray();
        json.WriteNumber("mappingCount", enumerator.LeafCount);
        json.WriteBoolean("complete", !enumerator.Stopped);
        json.WriteStartArray("anomalies");
        foreach (Anomaly a in enumerator.Anomalies)
        {
            json.WriteStartObject();
            json.WriteString("kind", a.Kind.ToString());
            json.WriteString("level", a.Level.EntryName());
            json.WriteString("virtualAddress", Hex(a.Address.Value));
            json.WriteString("entryAddress", Hex(a.EntryAddress.Value));
            json.WriteString("entry", Hex(a.Raw));
            json.WriteString("message", a.Message);
            json.WriteEndObject();
        }

        json.WriteEndArray();
        json.WriteEndObject();
        FlushTo();
        output.WriteLine();
    }

    private static void WriteSummary(TextWriter output, GuestImage image, CpuState cpu, ThpReport report)
    {
        output.WriteLine($"image: {image.Path} ({image.Format.ToString().ToLowerInvariant()})");
        output.WriteLine($"cpu:   {ImageOptions.Describe(cpu)}");
        output.WriteLine($"leaves: {report.Leaves1G:#,0} x 1G, {report.Leaves2M:#,0} x 2M, {report.Leaves4K:#,0} x 4K");
        foreach (IGrouping<CollapseVerdict, RangeVerdict> group in report.Ranges.GroupBy(r => r.Verdict).OrderBy(g => g.Key))
        {
            output.WriteLine();
            output.WriteLine($"{Title(group.Key)}: {group.Count():#,0}");
            if (group.Key == CollapseVerdict.PmdMapped)
            {
                continue; // already huge: nothing to say about each one
            }

            foreach (RangeVerdict r in group)
            {
                string where = r.Base is { } b ? $" -> {b}" : string.Empty;
                output.WriteLine(string.Create(
                    CultureInfo.InvariantCulture,
                    $"  {r.Start.Value:x16}{where}  present {r.PresentPtes,3}/512  in place {r.InPlace,3}  moves {r.Moves,3}  {r.Reason}"));
            }
        }
    }

    private static string Title(CollapseVerdict verdict) => verdict switch
    {
        CollapseVerdict.PmdMapped => "2 MiB ranges mapped by a PMD (2M leaf)",
        CollapseVerdict.CollapsibleInPlace => "PTE-mapped 2 MiB ranges that could be collapsed in place",
        CollapseVerdict.ReformableInPlace => "PTE-mapped 2 MiB ranges that could be re-formed in place",
        _ => "PTE-mapped 2 MiB ranges that are not candidates",
    };

    private static string Hex(ulong value) => "0x" + value.ToString("x", CultureInfo.InvariantCulture);
}

/// <summary>A progress line on standard error for enumerations that take more than a second (only on a terminal).</summary>
internal sealed class ProgressLine : IProgress<EnumerationProgress>, IDisposable
{
    private readonly CliContext _context;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private bool _drawn;

    public ProgressLine(CliContext context) => _context = context;

    public void Report(EnumerationProgress value)
    {
        if (!_context.ShowProgress || _clock.ElapsedMilliseconds < 1000)
        {
            return;
        }

        _context.Error.Write(string.Create(CultureInfo.InvariantCulture, $"\r  {value.EntriesRead:#,0} entries read, {value.Leaves:#,0} mappings, at {value.Position} ..."));
        _drawn = true;
    }

    public void Clear()
    {
        if (_drawn)
        {
            _context.Error.Write("\r" + new string(' ', 79) + "\r");
            _drawn = false;
        }
    }

    public void Dispose() => Clear();
}
