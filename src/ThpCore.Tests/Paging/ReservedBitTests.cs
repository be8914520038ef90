using System;
using System.Linq;
using ThpCore.Paging;
using Xunit;
using static ThpCore.Tests.Paging.SdmBits;

namespace ThpCore.Tests.Paging;

/// <summary>
/// Reserved bits of present entries (Intel SDM Vol. 3A §4.5 tables, "Reserved (must be 0)", and the RSVD
/// list in §4.7; shared/research/x86-paging.md §4). The expected masks are rebuilt here from the SDM's
/// rules with <see cref="SdmBits.Bits"/>, never read from ThpCore.
/// </summary>
public sealed class ReservedBitTests
{
    private static readonly int[] MaxPhysicalAddressWidths = [36, 39, 46, 52];

    public static TheoryData<int, bool, bool, CpuVendor> FeatureMatrix()
    {
        var data = new TheoryData<int, bool, bool, CpuVendor>();
        foreach (int m in MaxPhysicalAddressWidths)
        {
            foreach (bool nxe in new[] { true, false })
            {
                foreach (bool has1G in new[] { true, false })
                {
                    foreach (CpuVendor vendor in new[] { CpuVendor.Intel, CpuVendor.Amd })
                    {
                        data.Add(m, nxe, has1G, vendor);
                    }
                }
            }
        }

        return data;
    }

    /// <summary>The SDM's reserved bits of a present entry of <paramref name="kind"/>.</summary>
    internal static ulong Expected(EntryKind kind, int m, bool nxe, bool has1G, CpuVendor vendor)
    {
        ulong reserved = Bits(51, m);           // every entry: bits 51:MAXPHYADDR (empty when M = 52)
        if (!nxe)
        {
            reserved |= Bit(63);                // XD is reserved unless IA32_EFER.NXE = 1
        }

        switch (kind)
        {
            case EntryKind.Pml5e:
            case EntryKind.Pml4e:
                reserved |= Bit(7);             // PS "Reserved (must be 0)" in a PML4E / PML5E
                if (vendor == CpuVendor.Amd)
                {
                    reserved |= Bit(8);         // AMD: bit 8 of a PML4E / PML5E is MBZ (KVM __reset_rsvds_bits_mask)
                }

                break;
            case EntryKind.Pdpte1G:
                reserved |= has1G ? Bits(29, 13) : Bit(7); // 1 GiB leaf: 29:13; without 1 GiB pages, PS itself
                break;
            case EntryKind.Pde2M:
                reserved |= Bits(20, 13);       // 2 MiB leaf: 20:13
                break;
        }

        return reserved;
    }

    [Theory]
    [MemberData(nameof(FeatureMatrix))]
    public void The_mask_for_every_level_and_PS_value_is_the_SDM_set(int m, bool nxe, bool has1G, CpuVendor vendor)
    {
        ReservedBitMasks masks = ReservedBitMasks.For(m, nxe, has1G, vendor);
        ulong pml5 = Expected(EntryKind.Pml5e, m, nxe, has1G, vendor);
        ulong pml4 = Expected(EntryKind.Pml4e, m, nxe, has1G, vendor);

        Assert.Equal(pml5, masks.MaskFor(PagingLevel.Pml5, bit7: false));
        Assert.Equal(pml5, masks.MaskFor(PagingLevel.Pml5, bit7: true));
        Assert.Equal(pml4, masks.MaskFor(PagingLevel.Pml4, bit7: false));
        Assert.Equal(pml4, masks.MaskFor(PagingLevel.Pml4, bit7: true));
        Assert.Equal(Expected(EntryKind.PdptePd, m, nxe, has1G, vendor), masks.MaskFor(PagingLevel.Pdpt, bit7: false));
        Assert.Equal(Expected(EntryKind.Pdpte1G, m, nxe, has1G, vendor), masks.MaskFor(PagingLevel.Pdpt, bit7: true));
        Assert.Equal(Expected(EntryKind.PdePt, m, nxe, has1G, vendor), masks.MaskFor(PagingLevel.Pd, bit7: false));
        Assert.Equal(Expected(EntryKind.Pde2M, m, nxe, has1G, vendor), masks.MaskFor(PagingLevel.Pd, bit7: true));

        // Bit 7 of a PTE is PAT, so the PTE mask does not depend on it.
        Assert.Equal(Expected(EntryKind.Pte, m, nxe, has1G, vendor), masks.MaskFor(PagingLevel.Pt, bit7: false));
        Assert.Equal(Expected(EntryKind.Pte, m, nxe, has1G, vendor), masks.MaskFor(PagingLevel.Pt, bit7: true));

        Assert.Equal(m, masks.MaxPhysicalAddressBits);
        Assert.Equal(nxe, masks.NoExecuteEnabled);
        Assert.Equal(has1G, masks.Supports1GPages);
        Assert.Equal(vendor, masks.Vendor);
    }

    [Theory]
    [MemberData(nameof(FeatureMatrix))]
    public void GetReservedBits_reports_exactly_the_set_reserved_bits_of_a_present_entry(int m, bool nxe, bool has1G, CpuVendor vendor)
    {
        ReservedBitMasks masks = ReservedBitMasks.For(m, nxe, has1G, vendor);
        foreach (EntryKind kind in EntryKinds.All)
        {
            ulong expected = Expected(kind, m, nxe, has1G, vendor);
            PagingLevel level = EntryKinds.Level(kind);
            ulong baseRaw = EntryKinds.BaseRaw(kind);
            for (int b = 1; b < 64; b++)
            {
                if (b == 7 && kind is EntryKind.PdePt or EntryKind.PdptePd)
                {
                    continue; // that would be the leaf kind, covered by its own row
                }

                ulong raw = baseRaw | Bit(b);
                Assert.True(
                    (raw & expected) == new PageTableEntry(level, raw).GetReservedBits(masks),
                    $"{kind}, bit {b}, M={m}, NXE={nxe}, 1G={has1G}, {vendor}");
            }

            ulong full = EntryKinds.AllOnesRaw(kind);
            Assert.Equal(full & expected, new PageTableEntry(level, full).GetReservedBits(masks));
            Assert.Equal(baseRaw & expected, new PageTableEntry(level, baseRaw).GetReservedBits(masks));
        }
    }

    [Theory]
    [MemberData(nameof(FeatureMatrix))]
    public void GetReservedBits_of_a_CpuState_applies_its_MAXPHYADDR_NXE_1G_support_and_vendor(int m, bool nxe, bool has1G, CpuVendor vendor)
    {
        var features = new CpuFeatures { MaxPhysicalAddressBits = m, Supports1GPages = has1G, Vendor = vendor };
        EferFlags efer = EferFlags.Lme | EferFlags.Lma | (nxe ? EferFlags.Nxe : EferFlags.None);
        CpuState cpu = CpuState.Create(0x1000, Cr4Flags.Pae | Cr4Flags.La57, efer, features: features);

        Assert.Same(ReservedBitMasks.For(m, nxe, has1G, vendor), cpu.ReservedBits);
        foreach (EntryKind kind in EntryKinds.All)
        {
            ulong full = EntryKinds.AllOnesRaw(kind);
            var entry = new PageTableEntry(EntryKinds.Level(kind), full);
            Assert.Equal(full & Expected(kind, m, nxe, has1G, vendor), entry.GetReservedBits(cpu));
            Assert.Equal(0UL, entry.WithPresent(false).GetReservedBits(cpu));
        }
    }

    [Theory]
    [MemberData(nameof(FeatureMatrix))]
    public void Not_present_entries_report_no_reserved_bits(int m, bool nxe, bool has1G, CpuVendor vendor)
    {
        ReservedBitMasks masks = ReservedBitMasks.For(m, nxe, has1G, vendor);
        foreach (EntryKind kind in EntryKinds.All)
        {
            var notPresent = new PageTableEntry(EntryKinds.Level(kind), EntryKinds.AllOnesRaw(kind) & ~1UL);
            Assert.False(notPresent.IsPresent);
            Assert.Equal(0UL, notPresent.GetReservedBits(masks));
            Assert.Equal(0UL, masks.ReservedBitsIn(EntryKinds.Level(kind), ulong.MaxValue - 1));
        }
    }

    [Theory]
    // Literal masks, worked out by hand from the SDM rules:
    [InlineData(EntryKind.Pte, 36, false, true, CpuVendor.Intel, 0x800F_FFF0_0000_0000UL)]      // 51:36, XD
    [InlineData(EntryKind.Pte, 52, true, true, CpuVendor.Amd, 0x0000_0000_0000_0000UL)]         // nothing
    [InlineData(EntryKind.Pde2M, 39, true, true, CpuVendor.Intel, 0x000F_FF80_001F_E000UL)]     // 51:39, 20:13
    [InlineData(EntryKind.PdePt, 39, true, true, CpuVendor.Amd, 0x000F_FF80_0000_0000UL)]       // 51:39
    [InlineData(EntryKind.Pdpte1G, 46, true, true, CpuVendor.Intel, 0x000F_C000_3FFF_E000UL)]   // 51:46, 29:13
    [InlineData(EntryKind.Pdpte1G, 46, false, false, CpuVendor.Intel, 0x800F_C000_0000_0080UL)] // 51:46, PS, XD
    [InlineData(EntryKind.PdptePd, 46, true, false, CpuVendor.Intel, 0x000F_C000_0000_0000UL)]  // 51:46
    [InlineData(EntryKind.Pml4e, 52, true, true, CpuVendor.Intel, 0x0000_0000_0000_0080UL)]     // PS
    [InlineData(EntryKind.Pml4e, 52, true, true, CpuVendor.Amd, 0x0000_0000_0000_0180UL)]       // PS, bit 8
    [InlineData(EntryKind.Pml5e, 52, false, true, CpuVendor.Amd, 0x8000_0000_0000_0180UL)]      // PS, bit 8, XD
    [InlineData(EntryKind.Pml5e, 36, true, true, CpuVendor.Intel, 0x000F_FFF0_0000_0080UL)]     // 51:36, PS
    public void Hand_computed_masks_match(EntryKind kind, int m, bool nxe, bool has1G, CpuVendor vendor, ulong expected)
    {
        Assert.Equal(expected, Expected(kind, m, nxe, has1G, vendor)); // the helper agrees with the hand-written literal
        ReservedBitMasks masks = ReservedBitMasks.For(m, nxe, has1G, vendor);
        Assert.Equal(expected, new PageTableEntry(EntryKinds.Level(kind), EntryKinds.AllOnesRaw(kind)).GetReservedBits(masks));
    }

    [Fact]
    public void Bits_62_to_52_11_to_9_6_to_0_and_12_are_never_reserved()
    {
        ulong neverReserved = Bits(62, 52) | Bits(11, 9) | Bits(6, 0) | Bit(12);
        foreach (ReservedBitMasks masks in AllFeatureSets())
        {
            foreach (PagingLevel level in Enum.GetValues<PagingLevel>())
            {
                Assert.Equal(0UL, masks.MaskFor(level, false) & neverReserved);
                Assert.Equal(0UL, masks.MaskFor(level, true) & neverReserved);
            }
        }
    }

    [Fact]
    public void Bits_51_to_MAXPHYADDR_are_reserved_at_every_level_for_every_MAXPHYADDR_from_32_to_52()
    {
        for (int m = 32; m <= 52; m++)
        {
            ReservedBitMasks masks = ReservedBitMasks.For(m, noExecuteEnabled: true);
            foreach (PagingLevel level in Enum.GetValues<PagingLevel>())
            {
                foreach (bool bit7 in new[] { false, true })
                {
                    Assert.Equal(Bits(51, m), masks.MaskFor(level, bit7) & Bits(51, 31));
                }
            }
        }
    }

    [Fact]
    public void Bit63_is_reserved_at_every_level_exactly_when_NXE_is_off()
    {
        foreach (ReservedBitMasks masks in AllFeatureSets())
        {
            foreach (PagingLevel level in Enum.GetValues<PagingLevel>())
            {
                Assert.Equal(masks.NoExecuteEnabled ? 0UL : Bit(63), masks.MaskFor(level, false) & Bit(63));
                Assert.Equal(masks.NoExecuteEnabled ? 0UL : Bit(63), masks.MaskFor(level, true) & Bit(63));
            }
        }
    }

    [Fact]
    public void Bit8_is_reserved_only_in_AMD_PML4Es_and_PML5Es()
    {
        foreach (ReservedBitMasks masks in AllFeatureSets())
        {
            foreach (PagingLevel level in Enum.GetValues<PagingLevel>())
            {
                ulong expected = masks.Vendor == CpuVendor.Amd && level >= PagingLevel.Pml4 ? Bit(8) : 0;
                Assert.Equal(expected, masks.MaskFor(level, false) & Bit(8));
                Assert.Equal(expected, masks.MaskFor(level, true) & Bit(8));
            }
        }
    }

    [Fact]
    public void The_golden_tables_reserved_ranges_are_reserved_for_every_feature_set_with_1G_pages()
    {
        foreach (ReservedBitMasks masks in AllFeatureSets().Where(s => s.Supports1GPages))
        {
            foreach (GoldenField row in GoldenBitTable.Rows.Where(r => r.Field == "RSV"
                || (r.Field == "PS" && r.Kind is EntryKind.Pml4e or EntryKind.Pml5e)))
            {
                var entry = new PageTableEntry(EntryKinds.Level(row.Kind), EntryKinds.BaseRaw(row.Kind) | row.Mask);
                Assert.Equal(row.Mask, entry.GetReservedBits(masks));
            }
        }
    }

    [Fact]
    public void GetReservedBits_of_a_PML5E_with_4_level_paging_throws_ArgumentException()
    {
        CpuState fourLevel = CpuState.Create(0x1000);
        var pml5e = new PageTableEntry(PagingLevel.Pml5, 0x2003);
        ArgumentException ex = Assert.Throws<ArgumentException>(() => pml5e.GetReservedBits(fourLevel));
        Assert.Equal("cpu", ex.ParamName);
        Assert.Contains("PML5E", ex.Message, StringComparison.Ordinal);

        Assert.Equal(0UL, pml5e.GetReservedBits(fourLevel.WithCr4(Cr4Flags.Pae | Cr4Flags.La57)));
        Assert.Equal(0UL, new PageTableEntry(PagingLevel.Pml4, 0x2003).GetReservedBits(fourLevel));
    }

    [Fact]
    public void Bad_arguments_are_refused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => ReservedBitMasks.For(31, true));
        Assert.Throws<ArgumentOutOfRangeException>(() => ReservedBitMasks.For(53, true));
        Assert.Throws<ArgumentOutOfRangeException>(() => ReservedBitMasks.For(46, true).MaskFor((PagingLevel)0, false));
        Assert.Throws<ArgumentOutOfRangeException>(() => ReservedBitMasks.For(46, true).MaskFor((PagingLevel)6, false));
        Assert.Throws<ArgumentNullException>(() => PageTableEntry.Empty(PagingLevel.Pt).GetReservedBits((ReservedBitMasks)null!));
        Assert.Throws<ArgumentNullException>(() => PageTableEntry.Empty(PagingLevel.Pt).GetReservedBits((CpuState)null!));
        Assert.Same(ReservedBitMasks.For(40, false, false, CpuVendor.Amd), ReservedBitMasks.For(40, false, false, CpuVendor.Amd));
    }

    private static System.Collections.Generic.IEnumerable<ReservedBitMasks> AllFeatureSets()
    {
        for (int m = 32; m <= 52; m++)
        {
            foreach (bool nxe in new[] { true, false })
            {
                foreach (bool has1G in new[] { true, false })
                {
                    yield return ReservedBitMasks.For(m, nxe, has1G, CpuVendor.Intel);
                    yield return ReservedBitMasks.For(m, nxe, has1G, CpuVendor.Amd);
                }
            }
        }
    }
}
