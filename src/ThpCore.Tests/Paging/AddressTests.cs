using System;
using System.Linq;
using System.Text.RegularExpressions;
using ThpCore.Paging;
using Xunit;

namespace ThpCore.Tests.Paging;

/// <summary>
/// Linear and physical addresses: canonical form for 48- and 57-bit linear addresses, MAXPHYADDR, table
/// indices, page offsets and alignment (Intel SDM Vol. 3A §3.3.7.1, §4.5; shared/research/x86-paging.md §2).
/// </summary>
public sealed partial class AddressTests
{
    [Theory]
    // 4-level: canonical ⇔ bits 63:48 all equal bit 47.
    [InlineData(0x0000_0000_0000_0000UL, PagingMode.FourLevel, true)]
    [InlineData(0x0000_7FFF_FFFF_FFFFUL, PagingMode.FourLevel, true)]   // top of the lower half
    [InlineData(0x0000_8000_0000_0000UL, PagingMode.FourLevel, false)]  // one above it
    [InlineData(0x0000_FFFF_FFFF_FFFFUL, PagingMode.FourLevel, false)]
    [InlineData(0x0001_0000_0000_0000UL, PagingMode.FourLevel, false)]
    [InlineData(0xFFFF_7FFF_FFFF_FFFFUL, PagingMode.FourLevel, false)]  // one below the upper half
    [InlineData(0xFFFF_8000_0000_0000UL, PagingMode.FourLevel, true)]   // bottom of the upper half
    [InlineData(0xFFFF_FFFF_FFFF_FFFFUL, PagingMode.FourLevel, true)]
    [InlineData(0x7FFF_FFFF_FFFF_FFFFUL, PagingMode.FourLevel, false)]
    [InlineData(0x8000_0000_0000_0000UL, PagingMode.FourLevel, false)]
    [InlineData(0x00FF_FFFF_FFFF_FFFFUL, PagingMode.FourLevel, false)]
    [InlineData(0xFF00_0000_0000_0000UL, PagingMode.FourLevel, false)]
    // 5-level: canonical ⇔ bits 63:57 all equal bit 56.
    [InlineData(0x0000_0000_0000_0000UL, PagingMode.FiveLevel, true)]
    [InlineData(0x0000_7FFF_FFFF_FFFFUL, PagingMode.FiveLevel, true)]
    [InlineData(0x0000_8000_0000_0000UL, PagingMode.FiveLevel, true)]   // non-canonical with 4 levels, fine with 5
    [InlineData(0xFFFF_8000_0000_0000UL, PagingMode.FiveLevel, true)]
    [InlineData(0x00FF_FFFF_FFFF_FFFFUL, PagingMode.FiveLevel, true)]   // top of the lower half
    [InlineData(0x0100_0000_0000_0000UL, PagingMode.FiveLevel, false)]  // one above it
    [InlineData(0x01FF_FFFF_FFFF_FFFFUL, PagingMode.FiveLevel, false)]
    [InlineData(0xFEFF_FFFF_FFFF_FFFFUL, PagingMode.FiveLevel, false)]  // one below the upper half
    [InlineData(0xFF00_0000_0000_0000UL, PagingMode.FiveLevel, true)]   // bottom of the upper half
    [InlineData(0xFFFF_FFFF_FFFF_FFFFUL, PagingMode.FiveLevel, true)]
    [InlineData(0x7FFF_FFFF_FFFF_FFFFUL, PagingMode.FiveLevel, false)]
    [InlineData(0x8000_0000_0000_0000UL, PagingMode.FiveLevel, false)]
    public void Canonical_form_at_the_boundaries(ulong value, PagingMode mode, bool canonical)
    {
        Assert.Equal(canonical, VirtualAddress.IsCanonical(value, mode));
        Assert.Equal(canonical, VirtualAddress.FromRaw(value).IsCanonicalIn(mode));
        Assert.Equal(canonical, VirtualAddress.TryCreate(value, mode, out VirtualAddress created));
        Assert.Equal(canonical ? value : 0, created.Value);
        Assert.Equal(value, VirtualAddress.FromRaw(value).Value);
        if (canonical)
        {
            Assert.Equal(value, VirtualAddress.Create(value, mode).Value);
            Assert.Equal(value, VirtualAddress.CreateTruncate(value, mode).Value);
        }
        else
        {
            Assert.Throws<ArgumentOutOfRangeException>(() => VirtualAddress.Create(value, mode));
            Assert.NotEqual(value, VirtualAddress.CreateTruncate(value, mode).Value);
        }
    }

    [Theory]
    [InlineData(0x0000_8000_0000_0000UL, PagingMode.FourLevel, 48, "0x7fffffffffff", "0xffff800000000000")]
    [InlineData(0xFFFF_7FFF_FFFF_FFFFUL, PagingMode.FourLevel, 48, "0x7fffffffffff", "0xffff800000000000")]
    [InlineData(0x0100_0000_0000_0000UL, PagingMode.FiveLevel, 57, "0xffffffffffffff", "0xff00000000000000")]
    [InlineData(0xFEFF_FFFF_FFFF_FFFFUL, PagingMode.FiveLevel, 57, "0xffffffffffffff", "0xff00000000000000")]
    public void Create_of_a_non_canonical_address_names_the_value_and_the_limits(ulong value, PagingMode mode, int bits, string lowerHalfTop, string upperHalfBottom)
    {
        ArgumentOutOfRangeException ex = Assert.Throws<ArgumentOutOfRangeException>(() => VirtualAddress.Create(value, mode));
        string[] numbers = HexNumbers(ex.Message);
        Assert.Contains("0x" + value.ToString("x", System.Globalization.CultureInfo.InvariantCulture), numbers);
        Assert.Contains(lowerHalfTop, numbers);
        Assert.Contains(upperHalfBottom, numbers);
        Assert.Contains(bits.ToString(System.Globalization.CultureInfo.InvariantCulture) + "-bit", ex.Message, StringComparison.Ordinal);
        Assert.Equal("value", ex.ParamName);
    }

    [Theory]
    [InlineData(0x0000_8000_0000_0000UL, PagingMode.FourLevel, 0xFFFF_8000_0000_0000UL)]
    [InlineData(0x1234_5678_9ABC_DEF0UL, PagingMode.FourLevel, 0x0000_5678_9ABC_DEF0UL)]
    [InlineData(0x0000_FFFF_FFFF_F000UL, PagingMode.FourLevel, 0xFFFF_FFFF_FFFF_F000UL)]
    [InlineData(0xFFFF_7FFF_FFFF_FFFFUL, PagingMode.FourLevel, 0x0000_7FFF_FFFF_FFFFUL)]
    [InlineData(0x0100_0000_0000_0000UL, PagingMode.FiveLevel, 0xFF00_0000_0000_0000UL)]
    [InlineData(0x1234_5678_9ABC_DEF0UL, PagingMode.FiveLevel, 0x0034_5678_9ABC_DEF0UL)]
    [InlineData(0x0080_0000_0000_0000UL, PagingMode.FiveLevel, 0x0080_0000_0000_0000UL)]
    public void CreateTruncate_sign_extends_from_the_top_significant_bit(ulong value, PagingMode mode, ulong expected)
    {
        Assert.Equal(expected, VirtualAddress.CreateTruncate(value, mode).Value);
    }

    [Theory]
    [InlineData(0x0000_0010_0000_0000UL, 36, "0x1000000000", "0xfffffffff")]
    [InlineData(0x0000_0080_0000_1000UL, 39, "0x8000001000", "0x7fffffffff")]
    [InlineData(0x0000_4000_0000_0000UL, 46, "0x400000000000", "0x3fffffffffff")]
    [InlineData(0x0010_0000_0000_0000UL, 52, "0x10000000000000", "0xfffffffffffff")]
    [InlineData(0xFFFF_FFFF_FFFF_FFFFUL, 52, "0xffffffffffffffff", "0xfffffffffffff")]
    public void PhysicalAddress_Create_above_MAXPHYADDR_names_the_value_and_the_limit(ulong value, int maxPhysicalAddressBits, string valueHex, string highestValid)
    {
        ArgumentOutOfRangeException ex = Assert.Throws<ArgumentOutOfRangeException>(() => PhysicalAddress.Create(value, maxPhysicalAddressBits));
        string[] numbers = HexNumbers(ex.Message);
        Assert.Contains(valueHex, numbers);
        Assert.Contains(highestValid, numbers);
        Assert.Contains(maxPhysicalAddressBits.ToString(System.Globalization.CultureInfo.InvariantCulture), ex.Message, StringComparison.Ordinal);
        Assert.False(PhysicalAddress.TryCreate(value, maxPhysicalAddressBits, out _));

        ulong highest = (1UL << maxPhysicalAddressBits) - 1;
        Assert.Equal(highest, PhysicalAddress.Create(highest, maxPhysicalAddressBits).Value);
        Assert.True(PhysicalAddress.TryCreate(highest, maxPhysicalAddressBits, out PhysicalAddress ok));
        Assert.Equal(highest, ok.Value);
    }

    [Fact]
    public void PhysicalAddress_limits_and_frames()
    {
        Assert.Equal(0x000F_FFFF_FFFF_FFFFUL, PhysicalAddress.Create(0x000F_FFFF_FFFF_FFFFUL).Value); // default limit is 52 bits
        Assert.Throws<ArgumentOutOfRangeException>(() => PhysicalAddress.Create(0x0010_0000_0000_0000UL));
        Assert.Throws<ArgumentOutOfRangeException>(() => PhysicalAddress.Create(0, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => PhysicalAddress.Create(0, 53));
        Assert.Equal(0x000F_FFFF_FFFF_FFFFUL, PhysicalAddress.CreateTruncate(ulong.MaxValue).Value);
        Assert.Equal(0x000F_FFFF_FFFF_F000UL, PhysicalAddress.FromFrameNumber(0xFF_FFFF_FFFFUL).Value);
        Assert.Throws<ArgumentOutOfRangeException>(() => PhysicalAddress.FromFrameNumber(1UL << 40));
        Assert.Equal(0x12_3456UL, PhysicalAddress.Create(0x1_2345_6FFF).FrameNumber);
        Assert.Equal(0x000F_FFFF_FFFF_FFFFUL, PhysicalAddress.Create(0x000F_FFFF_FFFF_F000UL).Add(0xFFF).Value);
        Assert.Throws<ArgumentOutOfRangeException>(() => PhysicalAddress.Create(0x000F_FFFF_FFFF_F000UL).Add(0x1000));
        Assert.Throws<ArgumentOutOfRangeException>(() => PhysicalAddress.Create(1).Add(ulong.MaxValue));
    }

    [Theory]
    [InlineData(PagingLevel.Pt, 12, 0x1000UL)]
    [InlineData(PagingLevel.Pd, 21, 0x20_0000UL)]
    [InlineData(PagingLevel.Pdpt, 30, 0x4000_0000UL)]
    [InlineData(PagingLevel.Pml4, 39, 0x80_0000_0000UL)]
    [InlineData(PagingLevel.Pml5, 48, 0x1_0000_0000_0000UL)]
    public void Each_level_is_indexed_by_9_bits_starting_at_the_SDM_position(PagingLevel level, int shift, ulong coverage)
    {
        Assert.Equal(shift, level.IndexShift());
        Assert.Equal(coverage, level.EntryCoverage());
        Assert.Equal(511, VirtualAddress.FromRaw(0x1FFUL << shift).IndexAt(level));
        Assert.Equal(0, VirtualAddress.FromRaw(~(0x1FFUL << shift)).IndexAt(level));
        Assert.Equal(1, VirtualAddress.FromRaw(1UL << shift).IndexAt(level));
    }

    [Fact]
    public void Indices_and_offset_of_a_4_level_address()
    {
        // 0xffffd1bd7843d9e7 = sign-extend(419 << 39 | 245 << 30 | 450 << 21 | 61 << 12 | 0x9e7)
        VirtualAddress va = VirtualAddress.Create(0xFFFF_D1BD_7843_D9E7UL);
        Assert.Equal(419, va.IndexAt(PagingLevel.Pml4));
        Assert.Equal(245, va.IndexAt(PagingLevel.Pdpt));
        Assert.Equal(450, va.IndexAt(PagingLevel.Pd));
        Assert.Equal(61, va.IndexAt(PagingLevel.Pt));
        Assert.Equal(0x9E7UL, va.PageOffset(PageSize.Size4K));
        Assert.Equal(511, va.IndexAt(PagingLevel.Pml5)); // bits 56:48 are the sign extension
        Assert.Equal(va, VirtualAddress.FromIndices(PagingMode.FourLevel, [419, 245, 450, 61], 0x9E7));

        // The bottom of the upper half is PML4 index 256, everything else 0.
        VirtualAddress kernel = VirtualAddress.Create(0xFFFF_8000_0000_0000UL);
        Assert.Equal(256, kernel.IndexAt(PagingLevel.Pml4));
        Assert.Equal(kernel, VirtualAddress.FromIndices(PagingMode.FourLevel, [256, 0, 0, 0]));
        Assert.Equal(0x0000_7FFF_FFFF_F000UL, VirtualAddress.FromIndices(PagingMode.FourLevel, [255, 511, 511, 511]).Value);
    }

    [Fact]
    public void Indices_and_offset_of_a_5_level_address()
    {
        // 0x00abff80201fefff = 171 << 48 | 511 << 39 | 0 << 30 | 256 << 21 | 510 << 12 | 0xfff
        VirtualAddress va = VirtualAddress.Create(0x00AB_FF80_201F_EFFFUL, PagingMode.FiveLevel);
        Assert.Equal(171, va.IndexAt(PagingLevel.Pml5));
        Assert.Equal(511, va.IndexAt(PagingLevel.Pml4));
        Assert.Equal(0, va.IndexAt(PagingLevel.Pdpt));
        Assert.Equal(256, va.IndexAt(PagingLevel.Pd));
        Assert.Equal(510, va.IndexAt(PagingLevel.Pt));
        Assert.Equal(0xFFFUL, va.PageOffset(PageSize.Size4K));
        Assert.Equal(va, VirtualAddress.FromIndices(PagingMode.FiveLevel, [171, 511, 0, 256, 510], 0xFFF));

        Assert.Equal(0xFF00_0000_0000_0000UL, VirtualAddress.FromIndices(PagingMode.FiveLevel, [256, 0, 0, 0, 0]).Value);
        Assert.Equal(0x00FF_FFFF_FFFF_F000UL, VirtualAddress.FromIndices(PagingMode.FiveLevel, [255, 511, 511, 511, 511]).Value);
    }

    [Fact]
    public void FromIndices_refuses_wrong_counts_indices_and_offsets()
    {
        Assert.Throws<ArgumentException>(() => VirtualAddress.FromIndices(PagingMode.FourLevel, [0, 0, 0, 0, 0]));
        Assert.Throws<ArgumentException>(() => VirtualAddress.FromIndices(PagingMode.FiveLevel, [0, 0, 0, 0]));
        Assert.Throws<ArgumentOutOfRangeException>(() => VirtualAddress.FromIndices(PagingMode.FourLevel, [512, 0, 0, 0]));
        Assert.Throws<ArgumentOutOfRangeException>(() => VirtualAddress.FromIndices(PagingMode.FourLevel, [0, 0, 0, -1]));
        Assert.Throws<ArgumentOutOfRangeException>(() => VirtualAddress.FromIndices(PagingMode.FourLevel, [0, 0, 0, 0], 4096));
    }

    [Theory]
    [InlineData(0x0000_7FFF_FFFF_FFFFUL, PageSize.Size4K, 0xFFFUL, 0x0000_7FFF_FFFF_F000UL)]
    [InlineData(0x0000_7FFF_FFFF_FFFFUL, PageSize.Size2M, 0x1F_FFFFUL, 0x0000_7FFF_FFE0_0000UL)]
    [InlineData(0x0000_7FFF_FFFF_FFFFUL, PageSize.Size1G, 0x3FFF_FFFFUL, 0x0000_7FFF_C000_0000UL)]
    [InlineData(0xFFFF_8012_3456_789AUL, PageSize.Size4K, 0x89AUL, 0xFFFF_8012_3456_7000UL)]
    [InlineData(0xFFFF_8012_3456_789AUL, PageSize.Size2M, 0x16_789AUL, 0xFFFF_8012_3440_0000UL)]
    [InlineData(0xFFFF_8012_3456_789AUL, PageSize.Size1G, 0x3456_789AUL, 0xFFFF_8012_0000_0000UL)]
    [InlineData(0xFFFF_8000_4000_0000UL, PageSize.Size1G, 0UL, 0xFFFF_8000_4000_0000UL)]
    public void Page_offset_and_alignment_per_page_size(ulong value, PageSize size, ulong offset, ulong alignedDown)
    {
        VirtualAddress va = VirtualAddress.Create(value);
        Assert.Equal(offset, va.PageOffset(size));
        Assert.Equal(alignedDown, va.AlignDown(size).Value);
        Assert.Equal(offset == 0, va.IsAligned(size));
        Assert.True(va.AlignDown(size).IsAligned(size));

        // The same arithmetic on the low 52 bits as a physical address.
        PhysicalAddress pa = PhysicalAddress.CreateTruncate(value);
        Assert.Equal(offset, pa.PageOffset(size));
        Assert.Equal(alignedDown & 0x000F_FFFF_FFFF_FFFFUL, pa.AlignDown(size).Value);
        Assert.Equal(offset == 0, pa.IsAligned(size));
    }

    [Theory]
    [InlineData(PageSize.Size4K, 12, 0x1000UL, 0)]
    [InlineData(PageSize.Size2M, 21, 0x20_0000UL, 9)]
    [InlineData(PageSize.Size1G, 30, 0x4000_0000UL, 18)]
    public void Page_sizes_are_4K_2M_and_1G(PageSize size, int shift, ulong bytes, int order)
    {
        Assert.Equal(shift, size.Shift());
        Assert.Equal(bytes, size.Bytes());
        Assert.Equal(bytes - 1, size.OffsetMask());
        Assert.Equal(order, size.Order());
        Assert.Equal((PagingLevel)(order / 9 + 1), size.LeafLevel());
        Assert.Equal(size, size.LeafLevel().LeafPageSize());
    }

    [Fact]
    public void Alignment_of_physical_addresses_at_each_size()
    {
        Assert.True(PhysicalAddress.Create(0x4000_0000).IsAligned(PageSize.Size1G));
        Assert.True(PhysicalAddress.Create(0x4020_0000).IsAligned(PageSize.Size2M));
        Assert.False(PhysicalAddress.Create(0x4020_0000).IsAligned(PageSize.Size1G));
        Assert.True(PhysicalAddress.Create(0x4020_1000).IsAligned(PageSize.Size4K));
        Assert.False(PhysicalAddress.Create(0x4020_1000).IsAligned(PageSize.Size2M));
        Assert.False(PhysicalAddress.Create(0x4020_1008).IsAligned(PageSize.Size4K));
        Assert.Equal(0x4000_0000UL, PhysicalAddress.Create(0x7FFF_FFFF).AlignDown(PageSize.Size1G).Value);
    }

    private static string[] HexNumbers(string message) =>
        HexNumberRegex().Matches(message).Select(m => m.Value).ToArray();

    [GeneratedRegex("0x[0-9a-f]+")]
    private static partial Regex HexNumberRegex();
}
