namespace ThpCore.Inspection;

/// <summary>
/// A run of physical memory and where its bytes come from: the file from <see cref="FileOffset"/>, or zeros
/// (<see cref="IsZeroFill"/>, the <c>p_memsz &gt; p_filesz</c> tail of an ELF segment).
/// </summary>
internal readonly record struct ImageExtent(ulong Start, ulong Length, long FileOffset)
{
    /// <summary>The file offset that marks a zero-filled extent.</summary>
    internal const long ZeroFill = -1;

    /// <summary>The first physical address after the extent.</summary>
    internal ulong End => Start + Length;

    /// <summary>Whether the extent reads as zeros rather than from the file.</summary>
    internal bool IsZeroFill => FileOffset < 0;
}
