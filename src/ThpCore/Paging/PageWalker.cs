using System;
using System.Runtime.CompilerServices;

namespace ThpCore.Paging;

/// <summary>
/// The architectural IA-32e page walk (Intel SDM Vol. 3A §4.5 translation, §4.6 access rights, §4.7
/// page-fault error code, §4.8 accessed and dirty flags).
/// </summary>
/// <remarks>
/// <para>
/// Order of checks, top-down, first failure wins: a non-canonical address is #GP before any paging; at each
/// level a not-present entry faults with P = 0, a reserved bit with RSVD = 1 and P = 1; at the leaf the rights
/// combined over all levels (R/W and U/S ANDed, XD ORed) are checked against CR0.WP, SMEP, SMAP with
/// RFLAGS.AC, EFER.NXE and, for user-mode addresses with CR4.PKE, PKRU.
/// </para>
/// <para>
/// A and D are set with compare-exchange against the values read; if any entry changed in between, the whole
/// walk starts again, as QEMU does. On success A is set in every entry used and D in the leaf on a write.
/// What a faulting walk leaves is chosen by <see cref="WalkOptions.AccessedOnFault"/>.
/// </para>
/// <para>Not modelled: CR4.PKS (supervisor protection keys), CET shadow stacks, LAM, HLAT, SGX, memory types.</para>
/// </remarks>
public static class PageWalker
{
    private const ulong P = 1UL << 0;
    private const ulong RW = 1UL << 1;
    private const ulong US = 1UL << 2;
    private const ulong A = 1UL << 5;
    private const ulong D = 1UL << 6;
    private const ulong PS = 1UL << 7;
    private const ulong XD = 1UL << 63;

    /// <summary>Translates <paramref name="address"/> for one access, setting A/D as the CPU would.</summary>
    /// <param name="cpu">Control registers, PKRU and CPU features.</param>
    /// <param name="memory">Physical memory holding the paging structures.</param>
    /// <param name="address">The linear address accessed (may be non-canonical: that is a #GP result).</param>
    /// <param name="access">Read, write or instruction fetch.</param>
    /// <param name="privilege">User, supervisor, or implicit supervisor.</param>
    public static WalkResult Translate(CpuState cpu, IPhysicalMemory memory, VirtualAddress address, AccessKind access, Privilege privilege) =>
        Translate(cpu, memory, address, access, privilege, default, null);

    /// <summary>Translates <paramref name="address"/> for one access with explicit options and an optional trace.</summary>
    /// <param name="cpu">Control registers, PKRU and CPU features.</param>
    /// <param name="memory">Physical memory holding the paging structures.</param>
    /// <param name="address">The linear address accessed (may be non-canonical: that is a #GP result).</param>
    /// <param name="access">Read, write or instruction fetch.</param>
    /// <param name="privilege">User, supervisor, or implicit supervisor.</param>
    /// <param name="options">A/D policy and probe mode.</param>
    /// <param name="trace">Receives every entry read, or <see langword="null"/>.</param>
    /// <exception cref="ArgumentNullException"><paramref name="cpu"/> or <paramref name="memory"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="access"/> or <paramref name="privilege"/> is not a defined value.</exception>
    public static WalkResult Translate(
        CpuState cpu,
        IPhysicalMemory memory,
        VirtualAddress address,
        AccessKind access,
        Privilege privilege,
        in WalkOptions options,
        WalkTrace? trace)
    {
        ArgumentNullException.ThrowIfNull(cpu);
        ArgumentNullException.ThrowIfNull(memory);
        if ((uint)access > (uint)AccessKind.Fetch)
        {
            throw new ArgumentOutOfRangeException(nameof(access), access, "An access is Read, Write or Fetch.");
        }

        if ((uint)privilege > (uint)Privilege.ImplicitSupervisor)
        {
            throw new ArgumentOutOfRangeException(nameof(privilege), privilege, "A privilege is Supervisor, User or ImplicitSupervisor.");
        }

        if (!address.IsCanonicalIn(cpu.PagingMode))
        {
            return new WalkResult(WalkStatus.GeneralProtection, address, 0, cpu.PagingMode.RootLevel(), 0, EffectiveRights.None, PageFaultErrorCode.None);
        }

        if (trace is null && options.AccessedOnFault == AccessedOnFaultPolicy.NothingSet && memory is SparsePhysicalMemory sparse
            && TryTranslateFast(cpu, sparse, address, access, privilege, options.Probe, out WalkResult fast))
        {
            return fast;
        }

        bool restarted = false;
        while (true)
        {
            WalkResult result = WalkOnce(cpu, memory, address, access, privilege, options, trace, restarted, out bool restart);
            if (!restart)
            {
                return result;
            }

            restarted = true;
        }
    }

    /// <summary>
    /// The common case in one pass and no writes: sparse memory, every entry present and valid, A (and D for
    /// a write) already set, the access allowed. Anything else returns false and takes the general walk, which
    /// reads the entries again and produces the fault or performs the A/D updates.
    /// </summary>
    private static bool TryTranslateFast(CpuState cpu, SparsePhysicalMemory memory, VirtualAddress address, AccessKind access, Privilege privilege, bool probe, out WalkResult result)
    {
        ulong va = address.Value;
        ReservedBitMasks masks = cpu.ReservedBits;
        ulong table = cpu.Cr3 & PageTableEntry.AddressMask4K;
        int level = (int)cpu.PagingMode;
        ulong andRights = RW | US;
        ulong xd = 0;
        ulong missingAccessed = 0;
        ulong entry;
        while (true)
        {
            if (!memory.TryReadEntry(table + (((va >> (12 + (9 * (level - 1)))) & 0x1FF) * 8), out entry)
                || (entry & P) == 0
                || (entry & masks.MaskUnchecked(level, entry)) != 0)
            {
                result = default;
                return false;
            }

            andRights &= entry;
            xd |= entry & XD;
            missingAccessed |= ~entry & A;
            if (level == 1 || (level <= 3 && (entry & PS) != 0))
            {
                break;
            }

            table = entry & PageTableEntry.AddressMask4K;
            level--;
        }

        if (!probe && (missingAccessed != 0 || (access == AccessKind.Write && (entry & D) == 0)))
        {
            result = default;
            return false;
        }

        EffectiveRights rights = CombineRights(andRights, xd);
        if (CheckRights(cpu, access, privilege, rights, entry) != PageFaultErrorCode.None)
        {
            result = default;
            return false;
        }

        int shift = 12 + (9 * (level - 1));
        ulong physical = (entry & PageTableEntry.AddressMaskFor((PagingLevel)level, leaf: true)) | (va & ((1UL << shift) - 1));
        result = new WalkResult(WalkStatus.Translated, address, physical, (PagingLevel)level, entry, rights, PageFaultErrorCode.None);
        return true;
    }

    private static WalkResult WalkOnce(
        CpuState cpu,
        IPhysicalMemory memory,
        VirtualAddress address,
        AccessKind access,
        Privilege privilege,
        in WalkOptions options,
        WalkTrace? trace,
        bool restarted,
        out bool restart)
    {
        restart = false;
        trace?.Begin(restarted);

        ulong va = address.Value;
        SparsePhysicalMemory? sparse = memory as SparsePhysicalMemory;
        ReservedBitMasks masks = cpu.ReservedBits;
        bool setUpperAsWalked = options.AccessedOnFault == AccessedOnFaultPolicy.UpperLevelsAsWalked && !options.Probe;

        // Entry addresses and values as read, root first; at most 5 levels.
        Span<ulong> entryAddresses = stackalloc ulong[5];
        Span<ulong> entryValues = stackalloc ulong[5];
        int used = 0;

        ulong table = cpu.RootTable.Value;
        int level = (int)cpu.PagingMode;
        ulong andRights = RW | US;
        ulong xd = 0;
        ulong entry;

        while (true)
        {
            int index = (int)((va >> (12 + (9 * (level - 1)))) & 0x1FF);
            ulong entryAddress = table + ((ulong)index * 8);
            // The default memory is sealed: test its type once per level so its read inlines (no interface call).
            bool read = sparse is not null
                ? sparse.TryReadUInt64(PhysicalAddress.FromMaskedBits(entryAddress), out entry)
                : memory.TryReadUInt64(PhysicalAddress.FromMaskedBits(entryAddress), out entry);
            if (!read)
            {
                return new WalkResult(WalkStatus.PhysicalMemoryError, address, entryAddress, (PagingLevel)level, 0, EffectiveRights.None, PageFaultErrorCode.None);
            }

            trace?.AddStep((PagingLevel)level, index, entryAddress, entry);
            entryAddresses[used] = entryAddress;
            entryValues[used] = entry;
            used++;

            if ((entry & P) == 0)
            {
                return Fault(cpu, address, access, privilege, (PagingLevel)level, entry, andRights & entry, xd, PageFaultErrorCode.None);
            }

            if ((entry & masks.MaskUnchecked(level, entry)) != 0)
            {
                return Fault(cpu, address, access, privilege, (PagingLevel)level, entry, andRights & entry, xd, PageFaultErrorCode.Present | PageFaultErrorCode.ReservedBit);
            }

            andRights &= entry;
            xd |= entry & XD;

            if (level == 1 || (level <= 3 && (entry & PS) != 0))
            {
                break;
            }

            if (setUpperAsWalked && (entry & A) == 0)
            {
                if (!SetBits(memory, entryAddress, entry, A, trace))
                {
                    restart = true;
                    return default;
                }

                entryValues[used - 1] = entry | A;
            }

            table = entry & PageTableEntry.AddressMask4K;
            level--;
        }

        EffectiveRights rights = CombineRights(andRights, xd);
        PageFaultErrorCode protection = CheckRights(cpu, access, privilege, rights, entry);
        if (protection != PageFaultErrorCode.None)
        {
            return Fault(cpu, address, access, privilege, (PagingLevel)level, entry, andRights, xd, protection);
        }

        if (!options.Probe)
        {
            for (int i = 0; i < used; i++)
            {
                bool leaf = i == used - 1;
                ulong want = A | (leaf && access == AccessKind.Write ? D : 0);
                if ((entryValues[i] & want) != want)
                {
                    if (!SetBits(memory, entryAddresses[i], entryValues[i], want, trace))
                    {
                        restart = true;
                        return default;
                    }
                }
            }
        }

        ulong offsetMask = (1UL << (12 + (9 * (level - 1)))) - 1;
        ulong frameMask = PageTableEntry.AddressMaskFor((PagingLevel)level, leaf: true);
        ulong physical = (entry & frameMask) | (va & offsetMask);
        return new WalkResult(WalkStatus.Translated, address, physical, (PagingLevel)level, entry, rights, PageFaultErrorCode.None);
    }

    /// <summary>
    /// The protection check at the leaf. Returns <see cref="PageFaultErrorCode.None"/> if the access is allowed,
    /// otherwise P plus PK when PKRU forbids it. Intel SDM Vol. 3A §4.6.1 (rights) and §4.6.2 (keys); the PK bit
    /// is set whenever PKRU forbids the access, whether or not the access also breaks the other rules (§4.7).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static PageFaultErrorCode CheckRights(CpuState cpu, AccessKind access, Privilege privilege, EffectiveRights rights, ulong leaf)
    {
        bool userAddress = (rights & EffectiveRights.User) != 0;
        bool writable = (rights & EffectiveRights.Writable) != 0;
        bool executeDisable = (rights & EffectiveRights.ExecuteDisable) != 0;
        bool fault;

        if (privilege == Privilege.User)
        {
            fault = !userAddress
                || (access == AccessKind.Write && !writable)
                || (access == AccessKind.Fetch && executeDisable);
        }
        else if (access == AccessKind.Fetch)
        {
            fault = (userAddress && cpu.SmepEnabled) || executeDisable;
        }
        else
        {
            bool smapBlocks = userAddress && cpu.SmapEnabled && (privilege == Privilege.ImplicitSupervisor || !cpu.AlignmentCheck);
            fault = smapBlocks || (access == AccessKind.Write && !writable && cpu.WriteProtect);
        }

        bool keyBlocks = false;
        if (userAddress && access != AccessKind.Fetch && cpu.ProtectionKeysEnabled)
        {
            int key = (int)((leaf >> 59) & 0xF);
            uint pkru = cpu.Pkru >> (2 * key);
            bool accessDisable = (pkru & 1) != 0;
            bool writeDisable = (pkru & 2) != 0;
            keyBlocks = accessDisable
                || (access == AccessKind.Write && writeDisable && (privilege == Privilege.User || cpu.WriteProtect));
        }

        if (!fault && !keyBlocks)
        {
            return PageFaultErrorCode.None;
        }

        return PageFaultErrorCode.Present | (keyBlocks ? PageFaultErrorCode.ProtectionKey : PageFaultErrorCode.None);
    }

    /// <summary>
    /// The page-fault result for a protection failure found without a walk (a TLB hit, see <see cref="Tlb"/>):
    /// the same error-code composition as a faulting walk, from already-combined rights.
    /// </summary>
    internal static WalkResult FaultFromRights(
        CpuState cpu,
        VirtualAddress address,
        AccessKind access,
        Privilege privilege,
        PagingLevel level,
        ulong leaf,
        EffectiveRights rights,
        PageFaultErrorCode cause) =>
        Fault(
            cpu,
            address,
            access,
            privilege,
            level,
            leaf,
            ((rights & EffectiveRights.Writable) != 0 ? RW : 0) | ((rights & EffectiveRights.User) != 0 ? US : 0),
            (rights & EffectiveRights.ExecuteDisable) != 0 ? XD : 0,
            cause);

    /// <summary>
    /// The rights of a walk from its accumulators: R/W and U/S ANDed over the entries (<paramref name="andRights"/>),
    /// XD ORed (<paramref name="xd"/>, bit 63). SDM Vol. 3A §4.6.1.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static EffectiveRights CombineRights(ulong andRights, ulong xd) =>
        (EffectiveRights)(((andRights & RW) != 0 ? 1 : 0) | ((andRights & US) != 0 ? 2 : 0) | (xd != 0 ? 4 : 0));

    private static WalkResult Fault(
        CpuState cpu,
        VirtualAddress address,
        AccessKind access,
        Privilege privilege,
        PagingLevel level,
        ulong entry,
        ulong andRights,
        ulong xd,
        PageFaultErrorCode cause)
    {
        PageFaultErrorCode code = cause;
        if (access == AccessKind.Write)
        {
            code |= PageFaultErrorCode.Write;
        }

        if (privilege == Privilege.User)
        {
            code |= PageFaultErrorCode.User;
        }

        // I/D is reported only when SMEP or NXE is on (SDM §4.7; PAE is always 1 in IA-32e paging).
        if (access == AccessKind.Fetch && (cpu.SmepEnabled || cpu.NoExecuteEnabled))
        {
            code |= PageFaultErrorCode.InstructionFetch;
        }

        EffectiveRights rights = CombineRights(andRights, xd);
        return new WalkResult(WalkStatus.PageFault, address, 0, level, entry, rights, code);
    }

    private static bool SetBits(IPhysicalMemory memory, ulong entryAddress, ulong expected, ulong bits, WalkTrace? trace)
    {
        ulong updated = expected | bits;
        ulong found = memory.CompareExchangeUInt64(PhysicalAddress.FromMaskedBits(entryAddress), updated, expected);
        if (found != expected)
        {
            return false;
        }

        trace?.AddWrite(entryAddress, expected, updated);
        return true;
    }
}
