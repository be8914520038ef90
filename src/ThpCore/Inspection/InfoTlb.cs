using System;
using System.Collections.Generic;
using System.IO;
using ThpCore.Internal;
using ThpCore.Paging;

namespace ThpCore.Inspection;

/// <summary>
/// QEMU's <c>info tlb</c> monitor output for x86-64 guests, byte for byte: the format of <c>print_pte</c> in
/// QEMU's target/i386/monitor.c, so that a listing can be compared with <c>diff</c> against what a QEMU monitor
/// prints for the same guest. (Checked against two revisions of qemu/qemu, before and after <c>TARGET_FMT_plx</c>
/// became <c>HWADDR_FMT_plx</c>, both <c>"%016" PRIx64</c>; proposed reworks of <c>info tlb</c> are not covered.)
/// </summary>
/// <remarks>
/// <para>Each line is <c>printf("%016" PRIx64 ": %016" PRIx64 " %c%c%c%c%c%c%c%c%c\n", ...)</c>: the canonical
/// virtual address, the physical address, and the nine flags <c>XGPDACTUW</c> read from the leaf's own bits only
/// (never combined with the upper levels): X = bit 63 (XD), G = bit 8, P = bit 7 (PS), D = bit 6, A = bit 5,
/// C = bit 4 (PCD), T = bit 3 (PWT), U = bit 2, W = bit 1; '-' where the bit is clear. Hexadecimal is lowercase
/// and zero-padded to 16 digits; the line ends with '\n' whatever the platform.</para>
/// <para>The physical address is the raw leaf ANDed with QEMU's masks, which keep bits 49 and below only:
/// <c>0x3fffffffff000</c> (bits 49:12) for a 4 KiB page, <c>0x3ffffffe00000</c> (bits 49:21) for 2 MiB and
/// <c>0x3ffffc0000000</c> (bits 49:30) for 1 GiB. So bit 12 of a large leaf (its PAT bit) and its reserved bits
/// 20:13 or 29:13 never show, and neither do address bits 51:50.</para>
/// <para>For a 4 KiB PTE QEMU clears bit 7 before printing (<c>pte &amp; ~PG_PSE_MASK</c>), because there it is PAT,
/// not PS: 'P' never appears on a 4 KiB line, and a PTE's PAT bit is not shown at all. For 2 MiB and 1 GiB leaves
/// PS is set, so 'P' always appears. The protection key (bits 62:59) and the software bits are not shown.</para>
/// <para>The traversal that produced the mappings matters too: <see cref="PageTableEnumerator"/> lists the same
/// mappings in the same order as QEMU, except around entries QEMU does not check (reserved bits, PS in a PML4E)
/// and table addresses above bit 49 (see its remarks).</para>
/// </remarks>
public static class InfoTlb
{
    /// <summary>The length of one line, including its '\n': 16 + 2 + 16 + 1 + 9 + 1.</summary>
    public const int LineLength = 45;

    private const ulong Mask4K = 0x3_FFFF_FFFF_F000UL;
    private const ulong Mask2M = 0x3_FFFF_FFE0_0000UL;
    private const ulong Mask1G = 0x3_FFFF_C000_0000UL;
    private const ulong Bit7 = 1UL << 7;

    /// <summary>
    /// The line QEMU prints for <paramref name="mapping"/>, including the final '\n'. The address is printed as
    /// given (the enumerator's addresses are already canonical); the page size decides the mask and whether bit 7
    /// is cleared, as the level does in QEMU.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="mapping"/> has an undefined page size.</exception>
    public static string FormatLine(Mapping mapping)
    {
        Span<char> line = stackalloc char[LineLength];
        Format(mapping, line);
        return new string(line);
    }

    /// <summary>Writes one line per mapping, as <see cref="FormatLine"/> does, each ending with '\n' (not <see cref="TextWriter.NewLine"/>).</summary>
    /// <exception cref="ArgumentNullException"><paramref name="writer"/> or <paramref name="mappings"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A mapping has an undefined page size.</exception>
    public static void Write(TextWriter writer, IEnumerable<Mapping> mappings)
    {
        ArgumentNullException.ThrowIfNull(writer);
        ArgumentNullException.ThrowIfNull(mappings);
        Span<char> line = stackalloc char[LineLength];
        foreach (Mapping mapping in mappings)
        {
            Format(mapping, line);
            writer.Write(line);
        }
    }

    private static void Format(Mapping mapping, Span<char> line)
    {
        ulong pte = mapping.Leaf.Raw;
        ulong mask;
        switch (mapping.Size)
        {
            case PageSize.Size4K:
                pte &= ~Bit7;
                mask = Mask4K;
                break;
            case PageSize.Size2M:
                mask = Mask2M;
                break;
            case PageSize.Size1G:
                mask = Mask1G;
                break;
            default:
                ThrowHelper.ThrowArgumentOutOfRange(nameof(mapping), mapping.Size, "A page size is 4 KiB, 2 MiB or 1 GiB.");
                return;
        }

        WriteHex16(mapping.Address.Value, line);
        line[16] = ':';
        line[17] = ' ';
        WriteHex16(pte & mask, line[18..]);
        line[34] = ' ';
        line[35] = (pte & (1UL << 63)) != 0 ? 'X' : '-';
        line[36] = (pte & (1UL << 8)) != 0 ? 'G' : '-';
        line[37] = (pte & Bit7) != 0 ? 'P' : '-';
        line[38] = (pte & (1UL << 6)) != 0 ? 'D' : '-';
        line[39] = (pte & (1UL << 5)) != 0 ? 'A' : '-';
        line[40] = (pte & (1UL << 4)) != 0 ? 'C' : '-';
        line[41] = (pte & (1UL << 3)) != 0 ? 'T' : '-';
        line[42] = (pte & (1UL << 2)) != 0 ? 'U' : '-';
        line[43] = (pte & (1UL << 1)) != 0 ? 'W' : '-';
        line[44] = '\n';
    }

    private static void WriteHex16(ulong value, Span<char> destination)
    {
        for (int i = 15; i >= 0; i--)
        {
            destination[i] = "0123456789abcdef"[(int)(value & 0xF)];
            value >>= 4;
        }
    }
}
