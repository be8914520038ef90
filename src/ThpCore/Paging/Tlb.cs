using System;
using System.Collections.Generic;
using System.Runtime.CompilerServices;
using ThpCore.Internal;

namespace ThpCore.Paging;

/// <summary>
/// A translation lookaside buffer in front of <see cref="PageWalker"/>: separate 4 KiB, 2 MiB and 1 GiB entry
/// arrays, tagged by PCID, with global entries, the invalidation instructions, and staleness — a hit never
/// reads memory, so a translation changed in the tables without invalidation keeps being used (Intel SDM
/// Vol. 3A §4.10).
/// </summary>
/// <remarks>
/// <para>
/// <b>What is cached</b> (§4.10.2.2): per entry the page number, the frame, R/W and U/S ANDed and XD ORed over
/// the walk, the leaf's protection key, D and memory-type bits, G (only if CR4.PGE was 1), the PCID current
/// at fill time (0 when CR4.PCIDE = 0) and the page size; see <see cref="TlbEntry"/>. An entry is made only from
/// a walk that translated; never from a faulting walk.
/// </para>
/// <para>
/// <b>Lookups</b> match the current PCID (<see cref="CpuState.Pcid"/>) or any global entry. A hit re-checks the
/// cached rights against the current CR0.WP, SMEP, SMAP, RFLAGS.AC, PKRU (the same check the walker does). A
/// write hitting an entry cached with D = 0 walks again so that D gets set in memory (QEMU and Bochs do the
/// same). A page fault removes the entries that translate the faulting address (§4.10.4.1).
/// </para>
/// <para>
/// <b>Page-size changes</b> (§4.10.2.3, §4.10.4.2): when software remaps a 4 KiB range by a 2 MiB page (or the
/// reverse) without invalidating, entries of both sizes may be cached for one address, and the hardware may
/// use either. The SDM asks software not to change the page size together with the frame, the rights or other
/// attributes of any address unless it first makes the entry not present and invalidates. This model holds
/// both entries, picks one by <see cref="TlbOptions.SizeConflictPreference"/>, and reports the situation
/// through <see cref="LookupAll(CpuState, VirtualAddress)"/>, <see cref="FindSizeConflicts"/> and
/// <see cref="HasConflictingSizes"/> (with <see cref="SizeConflictRule.AmdErratum383"/>, any coexistence
/// counts, after AMD Family 10h erratum 383).
/// </para>
/// <para>
/// <b>Not modelled</b>: paging-structure caches (every walk reads every level from memory, so a changed
/// non-leaf entry is seen by the next miss at once — real CPUs may be staler); splitting a large page into
/// smaller entries; speculative fills; dropping entries other than by capacity. The TLB does not watch
/// <see cref="CpuState"/>: the caller invokes the operation the instruction sequence implies
/// (<see cref="LoadCr3"/> for MOV to CR3, <see cref="FlushAll"/> for a CR4.PGE change or CR4.PCIDE 1→0, ...).
/// </para>
/// <para>
/// One instance models one logical processor and is not thread-safe. Hits, misses and fills allocate nothing.
/// </para>
/// </remarks>
public sealed class Tlb
{
    private const ulong AccessedBit = 1UL << 5;
    private const ulong DirtyBit = 1UL << 6;
    private const ulong GlobalBit = 1UL << 8;
    private const int MaxPcid = 0xFFF;

    private readonly Bank _bank4K;
    private readonly Bank _bank2M;
    private readonly Bank _bank1G;

    // The banks in lookup order, per TlbOptions.SizeConflictPreference.
    private readonly Bank[] _lookupOrder;
    private readonly WalkOptions _walkOptions;
    private readonly bool _trackSizeConflicts;
    private readonly bool _rewalkOnProtectionFault;

    /// <summary>Creates a TLB with <see cref="TlbOptions.Default"/>.</summary>
    public Tlb()
        : this(TlbOptions.Default)
    {
    }

    /// <summary>Creates an empty TLB of the given shape.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> is null.</exception>
    /// <exception cref="ArgumentException">For some page size the entries are not a power-of-two number of whole sets.</exception>
    public Tlb(TlbOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        Options = options;
        _bank4K = new Bank(PageSize.Size4K, options.Entries4K, options.Associativity4K);
        _bank2M = new Bank(PageSize.Size2M, options.Entries2M, options.Associativity2M);
        _bank1G = new Bank(PageSize.Size1G, options.Entries1G, options.Associativity1G);
        _lookupOrder = options.SizeConflictPreference == SizeConflictPreference.PreferSmaller
            ? [_bank4K, _bank2M, _bank1G]
            : [_bank1G, _bank2M, _bank4K];
        _walkOptions = new WalkOptions { AccessedOnFault = options.AccessedOnFault };
        _trackSizeConflicts = options.TrackSizeConflicts;
        _rewalkOnProtectionFault = options.RewalkOnProtectionFault;
    }

    /// <summary>The shape and policies of this TLB.</summary>
    public TlbOptions Options { get; }

    /// <summary>Translations of a canonical address for which a matching entry was found (including hits that then walked again).</summary>
    public long Hits { get; private set; }

    /// <summary>Translations of a canonical address for which no entry matched. <c>Hits + Misses</c> is the number of lookups.</summary>
    public long Misses { get; private set; }

    /// <summary>
    /// Page walks made: one per miss, plus one per write that hit a clean entry, plus one per protection re-walk
    /// (<see cref="TlbOptions.RewalkOnProtectionFault"/>).
    /// </summary>
    public long Walks { get; private set; }

    /// <summary>
    /// Hits on an address that had a size conflict under <see cref="TlbOptions.SizeConflictRule"/> at the time;
    /// counted only with <see cref="TlbOptions.TrackSizeConflicts"/>.
    /// </summary>
    public long SizeConflictHits { get; private set; }

    /// <summary>The number of entries currently held, all sizes and PCIDs.</summary>
    public int Count => _bank4K.Count() + _bank2M.Count() + _bank1G.Count();

    /// <summary>The largest number of entries that can cover one address at once (the sum of the associativities), for sizing the span given to <see cref="LookupAll(CpuState, VirtualAddress, Span{TlbEntry})"/>.</summary>
    public int MaxEntriesPerAddress => _bank4K.Ways + _bank2M.Ways + _bank1G.Ways;

    /// <summary>Sets <see cref="Hits"/>, <see cref="Misses"/>, <see cref="Walks"/> and <see cref="SizeConflictHits"/> to zero.</summary>
    public void ResetStatistics()
    {
        Hits = 0;
        Misses = 0;
        Walks = 0;
        SizeConflictHits = 0;
    }

    /// <summary>
    /// Translates <paramref name="address"/> for one access through the TLB: a hit answers from the cached entry
    /// without reading memory (so it may be stale); a miss walks the tables with <see cref="PageWalker"/> and
    /// caches the translation if the walk succeeded.
    /// </summary>
    /// <param name="cpu">Control registers, PKRU and PCID in effect now.</param>
    /// <param name="memory">Physical memory holding the paging structures (read only on a miss or re-walk).</param>
    /// <param name="address">The linear address accessed.</param>
    /// <param name="access">Read, write or instruction fetch.</param>
    /// <param name="privilege">User, supervisor, or implicit supervisor.</param>
    /// <returns>
    /// The result a walk would give, except that a hit uses the cached translation. On a hit,
    /// <see cref="WalkResult.Entry"/> is the TLB's copy of the leaf (A set, D as cached), not a fresh read.
    /// </returns>
    /// <exception cref="ArgumentNullException"><paramref name="cpu"/> or <paramref name="memory"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="access"/> or <paramref name="privilege"/> is not a defined value.</exception>
    public WalkResult Translate(CpuState cpu, IPhysicalMemory memory, VirtualAddress address, AccessKind access, Privilege privilege)
    {
        // Fast path: a plain hit that passes the rights check and needs no D update. Anything else (miss,
        // fault, re-walk, non-canonical, bad arguments, conflict tracking) goes the full way, which looks up again.
        if (cpu is not null && memory is not null && (uint)access <= (uint)AccessKind.Fetch && (uint)privilege <= (uint)Privilege.ImplicitSupervisor
            && !_trackSizeConflicts)
        {
            ulong va = address.Value;
            int unused = (cpu.Cr4 & Cr4Flags.La57) != 0 ? 7 : 16;
            if ((ulong)((long)(va << unused) >> unused) == va)
            {
                int pcid = cpu.Pcid;
                Bank[] order = _lookupOrder;
                for (int b = 0; b < order.Length; b++)
                {
                    Bank bank = order[b];
                    int slot = bank.Find(va, pcid);
                    if (slot >= 0)
                    {
                        ref readonly TlbEntry entry = ref bank.Entries[slot];
                        if ((access != AccessKind.Write || entry.IsDirty)
                            && PageWalker.CheckRights(cpu, access, privilege, entry.Rights, entry.LeafRaw) == PageFaultErrorCode.None)
                        {
                            Hits++;
                            ulong physical = (entry.LeafRaw & bank.FrameMask) | (va & bank.OffsetMask);
                            return new WalkResult(WalkStatus.Translated, address, physical, bank.Level, entry.LeafRaw, entry.Rights, PageFaultErrorCode.None);
                        }

                        break;
                    }
                }
            }
        }

        return Translate(cpu!, memory!, address, access, privilege, out _);
    }

    /// <summary>
    /// As <see cref="Translate(CpuState, IPhysicalMemory, VirtualAddress, AccessKind, Privilege)"/>, also telling
    /// whether the result came from a hit, a miss or a re-walk.
    /// </summary>
    /// <param name="cpu">Control registers, PKRU and PCID in effect now.</param>
    /// <param name="memory">Physical memory holding the paging structures (read only on a miss or re-walk).</param>
    /// <param name="address">The linear address accessed.</param>
    /// <param name="access">Read, write or instruction fetch.</param>
    /// <param name="privilege">User, supervisor, or implicit supervisor.</param>
    /// <param name="outcome">How the result was produced.</param>
    /// <exception cref="ArgumentNullException"><paramref name="cpu"/> or <paramref name="memory"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="access"/> or <paramref name="privilege"/> is not a defined value.</exception>
    public WalkResult Translate(CpuState cpu, IPhysicalMemory memory, VirtualAddress address, AccessKind access, Privilege privilege, out TlbOutcome outcome)
    {
        ArgumentNullException.ThrowIfNull(cpu);
        ArgumentNullException.ThrowIfNull(memory);
        if ((uint)access > (uint)AccessKind.Fetch)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(access), access, "An access is Read, Write or Fetch.");
        }

        if ((uint)privilege > (uint)Privilege.ImplicitSupervisor)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(privilege), privilege, "A privilege is Supervisor, User or ImplicitSupervisor.");
        }

        if (!address.IsCanonicalIn(cpu.PagingMode))
        {
            // #GP(0) before paging; the walker builds that result without touching memory.
            outcome = TlbOutcome.NonCanonical;
            return PageWalker.Translate(cpu, memory, address, access, privilege, _walkOptions, null);
        }

        ulong va = address.Value;
        int pcid = cpu.Pcid;
        Bank[] order = _lookupOrder;
        for (int b = 0; b < order.Length; b++)
        {
            Bank bank = order[b];
            int slot = bank.Find(va, pcid);
            if (slot >= 0)
            {
                Hits++;
                return OnHit(cpu, memory, address, access, privilege, bank, slot, out outcome);
            }
        }

        Misses++;
        outcome = TlbOutcome.Miss;
        return WalkAndFill(cpu, memory, address, access, privilege);
    }

    /// <summary>
    /// The entry a translation of <paramref name="address"/> would use now (current PCID or global, first by
    /// <see cref="TlbOptions.SizeConflictPreference"/>), without counting, walking or checking rights.
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="cpu"/> is null.</exception>
    public bool TryLookup(CpuState cpu, VirtualAddress address, out TlbEntry entry)
    {
        ArgumentNullException.ThrowIfNull(cpu);
        int pcid = cpu.Pcid;
        foreach (Bank bank in _lookupOrder)
        {
            int slot = bank.Find(address.Value, pcid);
            if (slot >= 0)
            {
                entry = bank.Entries[slot];
                return true;
            }
        }

        entry = default;
        return false;
    }

    /// <summary>
    /// Every cached translation that matches <paramref name="address"/> under the current PCID (or is global),
    /// in the order a lookup considers them: the first element is what <see cref="Translate(CpuState, IPhysicalMemory, VirtualAddress, AccessKind, Privilege)"/>
    /// would use. More than one element means entries of several sizes (or a global and a PCID entry) coexist.
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="cpu"/> is null.</exception>
    public IReadOnlyList<TlbEntry> LookupAll(CpuState cpu, VirtualAddress address)
    {
        Span<TlbEntry> buffer = MaxEntriesPerAddress <= 64 ? stackalloc TlbEntry[MaxEntriesPerAddress] : new TlbEntry[MaxEntriesPerAddress];
        int count = LookupAll(cpu, address, buffer);
        return buffer[..count].ToArray();
    }

    /// <summary>
    /// Allocation-free form of <see cref="LookupAll(CpuState, VirtualAddress)"/>: writes the matching entries
    /// into <paramref name="destination"/> in lookup order and returns how many match. If that is more than
    /// <paramref name="destination"/> holds, only the first <c>destination.Length</c> are written;
    /// <see cref="MaxEntriesPerAddress"/> is always enough.
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="cpu"/> is null.</exception>
    public int LookupAll(CpuState cpu, VirtualAddress address, Span<TlbEntry> destination)
    {
        ArgumentNullException.ThrowIfNull(cpu);
        int pcid = cpu.Pcid;
        int count = 0;
        foreach (Bank bank in _lookupOrder)
        {
            ulong invertedTag = bank.InvertedTag(address.Value);
            int first = bank.SetStart(address.Value);
            for (int i = first; i < first + bank.Ways; i++)
            {
                if (bank.Entries[i].Matches(invertedTag, pcid))
                {
                    if (count < destination.Length)
                    {
                        destination[count] = bank.Entries[i];
                    }

                    count++;
                }
            }
        }

        return count;
    }

    /// <summary>
    /// Compares the entries of different page sizes that match <paramref name="address"/> under the current PCID
    /// (or are global): what differs between them, or <see cref="TlbSizeConflict.None"/> if at most one size has
    /// an entry. This is the uncertainty the SDM describes for page-size changes made without invalidation
    /// (Intel SDM Vol. 3A §4.10.2.3, §4.10.4.2).
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="cpu"/> is null.</exception>
    public TlbSizeConflict FindSizeConflicts(CpuState cpu, VirtualAddress address)
    {
        ArgumentNullException.ThrowIfNull(cpu);
        Span<TlbEntry> found = MaxEntriesPerAddress <= 64 ? stackalloc TlbEntry[MaxEntriesPerAddress] : new TlbEntry[MaxEntriesPerAddress];
        int count = LookupAll(cpu, address, found);
        TlbSizeConflict result = TlbSizeConflict.None;
        for (int i = 0; i < count; i++)
        {
            for (int j = i + 1; j < count; j++)
            {
                if (found[i].PageSize != found[j].PageSize)
                {
                    result |= Compare(found[i], found[j], address);
                }
            }
        }

        return result;
    }

    /// <summary>
    /// Whether the entries of different sizes for <paramref name="address"/> conflict under
    /// <see cref="TlbOptions.SizeConflictRule"/>: with <see cref="SizeConflictRule.IntelSdm"/> when they
    /// disagree in frame, rights or attributes; with <see cref="SizeConflictRule.AmdErratum383"/> whenever two
    /// sizes coexist.
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="cpu"/> is null.</exception>
    public bool HasConflictingSizes(CpuState cpu, VirtualAddress address) =>
        IsConflict(FindSizeConflicts(cpu, address));

    /// <summary>A snapshot of every entry held, 4 KiB first, then 2 MiB, then 1 GiB; for inspection and tests.</summary>
    public IReadOnlyList<TlbEntry> GetEntries()
    {
        var list = new List<TlbEntry>(Count);
        foreach (Bank bank in new[] { _bank4K, _bank2M, _bank1G })
        {
            foreach (TlbEntry e in bank.Entries)
            {
                if (!e.IsEmpty)
                {
                    list.Add(e);
                }
            }
        }

        return list;
    }

    /// <summary>
    /// INVLPG: removes, in every page size, the entries for the page containing <paramref name="address"/> that
    /// belong to the current PCID, and the global entries for that page whatever their PCID (Intel SDM Vol. 3A
    /// §4.10.4.1). A non-canonical address matches nothing (INVLPG of one is a no-op).
    /// </summary>
    /// <param name="cpu">The state whose PCID is current.</param>
    /// <param name="address">Any address inside the page.</param>
    /// <exception cref="ArgumentNullException"><paramref name="cpu"/> is null.</exception>
    public void Invlpg(CpuState cpu, VirtualAddress address)
    {
        ArgumentNullException.ThrowIfNull(cpu);
        InvalidateAddress(address.Value, cpu.Pcid, includeGlobal: true);
    }

    /// <summary>
    /// MOV to CR3 with <paramref name="newState"/>'s CR3 (Intel SDM Vol. 3A §4.10.4.1). With CR4.PCIDE = 0 it
    /// removes every non-global entry (they all belong to PCID 0). With CR4.PCIDE = 1 it removes the non-global
    /// entries of the new PCID, unless <paramref name="noFlush"/> (source bit 63) asks to keep them; entries of
    /// other PCIDs and global entries survive either way. Translate with <paramref name="newState"/> afterwards.
    /// </summary>
    /// <param name="newState">The state after the move (its CR3 and CR4.PCIDE decide).</param>
    /// <param name="noFlush">Bit 63 of the source operand: keep the new PCID's entries (only with CR4.PCIDE = 1).</param>
    /// <exception cref="ArgumentNullException"><paramref name="newState"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="noFlush"/> with CR4.PCIDE = 0: bit 63 is then a reserved CR3 bit and MOV to CR3 raises #GP.</exception>
    public void LoadCr3(CpuState newState, bool noFlush = false)
    {
        ArgumentNullException.ThrowIfNull(newState);
        if (!newState.PcidEnabled)
        {
            if (noFlush)
            {
                ThrowHelper.ThrowArgument(nameof(noFlush), "The no-flush hint (CR3 source bit 63) exists only with CR4.PCIDE = 1; with PCIDE = 0 bit 63 is reserved and MOV to CR3 raises #GP.");
            }

            FlushNonGlobal(pcid: 0);
            return;
        }

        if (!noFlush)
        {
            FlushNonGlobal(newState.Pcid);
        }
    }

    /// <summary>
    /// INVPCID (Intel SDM Vol. 3A §4.10.4.1): type 0 removes the non-global entries of <paramref name="pcid"/>
    /// for the page containing <paramref name="address"/> (every size); type 1 every non-global entry of
    /// <paramref name="pcid"/>; type 2 everything; type 3 every non-global entry. <paramref name="address"/> is
    /// used only by type 0, <paramref name="pcid"/> only by types 0 and 1.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="type"/> is not 0..3, or <paramref name="pcid"/> is not 0..4095 (the descriptor's PCID field is 12 bits).</exception>
    public void Invpcid(InvpcidType type, int pcid, VirtualAddress address)
    {
        if ((uint)type > (uint)InvpcidType.AllContexts)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(type), type, "An INVPCID type is 0 (individual address), 1 (single context), 2 (all, including globals) or 3 (all contexts); other types raise #GP.");
        }

        if ((uint)pcid > MaxPcid)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(pcid), pcid, "A PCID is 0..4095 (12 bits); an INVPCID descriptor with bits 63:12 of its first quadword set raises #GP.");
        }

        switch (type)
        {
            case InvpcidType.IndividualAddress:
                InvalidateAddress(address.Value, pcid, includeGlobal: false);
                break;
            case InvpcidType.SingleContext:
                FlushNonGlobal(pcid);
                break;
            case InvpcidType.AllContextsIncludingGlobal:
                FlushAll();
                break;
            default:
                FlushNonGlobal();
                break;
        }
    }

    /// <summary>Removes every entry of every PCID, global ones included (a CR4.PGE change, CR4.PCIDE 1→0, CR0.PG cleared, INVPCID type 2).</summary>
    public void FlushAll()
    {
        _bank4K.Clear();
        _bank2M.Clear();
        _bank1G.Clear();
    }

    /// <summary>Removes every non-global entry of every PCID (INVPCID type 3).</summary>
    public void FlushNonGlobal()
    {
        _bank4K.RemoveNonGlobal(-1);
        _bank2M.RemoveNonGlobal(-1);
        _bank1G.RemoveNonGlobal(-1);
    }

    /// <summary>Removes every non-global entry of one PCID (INVPCID type 1; MOV to CR3 without the no-flush hint).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="pcid"/> is not 0..4095.</exception>
    public void FlushNonGlobal(int pcid)
    {
        if ((uint)pcid > MaxPcid)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(pcid), pcid, "A PCID is 0..4095 (12 bits).");
        }

        _bank4K.RemoveNonGlobal(pcid);
        _bank2M.RemoveNonGlobal(pcid);
        _bank1G.RemoveNonGlobal(pcid);
    }

    private static TlbSizeConflict Compare(in TlbEntry a, in TlbEntry b, VirtualAddress address)
    {
        TlbSizeConflict result = TlbSizeConflict.SizesCoexist;
        if (a.Translate(address) != b.Translate(address))
        {
            result |= TlbSizeConflict.FrameDiffers;
        }

        if (a.Rights != b.Rights)
        {
            result |= TlbSizeConflict.RightsDiffer;
        }

        PageTableEntry la = a.Leaf;
        PageTableEntry lb = b.Leaf;
        if (a.ProtectionKey != b.ProtectionKey || a.IsGlobal != b.IsGlobal
            || la.IsWriteThrough != lb.IsWriteThrough || la.IsCacheDisabled != lb.IsCacheDisabled || la.Pat != lb.Pat)
        {
            result |= TlbSizeConflict.AttributesDiffer;
        }

        return result;
    }

    private bool IsConflict(TlbSizeConflict conflict) => Options.SizeConflictRule == SizeConflictRule.AmdErratum383
        ? conflict != TlbSizeConflict.None
        : (conflict & ~TlbSizeConflict.SizesCoexist) != 0;

    private WalkResult OnHit(CpuState cpu, IPhysicalMemory memory, VirtualAddress address, AccessKind access, Privilege privilege, Bank bank, int slot, out TlbOutcome outcome)
    {
        ref readonly TlbEntry entry = ref bank.Entries[slot];
        if (_trackSizeConflicts && IsConflict(FindSizeConflicts(cpu, address)))
        {
            SizeConflictHits++;
        }

        PageFaultErrorCode protection = PageWalker.CheckRights(cpu, access, privilege, entry.Rights, entry.LeafRaw);
        if (protection != PageFaultErrorCode.None)
        {
            if (_rewalkOnProtectionFault)
            {
                bank.Entries[slot] = default;
                outcome = TlbOutcome.ProtectionRewalk;
                return WalkAndFill(cpu, memory, address, access, privilege);
            }

            // A fault raised from the cached entry; the fault then drops what translated the address (§4.10.4.1).
            outcome = TlbOutcome.Hit;
            WalkResult fault = PageWalker.FaultFromRights(cpu, address, access, privilege, bank.Level, entry.LeafRaw, entry.Rights, protection);
            InvalidateAddress(address.Value, cpu.Pcid, includeGlobal: true);
            return fault;
        }

        if (access == AccessKind.Write && !entry.IsDirty)
        {
            // Only a walk can set D in memory: drop the clean entry and walk (QEMU, Bochs).
            bank.Entries[slot] = default;
            outcome = TlbOutcome.DirtyRewalk;
            return WalkAndFill(cpu, memory, address, access, privilege);
        }

        outcome = TlbOutcome.Hit;
        ulong physical = (entry.LeafRaw & bank.FrameMask) | (address.Value & bank.OffsetMask);
        return new WalkResult(WalkStatus.Translated, address, physical, bank.Level, entry.LeafRaw, entry.Rights, PageFaultErrorCode.None);
    }

    private WalkResult WalkAndFill(CpuState cpu, IPhysicalMemory memory, VirtualAddress address, AccessKind access, Privilege privilege)
    {
        Walks++;
        WalkResult result = PageWalker.Translate(cpu, memory, address, access, privilege, _walkOptions, null);
        switch (result.Status)
        {
            case WalkStatus.Translated:
                Fill(cpu, address, access, result);
                break;
            case WalkStatus.PageFault:
                InvalidateAddress(address.Value, cpu.Pcid, includeGlobal: true);
                break;
        }

        return result;
    }

    private void Fill(CpuState cpu, VirtualAddress address, AccessKind access, in WalkResult result)
    {
        // The walk set A, and D on a write; the entry caches the leaf as it now stands in memory.
        ulong leaf = result.Entry.Raw | AccessedBit | (access == AccessKind.Write ? DirtyBit : 0);
        bool global = cpu.GlobalPagesEnabled && (leaf & GlobalBit) != 0;
        Bank bank = result.PageSize switch
        {
            PageSize.Size4K => _bank4K,
            PageSize.Size2M => _bank2M,
            _ => _bank1G,
        };

        bank.Insert(address.Value, cpu.Pcid, global, leaf, result.Rights);
    }

    private void InvalidateAddress(ulong va, int pcid, bool includeGlobal)
    {
        _bank4K.RemoveAddress(va, pcid, includeGlobal);
        _bank2M.RemoveAddress(va, pcid, includeGlobal);
        _bank1G.RemoveAddress(va, pcid, includeGlobal);
    }

    /// <summary>The entries of one page size: <c>sets × ways</c> slots, set chosen by the low page-number bits.</summary>
    private sealed class Bank
    {
        private readonly int _setMask;
        private readonly byte[] _nextVictim;
        private readonly int[]? _nextVictimWide;

        public Bank(PageSize size, int entries, int ways)
        {
            Size = size;
            Shift = size.Shift();
            Level = size.LeafLevel();
            OffsetMask = size.OffsetMask();
            FrameMask = PageTableEntry.AddressMaskFor(Level, leaf: true);
            Ways = ways;
            Entries = new TlbEntry[entries];
            int sets = entries / ways;
            _setMask = sets - 1;
            if (ways <= 256)
            {
                _nextVictim = new byte[sets];
            }
            else
            {
                _nextVictim = [];
                _nextVictimWide = new int[sets];
            }
        }

        public PageSize Size { get; }

        public int Shift { get; }

        public PagingLevel Level { get; }

        public ulong OffsetMask { get; }

        public ulong FrameMask { get; }

        public int Ways { get; }

        public TlbEntry[] Entries { get; }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public ulong InvertedTag(ulong va) => ~(va >> Shift);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public int SetStart(ulong va) => (int)((va >> Shift) & (uint)_setMask) * Ways;

        /// <summary>The slot of the first entry matching (<paramref name="va"/>, <paramref name="pcid"/> or global), or -1.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public int Find(ulong va, int pcid)
        {
            ulong invertedTag = ~(va >> Shift);
            int first = (int)((va >> Shift) & (uint)_setMask) * Ways;
            TlbEntry[] entries = Entries;
            for (int i = first; i < first + Ways; i++)
            {
                if (entries[i].Matches(invertedTag, pcid))
                {
                    return i;
                }
            }

            return -1;
        }

        /// <summary>
        /// Caches a translation: replaces an entry that already matches the same page in this context, else takes
        /// the first empty way, else evicts round-robin.
        /// </summary>
        public void Insert(ulong va, int pcid, bool global, ulong leaf, EffectiveRights rights)
        {
            ulong tag = va >> Shift;
            int set = (int)(tag & (uint)_setMask);
            int first = set * Ways;
            int victim = -1;
            for (int i = first; i < first + Ways; i++)
            {
                if (Entries[i].Matches(~tag, pcid))
                {
                    victim = i;
                    break;
                }

                if (victim < 0 && Entries[i].IsEmpty)
                {
                    victim = i;
                }
            }

            if (victim < 0)
            {
                if (_nextVictimWide is null)
                {
                    int way = _nextVictim[set];
                    victim = first + way;
                    _nextVictim[set] = (byte)((way + 1) % Ways);
                }
                else
                {
                    int way = _nextVictimWide[set];
                    victim = first + way;
                    _nextVictimWide[set] = (way + 1) % Ways;
                }
            }

            Entries[victim] = new TlbEntry(Size, tag, pcid, global, leaf, rights);
        }

        public void RemoveAddress(ulong va, int pcid, bool includeGlobal)
        {
            ulong invertedTag = ~(va >> Shift);
            int first = SetStart(va);
            for (int i = first; i < first + Ways; i++)
            {
                ref TlbEntry e = ref Entries[i];
                if (e.HasTag(invertedTag) && (e.IsGlobal ? includeGlobal : e.Pcid == pcid))
                {
                    e = default;
                }
            }
        }

        /// <summary>Removes the non-global entries of <paramref name="pcid"/>, or of every PCID when it is -1.</summary>
        public void RemoveNonGlobal(int pcid)
        {
            TlbEntry[] entries = Entries;
            for (int i = 0; i < entries.Length; i++)
            {
                ref TlbEntry e = ref entries[i];
                if (!e.IsEmpty && !e.IsGlobal && (pcid < 0 || e.Pcid == pcid))
                {
                    e = default;
                }
            }
        }

        public void Clear()
        {
            Array.Clear(Entries);
            Array.Clear(_nextVictim);
            if (_nextVictimWide is not null)
            {
                Array.Clear(_nextVictimWide);
            }
        }

        public int Count()
        {
            int n = 0;
            foreach (TlbEntry e in Entries)
            {
                if (!e.IsEmpty)
                {
                    n++;
                }
            }

            return n;
        }
    }
}
