using System;
using System.Collections.Concurrent;

namespace ThpCore.Paging;

/// <summary>
/// The reserved bits of a present paging-structure entry, as data: one mask per level and per value of
/// bit 7 (PS), for one combination of MAXPHYADDR, EFER.NXE, 1 GiB-page support and vendor, in the manner of
/// KVM's <c>rsvd_bits_mask</c> table. Intel SDM Vol. 3A §4.5 (Tables 4-14 … 4-19) and §4.7 list them:
/// <list type="bullet">
/// <item>bits 51:MAXPHYADDR of every entry;</item>
/// <item>bit 63 (XD) of every entry when EFER.NXE = 0;</item>
/// <item>bit 7 (PS) of a PML5E and a PML4E;</item>
/// <item>bit 7 (PS) of a PDPTE when the CPU has no 1 GiB pages;</item>
/// <item>bits 29:13 of a 1 GiB leaf and bits 20:13 of a 2 MiB leaf (the address bits below the page, except bit 12, which is PAT);</item>
/// <item>AMD only: bit 8 of a PML4E and a PML5E.</item>
/// </list>
/// Reserved bits are checked only when P = 1. Bits 62:52 and 11:9 are ignored, never reserved, in IA-32e paging.
/// </summary>
public sealed class ReservedBitMasks
{
    private static readonly ConcurrentDictionary<(int, bool, bool, CpuVendor), ReservedBitMasks> s_cache = new();

    // Index: (int)level * 2 + PS bit. Levels 1..5, so 12 slots with 0 and 1 unused.
    private readonly ulong[] _masks = new ulong[12];

    private ReservedBitMasks(int maxPhysicalAddressBits, bool noExecuteEnabled, bool supports1GPages, CpuVendor vendor)
    {
        MaxPhysicalAddressBits = maxPhysicalAddressBits;
        NoExecuteEnabled = noExecuteEnabled;
        Supports1GPages = supports1GPages;
        Vendor = vendor;

        ulong aboveMaxPhysical = ((1UL << PhysicalAddress.ArchitecturalMaxBits) - 1) & ~((1UL << maxPhysicalAddressBits) - 1);
        ulong common = aboveMaxPhysical | (noExecuteEnabled ? 0 : Bit63);
        ulong rootLevels = common | Bit7 | (vendor == CpuVendor.Amd ? Bit8 : 0);

        Set(PagingLevel.Pt, common, common);
        Set(PagingLevel.Pd, common, common | Bits20To13);
        Set(PagingLevel.Pdpt, common, supports1GPages ? common | Bits29To13 : common | Bit7);
        Set(PagingLevel.Pml4, rootLevels, rootLevels);
        Set(PagingLevel.Pml5, rootLevels, rootLevels);
    }

    private const ulong Bit7 = 1UL << 7;
    private const ulong Bit8 = 1UL << 8;
    private const ulong Bit63 = 1UL << 63;
    private const ulong Bits20To13 = 0x0000_0000_001F_E000UL;
    private const ulong Bits29To13 = 0x0000_0000_3FFF_E000UL;

    /// <summary>MAXPHYADDR these masks were made for.</summary>
    public int MaxPhysicalAddressBits { get; }

    /// <summary>EFER.NXE these masks were made for.</summary>
    public bool NoExecuteEnabled { get; }

    /// <summary>Whether 1 GiB pages are supported.</summary>
    public bool Supports1GPages { get; }

    /// <summary>Whose rules apply.</summary>
    public CpuVendor Vendor { get; }

    /// <summary>Gets the (shared, immutable) masks for one combination of features.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxPhysicalAddressBits"/> is not 32..52.</exception>
    public static ReservedBitMasks For(int maxPhysicalAddressBits, bool noExecuteEnabled, bool supports1GPages = true, CpuVendor vendor = CpuVendor.Intel)
    {
        if (maxPhysicalAddressBits is < 32 or > PhysicalAddress.ArchitecturalMaxBits)
        {
            throw new ArgumentOutOfRangeException(nameof(maxPhysicalAddressBits), maxPhysicalAddressBits, "MAXPHYADDR of an x86-64 CPU is 32 to 52 bits.");
        }

        return s_cache.GetOrAdd(
            (maxPhysicalAddressBits, noExecuteEnabled, supports1GPages, vendor),
            static key => new ReservedBitMasks(key.Item1, key.Item2, key.Item3, key.Item4));
    }

    /// <summary>The reserved-bit mask for an entry at <paramref name="level"/> whose bit 7 is <paramref name="bit7"/>.</summary>
    public ulong MaskFor(PagingLevel level, bool bit7) => _masks[((int)PagingLevelExtensions.Validate(level) * 2) + (bit7 ? 1 : 0)];

    /// <summary>The reserved bits set in a raw entry at <paramref name="level"/>; 0 for a not-present entry.</summary>
    public ulong ReservedBitsIn(PagingLevel level, ulong raw) =>
        (raw & 1) == 0 ? 0 : raw & MaskFor(level, (raw & Bit7) != 0);

    // Hot path: level already validated by the walker.
    internal ulong MaskUnchecked(int level, ulong raw) => _masks[(level * 2) + (int)((raw >> 7) & 1)];

    private void Set(PagingLevel level, ulong bit7Clear, ulong bit7Set)
    {
        _masks[(int)level * 2] = bit7Clear;
        _masks[((int)level * 2) + 1] = bit7Set;
    }
}
