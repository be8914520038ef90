using System;
using System.Collections.Generic;
using System.Linq;
using ThpCore.Paging;
using Xunit;
using static ThpCore.Tests.Paging.SdmBits;

namespace ThpCore.Tests.Paging;

/// <summary>
/// Every field of every entry kind against the bit positions transcribed from the SDM in
/// TestData/entry-bit-positions.txt (never against ThpCore's own constants).
/// </summary>
public sealed class EntryBitPositionTests
{
    private static readonly string[] SingleBitFields = ["P", "RW", "US", "PWT", "PCD", "A", "D", "PS", "G", "PAT", "XD"];

    private static readonly Dictionary<string, Func<PageTableEntry, bool, PageTableEntry>> Setters = new()
    {
        ["P"] = (e, v) => e.WithPresent(v),
        ["RW"] = (e, v) => e.WithWritable(v),
        ["US"] = (e, v) => e.WithUser(v),
        ["PWT"] = (e, v) => e.WithWriteThrough(v),
        ["PCD"] = (e, v) => e.WithCacheDisabled(v),
        ["A"] = (e, v) => e.WithAccessed(v),
        ["D"] = (e, v) => e.WithDirty(v),
        ["PS"] = (e, v) => e.WithPageSizeBit(v),
        ["G"] = (e, v) => e.WithGlobal(v),
        ["PAT"] = (e, v) => e.WithPat(v),
        ["XD"] = (e, v) => e.WithExecuteDisable(v),
    };

    public static TheoryData<GoldenField> AllRows() => ToTheory(GoldenBitTable.Rows);

    public static TheoryData<GoldenField> SingleBitRows() =>
        ToTheory(GoldenBitTable.Rows.Where(r => SingleBitFields.Contains(r.Field)));

    public static TheoryData<GoldenField> RowsOf(string field) => ToTheory(GoldenBitTable.Rows.Where(r => r.Field == field));

    public static TheoryData<EntryKind> Kinds() => new(EntryKinds.All);

    public static TheoryData<EntryKind> TableKinds() => new(EntryKinds.All.Where(k => !EntryKinds.IsLeaf(k)));

    [Fact]
    public void The_golden_table_lists_all_seven_entry_kinds()
    {
        Assert.Equal(EntryKinds.All.OrderBy(k => k), GoldenBitTable.Rows.Select(r => r.Kind).Distinct().OrderBy(k => k));
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void The_golden_table_gives_every_bit_of_an_entry_exactly_one_field(EntryKind kind)
    {
        ulong seen = 0;
        foreach (GoldenField row in GoldenBitTable.For(kind))
        {
            Assert.True(row.Hi >= row.Lo && row.Hi < 64, $"{row}: bad range");
            Assert.True((seen & row.Mask) == 0, $"{row} overlaps an earlier row");
            seen |= row.Mask;
        }

        Assert.Equal(ulong.MaxValue, seen);
    }

    [Theory]
    [MemberData(nameof(SingleBitRows))]
    public void Setting_exactly_the_SDM_bit_makes_the_typed_property_true(GoldenField row)
    {
        Assert.Equal(row.Hi, row.Lo);
        ulong bit = Bit(row.Lo);
        PagingLevel level = EntryKinds.Level(row.Kind);
        ulong baseRaw = EntryKinds.BaseRaw(row.Kind);

        Assert.Equal(true, Decode(new PageTableEntry(level, baseRaw | bit))[row.Field]);
        Assert.Equal(false, Decode(new PageTableEntry(level, baseRaw & ~bit))[row.Field]);

        ulong allOnes = EntryKinds.AllOnesRaw(row.Kind);
        Assert.Equal(true, Decode(new PageTableEntry(level, allOnes | bit))[row.Field]);
        Assert.Equal(false, Decode(new PageTableEntry(level, allOnes & ~bit))[row.Field]);
    }

    [Theory]
    [MemberData(nameof(AllRows))]
    public void Flipping_one_bit_changes_only_the_field_the_SDM_puts_there(GoldenField row)
    {
        PagingLevel level = EntryKinds.Level(row.Kind);
        foreach (ulong start in new[] { EntryKinds.BaseRaw(row.Kind), EntryKinds.AllOnesRaw(row.Kind) })
        {
            string[] expected = row.Field switch
            {
                "IGN" or "RSV" => [],

                // PS of a PDE/PDPTE decides between "maps a page" and "references a table"; with every other bit
                // set, the address field (51:12 vs 51:21 / 51:30) and the available bits (62:52 vs 58:52) change too.
                "PS" when level is PagingLevel.Pd or PagingLevel.Pdpt => start == EntryKinds.BaseRaw(row.Kind)
                    ? ["D", "G", "LEAF", "PAT", "PK", "PS"]
                    : ["ADDR", "AVL", "D", "G", "LEAF", "PAT", "PK", "PS"],
                _ => [row.Field],
            };

            Dictionary<string, object> before = Decode(new PageTableEntry(level, start));
            foreach (int position in Positions(row.Mask))
            {
                Dictionary<string, object> after = Decode(new PageTableEntry(level, start ^ Bit(position)));
                string[] changed = before.Keys.Union(after.Keys)
                    .Where(k => !before.TryGetValue(k, out object? b) || !after.TryGetValue(k, out object? a) || !b.Equals(a))
                    .OrderBy(k => k, StringComparer.Ordinal)
                    .ToArray();
                Assert.True(
                    expected.Order(StringComparer.Ordinal).SequenceEqual(changed),
                    $"{row}: flipping bit {position} of 0x{start:x16} changed [{string.Join(' ', changed)}], expected [{string.Join(' ', expected)}]");
            }
        }
    }

    [Theory]
    [MemberData(nameof(SingleBitRows))]
    public void Each_With_method_sets_or_clears_exactly_the_SDM_bit_and_nothing_else(GoldenField row)
    {
        ulong bit = Bit(row.Lo);
        PagingLevel level = EntryKinds.Level(row.Kind);
        Func<PageTableEntry, bool, PageTableEntry> with = Setters[row.Field];

        foreach (ulong start in new[] { EntryKinds.BaseRaw(row.Kind), EntryKinds.AllOnesRaw(row.Kind) })
        {
            PageTableEntry set = with(new PageTableEntry(level, start & ~bit), true);
            Assert.Equal(start | bit, set.Raw);
            Assert.Equal(level, set.Level);

            PageTableEntry cleared = with(new PageTableEntry(level, start | bit), false);
            Assert.Equal(start & ~bit, cleared.Raw);

            // Idempotent: setting a set bit or clearing a clear bit changes nothing.
            Assert.Equal(start | bit, with(new PageTableEntry(level, start | bit), true).Raw);
            Assert.Equal(start & ~bit, with(new PageTableEntry(level, start & ~bit), false).Raw);
        }
    }

    [Theory]
    [MemberData(nameof(RowsOf), "PK")]
    public void The_protection_key_is_bits_62_to_59_with_bit_59_least_significant(GoldenField row)
    {
        Assert.Equal(4, row.Hi - row.Lo + 1);
        PagingLevel level = EntryKinds.Level(row.Kind);
        for (int i = 0; i < 4; i++)
        {
            Assert.Equal(1 << i, new PageTableEntry(level, EntryKinds.BaseRaw(row.Kind) | Bit(row.Lo + i)).ProtectionKey);
        }

        ulong allOnes = EntryKinds.AllOnesRaw(row.Kind);
        for (int key = 0; key < 16; key++)
        {
            ulong keyBits = (ulong)key << row.Lo;
            PageTableEntry fromBase = EntryKinds.Base(row.Kind).WithProtectionKey(key);
            Assert.Equal(EntryKinds.BaseRaw(row.Kind) | keyBits, fromBase.Raw);
            Assert.Equal(key, fromBase.ProtectionKey);

            PageTableEntry fromFull = new PageTableEntry(level, allOnes).WithProtectionKey(key);
            Assert.Equal((allOnes & ~row.Mask) | keyBits, fromFull.Raw);
            Assert.Equal(key, fromFull.ProtectionKey);
        }

        Assert.Throws<ArgumentOutOfRangeException>(() => EntryKinds.Base(row.Kind).WithProtectionKey(16));
        Assert.Throws<ArgumentOutOfRangeException>(() => EntryKinds.Base(row.Kind).WithProtectionKey(-1));
    }

    [Theory]
    [MemberData(nameof(RowsOf), "ADDR")]
    public void The_address_field_is_where_the_SDM_puts_it_and_WithAddress_writes_only_there(GoldenField row)
    {
        PageTableEntry entry = EntryKinds.Base(row.Kind);
        Assert.Equal(row.Mask, entry.AddressMask);
        Assert.Equal(row.Mask, PageTableEntry.AddressMaskFor(entry.Level, EntryKinds.IsLeaf(row.Kind)));

        foreach (int position in Positions(row.Mask))
        {
            PageTableEntry moved = entry.WithAddress(PhysicalAddress.Create(Bit(position)));
            Assert.Equal(entry.Raw | Bit(position), moved.Raw);
            Assert.Equal(Bit(position), moved.Address.Value);
            Assert.Equal(Bit(position), new PageTableEntry(entry.Level, EntryKinds.AllOnesRaw(row.Kind) & ~row.Mask | Bit(position)).Address.Value);
        }

        var full = new PageTableEntry(entry.Level, EntryKinds.AllOnesRaw(row.Kind));
        Assert.Equal(row.Mask, full.Address.Value);
        Assert.Equal(full.Raw & ~row.Mask, full.WithAddress(PhysicalAddress.Zero).Raw);

        // One bit below the field (a misaligned frame or table) is refused.
        ArgumentException ex = Assert.Throws<ArgumentException>(() => entry.WithAddress(PhysicalAddress.Create(Bit(row.Lo - 1))));
        Assert.Equal("address", ex.ParamName);
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void The_available_bits_are_the_SDM_ignored_ranges_common_to_every_level(EntryKind kind)
    {
        ulong available = GoldenBitTable.For(kind, "AVL").Aggregate(0UL, (m, r) => m | r.Mask);
        PageTableEntry entry = EntryKinds.Base(kind);
        Assert.Equal(available, entry.AvailableMask);

        foreach (int position in Positions(available))
        {
            PageTableEntry marked = entry.WithAvailableBits(Bit(position));
            Assert.Equal(entry.Raw | Bit(position), marked.Raw);
            Assert.Equal(Bit(position), marked.AvailableBits);
        }

        var full = new PageTableEntry(entry.Level, EntryKinds.AllOnesRaw(kind));
        Assert.Equal(available, full.AvailableBits);
        Assert.Equal(full.Raw & ~available, full.WithAvailableBits(0).Raw);

        foreach (int position in Positions(~available))
        {
            Assert.Throws<ArgumentException>(() => entry.WithAvailableBits(Bit(position)));
        }
    }

    [Fact]
    public void Bit7_is_PAT_in_a_PTE_and_PS_in_a_PDE_and_a_PDPTE()
    {
        var pte = new PageTableEntry(PagingLevel.Pt, 0x1 | 0x80);
        Assert.True(pte.Pat);
        Assert.True(pte.IsLeaf);
        Assert.Equal(PageSize.Size4K, pte.LeafSize);
        Assert.Equal(0x80UL, new PageTableEntry(PagingLevel.Pt, 0x1).WithPat(true).Raw & 0x1080);

        var pde = new PageTableEntry(PagingLevel.Pd, 0x1 | 0x80);
        Assert.True(pde.PageSizeBit);
        Assert.True(pde.IsLeaf);
        Assert.Equal(PageSize.Size2M, pde.LeafSize);
        Assert.False(pde.Pat);

        var pdpte = new PageTableEntry(PagingLevel.Pdpt, 0x1 | 0x80);
        Assert.True(pdpte.PageSizeBit);
        Assert.Equal(PageSize.Size1G, pdpte.LeafSize);
        Assert.False(pdpte.Pat);
    }

    [Fact]
    public void Bit12_is_PAT_in_2M_and_1G_leaves_and_an_address_bit_in_PTEs_and_table_entries()
    {
        Assert.True(new PageTableEntry(PagingLevel.Pd, 0x1081).Pat);
        Assert.Equal(0UL, new PageTableEntry(PagingLevel.Pd, 0x1081).Address.Value);
        Assert.True(new PageTableEntry(PagingLevel.Pdpt, 0x1081).Pat);
        Assert.Equal(0UL, new PageTableEntry(PagingLevel.Pdpt, 0x1081).Address.Value);

        Assert.False(new PageTableEntry(PagingLevel.Pt, 0x1001).Pat);
        Assert.Equal(0x1000UL, new PageTableEntry(PagingLevel.Pt, 0x1001).Address.Value);
        foreach (PagingLevel level in new[] { PagingLevel.Pd, PagingLevel.Pdpt, PagingLevel.Pml4, PagingLevel.Pml5 })
        {
            Assert.Equal(0x1000UL, new PageTableEntry(level, 0x1001).Address.Value);
        }

        Assert.Equal(0x1000UL | 0x81, new PageTableEntry(PagingLevel.Pd, 0x81).WithPat(true).Raw);
        Assert.Equal(0x1000UL | 0x81, PageTableEntry.Leaf(PageSize.Size1G, PhysicalAddress.Zero, PageTableFlags.Present, pat: true).Raw);
        Assert.Equal(0x81UL, PageTableEntry.Leaf(PageSize.Size4K, PhysicalAddress.Zero, PageTableFlags.Present, pat: true).Raw);
    }

    [Theory]
    [InlineData(PagingLevel.Pml4)]
    [InlineData(PagingLevel.Pml5)]
    public void Bit7_of_a_PML4E_or_PML5E_reads_as_PS_but_never_makes_a_leaf(PagingLevel level)
    {
        var entry = new PageTableEntry(level, 0x1000 | 0x81);
        Assert.True(entry.PageSizeBit);
        Assert.False(entry.IsLeaf);
        Assert.Null(entry.LeafSize);
        Assert.Equal(0x1000UL, entry.Address.Value);
        Assert.Throws<InvalidOperationException>(() => entry.Pat);
    }

    [Fact]
    public void PageSizeBit_and_WithPageSizeBit_throw_on_a_PTE()
    {
        var pte = new PageTableEntry(PagingLevel.Pt, 0x81);
        Assert.Throws<InvalidOperationException>(() => pte.PageSizeBit);
        Assert.Throws<InvalidOperationException>(() => pte.WithPageSizeBit(true));
        Assert.Throws<InvalidOperationException>(() => pte.WithPageSizeBit(false));
    }

    [Theory]
    [MemberData(nameof(TableKinds))]
    public void Leaf_only_accessors_throw_InvalidOperationException_on_a_table_entry(EntryKind kind)
    {
        PageTableEntry entry = new PageTableEntry(EntryKinds.Level(kind), EntryKinds.AllOnesRaw(kind) & ~Bit(7));
        Assert.False(entry.IsLeaf);
        Assert.Null(entry.LeafSize);
        Assert.Throws<InvalidOperationException>(() => entry.IsDirty);
        Assert.Throws<InvalidOperationException>(() => entry.IsGlobal);
        Assert.Throws<InvalidOperationException>(() => entry.Pat);
        Assert.Throws<InvalidOperationException>(() => entry.PatIndex);
        Assert.Throws<InvalidOperationException>(() => entry.ProtectionKey);
        Assert.Throws<InvalidOperationException>(() => entry.WithDirty(true));
        Assert.Throws<InvalidOperationException>(() => entry.WithGlobal(true));
        Assert.Throws<InvalidOperationException>(() => entry.WithPat(true));
        Assert.Throws<InvalidOperationException>(() => entry.WithProtectionKey(1));
        Assert.Contains(EntryKinds.Level(kind).EntryName(), Assert.Throws<InvalidOperationException>(() => entry.IsDirty).Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(PagingLevel.Pt, 0x0000_0000_0000_0018UL, 3)] // PCD|PWT
    [InlineData(PagingLevel.Pt, 0x0000_0000_0000_0080UL, 4)] // PAT = bit 7
    [InlineData(PagingLevel.Pt, 0x0000_0000_0000_0098UL, 7)]
    [InlineData(PagingLevel.Pd, 0x0000_0000_0000_1088UL, 5)] // PAT = bit 12, PWT
    [InlineData(PagingLevel.Pdpt, 0x0000_0000_0000_1090UL, 6)] // PAT = bit 12, PCD
    [InlineData(PagingLevel.Pd, 0x0000_0000_0000_0080UL, 0)]
    public void PatIndex_is_4_PAT_plus_2_PCD_plus_PWT(PagingLevel level, ulong raw, int expected)
    {
        Assert.Equal(expected, new PageTableEntry(level, raw | 1).PatIndex);
    }

    [Fact]
    public void Real_world_entries_decode_as_the_SDM_says()
    {
        // A Linux direct-map 2 MiB PDE: P RW A D PS G, XD.
        var pde = new PageTableEntry(PagingLevel.Pd, 0x8000_0000_0020_01E3UL);
        Assert.True(pde.IsLeaf && pde.IsPresent && pde.IsWritable && !pde.IsUser && pde.IsAccessed && pde.IsDirty && pde.IsGlobal && pde.IsExecuteDisable);
        Assert.Equal(0x20_0000UL, pde.Address.Value);
        Assert.False(pde.Pat);

        // A user PTE with a protection key 5 and the kernel's software bit 9 set.
        var pte = new PageTableEntry(PagingLevel.Pt, 0x2800_0001_2345_6267UL);
        Assert.Equal(0x1_2345_6000UL, pte.Address.Value);
        Assert.Equal(5, pte.ProtectionKey);
        Assert.Equal(0x200UL, pte.AvailableBits);
        Assert.True(pte.IsUser && pte.IsDirty && !pte.IsGlobal && !pte.Pat && !pte.IsExecuteDisable);

        // A 1 GiB leaf whose bit 12 is PAT, not part of the frame.
        var giant = new PageTableEntry(PagingLevel.Pdpt, 0x0000_0000_C000_1083UL);
        Assert.Equal(0xC000_0000UL, giant.Address.Value);
        Assert.True(giant.Pat);
        Assert.Equal(PageSize.Size1G, giant.LeafSize);
    }

    [Fact]
    public void Leaf_sets_bit7_only_for_large_pages_and_Table_never_sets_it()
    {
        Assert.Equal(0x1UL, PageTableEntry.Leaf(PageSize.Size4K, PhysicalAddress.Zero, PageTableFlags.Present).Raw);
        Assert.Equal(0x81UL, PageTableEntry.Leaf(PageSize.Size2M, PhysicalAddress.Zero, PageTableFlags.Present).Raw);
        Assert.Equal(0x81UL, PageTableEntry.Leaf(PageSize.Size1G, PhysicalAddress.Zero, PageTableFlags.Present).Raw);
        Assert.Equal(PagingLevel.Pt, PageTableEntry.Leaf(PageSize.Size4K, PhysicalAddress.Zero, PageTableFlags.None).Level);
        Assert.Equal(PagingLevel.Pd, PageTableEntry.Leaf(PageSize.Size2M, PhysicalAddress.Zero, PageTableFlags.None).Level);
        Assert.Equal(PagingLevel.Pdpt, PageTableEntry.Leaf(PageSize.Size1G, PhysicalAddress.Zero, PageTableFlags.None).Level);

        foreach (PagingLevel level in new[] { PagingLevel.Pd, PagingLevel.Pdpt, PagingLevel.Pml4, PagingLevel.Pml5 })
        {
            PageTableEntry table = PageTableEntry.Table(level, PhysicalAddress.Create(0x5000), PageTableFlags.Present | PageTableFlags.Writable);
            Assert.Equal(0x5003UL, table.Raw);
            Assert.False(table.IsLeaf);
        }
    }

    [Fact]
    public void Table_and_Leaf_refuse_what_the_format_cannot_hold()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => PageTableEntry.Table(PagingLevel.Pt, PhysicalAddress.Zero, PageTableFlags.Present));
        Assert.Throws<ArgumentException>(() => PageTableEntry.Table(PagingLevel.Pd, PhysicalAddress.Create(0x800), PageTableFlags.Present));
        Assert.Throws<ArgumentException>(() => PageTableEntry.Leaf(PageSize.Size2M, PhysicalAddress.Create(0x1000), PageTableFlags.Present));
        Assert.Throws<ArgumentException>(() => PageTableEntry.Leaf(PageSize.Size1G, PhysicalAddress.Create(0x20_0000), PageTableFlags.Present));
        Assert.Throws<ArgumentOutOfRangeException>(() => PageTableEntry.Leaf(PageSize.Size4K, PhysicalAddress.Zero, PageTableFlags.Present, protectionKey: 16));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PageTableEntry((PagingLevel)0, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PageTableEntry((PagingLevel)6, 0));
    }

    /// <summary>Every typed field of an entry, keyed by the golden table's field names (LEAF = IsLeaf).</summary>
    internal static Dictionary<string, object> Decode(PageTableEntry e)
    {
        var fields = new Dictionary<string, object>
        {
            ["P"] = e.IsPresent,
            ["RW"] = e.IsWritable,
            ["US"] = e.IsUser,
            ["PWT"] = e.IsWriteThrough,
            ["PCD"] = e.IsCacheDisabled,
            ["A"] = e.IsAccessed,
            ["XD"] = e.IsExecuteDisable,
            ["ADDR"] = e.Address.Value,
            ["AVL"] = e.AvailableBits,
            ["LEAF"] = e.IsLeaf,
        };
        if (e.Level != PagingLevel.Pt)
        {
            fields["PS"] = e.PageSizeBit;
        }

        if (e.IsLeaf)
        {
            fields["D"] = e.IsDirty;
            fields["G"] = e.IsGlobal;
            fields["PAT"] = e.Pat;
            fields["PK"] = e.ProtectionKey;
        }

        return fields;
    }

    private static TheoryData<GoldenField> ToTheory(IEnumerable<GoldenField> rows) => new(rows);
}
