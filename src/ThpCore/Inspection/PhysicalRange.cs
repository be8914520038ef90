using ThpCore.Paging;

namespace ThpCore.Inspection;

/// <summary>A range of physical memory: <see cref="Length"/> bytes from <see cref="Start"/>.</summary>
/// <param name="Start">The first byte.</param>
/// <param name="Length">The number of bytes.</param>
public readonly record struct PhysicalRange(PhysicalAddress Start, ulong Length)
{
    /// <summary>The first byte after the range (exclusive end), <c>Start + Length</c>.</summary>
    public PhysicalAddress End => PhysicalAddress.FromMaskedBits(Start.Value + Length);

    /// <summary>Whether <paramref name="address"/> lies in <c>[Start, End)</c>.</summary>
    public bool Contains(PhysicalAddress address) => address.Value - Start.Value < Length;

    /// <summary>The range as <c>[0x1000, 0x9f000)</c>.</summary>
    public override string ToString() => $"[{Start}, {End})";
}
