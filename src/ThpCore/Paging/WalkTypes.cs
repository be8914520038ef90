using System;

namespace ThpCore.Paging;

/// <summary>What kind of access a translation is for.</summary>
public enum AccessKind : byte
{
    /// <summary>A data read.</summary>
    Read = 0,

    /// <summary>A data write.</summary>
    Write = 1,

    /// <summary>An instruction fetch.</summary>
    Fetch = 2,
}

/// <summary>Who makes the access (Intel SDM Vol. 3A §4.6.1).</summary>
public enum Privilege : byte
{
    /// <summary>An explicit supervisor-mode access (CPL &lt; 3). With SMAP it may reach user-mode addresses only when RFLAGS.AC = 1.</summary>
    Supervisor = 0,

    /// <summary>A user-mode access (CPL = 3).</summary>
    User = 1,

    /// <summary>
    /// An implicit supervisor-mode access, such as the CPU reading the GDT, IDT or TSS, even at CPL 3. SMAP
    /// applies to it regardless of RFLAGS.AC, and its page-fault error code has U/S = 0.
    /// </summary>
    ImplicitSupervisor = 2,
}

/// <summary>The page-fault error code (Intel SDM Vol. 3A §4.7, Figure 4-12).</summary>
[Flags]
public enum PageFaultErrorCode : uint
{
    /// <summary>P = 0: the fault was caused by a not-present entry.</summary>
    None = 0,

    /// <summary>P (bit 0): the fault was not caused by a not-present entry (protection, reserved bit or protection key).</summary>
    Present = 1u << 0,

    /// <summary>W/R (bit 1): the access was a write.</summary>
    Write = 1u << 1,

    /// <summary>U/S (bit 2): the access was a user-mode access.</summary>
    User = 1u << 2,

    /// <summary>RSVD (bit 3): a reserved bit was set in some entry; always with P.</summary>
    ReservedBit = 1u << 3,

    /// <summary>I/D (bit 4): an instruction fetch, reported only when CR4.SMEP = 1 or EFER.NXE = 1.</summary>
    InstructionFetch = 1u << 4,

    /// <summary>PK (bit 5): a data access to a user-mode address that PKRU forbids.</summary>
    ProtectionKey = 1u << 5,
}

/// <summary>How a walk ended.</summary>
public enum WalkStatus : byte
{
    /// <summary>The address translated; the access is allowed.</summary>
    Translated = 0,

    /// <summary>A page fault (#PF, vector 14); see <see cref="WalkResult.ErrorCode"/> and <see cref="WalkResult.FaultLevel"/>.</summary>
    PageFault = 1,

    /// <summary>The address is not canonical: #GP(0) before any paging, no page fault and no CR2 write.</summary>
    GeneralProtection = 2,

    /// <summary>
    /// A paging-structure entry lies outside the physical memory provided. Real platforms differ (reads of
    /// unbacked addresses usually return all ones); the model stops and reports where.
    /// </summary>
    PhysicalMemoryError = 3,
}

/// <summary>The access rights of a translation, combined over every entry of the walk (Intel SDM Vol. 3A §4.6.1).</summary>
[Flags]
public enum EffectiveRights : byte
{
    /// <summary>Read-only, supervisor-mode, executable.</summary>
    None = 0,

    /// <summary>R/W = 1 in every entry.</summary>
    Writable = 1,

    /// <summary>U/S = 1 in every entry: a user-mode address.</summary>
    User = 2,

    /// <summary>XD = 1 in some entry (only with EFER.NXE = 1).</summary>
    ExecuteDisable = 4,
}

/// <summary>
/// What a walk that ends in a fault leaves behind in the accessed (A) bits. The SDM leaves this partly
/// model-specific (Vol. 3A §4.8, §6.15 "Interrupt 14"): the PDE's A may be set on a protection fault, the
/// PTE's is unspecified. D is never set by a faulting access under any policy.
/// </summary>
public enum AccessedOnFaultPolicy : byte
{
    /// <summary>Nothing is written unless every check passes (Bochs' behaviour). The default.</summary>
    NothingSet = 0,

    /// <summary>
    /// A is set in each non-leaf entry as the walk passes it, before the entries below are read, so a walk
    /// that faults lower down leaves those A bits set; the leaf's A and D are set only on success (QEMU TCG's
    /// behaviour).
    /// </summary>
    UpperLevelsAsWalked = 1,
}

/// <summary>Options of a walk. The default is the architectural walk with the <see cref="AccessedOnFaultPolicy.NothingSet"/> policy.</summary>
public readonly record struct WalkOptions
{
    /// <summary>What a faulting walk leaves in the A bits.</summary>
    public AccessedOnFaultPolicy AccessedOnFault { get; init; }

    /// <summary>Walk without writing anything (no A or D updates): a debugger's or an inspector's view.</summary>
    public bool Probe { get; init; }
}
