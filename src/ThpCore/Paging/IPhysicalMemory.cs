using System;

namespace ThpCore.Paging;

/// <summary>
/// Physical memory as the page walker and the rest of ThpCore see it. A host plugs in its own RAM by
/// implementing this; <see cref="SparsePhysicalMemory"/> is the default.
/// </summary>
/// <remarks>
/// 64-bit accesses must be 8-byte aligned (paging-structure entries always are). Word accesses must be
/// atomic with respect to each other, because the walker sets A and D with compare-exchange while other
/// threads may rewrite the same entries.
/// </remarks>
public interface IPhysicalMemory
{
    /// <summary>The size in bytes; valid addresses are 0 to <c>Size - 1</c>.</summary>
    ulong Size { get; }

    /// <summary>Reads the 64-bit word at <paramref name="address"/>; returns <see langword="false"/> if no memory backs it.</summary>
    /// <exception cref="ArgumentException"><paramref name="address"/> is not 8-byte aligned.</exception>
    bool TryReadUInt64(PhysicalAddress address, out ulong value);

    /// <summary>Writes the 64-bit word at <paramref name="address"/>.</summary>
    /// <exception cref="ArgumentException"><paramref name="address"/> is not 8-byte aligned.</exception>
    /// <exception cref="ArgumentOutOfRangeException">No memory backs <paramref name="address"/>.</exception>
    void WriteUInt64(PhysicalAddress address, ulong value);

    /// <summary>
    /// Atomically replaces the word at <paramref name="address"/> with <paramref name="value"/> if it equals
    /// <paramref name="comparand"/>; returns the word found (equal to <paramref name="comparand"/> on success).
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="address"/> is not 8-byte aligned.</exception>
    /// <exception cref="ArgumentOutOfRangeException">No memory backs <paramref name="address"/>.</exception>
    ulong CompareExchangeUInt64(PhysicalAddress address, ulong value, ulong comparand);

    /// <summary>The 4096 bytes of frame <paramref name="frameNumber"/>, for reading. An untouched frame reads as zeros.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The frame is outside this memory.</exception>
    ReadOnlySpan<byte> ReadFrame(ulong frameNumber);

    /// <summary>The 4096 bytes of frame <paramref name="frameNumber"/>, for writing (backing store is made on demand).</summary>
    /// <exception cref="ArgumentOutOfRangeException">The frame is outside this memory.</exception>
    Span<byte> GetWritableFrame(ulong frameNumber);

    /// <summary>Reads the 64-bit word at <paramref name="address"/>.</summary>
    /// <exception cref="ArgumentException"><paramref name="address"/> is not 8-byte aligned.</exception>
    /// <exception cref="ArgumentOutOfRangeException">No memory backs <paramref name="address"/>.</exception>
    ulong ReadUInt64(PhysicalAddress address)
    {
        if (!TryReadUInt64(address, out ulong value))
        {
            throw new ArgumentOutOfRangeException(nameof(address), address.ToString(), $"No physical memory at {address} (size {Size:#,0} bytes).");
        }

        return value;
    }
}
