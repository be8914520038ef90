using System;
using System.Globalization;
using ThpCore.Internal;

namespace ThpCore.Paging;

/// <summary>
/// A physical address. Architecturally at most 52 bits wide (Intel SDM Vol. 3A §4.1.4: MAXPHYADDR ≤ 52);
/// a given CPU reports a smaller MAXPHYADDR, which <see cref="Create(ulong, int)"/> can check.
/// </summary>
public readonly struct PhysicalAddress : IEquatable<PhysicalAddress>, IComparable<PhysicalAddress>
{
    /// <summary>The widest physical address any x86-64 CPU may have, in bits.</summary>
    public const int ArchitecturalMaxBits = 52;

    private readonly ulong _value;

    private PhysicalAddress(ulong value) => _value = value;

    /// <summary>The zero address.</summary>
    public static PhysicalAddress Zero => default;

    /// <summary>The raw value.</summary>
    public ulong Value => _value;

    /// <summary>The 4 KiB frame number (Linux: PFN), <c>Value &gt;&gt; 12</c>.</summary>
    public ulong FrameNumber => _value >> 12;

    /// <summary>
    /// Creates a physical address, checking it against <paramref name="maxPhysicalAddressBits"/> (MAXPHYADDR).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value needs more than <paramref name="maxPhysicalAddressBits"/> bits, or the limit is not 1..52.</exception>
    public static PhysicalAddress Create(ulong value, int maxPhysicalAddressBits = ArchitecturalMaxBits)
    {
        CheckMaxBits(maxPhysicalAddressBits);
        if ((value >> maxPhysicalAddressBits) != 0)
        {
            ThrowHelper.ThrowArgumentOutOfRange(
                nameof(value),
                ThrowHelper.Hex(value),
                $"Physical address {ThrowHelper.Hex(value)} is above MAXPHYADDR: it needs more than {maxPhysicalAddressBits} bits (highest valid address {ThrowHelper.Hex((1UL << maxPhysicalAddressBits) - 1)}).");
        }

        return new PhysicalAddress(value);
    }

    /// <summary>Returns <see langword="false"/> if <paramref name="value"/> needs more than <paramref name="maxPhysicalAddressBits"/> bits.</summary>
    public static bool TryCreate(ulong value, int maxPhysicalAddressBits, out PhysicalAddress address)
    {
        CheckMaxBits(maxPhysicalAddressBits);
        bool ok = (value >> maxPhysicalAddressBits) == 0;
        address = ok ? new PhysicalAddress(value) : default;
        return ok;
    }

    /// <summary>Keeps only bits 51:0, as an entry's address field does.</summary>
    public static PhysicalAddress CreateTruncate(ulong value) => new(value & ((1UL << ArchitecturalMaxBits) - 1));

    /// <summary>The address of the first byte of 4 KiB frame <paramref name="frameNumber"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The frame lies above the 52-bit architectural limit.</exception>
    public static PhysicalAddress FromFrameNumber(ulong frameNumber)
    {
        if ((frameNumber >> (ArchitecturalMaxBits - 12)) != 0)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(frameNumber), frameNumber, $"Frame number {ThrowHelper.Hex(frameNumber)} is above the 52-bit physical address limit.");
        }

        return new PhysicalAddress(frameNumber << 12);
    }

    /// <summary>Whether the address is a multiple of <paramref name="size"/>.</summary>
    public bool IsAligned(PageSize size) => (_value & size.OffsetMask()) == 0;

    /// <summary>The start of the page of <paramref name="size"/> that contains this address.</summary>
    public PhysicalAddress AlignDown(PageSize size) => new(_value & ~size.OffsetMask());

    /// <summary>The offset of this address within its page of <paramref name="size"/>.</summary>
    public ulong PageOffset(PageSize size) => _value & size.OffsetMask();

    /// <summary>This address plus <paramref name="bytes"/>, checked against the 52-bit limit.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The sum needs more than 52 bits.</exception>
    public PhysicalAddress Add(ulong bytes)
    {
        ulong sum = _value + bytes;
        if (sum < _value || (sum >> ArchitecturalMaxBits) != 0)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(bytes), bytes, $"{ThrowHelper.Hex(_value)} + {ThrowHelper.Hex(bytes)} is above the 52-bit physical address limit.");
        }

        return new PhysicalAddress(sum);
    }

    /// <inheritdoc/>
    public bool Equals(PhysicalAddress other) => _value == other._value;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is PhysicalAddress other && Equals(other);

    /// <inheritdoc/>
    public override int GetHashCode() => _value.GetHashCode();

    /// <inheritdoc/>
    public int CompareTo(PhysicalAddress other) => _value.CompareTo(other._value);

    /// <summary>Hexadecimal, e.g. <c>0x1234000</c>.</summary>
    public override string ToString() => "0x" + _value.ToString("x", CultureInfo.InvariantCulture);

    /// <summary>Equality.</summary>
    public static bool operator ==(PhysicalAddress left, PhysicalAddress right) => left._value == right._value;

    /// <summary>Inequality.</summary>
    public static bool operator !=(PhysicalAddress left, PhysicalAddress right) => left._value != right._value;

    /// <summary>Ordering.</summary>
    public static bool operator <(PhysicalAddress left, PhysicalAddress right) => left._value < right._value;

    /// <summary>Ordering.</summary>
    public static bool operator >(PhysicalAddress left, PhysicalAddress right) => left._value > right._value;

    /// <summary>Ordering.</summary>
    public static bool operator <=(PhysicalAddress left, PhysicalAddress right) => left._value <= right._value;

    /// <summary>Ordering.</summary>
    public static bool operator >=(PhysicalAddress left, PhysicalAddress right) => left._value >= right._value;

    internal static PhysicalAddress FromMaskedBits(ulong value) => new(value);

    private static void CheckMaxBits(int maxPhysicalAddressBits)
    {
        if (maxPhysicalAddressBits is < 1 or > ArchitecturalMaxBits)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(maxPhysicalAddressBits), maxPhysicalAddressBits, "MAXPHYADDR is between 1 and 52 bits.");
        }
    }
}
