using System;
using ThpCore.Paging;

namespace ThpCore.Tests.Paging;

/// <summary>The inputs of one access-rights decision: the access, the combined rights of the walk, and the CPU bits.</summary>
internal readonly record struct RightsCase(
    Privilege Privilege,
    AccessKind Access,
    bool UserPage,
    bool WritablePage,
    bool ExecuteDisable,
    int Key,
    bool Nxe,
    bool Wp,
    bool Smep,
    bool Smap,
    bool Ac,
    bool Pke,
    uint Pkru)
{
    public override string ToString() =>
        $"{Privilege} {Access} page[U/S={B(UserPage)} R/W={B(WritablePage)} XD={B(ExecuteDisable)} key={Key}] " +
        $"NXE={B(Nxe)} WP={B(Wp)} SMEP={B(Smep)} SMAP={B(Smap)} AC={B(Ac)} PKE={B(Pke)} PKRU=0x{Pkru:x8}";

    private static int B(bool b) => b ? 1 : 0;
}

/// <summary>
/// An oracle for the #PF outcome of an access, written from the Intel SDM (Vol. 3A §4.5 Table 4-19 reserved
/// XD, §4.6.1 access rights for 4-level and 5-level paging, §4.6.2 protection keys, §4.7 error code), in the
/// manner of KVM's <c>update_permission_bitmask</c> / <c>update_pkru_bitmask</c>: one rule per row of the SDM
/// table, no code shared with the library. <b>Never</b> calls <c>PageWalker.CheckRights</c>.
/// </summary>
internal static class RightsOracle
{
    /// <summary>
    /// The expected page-fault error code for an access whose walk reached a leaf with every entry present, or
    /// <see langword="null"/> if the access is allowed. XD = 1 with EFER.NXE = 0 is a reserved-bit fault.
    /// </summary>
    public static PageFaultErrorCode? Expected(in RightsCase c)
    {
        // SDM §4.5 (Table 4-19 and friends) / §4.7: with IA32_EFER.NXE = 0, bit 63 of a present entry is
        // reserved; the walk stops there and the error code has RSVD = 1 and P = 1, never PK.
        if (c.ExecuteDisable && !c.Nxe)
        {
            return PageFaultErrorCode.Present | PageFaultErrorCode.ReservedBit | AccessBits(c.Privilege, c.Access, c.Nxe, c.Smep);
        }

        bool allowed = AllowedIgnoringKeys(c);
        bool keyViolation = KeyViolation(c);
        if (allowed && !keyViolation)
        {
            return null;
        }

        // SDM §4.7: P = 1 for any fault not caused by a not-present entry; PK = 1 exactly when the PKRU rule
        // (§4.6.2) forbids the access, whether or not another rule also forbids it.
        return PageFaultErrorCode.Present
            | (keyViolation ? PageFaultErrorCode.ProtectionKey : PageFaultErrorCode.None)
            | AccessBits(c.Privilege, c.Access, c.Nxe, c.Smep);
    }

    /// <summary>The W/R, U/S and I/D bits of the error code that describe the access itself (SDM §4.7).</summary>
    public static PageFaultErrorCode AccessBits(Privilege privilege, AccessKind access, bool nxe, bool smep)
    {
        PageFaultErrorCode code = PageFaultErrorCode.None;

        // W/R (bit 1): "the access causing the page-fault exception was a write".
        if (access == AccessKind.Write)
        {
            code |= PageFaultErrorCode.Write;
        }

        // U/S (bit 2): "a user-mode access caused the fault"; implicit supervisor-mode accesses made at CPL 3
        // (GDT/IDT/TSS) are supervisor-mode accesses and report 0.
        if (privilege == Privilege.User)
        {
            code |= PageFaultErrorCode.User;
        }

        // I/D (bit 4): an instruction fetch AND (CR4.SMEP = 1 OR (CR4.PAE = 1 AND EFER.NXE = 1)); PAE is 1 in
        // 4-level and 5-level paging.
        if (access == AccessKind.Fetch && (smep || nxe))
        {
            code |= PageFaultErrorCode.InstructionFetch;
        }

        return code;
    }

    /// <summary>SDM §4.6.1, "Determination of Access Rights", for 4-level and 5-level paging, row by row.</summary>
    private static bool AllowedIgnoringKeys(in RightsCase c)
    {
        bool user = c.Privilege == Privilege.User;
        bool explicitAccess = c.Privilege != Privilege.ImplicitSupervisor;

        // "Execute-disable" only means something with EFER.NXE = 1 (with NXE = 0 XD is reserved, handled above).
        bool executable = !c.Nxe || !c.ExecuteDisable;

        // SMAP condition for supervisor data accesses to user-mode addresses: with CR4.SMAP = 1, "explicit
        // accesses with EFLAGS.AC = 1" may proceed; explicit accesses with AC = 0 and all implicit accesses may not.
        bool smapAllows = !c.Smap || (explicitAccess && c.Ac);

        return (user, c.Access, c.UserPage) switch
        {
            // ---- User-mode accesses (CPL = 3) ----
            // "User-mode accesses ... Data may be read / written / instructions fetched only from user-mode
            // addresses": a user access to a supervisor-mode address (U/S = 0 at some level) always faults.
            (true, _, false) => false,

            // User-mode data read of a user-mode address: allowed (protection keys are checked separately).
            (true, AccessKind.Read, true) => true,

            // User-mode data write: "only to user-mode addresses with R/W = 1 at every level"; CR0.WP is
            // irrelevant for user-mode accesses.
            (true, AccessKind.Write, true) => c.WritablePage,

            // User-mode instruction fetch: NXE = 0 → any user-mode address; NXE = 1 → only where XD = 0 at every level.
            (true, AccessKind.Fetch, true) => executable,

            // ---- Supervisor-mode accesses (CPL < 3, explicit or implicit) ----
            // Supervisor data read of a supervisor-mode address: always allowed (implicit or explicit).
            (false, AccessKind.Read, false) => true,

            // Supervisor data read of a user-mode address: CR4.SMAP = 0 → allowed; SMAP = 1 → only explicit
            // reads with EFLAGS.AC = 1 (implicit reads never).
            (false, AccessKind.Read, true) => smapAllows,

            // Supervisor data write to a supervisor-mode address: CR0.WP = 0 → allowed even if read-only;
            // CR0.WP = 1 → only if R/W = 1 at every level.
            (false, AccessKind.Write, false) => !c.Wp || c.WritablePage,

            // Supervisor data write to a user-mode address: the same CR0.WP rule, and with CR4.SMAP = 1 only
            // explicit writes with EFLAGS.AC = 1.
            (false, AccessKind.Write, true) => (!c.Wp || c.WritablePage) && smapAllows,

            // Supervisor instruction fetch from a supervisor-mode address: NXE = 0 → allowed; NXE = 1 → XD = 0
            // at every level. (Implicit accesses are data accesses; an "implicit fetch" is treated as supervisor.)
            (false, AccessKind.Fetch, false) => executable,

            // Supervisor instruction fetch from a user-mode address: CR4.SMEP = 1 → never; SMEP = 0 → as for a
            // supervisor-mode address.
            (false, AccessKind.Fetch, true) => !c.Smep && executable,

            _ => throw new ArgumentOutOfRangeException(nameof(c), c, "Unknown access."),
        };
    }

    /// <summary>SDM §4.6.2, "Protection Keys" (PKRU, user-mode addresses, CR4.PKE).</summary>
    private static bool KeyViolation(in RightsCase c)
    {
        // Keys apply only with CR4.PKE = 1 (IA-32e paging), only to user-mode addresses (PKRS/CR4.PKS for
        // supervisor-mode addresses is not modelled), and "instruction fetches are not affected".
        if (!c.Pke || !c.UserPage || c.Access == AccessKind.Fetch)
        {
            return false;
        }

        // PKRU bit 2i is ADi, bit 2i+1 is WDi, for the key i in bits 62:59 of the leaf.
        bool ad = ((c.Pkru >> (2 * c.Key)) & 1) != 0;
        bool wd = ((c.Pkru >> ((2 * c.Key) + 1)) & 1) != 0;

        // "If ADi = 1, no data accesses are permitted" — user or supervisor, read or write.
        if (ad)
        {
            return true;
        }

        // "If WDi = 1, write accesses are not permitted ... for user-mode accesses, and for supervisor-mode
        // accesses only if CR0.WP = 1" (with WP = 0 supervisor writes ignore WD).
        return c.Access == AccessKind.Write && wd && (c.Privilege == Privilege.User || c.Wp);
    }
}
