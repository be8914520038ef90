using System;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using ThpCore.Inspection;
using ThpCore.Paging;
using Xunit;

namespace ThpCore.Tests.Inspection;

public sealed class QemuRegistersTests
{
    // `info registers` of a Linux 6.x guest on QEMU 8 (x86-64, KVM), in QEMU's layout.
    private const string FullDump = """
        RAX=0000000000000000 RBX=ffffffff82a0c940 RCX=0000000000000001 RDX=0000000000000000
        RSI=0000000000000083 RDI=0000000000000000 RBP=0000000000000000 RSP=ffffffff82a03e48
        R8 =ffff88803ec2b8c0 R9 =0000000000000000 R10=0000000000000001 R11=0000000000000000
        R12=0000000000000000 R13=0000000000000000 R14=0000000000000000 R15=0000000000000000
        RIP=ffffffff81e4f6eb RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1
        ES =0000 0000000000000000 ffffffff 00c00000
        CS =0010 0000000000000000 ffffffff 00a09b00 DPL=0 CS64 [-RA]
        SS =0018 0000000000000000 ffffffff 00c09300 DPL=0 DS   [-WA]
        DS =0000 0000000000000000 ffffffff 00c00000
        FS =0000 0000000000000000 ffffffff 00c00000
        GS =0000 ffff88803ec00000 ffffffff 00c00000
        LDT=0000 0000000000000000 ffffffff 00c00000
        TR =0040 fffffe0000003000 00004087 00008b00 DPL=0 TSS64-busy
        GDT=     fffffe0000001000 0000007f
        IDT=     fffffe0000000000 00000fff
        CR0=80050033 CR2=00007f2a1b1c9000 CR3=0000000004e0a000 CR4=00350ef0
        DR0=0000000000000000 DR1=0000000000000000 DR2=0000000000000000 DR3=0000000000000000
        DR6=00000000ffff0ff0 DR7=0000000000000400
        EFER=0000000000000d01
        FCW=037f FSW=0000 [ST=0] FTW=00 MXCSR=00001f80
        FPR0=0000000000000000 0000 FPR1=0000000000000000 0000
        FPR2=0000000000000000 0000 FPR3=0000000000000000 0000
        XMM00=0000000000000000000000000000ff00 XMM01=00000000000000000000000000000000
        """;

    private static string WithLine(string field, string value) => FullDump.Replace(field, value, StringComparison.Ordinal);

    private static string WithPcide(string text) => text.Replace("CR4=00350ef0", "CR4=00370ef0", StringComparison.Ordinal);

    [Fact]
    public void A_full_info_registers_dump_yields_the_paging_registers()
    {
        QemuRegisters registers = QemuRegisters.Parse(FullDump);

        Assert.Equal(0x8005_0033UL, registers.Cr0);
        Assert.Equal(0x0000_7F2A_1B1C_9000UL, registers.Cr2);
        Assert.Equal(0x04E0_A000UL, registers.Cr3);
        Assert.Equal(0x0035_0EF0UL, registers.Cr4);
        Assert.Equal(0xD01UL, registers.Efer);
        Assert.Equal("CR0=80050033 CR2=7f2a1b1c9000 CR3=4e0a000 CR4=350ef0 EFER=d01", registers.ToString());
    }

    [Fact]
    public void The_cpu_state_takes_cr0_wp_cr4_and_efer_from_the_dump()
    {
        CpuState state = QemuRegisters.Parse(FullDump).ToCpuState();

        // CR4 = 0x350ef0: PAE, PGE, FSGSBASE, OSXSAVE, SMEP, SMAP; no PCIDE (bit 17), LA57 (bit 12) or PKE (bit 22).
        Assert.Equal((Cr4Flags)0x0035_0EF0, state.Cr4);
        Assert.False(state.PcidEnabled);
        Assert.True(state.SmepEnabled);
        Assert.True(state.SmapEnabled);
        Assert.True(state.GlobalPagesEnabled);
        Assert.False(state.ProtectionKeysEnabled);
        Assert.Equal(PagingMode.FourLevel, state.PagingMode);
        Assert.Equal((EferFlags)0xD01, state.Efer);
        Assert.True(state.NoExecuteEnabled);
        Assert.True(state.WriteProtect);
        Assert.False(state.AlignmentCheck);
        Assert.Equal(PhysicalAddress.Create(0x4E0_A000), state.RootTable);
        Assert.Same(CpuFeatures.Default, state.Features);
    }

    [Fact]
    public void With_pcide_the_low_12_bits_of_cr3_are_the_pcid()
    {
        CpuState state = QemuRegisters.Parse(WithPcide(WithLine("CR3=0000000004e0a000", "CR3=0000000004e0a801"))).ToCpuState();

        Assert.True(state.PcidEnabled);
        Assert.Equal(0x801, state.Pcid);
        Assert.Equal(PhysicalAddress.Create(0x4E0_A000), state.RootTable);
        Assert.False(state.RootWriteThrough);
    }

    [Fact]
    public void Without_pcide_the_low_bits_of_cr3_are_pwt_and_pcd_and_there_is_no_pcid()
    {
        string text = WithLine("CR4=00350ef0", "CR4=00000020").Replace("CR3=0000000004e0a000", "CR3=0000000004e0a018", StringComparison.Ordinal);
        CpuState state = QemuRegisters.Parse(text).ToCpuState();

        Assert.False(state.PcidEnabled);
        Assert.Equal(0, state.Pcid);
        Assert.True(state.RootWriteThrough);
        Assert.True(state.RootCacheDisabled);
        Assert.Equal(PhysicalAddress.Create(0x4E0_A000), state.RootTable);
    }

    [Fact]
    public void La57_selects_five_level_paging_and_efer_without_nxe_disables_xd()
    {
        string text = WithLine("CR4=00350ef0", "CR4=00351ef0").Replace("EFER=0000000000000d01", "EFER=0000000000000501", StringComparison.Ordinal);
        CpuState state = QemuRegisters.Parse(text).ToCpuState();

        Assert.Equal(PagingMode.FiveLevel, state.PagingMode);
        Assert.False(state.NoExecuteEnabled);
        Assert.Equal(EferFlags.Lme | EferFlags.Lma | (EferFlags)1, state.Efer);
    }

    [Fact]
    public void Cr0_wp_clear_and_rflags_ac_set_are_carried_over()
    {
        string text = WithLine("CR0=80050033", "CR0=80040033").Replace("RFL=00000246", "RFL=00040246", StringComparison.Ordinal);
        CpuState state = QemuRegisters.Parse(text).ToCpuState();

        Assert.False(state.WriteProtect);
        Assert.True(state.AlignmentCheck);
    }

    [Fact]
    public void Cr3_bit_63_and_the_lam_bits_are_stripped_without_an_exception()
    {
        QemuRegisters registers = QemuRegisters.Parse(WithPcide(WithLine("CR3=0000000004e0a000", "CR3=e000000004e0a005")));
        Assert.Equal(0xE000_0000_04E0_A005UL, registers.Cr3);

        CpuState state = registers.ToCpuState();
        Assert.Equal(0x04E0_A005UL, state.Cr3);
        Assert.Equal(5, state.Pcid);
    }

    [Fact]
    public void Features_are_passed_to_the_cpu_state_and_a_cr3_above_maxphyaddr_is_refused()
    {
        var narrow = new CpuFeatures { MaxPhysicalAddressBits = 36, Vendor = CpuVendor.Amd };
        QemuRegisters registers = QemuRegisters.Parse(FullDump);
        Assert.Same(narrow, registers.ToCpuState(narrow).Features);

        QemuRegisters high = QemuRegisters.Parse(WithLine("CR3=0000000004e0a000", "CR3=0000001004e0a000"));
        Assert.Throws<ArgumentException>(() => high.ToCpuState(narrow));
        Assert.Equal(0x10_04E0_A000UL, high.ToCpuState().Cr3);
    }

    [Fact]
    public void Only_the_first_cpu_of_info_registers_minus_a_is_read()
    {
        string text = "CPU#0\n" + FullDump + "\nCPU#1\n" + FullDump.Replace("CR3=0000000004e0a000", "CR3=0000000001234000", StringComparison.Ordinal);
        Assert.Equal(0x04E0_A000UL, QemuRegisters.Parse(text).Cr3);

        string secondOnly = "CPU#0\nRAX=0\nCPU#1\n" + FullDump;
        var ex = Assert.Throws<FormatException>(() => QemuRegisters.Parse(secondOnly));
        Assert.Equal("no CR0= field in the registers text.", ex.Message);
    }

    [Fact]
    public void Fields_may_be_padded_and_names_match_whole_words_only()
    {
        const string text = "XCR0=0000000000000007 CR0 =80050033 CR2=0\nCR3 = 1000 CR4=20  \tEFER=d00";
        QemuRegisters registers = QemuRegisters.Parse(text);

        Assert.Equal(0x8005_0033UL, registers.Cr0);
        Assert.Equal(0x1000UL, registers.Cr3);
        Assert.Equal(0x20UL, registers.Cr4);
        Assert.Equal(0xD00UL, registers.Efer);
    }

    [Theory]
    [InlineData("CR3=0000000004e0a000", "", "no CR3= field in the registers text.")]
    [InlineData("CR0=80050033", "", "no CR0= field in the registers text.")]
    [InlineData("EFER=0000000000000d01", "", "no EFER= field in the registers text.")]
    [InlineData("CR2=00007f2a1b1c9000", "CR2=", "the CR2= field has no value.")]
    [InlineData("CR3=0000000004e0a000", "CR3=0x4e0a000", "the CR3= field holds '0x4e0a000', not a hexadecimal number of at most 16 digits.")]
    [InlineData("CR4=00350ef0", "CR4=zz350ef0", "the CR4= field holds 'zz350ef0', not a hexadecimal number of at most 16 digits.")]
    [InlineData("EFER=0000000000000d01", "EFER=10000000000000d01", "the EFER= field holds '10000000000000d01', not a hexadecimal number of at most 16 digits.")]
    public void A_missing_or_garbled_field_is_a_FormatException_that_names_it(string field, string replacement, string message)
    {
        string text = WithLine(field, replacement);

        var ex = Assert.Throws<FormatException>(() => QemuRegisters.Parse(text));
        Assert.Equal(message, ex.Message);
        Assert.False(QemuRegisters.TryParse(text, out QemuRegisters? registers));
        Assert.Null(registers);
    }

    [Fact]
    public void Text_that_is_not_a_register_dump_does_not_parse()
    {
        Assert.Throws<FormatException>(() => QemuRegisters.Parse(""));
        Assert.Throws<FormatException>(() => QemuRegisters.Parse("(qemu) info registers\nNo CPU available"));
        Assert.Throws<ArgumentNullException>(() => QemuRegisters.Parse(null!));
        Assert.False(QemuRegisters.TryParse(null!, out _));
        Assert.True(QemuRegisters.TryParse(FullDump, out QemuRegisters? registers));
        Assert.Equal(0x04E0_A000UL, registers.Cr3);
    }

    [Property(MaxTest = 300)]
    public Property TryParse_never_throws_on_any_text(string text, bool withFields)
    {
        string input = withFields ? (text ?? "") + " CR0=1 CR2=" + text + " CR3=1000 CR4=20 EFER=" + text : text ?? "";
        bool parsed = QemuRegisters.TryParse(input, out QemuRegisters? registers);
        return (parsed == (registers is not null)).ToProperty();
    }
}
