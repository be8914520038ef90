using System;
using System.Globalization;
using ThpCore.Internal;

namespace ThpCore.Paging;

/// <summary>
/// A 64-bit linear (virtual) address. Canonical form depends on the paging mode: bits 63:48 must equal
/// bit 47 with 4-level paging, bits 63:57 must equal bit 56 with 5-level paging (Intel SDM Vol. 3A §3.3.7.1).
/// </summary>
/// <remarks>
/// The checked factories (<see cref="Create"/>, <see cref="TryCreate"/>) only produce canonical addresses.
/// <see cref="FromRaw"/> keeps any value, because a CPU can be asked to access a non-canonical address and
/// must then raise #GP (see <see cref="PageWalker"/>).
/// </remarks>
public readonly struct VirtualAddress : IEquatable<VirtualAddress>, IComparable<VirtualAddress>
{
    private readonly ulong _value;

    private VirtualAddress(ulong value) => _value = value;

    /// <summary>The raw 64-bit value.</summary>
    public ulong Value => _value;

    /// <summary>Creates a canonical address for <paramref name="mode"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="value"/> is not canonical in <paramref name="mode"/>.</exception>
    public static VirtualAddress Create(ulong value, PagingMode mode = PagingMode.FourLevel)
    {
        if (!IsCanonical(value, mode))
        {
            int bits = mode.VirtualAddressBits();
            ThrowHelper.ThrowArgumentOutOfRange(
                nameof(value),
                ThrowHelper.Hex(value),
                $"Virtual address {ThrowHelper.Hex(value)} is not canonical for {bits}-bit linear addresses: bits 63:{bits} must all equal bit {bits - 1} (valid ranges 0x0–{ThrowHelper.Hex((1UL << (bits - 1)) - 1)} and {ThrowHelper.Hex(~((1UL << (bits - 1)) - 1))}–0xffffffffffffffff).");
        }

        return new VirtualAddress(value);
    }

    /// <summary>Returns <see langword="false"/> if <paramref name="value"/> is not canonical in <paramref name="mode"/>.</summary>
    public static bool TryCreate(ulong value, PagingMode mode, out VirtualAddress address)
    {
        bool ok = IsCanonical(value, mode);
        address = ok ? new VirtualAddress(value) : default;
        return ok;
    }

    /// <summary>Makes <paramref name="value"/> canonical by copying the top significant bit upward (sign extension).</summary>
    public static VirtualAddress CreateTruncate(ulong value, PagingMode mode = PagingMode.FourLevel)
    {
        int unused = 64 - mode.VirtualAddressBits();
        return new VirtualAddress((ulong)((long)(value << unused) >> unused));
    }

    /// <summary>Keeps <paramref name="value"/> as it is, canonical or not (for modelling accesses that must #GP).</summary>
    public static VirtualAddress FromRaw(ulong value) => new(value);

    /// <summary>Whether <paramref name="value"/> is canonical in <paramref name="mode"/>.</summary>
    public static bool IsCanonical(ulong value, PagingMode mode)
    {
        int unused = 64 - mode.VirtualAddressBits();
        return (ulong)((long)(value << unused) >> unused) == value;
    }

    /// <summary>Whether this address is canonical in <paramref name="mode"/>.</summary>
    public bool IsCanonicalIn(PagingMode mode) => IsCanonical(_value, mode);

    /// <summary>The 9-bit table index this address selects at <paramref name="level"/> (bits 12+9(level-1) upward).</summary>
    public int IndexAt(PagingLevel level) => (int)((_value >> level.IndexShift()) & 0x1FF);

    /// <summary>The offset of this address within its page of <paramref name="size"/>.</summary>
    public ulong PageOffset(PageSize size) => _value & size.OffsetMask();

    /// <summary>Whether the address is a multiple of <paramref name="size"/>.</summary>
    public bool IsAligned(PageSize size) => (_value & size.OffsetMask()) == 0;

    /// <summary>The start of the page of <paramref name="size"/> containing this address.</summary>
    public VirtualAddress AlignDown(PageSize size) => new(_value & ~size.OffsetMask());

    /// <summary>The virtual page number at <paramref name="size"/> granularity (the TLB tag: address bits above the offset, without sign extension).</summary>
    public ulong PageNumber(PageSize size, PagingMode mode = PagingMode.FiveLevel) =>
        (_value & ((1UL << mode.VirtualAddressBits()) - 1)) >> size.Shift();

    /// <summary>This address plus <paramref name="bytes"/>, wrapping as the CPU's adder does; the result may be non-canonical.</summary>
    public VirtualAddress Add(ulong bytes) => new(unchecked(_value + bytes));

    /// <summary>Builds the canonical address with the given table indices (highest level first) and offset.</summary>
    /// <exception cref="ArgumentOutOfRangeException">An index is not 0..511 or the offset is not below 4096.</exception>
    public static VirtualAddress FromIndices(PagingMode mode, ReadOnlySpan<int> indicesFromRoot, ulong offset = 0)
    {
        int levels = (int)mode.RootLevel();
        if (indicesFromRoot.Length != levels)
        {
            ThrowHelper.ThrowArgument(nameof(indicesFromRoot), $"{mode} paging needs {levels} indices, got {indicesFromRoot.Length}.");
        }

        if (offset >= 4096)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(offset), offset, "The page offset must be below 4096.");
        }

        ulong value = offset;
        for (int i = 0; i < levels; i++)
        {
            int index = indicesFromRoot[i];
            if ((uint)index >= 512)
            {
                ThrowHelper.ThrowArgumentOutOfRange(nameof(indicesFromRoot), index, "A table index is 0..511.");
            }

            value |= (ulong)index << ((PagingLevel)(levels - i)).IndexShift();
        }

        return CreateTruncate(value, mode);
    }

    /// <inheritdoc/>
    public bool Equals(VirtualAddress other) => _value == other._value;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is VirtualAddress other && Equals(other);

    /// <inheritdoc/>
    public override int GetHashCode() => _value.GetHashCode();

    /// <inheritdoc/>
    public int CompareTo(VirtualAddress other) => _value.CompareTo(other._value);

    /// <summary>Hexadecimal, e.g. <c>0x7f0000201000</c>.</summary>
    public override string ToString() => "0x" + _value.ToString("x", CultureInfo.InvariantCulture);

    /// <summary>Equality.</summary>
    public static bool operator ==(VirtualAddress left, VirtualAddress right) => left._value == right._value;

    /// <summary>Inequality.</summary>
    public static bool operator !=(VirtualAddress left, VirtualAddress right) => left._value != right._value;

    /// <summary>Ordering by raw value.</summary>
    public static bool operator <(VirtualAddress left, VirtualAddress right) => left._value < right._value;

    /// <summary>Ordering by raw value.</summary>
    public static bool operator >(VirtualAddress left, VirtualAddress right) => left._value > right._value;

    /// <summary>Ordering by raw value.</summary>
    public static bool operator <=(VirtualAddress left, VirtualAddress right) => left._value <= right._value;

    /// <summary>Ordering by raw value.</summary>
    public static bool operator >=(VirtualAddress left, VirtualAddress right) => left._value >= right._value;
}
