using System;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using ThpCore.Memory;
using ThpCore.Paging;
using ThpCore.Tests.Paging;
using Xunit;

namespace ThpCore.Tests.Memory;

/// <summary>
/// <see cref="SwapEntry"/>: the v6.12 x86-64 swap-entry layout. The expected raw values are computed here from the
/// kernel's constants, written out, not taken from the library.
/// </summary>
public sealed class SwapEntryTests
{
    // arch/x86/include/asm/pgtable_64.h (v6.12): SWP_TYPE_BITS = 5, SWP_OFFSET_FIRST_BIT = _PAGE_BIT_PROTNONE + 1,
    // _PAGE_BIT_PROTNONE = _PAGE_BIT_GLOBAL = 8, so the offset starts at bit 9 and SWP_OFFSET_SHIFT = 9 + 5 = 14.
    // __swp_entry(type, offset) = (~offset << SWP_OFFSET_SHIFT >> SWP_TYPE_BITS) | (type << (64 - SWP_TYPE_BITS)).
    private const int KernelTypeBits = 5;
    private const int KernelOffsetFirstBit = 8 + 1;
    private const int KernelOffsetShift = KernelOffsetFirstBit + KernelTypeBits;

    // arch/x86/include/asm/pgtable.h: _PAGE_SWP_EXCLUSIVE = _PAGE_PWT, bit 3.
    private const ulong KernelSwpExclusive = 1UL << 3;

    private static ulong KernelSwpEntry(ulong type, ulong offset) =>
        (~offset << KernelOffsetShift >> KernelTypeBits) | (type << (64 - KernelTypeBits));

    [Fact]
    public void The_constants_are_those_of_v6_12_x86_64()
    {
        // include/linux/swap.h: MAX_SWAPFILES = (1 << 5) - SWP_DEVICE_NUM(4) - SWP_MIGRATION_NUM(3)
        //                                      - SWP_HWPOISON_NUM(1) - SWP_PTE_MARKER_NUM(1) = 23.
        Assert.Equal(23, SwapEntry.MaxSwapFiles);
        Assert.Equal(23, SwapEntry.HwPoisonType);      // SWP_HWPOISON = MAX_SWAPFILES
        Assert.Equal(24, SwapEntry.MigrationReadType); // MAX_SWAPFILES + SWP_HWPOISON_NUM
        Assert.Equal(25, SwapEntry.MigrationReadExclusiveType);
        Assert.Equal(26, SwapEntry.MigrationWriteType);
        Assert.Equal(9, SwapEntry.OffsetFirstBit);
        Assert.Equal(50, SwapEntry.OffsetBits);
        Assert.Equal(KernelSwpExclusive, SwapEntry.ExclusiveBit);
    }

    [Fact]
    public void Type_1_offset_0x1234_matches_the_kernel_arithmetic()
    {
        // ~0x1234 = 0xFFFF_FFFF_FFFF_EDCB; << 14 drops the top 14 bits; >> 5 lands bit 0 at bit 9:
        // bits 58:9 = low 50 bits of 0xFFFF_FFFF_FFFF_EDCB = 0x3_FFFF_FFFF_EDCB, shifted by 9 = 0x07FF_FFFF_FFDB_9600.
        // Type 1 << 59 = 0x0800_0000_0000_0000.
        const ulong expected = 0x0800_0000_0000_0000UL | 0x07FF_FFFF_FFDB_9600UL;
        Assert.Equal(expected, KernelSwpEntry(1, 0x1234));
        Assert.Equal(expected, SwapEntry.Swap(1, 0x1234).ToPteRaw());
        Assert.Equal(expected | KernelSwpExclusive, SwapEntry.Swap(1, 0x1234).ToPteRaw(exclusive: true));
    }

    [Fact]
    public void Offset_0_sets_every_offset_bit_and_the_largest_offset_sets_none()
    {
        // ~0 has all 50 offset bits set: bits 58:9 = 0x07FF_FFFF_FFFF_FE00.
        Assert.Equal(0x07FF_FFFF_FFFF_FE00UL, SwapEntry.Swap(0, 0).ToPteRaw());
        Assert.Equal(KernelSwpEntry(0, 0), SwapEntry.Swap(0, 0).ToPteRaw());

        // Offset 2^50 - 1: its complement is 0 in the 50 stored bits; type 22 << 59 = 0xB000_0000_0000_0000.
        ulong max = (1UL << 50) - 1;
        Assert.Equal(0xB000_0000_0000_0000UL, SwapEntry.Swap(22, max).ToPteRaw());
        Assert.Equal(KernelSwpEntry(22, max), SwapEntry.Swap(22, max).ToPteRaw());
    }

    [Fact]
    public void A_write_migration_entry_has_type_26_in_bits_63_59()
    {
        // 26 << 59 = 0xD000_0000_0000_0000; pfn 0x100 -> ~0x100 low 50 bits << 9 = 0x07FF_FFFF_FFFD_FE00.
        SwapEntry entry = SwapEntry.Migration(MigrationKind.Write, 0x100);
        Assert.Equal(0xD000_0000_0000_0000UL | 0x07FF_FFFF_FFFD_FE00UL, entry.ToPteRaw());
        Assert.Equal(KernelSwpEntry(26, 0x100), entry.ToPteRaw());
        Assert.True(entry.IsMigration);
        Assert.False(entry.IsSwap);
        Assert.Equal(MigrationKind.Write, entry.MigrationKind);
        Assert.Equal(0x100UL, entry.Pfn);
    }

    [Theory]
    [InlineData(MigrationKind.Read, 24)]
    [InlineData(MigrationKind.ReadExclusive, 25)]
    [InlineData(MigrationKind.Write, 26)]
    public void Migration_kinds_map_to_their_types(MigrationKind kind, int type)
    {
        SwapEntry entry = SwapEntry.Migration(kind, 7);
        Assert.Equal(type, entry.Type);
        Assert.True(SwapEntry.TryFromPteRaw(entry.ToPteRaw(), out SwapEntry back, out _));
        Assert.Equal(kind, back.MigrationKind);
        Assert.Equal(7UL, back.Pfn);
    }

    [Property(MaxTest = 500)]
    public Property Every_type_and_offset_round_trips_through_a_pte_and_a_pmd() =>
        Prop.ForAll(
            Gen.Choose(0, SwapEntry.MaxSwapFiles - 1).ToArbitrary(),
            OffsetGen(SwapEntry.MaxOffset).ToArbitrary(),
            Gen.Elements(false, true).ToArbitrary(),
            (type, offset, exclusive) =>
            {
                if (type == 0 && offset == SwapEntry.MaxOffset)
                {
                    return true; // encodes as 0: refused, see Type_0_with_the_largest_offset_would_be_pte_none
                }

                SwapEntry entry = SwapEntry.Swap(type, offset);
                ulong raw = entry.ToPteRaw(exclusive);
                bool pte = SwapEntry.TryFromPteRaw(raw, out SwapEntry fromPte, out bool pteExclusive);
                bool pmd = SwapEntry.TryFromPmdRaw(entry.ToPmdRaw(exclusive), out SwapEntry fromPmd, out bool pmdExclusive);
                return pte && pmd && fromPte == entry && fromPmd == entry && pteExclusive == exclusive && pmdExclusive == exclusive
                    && raw == (KernelSwpEntry((ulong)type, offset) | (exclusive ? KernelSwpExclusive : 0))
                    && (raw & 1) == 0 && (raw & (1UL << 8)) == 0 && (raw & (1UL << 7)) == 0;
            });

    [Property(MaxTest = 200)]
    public Property Every_migration_entry_round_trips() =>
        Prop.ForAll(
            Gen.Elements(MigrationKind.Read, MigrationKind.ReadExclusive, MigrationKind.Write).ToArbitrary(),
            OffsetGen(SwapEntry.MaxPfn).ToArbitrary(),
            (kind, pfn) =>
            {
                SwapEntry entry = SwapEntry.Migration(kind, pfn);
                return SwapEntry.TryFromPteRaw(entry.ToPteRaw(), out SwapEntry back, out _)
                    && back.IsMigration && back.MigrationKind == kind && back.Pfn == pfn;
            });

    [Fact]
    public void Type_0_with_the_largest_offset_would_be_pte_none()
    {
        // ~(2^50 - 1) has none of the 50 stored bits set and type 0 sets no bit: the kernel arithmetic gives 0.
        Assert.Equal(0UL, KernelSwpEntry(0, (1UL << 50) - 1));
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => SwapEntry.Swap(0, (1UL << 50) - 1));
        Assert.Contains("pte_none", ex.Message, StringComparison.Ordinal);
        Assert.Equal(KernelSwpEntry(1, (1UL << 50) - 1), SwapEntry.Swap(1, (1UL << 50) - 1).ToPteRaw());
    }

    [Fact]
    public void Pte_none_is_not_a_swap_entry_even_with_A_and_D_set()
    {
        Assert.False(SwapEntry.TryFromPteRaw(0, out _, out _));
        Assert.True(SwapEntry.PteNone(0));

        // _PAGE_KNL_ERRATUM_MASK: A (bit 5) and D (bit 6) may be set by the CPU in a not-present entry.
        Assert.True(SwapEntry.PteNone((1UL << 5) | (1UL << 6)));
        Assert.False(SwapEntry.TryFromPteRaw((1UL << 5) | (1UL << 6), out _, out _));
        Assert.False(SwapEntry.TryFromPmdRaw((1UL << 5) | (1UL << 6), out _, out _));
    }

    [Fact]
    public void Present_and_prot_none_entries_are_not_swap_entries()
    {
        ulong raw = SwapEntry.Swap(3, 99).ToPteRaw();
        Assert.False(SwapEntry.TryFromPteRaw(raw | 1, out _, out _));

        // _PAGE_PROTNONE is bit 8 (G): P = 0 but pte_present is true.
        Assert.True(SwapEntry.PtePresent(raw | (1UL << 8)));
        Assert.False(SwapEntry.TryFromPteRaw(raw | (1UL << 8), out _, out _));

        // pmd_present also counts PSE (bit 7): a huge PMD being split by pmdp_invalidate keeps it.
        Assert.True(SwapEntry.PmdPresent(raw | (1UL << 7)));
        Assert.False(SwapEntry.TryFromPmdRaw(raw | (1UL << 7), out _, out _));

        // In a PTE bit 7 is PAT and not part of presence: the entry still decodes.
        Assert.True(SwapEntry.TryFromPteRaw(raw | (1UL << 7), out SwapEntry entry, out _));
        Assert.Equal(SwapEntry.Swap(3, 99), entry);
    }

    [Fact]
    public void Soft_dirty_uffd_wp_and_erratum_bits_do_not_change_the_entry()
    {
        ulong raw = SwapEntry.Swap(5, 0xABCDE).ToPteRaw();
        ulong noisy = raw | (1UL << 1) | (1UL << 2) | (1UL << 5) | (1UL << 6);
        Assert.True(SwapEntry.TryFromPteRaw(noisy, out SwapEntry entry, out bool exclusive));
        Assert.Equal(SwapEntry.Swap(5, 0xABCDE), entry);
        Assert.False(exclusive);
    }

    [Fact]
    public void Special_types_decode_but_are_neither_swap_nor_migration()
    {
        // Type 23 (SWP_HWPOISON) and 31 (SWP_PTE_MARKER): written with the kernel arithmetic.
        Assert.True(SwapEntry.TryFromPteRaw(KernelSwpEntry(23, 5), out SwapEntry poison, out _));
        Assert.Equal(23, poison.Type);
        Assert.False(poison.IsSwap || poison.IsMigration);
        Assert.Throws<InvalidOperationException>(() => poison.Pfn);
        Assert.Throws<InvalidOperationException>(() => poison.MigrationKind);
        Assert.True(SwapEntry.TryFromPteRaw(KernelSwpEntry(31, 0), out SwapEntry marker, out _));
        Assert.Equal(31, marker.Type);
        Assert.Equal("special 31:0x0", marker.ToString());
        Assert.Equal("swap 2:0x10", SwapEntry.Swap(2, 16).ToString());
        Assert.Equal("migration Read pfn 0x10", SwapEntry.Migration(MigrationKind.Read, 16).ToString());
    }

    [Fact]
    public void Out_of_range_values_throw_naming_the_value_and_limit()
    {
        var type = Assert.Throws<ArgumentOutOfRangeException>(() => SwapEntry.Swap(23, 0));
        Assert.Equal("type", type.ParamName);
        Assert.Contains("0..22", type.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentOutOfRangeException>(() => SwapEntry.Swap(-1, 0));

        var offset = Assert.Throws<ArgumentOutOfRangeException>(() => SwapEntry.Swap(0, 1UL << 50));
        Assert.Equal("offset", offset.ParamName);
        Assert.Contains("0x4000000000000", offset.Message, StringComparison.Ordinal);
        Assert.Contains("0x3ffffffffffff", offset.Message, StringComparison.Ordinal);

        var pfn = Assert.Throws<ArgumentOutOfRangeException>(() => SwapEntry.Migration(MigrationKind.Read, 1UL << 40));
        Assert.Equal("pfn", pfn.ParamName);
        Assert.Contains("0xffffffffff", pfn.Message, StringComparison.Ordinal);

        Assert.Throws<ArgumentOutOfRangeException>(() => SwapEntry.Migration((MigrationKind)3, 0));
    }

    [Fact]
    public void The_page_walker_faults_with_P_0_on_a_swap_pte_and_a_swap_pmd()
    {
        const ulong va = 0x4000_0000;
        var tables = new TestTables();
        tables.Map(va, PageSize.Size4K, 0x20_0000, TestTables.P | TestTables.RW | TestTables.US);
        tables.Set(va, PagingLevel.Pt, SwapEntry.Swap(0, 42).ToPteRaw(exclusive: true));

        WalkResult result = PageWalker.Translate(tables.Cpu(), tables.Memory, VirtualAddress.Create(va), AccessKind.Read, Privilege.User);
        Assert.Equal(WalkStatus.PageFault, result.Status);
        Assert.Equal(PagingLevel.Pt, result.FaultLevel);
        Assert.Equal(PageFaultErrorCode.None, result.ErrorCode & PageFaultErrorCode.Present);
        Assert.True(SwapEntry.TryFromPteRaw(result.Entry.Raw, out SwapEntry entry, out bool exclusive));
        Assert.Equal(SwapEntry.Swap(0, 42), entry);
        Assert.True(exclusive);

        const ulong hugeVa = 0x8000_0000;
        tables.Map(hugeVa, PageSize.Size2M, 0x40_0000, TestTables.P | TestTables.RW | TestTables.US);
        tables.Set(hugeVa, PagingLevel.Pd, SwapEntry.Migration(MigrationKind.Write, 0x400).ToPmdRaw());
        result = PageWalker.Translate(tables.Cpu(), tables.Memory, VirtualAddress.Create(hugeVa), AccessKind.Write, Privilege.User);
        Assert.Equal(WalkStatus.PageFault, result.Status);
        Assert.Equal(PagingLevel.Pd, result.FaultLevel);
        Assert.Equal(PageFaultErrorCode.None, result.ErrorCode & PageFaultErrorCode.Present);
        Assert.True(SwapEntry.TryFromPmdRaw(result.Entry.Raw, out SwapEntry migration, out _));
        Assert.Equal(0x400UL, migration.Pfn);
    }

    private static Gen<ulong> OffsetGen(ulong max) =>
        Gen.Frequency(
            (1, Gen.Elements(0UL, 1UL, 511UL, 512UL, max - 1, max)),
            (3, Gen.Choose(0, int.MaxValue).Select(n => (ulong)n)),
            (3, Gen.Choose(0, int.MaxValue).SelectMany(hi => Gen.Choose(0, int.MaxValue), (hi, lo) => (((ulong)(uint)hi << 31) | (uint)lo) & max)));
}
