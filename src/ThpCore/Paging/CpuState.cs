using System;
using System.Globalization;
using ThpCore.Internal;

namespace ThpCore.Paging;

/// <summary>The CR4 bits that shape IA-32e paging, at their architectural positions (Intel SDM Vol. 3A §2.5).</summary>
[Flags]
public enum Cr4Flags : ulong
{
    /// <summary>No bit.</summary>
    None = 0,

    /// <summary>CR4.PAE (bit 5): required for IA-32e paging; this model assumes it.</summary>
    Pae = 1UL << 5,

    /// <summary>CR4.PGE (bit 7): global pages; G in a leaf makes its TLB entry survive CR3 loads.</summary>
    Pge = 1UL << 7,

    /// <summary>CR4.LA57 (bit 12): 5-level paging.</summary>
    La57 = 1UL << 12,

    /// <summary>CR4.PCIDE (bit 17): process-context identifiers in CR3[11:0].</summary>
    Pcide = 1UL << 17,

    /// <summary>CR4.SMEP (bit 20): supervisor fetches from user-mode addresses fault.</summary>
    Smep = 1UL << 20,

    /// <summary>CR4.SMAP (bit 21): supervisor data accesses to user-mode addresses fault unless explicit with RFLAGS.AC = 1.</summary>
    Smap = 1UL << 21,

    /// <summary>CR4.PKE (bit 22): protection keys for user-mode addresses, checked against PKRU.</summary>
    Pke = 1UL << 22,
}

/// <summary>The IA32_EFER bits that shape paging.</summary>
[Flags]
public enum EferFlags : ulong
{
    /// <summary>No bit.</summary>
    None = 0,

    /// <summary>EFER.LME (bit 8): long mode enable; this model assumes IA-32e mode.</summary>
    Lme = 1UL << 8,

    /// <summary>EFER.LMA (bit 10): long mode active; this model assumes IA-32e mode.</summary>
    Lma = 1UL << 10,

    /// <summary>EFER.NXE (bit 11): bit 63 of entries is XD; when clear, bit 63 is reserved.</summary>
    Nxe = 1UL << 11,
}

/// <summary>
/// The processor state a page walk depends on: CR0.WP, CR3, CR4 (PGE, PCIDE, SMEP, SMAP, PKE, LA57),
/// EFER.NXE, RFLAGS.AC, PKRU, and the CPU's features (MAXPHYADDR). Immutable; <c>With…</c> methods make
/// changed copies.
/// </summary>
/// <remarks>
/// The model is of IA-32e paging (4-level or 5-level): CR0.PG, CR4.PAE, EFER.LME and EFER.LMA are taken as set
/// whatever the raw values say. CR4.PKS, CET, LAM and HLAT are not modelled. Raw register values (for example
/// from QEMU's <c>info registers</c>) are accepted; bits this model does not use are kept but ignored.
/// </remarks>
public sealed class CpuState
{
    private const ulong Cr3NoFlushBit = 1UL << 63;

    private CpuState(CpuFeatures features, ulong cr3, Cr4Flags cr4, EferFlags efer, bool writeProtect, bool alignmentCheck, uint pkru)
    {
        ArgumentNullException.ThrowIfNull(features);
        Features = features;
        Cr4 = cr4;
        Efer = efer;
        WriteProtect = writeProtect;
        AlignmentCheck = alignmentCheck;
        Pkru = pkru;
        Cr3 = ValidateCr3(cr3, features.MaxPhysicalAddressBits);
        ReservedBits = ReservedBitMasks.For(features.MaxPhysicalAddressBits, NoExecuteEnabled, features.Supports1GPages, features.Vendor);
    }

    /// <summary>
    /// Creates a CPU state. Defaults: CR0.WP = 1, CR4 = PAE, EFER = LME | LMA | NXE, RFLAGS.AC = 0, PKRU = 0,
    /// <see cref="CpuFeatures.Default"/>.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="cr3"/> sets bits 62:MAXPHYADDR (MOV to CR3 would #GP) or bit 63.</exception>
    public static CpuState Create(
        ulong cr3,
        Cr4Flags cr4 = Cr4Flags.Pae,
        EferFlags efer = EferFlags.Lme | EferFlags.Lma | EferFlags.Nxe,
        bool writeProtect = true,
        bool alignmentCheck = false,
        uint pkru = 0,
        CpuFeatures? features = null) =>
        new(features ?? CpuFeatures.Default, cr3, cr4, efer, writeProtect, alignmentCheck, pkru);

    /// <summary>What CPUID reports: MAXPHYADDR, 1 GiB pages, vendor.</summary>
    public CpuFeatures Features { get; }

    /// <summary>MAXPHYADDR, from <see cref="Features"/>.</summary>
    public int MaxPhysicalAddressBits => Features.MaxPhysicalAddressBits;

    /// <summary>The raw CR3 (bit 63, the MOV-to-CR3 no-flush hint, is never stored).</summary>
    public ulong Cr3 { get; }

    /// <summary>The raw CR4.</summary>
    public Cr4Flags Cr4 { get; }

    /// <summary>The raw IA32_EFER.</summary>
    public EferFlags Efer { get; }

    /// <summary>CR0.WP: supervisor writes honour R/W when set.</summary>
    public bool WriteProtect { get; }

    /// <summary>RFLAGS.AC: with CR4.SMAP, lets explicit supervisor data accesses reach user-mode addresses.</summary>
    public bool AlignmentCheck { get; }

    /// <summary>PKRU: for key i, bit 2i is AD (access disable) and bit 2i+1 is WD (write disable).</summary>
    public uint Pkru { get; }

    /// <summary>4-level, or 5-level when CR4.LA57 is set.</summary>
    public PagingMode PagingMode => (Cr4 & Cr4Flags.La57) != 0 ? PagingMode.FiveLevel : PagingMode.FourLevel;

    /// <summary>The physical address of the root table (PML4, or PML5 with LA57): CR3 bits MAXPHYADDR-1:12.</summary>
    public PhysicalAddress RootTable => PhysicalAddress.FromMaskedBits(Cr3 & PageTableEntry.AddressMask4K);

    /// <summary>CR4.PCIDE.</summary>
    public bool PcidEnabled => (Cr4 & Cr4Flags.Pcide) != 0;

    /// <summary>The current PCID (CR3[11:0]) when CR4.PCIDE = 1, else 0.</summary>
    public int Pcid => PcidEnabled ? (int)(Cr3 & 0xFFF) : 0;

    /// <summary>CR3.PWT (bit 3) when CR4.PCIDE = 0 (it is a PCID bit otherwise).</summary>
    public bool RootWriteThrough => !PcidEnabled && (Cr3 & 0x8) != 0;

    /// <summary>CR3.PCD (bit 4) when CR4.PCIDE = 0 (it is a PCID bit otherwise).</summary>
    public bool RootCacheDisabled => !PcidEnabled && (Cr3 & 0x10) != 0;

    /// <summary>CR4.PGE.</summary>
    public bool GlobalPagesEnabled => (Cr4 & Cr4Flags.Pge) != 0;

    /// <summary>CR4.SMEP.</summary>
    public bool SmepEnabled => (Cr4 & Cr4Flags.Smep) != 0;

    /// <summary>CR4.SMAP.</summary>
    public bool SmapEnabled => (Cr4 & Cr4Flags.Smap) != 0;

    /// <summary>CR4.PKE.</summary>
    public bool ProtectionKeysEnabled => (Cr4 & Cr4Flags.Pke) != 0;

    /// <summary>EFER.NXE.</summary>
    public bool NoExecuteEnabled => (Efer & EferFlags.Nxe) != 0;

    /// <summary>The reserved-bit masks that apply in this state.</summary>
    public ReservedBitMasks ReservedBits { get; }

    /// <summary>A copy with a new CR3.</summary>
    /// <exception cref="ArgumentException">Bits 62:MAXPHYADDR or bit 63 are set.</exception>
    public CpuState WithCr3(ulong cr3) => new(Features, cr3, Cr4, Efer, WriteProtect, AlignmentCheck, Pkru);

    /// <summary>A copy whose CR3 points at <paramref name="root"/> with PCID (or PWT/PCD bits) <paramref name="low12"/>.</summary>
    public CpuState WithRoot(PhysicalAddress root, int low12 = 0)
    {
        if (!root.IsAligned(PageSize.Size4K))
        {
            ThrowHelper.ThrowArgument(nameof(root), $"The root table must be 4 KiB-aligned; {root} is not.");
        }

        if ((uint)low12 > 0xFFF)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(low12), low12, "CR3[11:0] is 0..0xfff.");
        }

        return WithCr3(root.Value | (uint)low12);
    }

    /// <summary>A copy with a new CR4.</summary>
    public CpuState WithCr4(Cr4Flags cr4) => new(Features, Cr3, cr4, Efer, WriteProtect, AlignmentCheck, Pkru);

    /// <summary>A copy with a new EFER.</summary>
    public CpuState WithEfer(EferFlags efer) => new(Features, Cr3, Cr4, efer, WriteProtect, AlignmentCheck, Pkru);

    /// <summary>A copy with CR0.WP set or cleared.</summary>
    public CpuState WithWriteProtect(bool value) => new(Features, Cr3, Cr4, Efer, value, AlignmentCheck, Pkru);

    /// <summary>A copy with RFLAGS.AC set or cleared.</summary>
    public CpuState WithAlignmentCheck(bool value) => new(Features, Cr3, Cr4, Efer, WriteProtect, value, Pkru);

    /// <summary>A copy with a new PKRU.</summary>
    public CpuState WithPkru(uint pkru) => new(Features, Cr3, Cr4, Efer, WriteProtect, AlignmentCheck, pkru);

    /// <summary>A copy with other CPU features.</summary>
    /// <exception cref="ArgumentException">CR3 does not fit the new MAXPHYADDR.</exception>
    public CpuState WithFeatures(CpuFeatures features) => new(features, Cr3, Cr4, Efer, WriteProtect, AlignmentCheck, Pkru);

    /// <summary>One line, e.g. <c>CR3=0x1000 CR4=PAE|PGE EFER.NXE=1 WP=1 AC=0 PKRU=0x0 MAXPHYADDR=46</c>.</summary>
    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"CR3={ThrowHelper.Hex(Cr3)} CR4={Cr4} EFER.NXE={(NoExecuteEnabled ? 1 : 0)} WP={(WriteProtect ? 1 : 0)} AC={(AlignmentCheck ? 1 : 0)} PKRU={ThrowHelper.Hex(Pkru)} MAXPHYADDR={MaxPhysicalAddressBits} {PagingMode}");

    private static ulong ValidateCr3(ulong cr3, int maxPhysicalAddressBits)
    {
        if ((cr3 & Cr3NoFlushBit) != 0)
        {
            ThrowHelper.ThrowArgument(nameof(cr3), $"CR3 bit 63 is the MOV-to-CR3 no-flush hint and is never stored; pass it to Tlb.LoadCr3 instead ({ThrowHelper.Hex(cr3)}).");
        }

        // Bits 62:61 are LAM controls on CPUs with LAM (not modelled); bits 60:MAXPHYADDR are reserved.
        ulong reserved = cr3 & ~Cr3NoFlushBit & ~((1UL << maxPhysicalAddressBits) - 1);
        if (reserved != 0)
        {
            ThrowHelper.ThrowArgument(nameof(cr3), $"CR3 {ThrowHelper.Hex(cr3)} sets reserved bits {ThrowHelper.Hex(reserved)} above MAXPHYADDR {maxPhysicalAddressBits}; MOV to CR3 would raise #GP.");
        }

        return cr3;
    }
}
