using System;
using ThpCore.Internal;

namespace ThpCore.Paging;

/// <summary>Whose reading of the reserved bits to apply where Intel and AMD differ.</summary>
public enum CpuVendor : byte
{
    /// <summary>Intel SDM: bit 8 of a non-leaf entry is ignored.</summary>
    Intel = 0,

    /// <summary>AMD APM (as KVM models it): bit 8 of a PML4E/PML5E is reserved.</summary>
    Amd = 1,
}

/// <summary>
/// What CPUID would report about paging: MAXPHYADDR (CPUID.80000008H:EAX[7:0]), 1 GiB pages
/// (CPUID.80000001H:EDX[26]) and the vendor. Immutable.
/// </summary>
public sealed record CpuFeatures
{
    private readonly int _maxPhysicalAddressBits = 46;

    /// <summary>A typical current CPU: MAXPHYADDR 46, 1 GiB pages, Intel.</summary>
    public static CpuFeatures Default { get; } = new();

    /// <summary>MAXPHYADDR, 32 to 52 bits. Bits 51:MAXPHYADDR of every present entry are reserved.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Outside 32..52.</exception>
    public int MaxPhysicalAddressBits
    {
        get => _maxPhysicalAddressBits;
        init
        {
            if (value is < 32 or > PhysicalAddress.ArchitecturalMaxBits)
            {
                ThrowHelper.ThrowArgumentOutOfRange(nameof(MaxPhysicalAddressBits), value, "MAXPHYADDR of an x86-64 CPU is 32 to 52 bits.");
            }

            _maxPhysicalAddressBits = value;
        }
    }

    /// <summary>Whether a PDPTE may map a 1 GiB page; without it, PS in a PDPTE is a reserved bit.</summary>
    public bool Supports1GPages { get; init; } = true;

    /// <summary>The vendor whose reserved-bit rules apply.</summary>
    public CpuVendor Vendor { get; init; } = CpuVendor.Intel;
}
