using System;
using System.Globalization;
using System.Text;
using ThpCore.Internal;

namespace ThpCore.Paging;

/// <summary>
/// One 64-bit paging-structure entry exactly as the CPU reads it, together with the level it sits at.
/// </summary>
/// <remarks>
/// <para>
/// The same bit means different things at different levels (Intel SDM Vol. 3A §4.5): bit 7 is PS in a
/// PDE or PDPTE, PAT in a PTE and reserved in a PML4E/PML5E; bit 12 is PAT in a 2 MiB or 1 GiB leaf and an
/// address bit everywhere else; D (bit 6), G (bit 8) and the protection key (bits 62:59) exist only in
/// entries that map a page. So the level is part of the value: there is no way to build or decode an entry
/// without one, and asking a non-leaf for a leaf-only field throws <see cref="InvalidOperationException"/>
/// instead of returning a bit that means something else.
/// </para>
/// <para><see cref="Raw"/> is the whole of the architectural state; the level is what the walk knows.</para>
/// </remarks>
public readonly struct PageTableEntry : IEquatable<PageTableEntry>
{
    /// <summary>Bits 51:12, the address of the next table or of a 4 KiB frame.</summary>
    public const ulong AddressMask4K = 0x000F_FFFF_FFFF_F000UL;

    /// <summary>Bits 51:21, the frame of a 2 MiB leaf (bit 12 is PAT, 20:13 reserved).</summary>
    public const ulong AddressMask2M = 0x000F_FFFF_FFE0_0000UL;

    /// <summary>Bits 51:30, the frame of a 1 GiB leaf (bit 12 is PAT, 29:13 reserved).</summary>
    public const ulong AddressMask1G = 0x000F_FFFF_C000_0000UL;

    /// <summary>Bits 62:59, the protection key of a leaf.</summary>
    public const ulong ProtectionKeyMask = 0x7800_0000_0000_0000UL;

    /// <summary>Bits software may use in a leaf: 11:9 and 58:52 (62:59 are the protection key).</summary>
    public const ulong LeafAvailableMask = 0x07F0_0000_0000_0E00UL;

    /// <summary>Bits software may use in a non-leaf entry: 11:9 and 62:52.</summary>
    public const ulong TableAvailableMask = 0x7FF0_0000_0000_0E00UL;

    private const ulong Bit7 = 1UL << 7;
    private const ulong Bit12 = 1UL << 12;

    private readonly ulong _raw;
    private readonly PagingLevel _level;

    /// <summary>An entry with raw value <paramref name="raw"/> at <paramref name="level"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="level"/> is not 1..5.</exception>
    public PageTableEntry(PagingLevel level, ulong raw)
    {
        _level = PagingLevelExtensions.Validate(level);
        _raw = raw;
    }

    /// <summary>The 64-bit value as stored in memory.</summary>
    public ulong Raw => _raw;

    /// <summary>The level this entry sits at.</summary>
    public PagingLevel Level => _level;

    /// <summary>All 64 bits are zero (Linux: <c>pte_none</c>).</summary>
    public bool IsEmpty => _raw == 0;

    /// <summary>P, bit 0.</summary>
    public bool IsPresent => (_raw & (ulong)PageTableFlags.Present) != 0;

    /// <summary>R/W, bit 1.</summary>
    public bool IsWritable => (_raw & (ulong)PageTableFlags.Writable) != 0;

    /// <summary>U/S, bit 2.</summary>
    public bool IsUser => (_raw & (ulong)PageTableFlags.User) != 0;

    /// <summary>PWT, bit 3.</summary>
    public bool IsWriteThrough => (_raw & (ulong)PageTableFlags.WriteThrough) != 0;

    /// <summary>PCD, bit 4.</summary>
    public bool IsCacheDisabled => (_raw & (ulong)PageTableFlags.CacheDisable) != 0;

    /// <summary>A, bit 5.</summary>
    public bool IsAccessed => (_raw & (ulong)PageTableFlags.Accessed) != 0;

    /// <summary>XD, bit 63 (meaningful only with EFER.NXE = 1; a reserved bit otherwise).</summary>
    public bool IsExecuteDisable => (_raw & (ulong)PageTableFlags.ExecuteDisable) != 0;

    /// <summary>
    /// The fixed-position bits that are set (see <see cref="PageTableFlags"/>), raw: in a table entry bits 6 (D)
    /// and 8 (G) are reported as stored although the CPU ignores them there (and AMD reserves bit 8 in a PML4E/PML5E).
    /// </summary>
    public PageTableFlags Flags => (PageTableFlags)_raw & AllFlags;

    /// <summary>
    /// Bit 7 read as PS, at the levels where it is PS (PDE, PDPTE) or a reserved PS (PML4E, PML5E).
    /// </summary>
    /// <exception cref="InvalidOperationException">The entry is a PTE, where bit 7 is PAT.</exception>
    public bool PageSizeBit => _level == PagingLevel.Pt
        ? ThrowHelper.ThrowInvalidOperation<bool>("Bit 7 of a PTE is PAT, not PS; read Pat instead.")
        : (_raw & Bit7) != 0;

    /// <summary>Whether this entry maps a page (a PTE, or a PDE/PDPTE with PS = 1) rather than referencing a table.</summary>
    /// <remarks>A PML4E/PML5E with bit 7 set is not a leaf: that bit is reserved there and the walk faults.</remarks>
    public bool IsLeaf => _level == PagingLevel.Pt || (_level <= PagingLevel.Pdpt && (_raw & Bit7) != 0);

    /// <summary>The size of the page this entry maps, or <see langword="null"/> if it references a table.</summary>
    public PageSize? LeafSize => IsLeaf ? (PageSize)((int)_level - 1) : null;

    /// <summary>D, bit 6 of a leaf.</summary>
    /// <exception cref="InvalidOperationException">The entry references a table (bit 6 is ignored there).</exception>
    public bool IsDirty => (LeafOnly("D (bit 6)") & (ulong)PageTableFlags.Dirty) != 0;

    /// <summary>G, bit 8 of a leaf.</summary>
    /// <exception cref="InvalidOperationException">The entry references a table (bit 8 is ignored there, or reserved on AMD).</exception>
    public bool IsGlobal => (LeafOnly("G (bit 8)") & (ulong)PageTableFlags.Global) != 0;

    /// <summary>PAT: bit 7 of a PTE, bit 12 of a 2 MiB or 1 GiB leaf.</summary>
    /// <exception cref="InvalidOperationException">The entry references a table.</exception>
    public bool Pat => (LeafOnly("PAT") & PatBit) != 0;

    /// <summary>The PAT entry that selects the memory type: 4·PAT + 2·PCD + PWT (Intel SDM Vol. 3A §11.12.3).</summary>
    /// <exception cref="InvalidOperationException">The entry references a table.</exception>
    public int PatIndex => (Pat ? 4 : 0) + (IsCacheDisabled ? 2 : 0) + (IsWriteThrough ? 1 : 0);

    /// <summary>The protection key, bits 62:59 of a leaf (used only when CR4.PKE or CR4.PKS is set).</summary>
    /// <exception cref="InvalidOperationException">The entry references a table.</exception>
    public int ProtectionKey => (int)((LeafOnly("the protection key (bits 62:59)") & ProtectionKeyMask) >> 59);

    /// <summary>
    /// The physical address in the entry: the next table (bits 51:12) or the page frame (bits 51:12, 51:21 or
    /// 51:30 by page size; bit 12 of a large leaf is PAT and is not part of it).
    /// </summary>
    public PhysicalAddress Address => PhysicalAddress.FromMaskedBits(_raw & AddressMask);

    /// <summary>The mask of the address field for this entry's level and kind.</summary>
    public ulong AddressMask => AddressMaskFor(_level, IsLeaf);

    /// <summary>The software-available bits that are set (11:9 and 58:52 in a leaf, 11:9 and 62:52 in a table entry).</summary>
    public ulong AvailableBits => _raw & AvailableMask;

    /// <summary>The mask of the software-available bits for this entry's kind.</summary>
    public ulong AvailableMask => IsLeaf ? LeafAvailableMask : TableAvailableMask;

    /// <summary>An empty (all-zero) entry at <paramref name="level"/>.</summary>
    public static PageTableEntry Empty(PagingLevel level) => new(level, 0);

    /// <summary>An entry at <paramref name="level"/> that references the next table at <paramref name="table"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="level"/> is the page table.</exception>
    /// <exception cref="ArgumentException"><paramref name="table"/> is not 4 KiB-aligned.</exception>
    public static PageTableEntry Table(PagingLevel level, PhysicalAddress table, PageTableFlags flags)
    {
        if (PagingLevelExtensions.Validate(level) == PagingLevel.Pt)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(level), level, "A PTE cannot reference a table; it always maps a 4 KiB page.");
        }

        if (!table.IsAligned(PageSize.Size4K))
        {
            ThrowHelper.ThrowArgument(nameof(table), $"A paging structure is 4 KiB-aligned; {table} is not.");
        }

        return new PageTableEntry(level, table.Value | (ulong)flags);
    }

    /// <summary>A leaf that maps the page of <paramref name="size"/> at <paramref name="frame"/>.</summary>
    /// <exception cref="ArgumentException"><paramref name="frame"/> is not aligned to <paramref name="size"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="protectionKey"/> is not 0..15.</exception>
    public static PageTableEntry Leaf(PageSize size, PhysicalAddress frame, PageTableFlags flags, bool pat = false, int protectionKey = 0)
    {
        if (!frame.IsAligned(size))
        {
            ThrowHelper.ThrowArgument(nameof(frame), $"A {size.ShortName()} page frame must be {size.ShortName()}-aligned; {frame} is not.");
        }

        PagingLevel level = size.LeafLevel();
        ulong raw = frame.Value | (ulong)flags | (level == PagingLevel.Pt ? 0 : Bit7);
        return new PageTableEntry(level, raw).WithPat(pat).WithProtectionKey(protectionKey);
    }

    /// <summary>The address-field mask for a leaf or table entry at <paramref name="level"/>.</summary>
    public static ulong AddressMaskFor(PagingLevel level, bool leaf) => (leaf, level) switch
    {
        (true, PagingLevel.Pd) => AddressMask2M,
        (true, PagingLevel.Pdpt) => AddressMask1G,
        _ => AddressMask4K,
    };

    /// <summary>The reserved bits set in this entry for the given features; 0 if none or if not present.</summary>
    public ulong GetReservedBits(ReservedBitMasks masks)
    {
        ArgumentNullException.ThrowIfNull(masks);
        return masks.ReservedBitsIn(_level, _raw);
    }

    /// <summary>
    /// The reserved bits set in this entry for <paramref name="cpu"/>'s MAXPHYADDR, EFER.NXE, 1 GiB-page support,
    /// vendor and paging mode; 0 if none or if not present.
    /// </summary>
    /// <exception cref="ArgumentException">The entry is a PML5E but <paramref name="cpu"/> uses 4-level paging.</exception>
    public ulong GetReservedBits(CpuState cpu)
    {
        ArgumentNullException.ThrowIfNull(cpu);
        if (_level > cpu.PagingMode.RootLevel())
        {
            ThrowHelper.ThrowArgument(nameof(cpu), $"A {_level.EntryName()} does not exist in {cpu.PagingMode} paging.");
        }

        return cpu.ReservedBits.ReservedBitsIn(_level, _raw);
    }

    /// <summary>This entry with the raw value replaced.</summary>
    public PageTableEntry WithRaw(ulong raw) => new(_level, raw);

    /// <summary>This entry with P set or cleared.</summary>
    public PageTableEntry WithPresent(bool value) => WithBit((ulong)PageTableFlags.Present, value);

    /// <summary>This entry with R/W set or cleared.</summary>
    public PageTableEntry WithWritable(bool value) => WithBit((ulong)PageTableFlags.Writable, value);

    /// <summary>This entry with U/S set or cleared.</summary>
    public PageTableEntry WithUser(bool value) => WithBit((ulong)PageTableFlags.User, value);

    /// <summary>This entry with PWT set or cleared.</summary>
    public PageTableEntry WithWriteThrough(bool value) => WithBit((ulong)PageTableFlags.WriteThrough, value);

    /// <summary>This entry with PCD set or cleared.</summary>
    public PageTableEntry WithCacheDisabled(bool value) => WithBit((ulong)PageTableFlags.CacheDisable, value);

    /// <summary>This entry with A set or cleared.</summary>
    public PageTableEntry WithAccessed(bool value) => WithBit((ulong)PageTableFlags.Accessed, value);

    /// <summary>This entry with XD set or cleared.</summary>
    public PageTableEntry WithExecuteDisable(bool value) => WithBit((ulong)PageTableFlags.ExecuteDisable, value);

    /// <summary>This leaf with D set or cleared.</summary>
    /// <exception cref="InvalidOperationException">The entry references a table.</exception>
    public PageTableEntry WithDirty(bool value)
    {
        LeafOnly("D (bit 6)");
        return WithBit((ulong)PageTableFlags.Dirty, value);
    }

    /// <summary>This leaf with G set or cleared.</summary>
    /// <exception cref="InvalidOperationException">The entry references a table.</exception>
    public PageTableEntry WithGlobal(bool value)
    {
        LeafOnly("G (bit 8)");
        return WithBit((ulong)PageTableFlags.Global, value);
    }

    /// <summary>This leaf with PAT set or cleared (bit 7 of a PTE, bit 12 of a large leaf).</summary>
    /// <exception cref="InvalidOperationException">The entry references a table.</exception>
    public PageTableEntry WithPat(bool value)
    {
        LeafOnly("PAT");
        return WithBit(PatBit, value);
    }

    /// <summary>This leaf with protection key <paramref name="key"/> in bits 62:59.</summary>
    /// <exception cref="InvalidOperationException">The entry references a table.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="key"/> is not 0..15.</exception>
    public PageTableEntry WithProtectionKey(int key)
    {
        LeafOnly("the protection key (bits 62:59)");
        if ((uint)key > 15)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(key), key, "A protection key is 0..15.");
        }

        return new(_level, (_raw & ~ProtectionKeyMask) | ((ulong)key << 59));
    }

    /// <summary>
    /// This PDE or PDPTE with PS set or cleared. Changing PS changes what the entry is (leaf or table); PAT,
    /// at bit 12 in the leaf form, is left where it is and becomes an address bit in the table form.
    /// </summary>
    /// <exception cref="InvalidOperationException">The entry is a PTE (bit 7 is PAT).</exception>
    public PageTableEntry WithPageSizeBit(bool value)
    {
        if (_level == PagingLevel.Pt)
        {
            ThrowHelper.ThrowInvalidOperation("Bit 7 of a PTE is PAT, not PS; use WithPat.");
        }

        return WithBit(Bit7, value);
    }

    /// <summary>This entry pointing at <paramref name="address"/>, which must have the alignment of this entry's kind.</summary>
    /// <exception cref="ArgumentException"><paramref name="address"/> has bits outside the address field.</exception>
    public PageTableEntry WithAddress(PhysicalAddress address)
    {
        ulong mask = AddressMask;
        if ((address.Value & ~mask) != 0)
        {
            string what = IsLeaf ? $"a {LeafSize!.Value.ShortName()} page frame" : "a table address";
            ThrowHelper.ThrowArgument(nameof(address), $"{address} does not fit {what} in a {_level.EntryName()} (mask {ThrowHelper.Hex(mask)}).");
        }

        return new(_level, (_raw & ~mask) | address.Value);
    }

    /// <summary>This entry with its software-available bits replaced by <paramref name="bits"/>.</summary>
    /// <exception cref="ArgumentException"><paramref name="bits"/> has a bit outside <see cref="AvailableMask"/>.</exception>
    public PageTableEntry WithAvailableBits(ulong bits)
    {
        ulong mask = AvailableMask;
        if ((bits & ~mask) != 0)
        {
            ThrowHelper.ThrowArgument(nameof(bits), $"{ThrowHelper.Hex(bits)} sets bits that software may not use in a {(IsLeaf ? "leaf" : "table entry")} (available mask {ThrowHelper.Hex(mask)}).");
        }

        return new(_level, (_raw & ~mask) | bits);
    }

    /// <inheritdoc/>
    public bool Equals(PageTableEntry other) => _raw == other._raw && _level == other._level;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is PageTableEntry other && Equals(other);

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(_raw, _level);

    /// <summary>Equality of raw value and level.</summary>
    public static bool operator ==(PageTableEntry left, PageTableEntry right) => left.Equals(right);

    /// <summary>Inequality.</summary>
    public static bool operator !=(PageTableEntry left, PageTableEntry right) => !left.Equals(right);

    /// <summary>E.g. <c>PDE 0x00000000002000e7 [P W U A D PS] frame 0x200000 (2M)</c>.</summary>
    public override string ToString()
    {
        if (_level == 0)
        {
            return "default(PageTableEntry): no level";
        }

        var sb = new StringBuilder();
        sb.Append(_level.EntryName()).Append(" 0x").Append(_raw.ToString("x16", CultureInfo.InvariantCulture));
        if (!IsPresent)
        {
            return sb.Append(_raw == 0 ? " [empty]" : " [not present]").ToString();
        }

        sb.Append(" [").Append(DescribeBits()).Append(']');
        sb.Append(IsLeaf ? " frame " : " table ").Append(Address.ToString());
        if (IsLeaf)
        {
            sb.Append(" (").Append(LeafSize!.Value.ShortName()).Append(')');
        }

        return sb.ToString();
    }

    /// <summary>The set bits by their SDM names for this level, e.g. <c>P W U A D PS G</c>.</summary>
    public string DescribeBits()
    {
        var sb = new StringBuilder();
        void Add(bool on, string name)
        {
            if (on)
            {
                sb.Append(sb.Length == 0 ? string.Empty : " ").Append(name);
            }
        }

        Add(IsPresent, "P");
        Add(IsWritable, "W");
        Add(IsUser, "U");
        Add(IsWriteThrough, "PWT");
        Add(IsCacheDisabled, "PCD");
        Add(IsAccessed, "A");
        if (IsLeaf)
        {
            Add(IsDirty, "D");
            Add(_level != PagingLevel.Pt, "PS");
            Add(IsGlobal, "G");
            Add(Pat, "PAT");
            Add(ProtectionKey != 0, "PK=" + ProtectionKey.ToString(CultureInfo.InvariantCulture));
        }
        else
        {
            Add((_raw & Bit7) != 0, "PS(reserved)");
        }

        Add(IsExecuteDisable, "XD");
        return sb.ToString();
    }

    internal const PageTableFlags AllFlags = PageTableFlags.Present | PageTableFlags.Writable | PageTableFlags.User
        | PageTableFlags.WriteThrough | PageTableFlags.CacheDisable | PageTableFlags.Accessed | PageTableFlags.Dirty
        | PageTableFlags.Global | PageTableFlags.ExecuteDisable;

    private ulong PatBit => _level == PagingLevel.Pt ? Bit7 : Bit12;

    private PageTableEntry WithBit(ulong bit, bool value) => new(_level, value ? _raw | bit : _raw & ~bit);

    private ulong LeafOnly(string field)
    {
        if (!IsLeaf)
        {
            ThrowHelper.ThrowInvalidOperation($"{field} exists only in an entry that maps a page; this {_level.EntryName()} references a table.");
        }

        return _raw;
    }
}
