using System;

namespace ThpCore.Paging;

/// <summary>The INVPCID invalidation types (Intel SDM Vol. 3A §4.10.4.1; Vol. 2 "INVPCID").</summary>
public enum InvpcidType : byte
{
    /// <summary>Type 0: the non-global translations of one linear address in one PCID.</summary>
    IndividualAddress = 0,

    /// <summary>Type 1: every non-global translation of one PCID.</summary>
    SingleContext = 1,

    /// <summary>Type 2: every translation of every PCID, global ones included.</summary>
    AllContextsIncludingGlobal = 2,

    /// <summary>Type 3: every non-global translation of every PCID.</summary>
    AllContexts = 3,
}

/// <summary>
/// How the TLB entries of different page sizes that cover one address relate (Intel SDM Vol. 3A §4.10.2.3,
/// §4.10.4.2; AMD Family 10h erratum 383). Entries of the same size are not compared with each other.
/// </summary>
[Flags]
public enum TlbSizeConflict : byte
{
    /// <summary>At most one page size has an entry for the address.</summary>
    None = 0,

    /// <summary>
    /// Entries of at least two page sizes cover the address. Harmless on Intel when nothing else is reported;
    /// a possible machine check on AMD Family 10h (erratum 383).
    /// </summary>
    SizesCoexist = 1,

    /// <summary>The entries translate the address to different physical addresses.</summary>
    FrameDiffers = 2,

    /// <summary>The entries carry different combined rights (R/W, U/S, XD).</summary>
    RightsDiffer = 4,

    /// <summary>
    /// The entries carry different other attributes: protection key, memory-type bits (PWT, PCD, PAT) or
    /// global. The dirty flag is not compared: a clean entry only makes the next write walk again.
    /// </summary>
    AttributesDiffer = 8,
}

/// <summary>How <see cref="Tlb.Translate(CpuState, IPhysicalMemory, VirtualAddress, AccessKind, Privilege, out TlbOutcome)"/> produced its result.</summary>
public enum TlbOutcome : byte
{
    /// <summary>A cached entry answered; no memory was read.</summary>
    Hit = 0,

    /// <summary>No entry covered the address; the tables were walked (and the result cached if it translated).</summary>
    Miss = 1,

    /// <summary>A write hit an entry cached with D = 0; the entry was dropped and the tables walked again so that D gets set.</summary>
    DirtyRewalk = 2,

    /// <summary>A hit failed the rights check and <see cref="TlbOptions.RewalkOnProtectionFault"/> is set; the entry was dropped and the tables walked again.</summary>
    ProtectionRewalk = 3,

    /// <summary>The address is not canonical: #GP before any lookup or walk; nothing counted.</summary>
    NonCanonical = 4,
}
