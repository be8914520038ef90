using System;
using System.IO;
using System.Linq;
using ThpCore.Inspection;
using ThpCore.Paging;
using ThpCore.Tests.Paging;
using Xunit;

namespace ThpCore.Tests.Inspection;

/// <summary>
/// Lines of QEMU's <c>info tlb</c>. Every expected line below was written by hand from QEMU's format,
/// <c>"%016" PRIx64 ": %016" PRIx64 " %c%c%c%c%c%c%c%c%c\n"</c> with the flags XGPDACTUW, and the masks
/// 0x3fffffffff000 (4K, after clearing bit 7), 0x3ffffffe00000 (2M) and 0x3ffffc0000000 (1G).
/// </summary>
public sealed class InfoTlbTests
{
    private const ulong P = TestTables.P;
    private const ulong RW = TestTables.RW;
    private const ulong US = TestTables.US;
    private const ulong PWT = TestTables.PWT;
    private const ulong PCD = TestTables.PCD;
    private const ulong A = TestTables.A;
    private const ulong D = TestTables.D;
    private const ulong PS = TestTables.PS;
    private const ulong G = TestTables.G;
    private const ulong XD = TestTables.XD;

    [Fact]
    public void A_plain_user_page_prints_its_address_frame_and_DAUW()
    {
        Mapping mapping = Leaf(0x0000_7F12_3456_7000, PageSize.Size4K, 0x0000_0001_2345_6000 | P | RW | US | A | D);

        Assert.Equal("00007f1234567000: 0000000123456000 ---DA--UW\n", InfoTlb.FormatLine(mapping));
    }

    [Fact]
    public void A_4K_PTE_never_shows_P_because_QEMU_clears_bit_7_its_PAT_bit()
    {
        // PAT (bit 7), G, PCD, PWT, A and XD set; R/W and U/S clear.
        Mapping mapping = Leaf(0xFFFF_8000_0000_1000, PageSize.Size4K, 0x8000_0000_0ABC_D000 | P | PWT | PCD | A | 0x80 | G);

        Assert.Equal("ffff800000001000: 000000000abcd000 XG--ACT--\n", InfoTlb.FormatLine(mapping));
    }

    [Fact]
    public void A_4K_frame_keeps_bits_49_to_12_only_and_hides_software_bits_and_the_key()
    {
        // Frame bits 51:12 all set, software bits 11:9 and 58:52, protection key 5, P and R/W.
        ulong raw = 0x2800_0000_0000_0000 | 0x07F0_0000_0000_0000 | 0x000F_FFFF_FFFF_F000 | 0xE00 | P | RW;

        Assert.Equal("0000000000002000: 0003fffffffff000 --------W\n", InfoTlb.FormatLine(Leaf(0x2000, PageSize.Size4K, raw)));
    }

    [Fact]
    public void A_2M_leaf_shows_P_and_drops_PAT_bit_12_and_bits_20_to_13()
    {
        ulong raw = 0x0000_0001_2340_0000 | 0x1000 | 0x2000 | PS | G | D | A | RW | P;

        Assert.Equal("ffff888000200000: 0000000123400000 -GPDA---W\n", InfoTlb.FormatLine(Leaf(0xFFFF_8880_0020_0000, PageSize.Size2M, raw)));
    }

    [Fact]
    public void A_1G_leaf_keeps_bits_49_to_30()
    {
        ulong raw = 0x0000_0040_0000_0000 | 0x3FFF_E000 | 0x1000 | XD | PS | PCD | US | P | (1UL << 50);

        Assert.Equal("ffffffffc0000000: 0000004000000000 X-P--C-U-\n", InfoTlb.FormatLine(Leaf(0xFFFF_FFFF_C000_0000, PageSize.Size1G, raw)));
    }

    [Fact]
    public void Every_flag_alone_lands_in_its_own_column()
    {
        Assert.Equal("0000000000000000: 0000000000000000 X--------\n", InfoTlb.FormatLine(Leaf(0, PageSize.Size4K, P | XD)));
        Assert.Equal("0000000000000000: 0000000000000000 -G-------\n", InfoTlb.FormatLine(Leaf(0, PageSize.Size4K, P | G)));
        Assert.Equal("0000000000000000: 0000000000000000 --P------\n", InfoTlb.FormatLine(Leaf(0, PageSize.Size2M, P | PS)));
        Assert.Equal("0000000000000000: 0000000000000000 ---D-----\n", InfoTlb.FormatLine(Leaf(0, PageSize.Size4K, P | D)));
        Assert.Equal("0000000000000000: 0000000000000000 ----A----\n", InfoTlb.FormatLine(Leaf(0, PageSize.Size4K, P | A)));
        Assert.Equal("0000000000000000: 0000000000000000 -----C---\n", InfoTlb.FormatLine(Leaf(0, PageSize.Size4K, P | PCD)));
        Assert.Equal("0000000000000000: 0000000000000000 ------T--\n", InfoTlb.FormatLine(Leaf(0, PageSize.Size4K, P | PWT)));
        Assert.Equal("0000000000000000: 0000000000000000 -------U-\n", InfoTlb.FormatLine(Leaf(0, PageSize.Size4K, P | US)));
        Assert.Equal("0000000000000000: 0000000000000000 --------W\n", InfoTlb.FormatLine(Leaf(0, PageSize.Size4K, P | RW)));
        Assert.Equal("0000000000000000: 0000000000000000 XGPDACTUW\n", InfoTlb.FormatLine(Leaf(0, PageSize.Size1G, P | XD | G | PS | D | A | PCD | PWT | US | RW)));
    }

    [Fact]
    public void Enumerated_four_level_tables_print_as_QEMU_would_with_LF_line_ends()
    {
        var t = new TestTables();
        t.Map(0x1000, PageSize.Size4K, 0x5000, P | RW | US | A | D);
        t.Map(0x20_0000, PageSize.Size2M, 0x40_0000, P | RW | G);
        t.Map(0xFFFF_FFFF_C000_0000, PageSize.Size1G, 0xC000_0000, P | RW | US | XD);
        var writer = new StringWriter { NewLine = "\r\n" };

        InfoTlb.Write(writer, new PageTableEnumerator(t.Memory, t.Cpu()).Enumerate());

        Assert.Equal(
            "0000000000001000: 0000000000005000 ---DA--UW\n" +
            "0000000000200000: 0000000000400000 -GP-----W\n" +
            "ffffffffc0000000: 00000000c0000000 X-P----UW\n",
            writer.ToString());
    }

    [Fact]
    public void Enumerated_five_level_tables_print_57_bit_canonical_addresses()
    {
        var t = new TestTables(PagingMode.FiveLevel);
        t.Map(0xFF12_3456_789A_B000, PageSize.Size4K, 0x2_0000_0000, P | RW | US | A);
        t.Map(0x00AB_CDEF_0120_0000, PageSize.Size2M, 0x4000_0000, P | RW | A | D);
        var writer = new StringWriter();

        InfoTlb.Write(writer, new PageTableEnumerator(t.Memory, t.Cpu()).Enumerate());

        Assert.Equal(
            "00abcdef01200000: 0000000040000000 --PDA---W\n" +
            "ff123456789ab000: 0000000200000000 ----A--UW\n",
            writer.ToString());
    }

    [Fact]
    public void Every_line_is_45_characters_and_Write_equals_the_lines_joined()
    {
        Mapping[] mappings =
        {
            Leaf(0xFFFF_FFFF_FFFF_F000, PageSize.Size4K, ulong.MaxValue),
            Leaf(0, PageSize.Size2M, ulong.MaxValue),
            Leaf(0x4000_0000, PageSize.Size1G, ulong.MaxValue),
        };
        var writer = new StringWriter();

        InfoTlb.Write(writer, mappings);

        Assert.All(mappings, m => Assert.Equal(InfoTlb.LineLength, InfoTlb.FormatLine(m).Length));
        Assert.Equal(string.Concat(mappings.Select(InfoTlb.FormatLine)), writer.ToString());
        Assert.Equal("fffffffffffff000: 0003fffffffff000 XG-DACTUW\n", InfoTlb.FormatLine(mappings[0]));
        Assert.Equal("0000000000000000: 0003ffffffe00000 XGPDACTUW\n", InfoTlb.FormatLine(mappings[1]));
        Assert.Equal("0000000040000000: 0003ffffc0000000 XGPDACTUW\n", InfoTlb.FormatLine(mappings[2]));
    }

    [Fact]
    public void Bad_arguments_throw()
    {
        Assert.Throws<ArgumentNullException>(() => InfoTlb.Write(null!, Array.Empty<Mapping>()));
        Assert.Throws<ArgumentNullException>(() => InfoTlb.Write(new StringWriter(), null!));
        Assert.Throws<ArgumentOutOfRangeException>(() => InfoTlb.FormatLine(Leaf(0, (PageSize)3, P, PagingLevel.Pt)));
    }

    private static Mapping Leaf(ulong va, PageSize size, ulong raw, PagingLevel? level = null) =>
        new(
            VirtualAddress.FromRaw(va),
            size,
            new PageTableEntry(level ?? size.LeafLevel(), raw),
            PhysicalAddress.Zero,
            EffectiveRights.None);
}
