using System;
using System.Globalization;
using System.Runtime.CompilerServices;

namespace ThpCore.Paging;

/// <summary>
/// One cached translation, holding what Intel SDM Vol. 3A §4.10.2.2 says a TLB entry holds: the virtual page
/// number, the page frame, the rights combined over the walk (R/W and U/S ANDed, XD ORed), the protection key,
/// the dirty flag and memory-type bits of the leaf, whether it is global, the PCID it was created under, and
/// the page size.
/// </summary>
/// <remarks>
/// The entry keeps a copy of the leaf as it stood after the filling walk (A set, D set if that walk was a
/// write), from which the frame, key, D, PWT/PCD/PAT are read. It is a snapshot: it does not change when the
/// tables in memory do, which is what makes a TLB go stale. <c>default(TlbEntry)</c> is an empty slot and is
/// never returned by <see cref="Tlb"/>.
/// </remarks>
public readonly struct TlbEntry : IEquatable<TlbEntry>
{
    private const byte GlobalFlag = 1;
    private const ulong DirtyBit = 1UL << 6;

    // ~(virtual address >> page shift). A real page number never has its top 12 bits set, so the zero of an
    // empty slot (default struct, Array.Clear) can never match a lookup: no separate valid bit to test.
    private readonly ulong _invertedTag;
    private readonly ulong _leaf;
    private readonly ushort _pcid;
    private readonly EffectiveRights _rights;
    private readonly PageSize _size;
    private readonly byte _flags;

    internal TlbEntry(PageSize size, ulong tag, int pcid, bool global, ulong leaf, EffectiveRights rights)
    {
        _invertedTag = ~tag;
        _leaf = leaf;
        _pcid = (ushort)pcid;
        _rights = rights;
        _size = size;
        _flags = global ? GlobalFlag : (byte)0;
    }

    /// <summary>The size of the page this entry maps.</summary>
    public PageSize PageSize => _size;

    /// <summary>The first virtual address of the page (the cached tag shifted back into place).</summary>
    public VirtualAddress VirtualBase => VirtualAddress.FromRaw(~_invertedTag << _size.Shift());

    /// <summary>The virtual page number at this entry's size (bits 56:12, 56:21 or 56:30 of <see cref="VirtualBase"/>).</summary>
    public ulong PageNumber => VirtualBase.PageNumber(_size);

    /// <summary>The first physical address of the page frame.</summary>
    public PhysicalAddress PhysicalBase => PhysicalAddress.FromMaskedBits(_leaf & PageTableEntry.AddressMaskFor(_size.LeafLevel(), leaf: true));

    /// <summary>The rights combined over every entry of the walk that filled this entry.</summary>
    public EffectiveRights Rights => _rights;

    /// <summary>R/W was 1 at every level.</summary>
    public bool IsWritable => (_rights & EffectiveRights.Writable) != 0;

    /// <summary>U/S was 1 at every level: a user-mode address.</summary>
    public bool IsUser => (_rights & EffectiveRights.User) != 0;

    /// <summary>XD was 1 at some level (with EFER.NXE = 1).</summary>
    public bool IsExecuteDisable => (_rights & EffectiveRights.ExecuteDisable) != 0;

    /// <summary>The protection key of the leaf (bits 62:59).</summary>
    public int ProtectionKey => (int)((_leaf >> 59) & 0xF);

    /// <summary>The dirty flag as cached. A write through an entry with D = 0 makes the TLB walk again.</summary>
    public bool IsDirty => (_leaf & DirtyBit) != 0;

    /// <summary>Whether this is a global entry (CR4.PGE was 1 and the leaf had G = 1 when it was filled); it matches any PCID.</summary>
    public bool IsGlobal => (_flags & GlobalFlag) != 0;

    /// <summary>The PCID current when the entry was filled (0 when CR4.PCIDE = 0). Ignored for matching when <see cref="IsGlobal"/>.</summary>
    public int Pcid => _pcid;

    /// <summary>The cached copy of the leaf (A set; D as cached). Its PWT, PCD and PAT bits are the memory-type selection.</summary>
    public PageTableEntry Leaf => new(_size.LeafLevel(), _leaf);

    internal ulong LeafRaw => _leaf;

    internal bool IsEmpty => _invertedTag == 0;

    /// <summary>Whether this entry covers <paramref name="address"/> (ignoring PCID).</summary>
    public bool Covers(VirtualAddress address) => !IsEmpty && ~_invertedTag == (address.Value >> _size.Shift());

    /// <summary>The physical address this entry gives for <paramref name="address"/>.</summary>
    /// <exception cref="ArgumentException">The entry does not cover <paramref name="address"/>.</exception>
    public PhysicalAddress Translate(VirtualAddress address)
    {
        if (!Covers(address))
        {
            throw new ArgumentException($"The {_size.ShortName()} entry for {VirtualBase} does not cover {address}.", nameof(address));
        }

        return PhysicalAddress.FromMaskedBits(PhysicalBase.Value | address.PageOffset(_size));
    }

    /// <summary>Value equality of every cached field.</summary>
    public bool Equals(TlbEntry other) =>
        _invertedTag == other._invertedTag && _leaf == other._leaf && _pcid == other._pcid
        && _rights == other._rights && _size == other._size && _flags == other._flags;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is TlbEntry other && Equals(other);

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(_invertedTag, _leaf, _pcid, _rights, _size, _flags);

    /// <summary>Equality.</summary>
    public static bool operator ==(TlbEntry left, TlbEntry right) => left.Equals(right);

    /// <summary>Inequality.</summary>
    public static bool operator !=(TlbEntry left, TlbEntry right) => !left.Equals(right);

    /// <summary>E.g. <c>4K 0x7f0000201000 -> 0x40001000 W U X PK=0 D=1 PCID=3</c> or <c>… global</c>.</summary>
    public override string ToString()
    {
        if (IsEmpty)
        {
            return "(empty)";
        }

        string rights = (IsWritable ? "W" : "R") + (IsUser ? " U" : " S") + (IsExecuteDisable ? " XD" : " X");
        string context = IsGlobal ? "global" : string.Create(CultureInfo.InvariantCulture, $"PCID={Pcid}");
        return string.Create(CultureInfo.InvariantCulture, $"{_size.ShortName()} {VirtualBase} -> {PhysicalBase} {rights} PK={ProtectionKey} D={(IsDirty ? 1 : 0)} {context}");
    }

    /// <summary>The lookup test: same tag, and the same PCID unless global.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool Matches(ulong invertedTag, int pcid) =>
        _invertedTag == invertedTag && (_pcid == pcid || (_flags & GlobalFlag) != 0);

    /// <summary>Same tag, any PCID.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool HasTag(ulong invertedTag) => _invertedTag == invertedTag;
}
