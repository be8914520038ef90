using System;
using ThpCore.Internal;

namespace ThpCore.Paging;

/// <summary>
/// Which cached translation a <see cref="Tlb"/> lookup uses when entries of more than one page size cover the
/// same address (possible after the page size of a range was changed without invalidation; Intel SDM Vol. 3A
/// §4.10.2.3).
/// </summary>
/// <remarks>
/// Real processors may use either entry, and the choice may differ from one access to the next. The model
/// makes it fixed so that tests are reproducible; run a test under both values to cover both outcomes.
/// </remarks>
public enum SizeConflictPreference : byte
{
    /// <summary>Look in the 4 KiB entries first, then 2 MiB, then 1 GiB. The default.</summary>
    PreferSmaller = 0,

    /// <summary>Look in the 1 GiB entries first, then 2 MiB, then 4 KiB.</summary>
    PreferLarger = 1,
}

/// <summary>
/// What <see cref="Tlb.HasConflictingSizes(CpuState, VirtualAddress)"/> treats as a harmful coexistence of
/// entries of different page sizes for one address.
/// </summary>
public enum SizeConflictRule : byte
{
    /// <summary>
    /// Intel SDM Vol. 3A §4.10.2.3 / §4.10.4.2: entries of two sizes may coexist; the result is unpredictable
    /// only when they disagree in the physical address, the access rights or the other attributes (protection
    /// key, memory type bits, global). The default.
    /// </summary>
    IntelSdm = 0,

    /// <summary>
    /// AMD Family 10h erratum 383: any coexistence of entries of two sizes for one address may end in an
    /// uncorrectable machine check (TLB multi-match), even when they agree.
    /// </summary>
    AmdErratum383 = 1,
}

/// <summary>
/// Shape and behaviour of a <see cref="Tlb"/>: capacity and associativity per page size, the deterministic
/// choice between entries of different sizes, and how a hit that fails the rights check is handled. Immutable.
/// </summary>
/// <remarks>
/// Each page size has its own array of <c>Entries</c> slots split into <c>Entries / Associativity</c> sets of
/// <c>Associativity</c> ways; the set is chosen by the low bits of the virtual page number, so the number of
/// sets must be a power of two. Associativity 1 is direct-mapped; associativity equal to the entry count is
/// fully associative. Within a set the victim is chosen round-robin (first in, first out), which is
/// deterministic. The defaults resemble a current Intel first-level data TLB: 64 entries 4-way for 4 KiB
/// pages, 32 entries 4-way for 2 MiB pages, 4 fully associative entries for 1 GiB pages.
/// </remarks>
public sealed record TlbOptions
{
    /// <summary>The largest number of entries allowed for one page size (2^20).</summary>
    public const int MaxEntries = 1 << 20;

    private readonly int _entries4K = 64;
    private readonly int _associativity4K = 4;
    private readonly int _entries2M = 32;
    private readonly int _associativity2M = 4;
    private readonly int _entries1G = 4;
    private readonly int _associativity1G = 4;
    private readonly SizeConflictPreference _sizeConflictPreference;
    private readonly SizeConflictRule _sizeConflictRule;
    private readonly AccessedOnFaultPolicy _accessedOnFault;

    /// <summary>The default options (see the remarks of <see cref="TlbOptions"/>).</summary>
    public static TlbOptions Default { get; } = new();

    /// <summary>The number of 4 KiB entries, 1 to <see cref="MaxEntries"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Outside 1..<see cref="MaxEntries"/>.</exception>
    public int Entries4K
    {
        get => _entries4K;
        init => _entries4K = CheckCount(value, nameof(Entries4K));
    }

    /// <summary>The ways per set of the 4 KiB entries (1 = direct-mapped).</summary>
    /// <exception cref="ArgumentOutOfRangeException">Outside 1..<see cref="MaxEntries"/>.</exception>
    public int Associativity4K
    {
        get => _associativity4K;
        init => _associativity4K = CheckCount(value, nameof(Associativity4K));
    }

    /// <summary>The number of 2 MiB entries, 1 to <see cref="MaxEntries"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Outside 1..<see cref="MaxEntries"/>.</exception>
    public int Entries2M
    {
        get => _entries2M;
        init => _entries2M = CheckCount(value, nameof(Entries2M));
    }

    /// <summary>The ways per set of the 2 MiB entries (1 = direct-mapped).</summary>
    /// <exception cref="ArgumentOutOfRangeException">Outside 1..<see cref="MaxEntries"/>.</exception>
    public int Associativity2M
    {
        get => _associativity2M;
        init => _associativity2M = CheckCount(value, nameof(Associativity2M));
    }

    /// <summary>The number of 1 GiB entries, 1 to <see cref="MaxEntries"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Outside 1..<see cref="MaxEntries"/>.</exception>
    public int Entries1G
    {
        get => _entries1G;
        init => _entries1G = CheckCount(value, nameof(Entries1G));
    }

    /// <summary>The ways per set of the 1 GiB entries (1 = direct-mapped).</summary>
    /// <exception cref="ArgumentOutOfRangeException">Outside 1..<see cref="MaxEntries"/>.</exception>
    public int Associativity1G
    {
        get => _associativity1G;
        init => _associativity1G = CheckCount(value, nameof(Associativity1G));
    }

    /// <summary>Which entry a lookup uses when entries of several sizes cover the address.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Not a defined value.</exception>
    public SizeConflictPreference SizeConflictPreference
    {
        get => _sizeConflictPreference;
        init
        {
            if ((uint)value > (uint)SizeConflictPreference.PreferLarger)
            {
                ThrowHelper.ThrowArgumentOutOfRange(nameof(SizeConflictPreference), value, "A size-conflict preference is PreferSmaller or PreferLarger.");
            }

            _sizeConflictPreference = value;
        }
    }

    /// <summary>What <see cref="Tlb.HasConflictingSizes(CpuState, VirtualAddress)"/> and <see cref="Tlb.SizeConflictHits"/> count as a conflict.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Not a defined value.</exception>
    public SizeConflictRule SizeConflictRule
    {
        get => _sizeConflictRule;
        init
        {
            if ((uint)value > (uint)SizeConflictRule.AmdErratum383)
            {
                ThrowHelper.ThrowArgumentOutOfRange(nameof(SizeConflictRule), value, "A size-conflict rule is IntelSdm or AmdErratum383.");
            }

            _sizeConflictRule = value;
        }
    }

    /// <summary>
    /// When set, every hit also checks the address for a size conflict under <see cref="SizeConflictRule"/>
    /// and counts it in <see cref="Tlb.SizeConflictHits"/>. Costs a look into every size on each hit; off by
    /// default.
    /// </summary>
    public bool TrackSizeConflicts { get; init; }

    /// <summary>
    /// What a hit does when the cached rights forbid the access. <see langword="false"/> (the default): raise
    /// the page fault from the cached entry, as hardware may (a "spurious" fault after rights were raised in
    /// memory without invalidation, Intel SDM Vol. 3A §4.10.4.3); the fault then drops the entries for the
    /// address. <see langword="true"/>: drop the entry and walk the tables again before deciding, as QEMU and
    /// Bochs do.
    /// </summary>
    public bool RewalkOnProtectionFault { get; init; }

    /// <summary>The A-bit policy of the walks the TLB makes on misses (see <see cref="WalkOptions.AccessedOnFault"/>).</summary>
    /// <exception cref="ArgumentOutOfRangeException">Not a defined value.</exception>
    public AccessedOnFaultPolicy AccessedOnFault
    {
        get => _accessedOnFault;
        init
        {
            if ((uint)value > (uint)AccessedOnFaultPolicy.UpperLevelsAsWalked)
            {
                ThrowHelper.ThrowArgumentOutOfRange(nameof(AccessedOnFault), value, "An A-bit policy is NothingSet or UpperLevelsAsWalked.");
            }

            _accessedOnFault = value;
        }
    }

    /// <summary>The number of entries configured for <paramref name="size"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is not a defined value.</exception>
    public int EntriesFor(PageSize size) => size switch
    {
        PageSize.Size4K => Entries4K,
        PageSize.Size2M => Entries2M,
        PageSize.Size1G => Entries1G,
        _ => ThrowBadSize(size),
    };

    /// <summary>The associativity configured for <paramref name="size"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is not a defined value.</exception>
    public int AssociativityFor(PageSize size) => size switch
    {
        PageSize.Size4K => Associativity4K,
        PageSize.Size2M => Associativity2M,
        PageSize.Size1G => Associativity1G,
        _ => ThrowBadSize(size),
    };

    /// <summary>Checks that every size has a power-of-two number of whole sets.</summary>
    /// <exception cref="ArgumentException">For some size the entry count is not a multiple of the associativity, or the set count is not a power of two.</exception>
    internal void Validate()
    {
        for (PageSize size = PageSize.Size4K; size <= PageSize.Size1G; size++)
        {
            int entries = EntriesFor(size);
            int ways = AssociativityFor(size);
            string name = size.ShortName();
            if (ways > entries || entries % ways != 0)
            {
                ThrowHelper.ThrowArgument("options", $"The {name} TLB has {entries} entries, which is not a whole number of sets of {ways} ways (Entries{name} must be a multiple of Associativity{name}).");
            }

            int sets = entries / ways;
            if ((sets & (sets - 1)) != 0)
            {
                ThrowHelper.ThrowArgument("options", $"The {name} TLB has {sets} sets ({entries} entries / {ways} ways); the set count must be a power of two, because the set is indexed by low virtual-page-number bits.");
            }
        }
    }

    private static int CheckCount(int value, string name)
    {
        if (value is < 1 or > MaxEntries)
        {
            ThrowHelper.ThrowArgumentOutOfRange(name, value, $"{name} must be between 1 and {MaxEntries:#,0}.");
        }

        return value;
    }

    private static int ThrowBadSize(PageSize size) =>
        throw new ArgumentOutOfRangeException(nameof(size), size, "A page size is 4 KiB, 2 MiB or 1 GiB.");
}
