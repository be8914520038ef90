using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using ThpCore.Paging;

namespace ThpCore.Tests.Paging;

/// <summary>The seven entry formats of IA-32e paging (Intel SDM Vol. 3A §4.5), as the tests name them.</summary>
public enum EntryKind
{
    Pml5e,
    Pml4e,
    PdptePd,
    Pdpte1G,
    PdePt,
    Pde2M,
    Pte,
}

/// <summary>One row of TestData/entry-bit-positions.txt: a field of one entry kind and its bit range.</summary>
public sealed record GoldenField(EntryKind Kind, string Field, int Hi, int Lo)
{
    public ulong Mask => SdmBits.Bits(Hi, Lo);

    public override string ToString() => Hi == Lo
        ? string.Create(CultureInfo.InvariantCulture, $"{Kind} {Field} bit {Lo}")
        : string.Create(CultureInfo.InvariantCulture, $"{Kind} {Field} bits {Hi}:{Lo}");
}

/// <summary>Bit-range helpers written the way the SDM writes ranges ("51:12").</summary>
internal static class SdmBits
{
    public static ulong Bit(int n) => 1UL << n;

    /// <summary>Bits hi..lo inclusive; empty when hi &lt; lo (e.g. 51:52 for MAXPHYADDR 52).</summary>
    public static ulong Bits(int hi, int lo)
    {
        ulong mask = 0;
        for (int i = lo; i <= hi; i++)
        {
            mask |= 1UL << i;
        }

        return mask;
    }

    public static IEnumerable<int> Positions(ulong mask)
    {
        for (int i = 0; i < 64; i++)
        {
            if ((mask & (1UL << i)) != 0)
            {
                yield return i;
            }
        }
    }
}

internal static class EntryKinds
{
    public static readonly EntryKind[] All = Enum.GetValues<EntryKind>();

    public static PagingLevel Level(EntryKind kind) => kind switch
    {
        EntryKind.Pml5e => PagingLevel.Pml5,
        EntryKind.Pml4e => PagingLevel.Pml4,
        EntryKind.PdptePd or EntryKind.Pdpte1G => PagingLevel.Pdpt,
        EntryKind.PdePt or EntryKind.Pde2M => PagingLevel.Pd,
        _ => PagingLevel.Pt,
    };

    public static bool IsLeaf(EntryKind kind) => kind is EntryKind.Pdpte1G or EntryKind.Pde2M or EntryKind.Pte;

    /// <summary>The bits that make a raw value an entry of this kind: P, and PS for a 2 MiB / 1 GiB leaf.</summary>
    public static ulong BaseRaw(EntryKind kind) =>
        1UL | (kind is EntryKind.Pdpte1G or EntryKind.Pde2M ? 1UL << 7 : 0);

    public static PageTableEntry Base(EntryKind kind) => new(Level(kind), BaseRaw(kind));

    /// <summary>Every bit set except that bit 7 follows the kind (clear in a PDE/PDPTE that references a table).</summary>
    public static ulong AllOnesRaw(EntryKind kind) =>
        kind is EntryKind.PdptePd or EntryKind.PdePt ? ~(1UL << 7) : ulong.MaxValue;

    public static EntryKind Parse(string name) => name switch
    {
        "PML5E" => EntryKind.Pml5e,
        "PML4E" => EntryKind.Pml4e,
        "PDPTE_PD" => EntryKind.PdptePd,
        "PDPTE_1G" => EntryKind.Pdpte1G,
        "PDE_PT" => EntryKind.PdePt,
        "PDE_2M" => EntryKind.Pde2M,
        "PTE" => EntryKind.Pte,
        _ => throw new FormatException($"Unknown entry kind '{name}'."),
    };
}

/// <summary>Loads the hand-transcribed SDM bit table.</summary>
internal static class GoldenBitTable
{
    private static readonly Lazy<IReadOnlyList<GoldenField>> s_rows = new(Load);

    public static IReadOnlyList<GoldenField> Rows => s_rows.Value;

    public static IEnumerable<GoldenField> For(EntryKind kind) => Rows.Where(r => r.Kind == kind);

    public static IEnumerable<GoldenField> For(EntryKind kind, string field) => For(kind).Where(r => r.Field == field);

    private static List<GoldenField> Load()
    {
        string path = Path.Combine(AppContext.BaseDirectory, "TestData", "entry-bit-positions.txt");
        var rows = new List<GoldenField>();
        foreach (string rawLine in File.ReadLines(path))
        {
            string line = rawLine.Trim();
            if (line.Length == 0 || line.StartsWith('#'))
            {
                continue;
            }

            string[] parts = line.Split(',', StringSplitOptions.TrimEntries);
            if (parts.Length != 3)
            {
                throw new FormatException($"Expected 'KIND, FIELD, BITS': '{line}'.");
            }

            string[] range = parts[2].Split(':');
            int hi = int.Parse(range[0], CultureInfo.InvariantCulture);
            int lo = range.Length == 2 ? int.Parse(range[1], CultureInfo.InvariantCulture) : hi;
            rows.Add(new GoldenField(EntryKinds.Parse(parts[0]), parts[1], hi, lo));
        }

        return rows;
    }
}
