using System;
using System.Globalization;
using ThpCore.Internal;

namespace ThpCore.Memory;

/// <summary>
/// A Linux swap entry (<c>swp_entry_t</c>): a 5-bit type and an offset. Types 0 to <see cref="MaxSwapFiles"/> − 1
/// name swap devices and the offset is a slot on that device; the types above them are special entries, of which
/// this model builds the migration entries (the offset is then a page frame number). The entry is stored in a
/// not-present PTE or PMD in the x86-64 layout (<see cref="ToPteRaw"/>, <see cref="TryFromPteRaw"/>).
/// </summary>
/// <remarks>
/// <para>
/// Reference kernel v6.12, x86-64, with <c>CONFIG_MIGRATION</c>, <c>CONFIG_MEMORY_FAILURE</c> and
/// <c>CONFIG_DEVICE_PRIVATE</c> set, as in distribution kernels. Layout of the raw value
/// (<c>arch/x86/include/asm/pgtable_64.h</c>, <c>SWP_TYPE_BITS</c> = 5,
/// <c>SWP_OFFSET_FIRST_BIT</c> = <c>_PAGE_BIT_PROTNONE</c> + 1 = 9, <c>SWP_OFFSET_SHIFT</c> = 14):
/// </para>
/// <list type="bullet">
/// <item>bits 63:59: the type (<c>__swp_type</c>);</item>
/// <item>bits 58:9: the bitwise NOT of the offset, 50 bits (<c>__swp_offset</c>): the L1TF mitigation, so that a
/// not-present entry never holds the address of real memory in its frame bits;</item>
/// <item>bit 8 (G, <c>_PAGE_PROTNONE</c> when P = 0) and bit 7 (PS) are 0: either would make the entry present to
/// Linux (<see cref="PtePresent"/>, <see cref="PmdPresent"/>);</item>
/// <item>bits 6 and 5 (D, A) are not used: a CPU erratum may set them in a not-present entry;</item>
/// <item>bit 3 (PWT) is <c>_PAGE_SWP_EXCLUSIVE</c>, bit 2 (U/S) <c>_PAGE_SWP_UFFD_WP</c>, bit 1 (R/W)
/// <c>_PAGE_SWP_SOFT_DIRTY</c>; only the first is modelled (<c>arch/x86/include/asm/pgtable.h</c>);</item>
/// <item>bit 0 (P) is 0, so the CPU faults on the entry.</item>
/// </list>
/// </remarks>
public readonly struct SwapEntry : IEquatable<SwapEntry>
{
    /// <summary>Bits of the type (<c>MAX_SWAPFILES_SHIFT</c> = <c>SWP_TYPE_BITS</c> = 5).</summary>
    public const int TypeBits = 5;

    /// <summary>The number of types, swap devices and special entries together: 32.</summary>
    public const int TypeCount = 1 << TypeBits;

    /// <summary>
    /// The number of swap devices (<c>MAX_SWAPFILES</c>): 32 − 4 device-private − 3 migration − 1 hwpoison −
    /// 1 PTE marker = 23 in v6.12 with the configuration above.
    /// </summary>
    public const int MaxSwapFiles = TypeCount - 4 - 3 - 1 - 1;

    /// <summary>The type of a hardware-poison entry (<c>SWP_HWPOISON</c> = <c>MAX_SWAPFILES</c>).</summary>
    public const int HwPoisonType = MaxSwapFiles;

    /// <summary>The type of a read migration entry (<c>SWP_MIGRATION_READ</c> = <c>MAX_SWAPFILES</c> + 1).</summary>
    public const int MigrationReadType = MaxSwapFiles + 1;

    /// <summary>The type of a read-exclusive migration entry (<c>SWP_MIGRATION_READ_EXCLUSIVE</c>).</summary>
    public const int MigrationReadExclusiveType = MaxSwapFiles + 2;

    /// <summary>The type of a write migration entry (<c>SWP_MIGRATION_WRITE</c>).</summary>
    public const int MigrationWriteType = MaxSwapFiles + 3;

    /// <summary>The first bit of the offset in the raw value (<c>SWP_OFFSET_FIRST_BIT</c> = 9).</summary>
    public const int OffsetFirstBit = 9;

    /// <summary>Bits of the offset in the raw value: 64 − 5 − 9 = 50.</summary>
    public const int OffsetBits = 64 - TypeBits - OffsetFirstBit;

    /// <summary>The largest offset the x86-64 layout holds: 2^50 − 1.</summary>
    public const ulong MaxOffset = (1UL << OffsetBits) - 1;

    /// <summary>
    /// The largest page frame number of a migration entry: 2^40 − 1 (Linux <c>SWP_PFN_BITS</c> =
    /// <c>MAX_PHYSMEM_BITS</c> − <c>PAGE_SHIFT</c>, 52 − 12 with 5-level paging; 46 − 12 = 34 bits with 4-level).
    /// </summary>
    public const ulong MaxPfn = (1UL << 40) - 1;

    /// <summary>
    /// The offset bit of a migration entry that keeps the PTE's accessed bit: 40 (Linux <c>SWP_MIG_YOUNG_BIT</c> =
    /// <c>SWP_PFN_BITS</c>; used when <c>migration_entry_supports_ad</c>).
    /// </summary>
    public const int MigrationYoungBit = 40;

    /// <summary>The offset bit of a migration entry that keeps the PTE's dirty bit: 41 (Linux <c>SWP_MIG_DIRTY_BIT</c>).</summary>
    public const int MigrationDirtyBit = 41;

    /// <summary>The first bit of the type in the raw value: 59.</summary>
    public const int TypeFirstBit = 64 - TypeBits;

    /// <summary><c>_PAGE_SWP_EXCLUSIVE</c>: bit 3 (PWT) of a swap PTE or PMD, PageAnonExclusive remembered.</summary>
    public const ulong ExclusiveBit = 1UL << 3;

    /// <summary>Bits 58:9: where the inverted offset lives.</summary>
    public const ulong OffsetMask = MaxOffset << OffsetFirstBit;

    private const ulong PresentBit = 1UL << 0;
    private const ulong AccessedBit = 1UL << 5;
    private const ulong DirtyBit = 1UL << 6;
    private const ulong PseBit = 1UL << 7;
    private const ulong ProtNoneBit = 1UL << 8;

    private readonly ulong _offset;
    private readonly byte _type;

    private SwapEntry(int type, ulong offset)
    {
        _type = (byte)type;
        _offset = offset;
    }

    /// <summary>The type: a swap device (0 to <see cref="MaxSwapFiles"/> − 1) or a special entry above them.</summary>
    public int Type => _type;

    /// <summary>The offset: a slot on the swap device, or the page frame number of a migration entry.</summary>
    public ulong Offset => _offset;

    /// <summary>The entry names a swap slot (Linux <c>!non_swap_entry</c>: type below <see cref="MaxSwapFiles"/>).</summary>
    public bool IsSwap => _type < MaxSwapFiles;

    /// <summary>A migration entry of any kind (Linux <c>is_migration_entry</c>).</summary>
    public bool IsMigration => _type is MigrationReadType or MigrationReadExclusiveType or MigrationWriteType;

    /// <summary>The kind of this migration entry.</summary>
    /// <exception cref="InvalidOperationException">This is not a migration entry.</exception>
    public MigrationKind MigrationKind => _type switch
    {
        MigrationReadType => MigrationKind.Read,
        MigrationReadExclusiveType => MigrationKind.ReadExclusive,
        MigrationWriteType => MigrationKind.Write,
        _ => ThrowHelper.ThrowInvalidOperation<MigrationKind>($"Type {_type} is not a migration entry (types {MigrationReadType}..{MigrationWriteType})."),
    };

    /// <summary>The page frame number of this migration entry (Linux <c>swp_offset_pfn</c>).</summary>
    /// <exception cref="InvalidOperationException">This is not a migration entry.</exception>
    public ulong Pfn => IsMigration
        ? _offset & MaxPfn
        : ThrowHelper.ThrowInvalidOperation<ulong>($"Type {_type} is not a migration entry, so its offset is not a page frame number.");

    /// <summary>Whether this migration entry remembers an accessed PTE (Linux <c>is_migration_entry_young</c>).</summary>
    /// <exception cref="InvalidOperationException">This is not a migration entry.</exception>
    public bool IsMigrationYoung => MigrationBit(MigrationYoungBit);

    /// <summary>Whether this migration entry remembers a dirty PTE (Linux <c>is_migration_entry_dirty</c>).</summary>
    /// <exception cref="InvalidOperationException">This is not a migration entry.</exception>
    public bool IsMigrationDirty => MigrationBit(MigrationDirtyBit);

    /// <summary>A swap entry for slot <paramref name="offset"/> of swap device <paramref name="type"/> (Linux <c>swp_entry</c>).</summary>
    /// <exception cref="ArgumentOutOfRangeException">
    /// <paramref name="type"/> is not 0..<see cref="MaxSwapFiles"/> − 1, or <paramref name="offset"/> exceeds <see cref="MaxOffset"/>,
    /// or is <see cref="MaxOffset"/> with type 0 (the raw value would be 0, an empty entry; Linux's swap areas are
    /// far smaller, bounded by <c>arch_max_swapfile_size</c>).
    /// </exception>
    public static SwapEntry Swap(int type, ulong offset)
    {
        if ((uint)type >= MaxSwapFiles)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(type), type, $"A swap device type is 0..{MaxSwapFiles - 1} (MAX_SWAPFILES = {MaxSwapFiles}); {type} is not.");
        }

        CheckOffset(offset, nameof(offset), MaxOffset);
        if (type == 0 && offset == MaxOffset)
        {
            // ~offset is 0 in the 50 stored bits and the type is 0: the raw value would be 0, pte_none.
            ThrowHelper.ThrowArgumentOutOfRange(nameof(offset), offset, $"Type 0 offset {ThrowHelper.Hex(offset)} would encode as 0 (pte_none); the largest usable offset of type 0 is {ThrowHelper.Hex(MaxOffset - 1)}.");
        }

        return new SwapEntry(type, offset);
    }

    /// <summary>
    /// A migration entry of <paramref name="kind"/> for page frame <paramref name="pfn"/> (Linux
    /// <c>make_*_migration_entry</c>), optionally remembering the PTE's accessed and dirty bits in offset bits
    /// <see cref="MigrationYoungBit"/> and <see cref="MigrationDirtyBit"/> (<c>make_migration_entry_young</c>,
    /// <c>make_migration_entry_dirty</c>).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">
    /// <paramref name="kind"/> is not defined, or <paramref name="pfn"/> exceeds <see cref="MaxPfn"/>.
    /// </exception>
    public static SwapEntry Migration(MigrationKind kind, ulong pfn, bool young = false, bool dirty = false)
    {
        int type = kind switch
        {
            MigrationKind.Read => MigrationReadType,
            MigrationKind.ReadExclusive => MigrationReadExclusiveType,
            MigrationKind.Write => MigrationWriteType,
            _ => ThrowKind(kind),
        };
        CheckOffset(pfn, nameof(pfn), MaxPfn);
        return new SwapEntry(type, pfn | (young ? 1UL << MigrationYoungBit : 0) | (dirty ? 1UL << MigrationDirtyBit : 0));
    }

    /// <summary>
    /// Linux <c>pte_none</c> on x86-64: every bit but A and D is 0 (a CPU erratum may set A and D in a
    /// not-present entry, so Linux ignores them here; <c>_PAGE_KNL_ERRATUM_MASK</c>).
    /// </summary>
    public static bool PteNone(ulong raw) => (raw & ~(AccessedBit | DirtyBit)) == 0;

    /// <summary>
    /// Linux <c>pte_present</c> on x86-64: P or <c>_PAGE_PROTNONE</c> (bit 8) is set. A PROT_NONE PTE has P = 0,
    /// so the CPU faults on it, but Linux treats it as present and never as a swap entry.
    /// </summary>
    public static bool PtePresent(ulong raw) => (raw & (PresentBit | ProtNoneBit)) != 0;

    /// <summary>
    /// Linux <c>pmd_present</c> on x86-64: P, <c>_PAGE_PROTNONE</c> or PSE (bit 7) is set. PSE counts because
    /// <c>pmdp_invalidate</c> clears only P of a huge PMD while it is split.
    /// </summary>
    public static bool PmdPresent(ulong raw) => (raw & (PresentBit | ProtNoneBit | PseBit)) != 0;

    /// <summary>
    /// Decodes a PTE value: <see langword="true"/> iff it holds a swap-format entry (Linux <c>is_swap_pte</c>:
    /// not <see cref="PteNone"/> and not <see cref="PtePresent"/>). Any of the 32 types decodes, including the
    /// special ones this model does not build (hwpoison, device-private, PTE markers). Bits 1, 2, 5, 6 and 7 are not
    /// part of the entry and are ignored.
    /// </summary>
    public static bool TryFromPteRaw(ulong raw, out SwapEntry entry, out bool exclusive) =>
        TryDecode(raw, PtePresent(raw), out entry, out exclusive);

    /// <summary>
    /// Decodes a PMD value: <see langword="true"/> iff it holds a swap-format entry (Linux <c>is_swap_pmd</c>:
    /// not none and not <see cref="PmdPresent"/>). The layout is the PTE's (<c>__pmd_to_swp_entry</c>).
    /// </summary>
    public static bool TryFromPmdRaw(ulong raw, out SwapEntry entry, out bool exclusive) =>
        TryDecode(raw, PmdPresent(raw), out entry, out exclusive);

    // Linux is_swap_pte / is_swap_pmd: a swap-format entry is neither none nor present (by the level's own test).
    private static bool TryDecode(ulong raw, bool present, out SwapEntry entry, out bool exclusive)
    {
        if (PteNone(raw) || present)
        {
            entry = default;
            exclusive = false;
            return false;
        }

        entry = Decode(raw);
        exclusive = (raw & ExclusiveBit) != 0;
        return true;
    }

    /// <summary>
    /// The not-present PTE that holds this entry (Linux <c>swp_entry_to_pte</c>): type in bits 63:59, the inverted
    /// offset in bits 58:9, <see cref="ExclusiveBit"/> if <paramref name="exclusive"/>, every other bit 0.
    /// </summary>
    public ulong ToPteRaw(bool exclusive = false) =>
        ((ulong)_type << TypeFirstBit) | ((~_offset & MaxOffset) << OffsetFirstBit) | (exclusive ? ExclusiveBit : 0);

    /// <summary>The not-present PMD that holds this entry (Linux <c>swp_entry_to_pmd</c>): the same layout as <see cref="ToPteRaw"/>.</summary>
    public ulong ToPmdRaw(bool exclusive = false) => ToPteRaw(exclusive);

    /// <inheritdoc/>
    public bool Equals(SwapEntry other) => _type == other._type && _offset == other._offset;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is SwapEntry other && Equals(other);

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(_type, _offset);

    /// <summary>Equality of type and offset.</summary>
    public static bool operator ==(SwapEntry left, SwapEntry right) => left.Equals(right);

    /// <summary>Inequality.</summary>
    public static bool operator !=(SwapEntry left, SwapEntry right) => !left.Equals(right);

    /// <summary>E.g. <c>swap 0:0x1f3</c>, <c>migration Write pfn 0x1234</c> or <c>special 23:0x0</c>.</summary>
    public override string ToString() => IsSwap
        ? string.Create(CultureInfo.InvariantCulture, $"swap {_type}:{ThrowHelper.Hex(_offset)}")
        : IsMigration
            ? string.Create(CultureInfo.InvariantCulture, $"migration {MigrationKind} pfn {ThrowHelper.Hex(Pfn)}{(IsMigrationYoung ? " young" : "")}{(IsMigrationDirty ? " dirty" : "")}")
            : string.Create(CultureInfo.InvariantCulture, $"special {_type}:{ThrowHelper.Hex(_offset)}");

    private static SwapEntry Decode(ulong raw) =>
        new((int)(raw >> TypeFirstBit), ~(raw >> OffsetFirstBit) & MaxOffset);

    private static void CheckOffset(ulong value, string name, ulong limit)
    {
        if (value > limit)
        {
            ThrowHelper.ThrowArgumentOutOfRange(name, value, $"{name} {ThrowHelper.Hex(value)} exceeds the limit {ThrowHelper.Hex(limit)}.");
        }
    }

    private bool MigrationBit(int bit) => (((Pfn ^ _offset) >> bit) & 1) != 0;

    private static int ThrowKind(MigrationKind kind)
    {
        ThrowHelper.ThrowArgumentOutOfRange(nameof(kind), kind, $"{kind} is not a MigrationKind (Read, ReadExclusive, Write).");
        return 0;
    }
}
