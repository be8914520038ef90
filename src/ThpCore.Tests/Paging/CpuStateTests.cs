using System;
using ThpCore.Paging;
using Xunit;

namespace ThpCore.Tests.Paging;

/// <summary>
/// CR3, CR4, EFER and CPUID-derived features (Intel SDM Vol. 3A §2.5, §4.5 Table "Use of CR3 with 4-level and
/// 5-level paging"; shared/research/x86-paging.md §1).
/// </summary>
public sealed class CpuStateTests
{
    [Theory]
    [InlineData(36)]
    [InlineData(39)]
    [InlineData(46)]
    [InlineData(52)]
    public void CR3_bits_from_MAXPHYADDR_up_to_62_are_rejected(int m)
    {
        // 60:M are reserved (MOV to CR3 #GPs); 62:61 are LAM_U48/LAM_U57, reserved without LAM, which ThpCore does not model.
        var features = new CpuFeatures { MaxPhysicalAddressBits = m };
        ulong highestRoot = ((1UL << m) - 1) & ~0xFFFUL;
        Assert.Equal(highestRoot, CpuState.Create(highestRoot, features: features).RootTable.Value);

        for (int bit = m; bit <= 62; bit++)
        {
            ulong cr3 = 0x1000 | (1UL << bit);
            ArgumentException ex = Assert.Throws<ArgumentException>(() => CpuState.Create(cr3, features: features));
            Assert.Equal("cr3", ex.ParamName);
            Assert.Contains(m.ToString(System.Globalization.CultureInfo.InvariantCulture), ex.Message, StringComparison.Ordinal);
            Assert.Throws<ArgumentException>(() => CpuState.Create(0x1000, features: features).WithCr3(cr3));
        }
    }

    [Fact]
    public void CR3_bit63_the_no_flush_hint_is_rejected()
    {
        ArgumentException ex = Assert.Throws<ArgumentException>(() => CpuState.Create(0x8000_0000_0000_1000UL));
        Assert.Equal("cr3", ex.ParamName);
        Assert.Throws<ArgumentException>(() => CpuState.Create(0x1000).WithCr3(1UL << 63));
        Assert.Throws<ArgumentException>(() => CpuState.Create(1UL << 63, Cr4Flags.Pae | Cr4Flags.Pcide));
    }

    [Fact]
    public void With_PCIDE_clear_CR3_bits_3_and_4_are_PWT_and_PCD_and_the_PCID_is_0()
    {
        CpuState cpu = CpuState.Create(0x0000_0001_2345_6000UL | 0x18 | 0x7);
        Assert.False(cpu.PcidEnabled);
        Assert.Equal(0, cpu.Pcid);
        Assert.True(cpu.RootWriteThrough);
        Assert.True(cpu.RootCacheDisabled);
        Assert.Equal(0x0000_0001_2345_6000UL, cpu.RootTable.Value);

        CpuState pwtOnly = CpuState.Create(0x2008);
        Assert.True(pwtOnly.RootWriteThrough);
        Assert.False(pwtOnly.RootCacheDisabled);
        CpuState pcdOnly = CpuState.Create(0x2010);
        Assert.False(pcdOnly.RootWriteThrough);
        Assert.True(pcdOnly.RootCacheDisabled);
    }

    [Fact]
    public void With_PCIDE_set_CR3_bits_11_to_0_are_the_PCID_and_there_is_no_PWT_or_PCD()
    {
        CpuState cpu = CpuState.Create(0x0000_0001_2345_6000UL | 0xABC | 0x18, Cr4Flags.Pae | Cr4Flags.Pcide);
        Assert.True(cpu.PcidEnabled);
        Assert.Equal(0xABC | 0x18, cpu.Pcid);
        Assert.False(cpu.RootWriteThrough);
        Assert.False(cpu.RootCacheDisabled);
        Assert.Equal(0x0000_0001_2345_6000UL, cpu.RootTable.Value);

        Assert.Equal(0xFFF, CpuState.Create(0x5FFF, Cr4Flags.Pae | Cr4Flags.Pcide).Pcid);
        Assert.Equal(0x018, CpuState.Create(0x5018).WithCr4(Cr4Flags.Pae | Cr4Flags.Pcide).Pcid);
    }

    [Fact]
    public void WithRoot_builds_CR3_from_an_aligned_table_and_the_low_12_bits()
    {
        CpuState cpu = CpuState.Create(0x1000, Cr4Flags.Pae | Cr4Flags.Pcide).WithRoot(PhysicalAddress.Create(0x7_0000), 0x123);
        Assert.Equal(0x7_0123UL, cpu.Cr3);
        Assert.Equal(0x123, cpu.Pcid);
        Assert.Throws<ArgumentException>(() => cpu.WithRoot(PhysicalAddress.Create(0x7_0800)));
        Assert.Throws<ArgumentOutOfRangeException>(() => cpu.WithRoot(PhysicalAddress.Create(0x7_0000), 0x1000));
        Assert.Throws<ArgumentOutOfRangeException>(() => cpu.WithRoot(PhysicalAddress.Create(0x7_0000), -1));
        Assert.Throws<ArgumentException>(() => cpu.WithRoot(PhysicalAddress.Create(1UL << 46))); // above default MAXPHYADDR 46
    }

    [Fact]
    public void The_paging_mode_follows_CR4_LA57()
    {
        CpuState four = CpuState.Create(0x1000);
        Assert.Equal(PagingMode.FourLevel, four.PagingMode);
        Assert.Equal(PagingLevel.Pml4, four.PagingMode.RootLevel());
        Assert.Equal(48, four.PagingMode.VirtualAddressBits());

        CpuState five = four.WithCr4(Cr4Flags.Pae | Cr4Flags.La57);
        Assert.Equal(PagingMode.FiveLevel, five.PagingMode);
        Assert.Equal(PagingLevel.Pml5, five.PagingMode.RootLevel());
        Assert.Equal(57, five.PagingMode.VirtualAddressBits());

        Assert.Equal(0x1000UL, (ulong)Cr4Flags.La57);    // CR4.LA57 is bit 12
        Assert.Equal(0x20000UL, (ulong)Cr4Flags.Pcide);  // CR4.PCIDE is bit 17
        Assert.Equal(0x800UL, (ulong)EferFlags.Nxe);     // EFER.NXE is bit 11
    }

    [Fact]
    public void EFER_NXE_selects_the_reserved_bit_masks()
    {
        CpuState nxe = CpuState.Create(0x1000);
        Assert.True(nxe.NoExecuteEnabled);
        Assert.True(nxe.ReservedBits.NoExecuteEnabled);

        CpuState noNxe = nxe.WithEfer(EferFlags.Lme | EferFlags.Lma);
        Assert.False(noNxe.NoExecuteEnabled);
        Assert.False(noNxe.ReservedBits.NoExecuteEnabled);
        Assert.Equal(1UL << 63, new PageTableEntry(PagingLevel.Pt, 0x8000_0000_0000_0001UL).GetReservedBits(noNxe));
        Assert.Equal(0UL, new PageTableEntry(PagingLevel.Pt, 0x8000_0000_0000_0001UL).GetReservedBits(nxe));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(31)]
    [InlineData(53)]
    [InlineData(64)]
    [InlineData(-1)]
    public void MAXPHYADDR_outside_32_to_52_is_refused(int m)
    {
        ArgumentOutOfRangeException ex = Assert.Throws<ArgumentOutOfRangeException>(() => new CpuFeatures { MaxPhysicalAddressBits = m });
        Assert.Equal(nameof(CpuFeatures.MaxPhysicalAddressBits), ex.ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => CpuFeatures.Default with { MaxPhysicalAddressBits = m });
    }

    [Fact]
    public void Features_default_to_MAXPHYADDR_46_with_1G_pages_on_Intel_and_accept_32_and_52()
    {
        Assert.Equal(46, CpuFeatures.Default.MaxPhysicalAddressBits);
        Assert.True(CpuFeatures.Default.Supports1GPages);
        Assert.Equal(CpuVendor.Intel, CpuFeatures.Default.Vendor);
        Assert.Equal(32, new CpuFeatures { MaxPhysicalAddressBits = 32 }.MaxPhysicalAddressBits);
        Assert.Equal(52, new CpuFeatures { MaxPhysicalAddressBits = 52 }.MaxPhysicalAddressBits);

        CpuState cpu = CpuState.Create(0x1000);
        Assert.Same(CpuFeatures.Default, cpu.Features);
        Assert.Equal(46, cpu.MaxPhysicalAddressBits);
        Assert.True(cpu.WriteProtect);
        Assert.False(cpu.AlignmentCheck);
        Assert.Equal(0u, cpu.Pkru);
    }

    [Fact]
    public void WithFeatures_rechecks_CR3_and_rebuilds_the_reserved_masks()
    {
        CpuState wide = CpuState.Create(0x0000_00F0_0000_0000UL, features: new CpuFeatures { MaxPhysicalAddressBits = 40 });
        ArgumentException ex = Assert.Throws<ArgumentException>(() => wide.WithFeatures(new CpuFeatures { MaxPhysicalAddressBits = 39 }));
        Assert.Equal("cr3", ex.ParamName);

        CpuState amd = CpuState.Create(0x1000).WithFeatures(new CpuFeatures { Vendor = CpuVendor.Amd, Supports1GPages = false, MaxPhysicalAddressBits = 48 });
        Assert.Equal(CpuVendor.Amd, amd.ReservedBits.Vendor);
        Assert.False(amd.ReservedBits.Supports1GPages);
        Assert.Equal(48, amd.ReservedBits.MaxPhysicalAddressBits);
    }

    [Fact]
    public void With_methods_change_one_register_and_keep_the_rest()
    {
        CpuState cpu = CpuState.Create(0x3000, Cr4Flags.Pae | Cr4Flags.Pge, pkru: 0x55);
        CpuState changed = cpu.WithWriteProtect(false).WithAlignmentCheck(true).WithPkru(0xC);
        Assert.False(changed.WriteProtect);
        Assert.True(changed.AlignmentCheck);
        Assert.Equal(0xCu, changed.Pkru);
        Assert.Equal(cpu.Cr3, changed.Cr3);
        Assert.Equal(cpu.Cr4, changed.Cr4);
        Assert.Equal(cpu.Efer, changed.Efer);
        Assert.True(changed.GlobalPagesEnabled);
        Assert.True(cpu.WriteProtect); // the original is unchanged
        Assert.Throws<ArgumentNullException>(() => CpuState.Create(0x1000).WithFeatures(null!));
    }
}
