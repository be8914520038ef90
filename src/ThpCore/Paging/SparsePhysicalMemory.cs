using System;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Threading;
using ThpCore.Internal;

namespace ThpCore.Paging;

/// <summary>
/// Sparse physical memory: a frame that was never written reads as zero and costs no host memory.
/// Backing store is made per 4 KiB frame on the first write and can be dropped again with
/// <see cref="DiscardFrame"/>. Thread-safe: word accesses are atomic and frames are materialised with
/// compare-exchange.
/// </summary>
/// <remarks>
/// Layout: a directory of 2 MiB chunks, each an array of 512 frame references, each frame a
/// <c>ulong[512]</c>. A word read is two dependent array loads; untouched chunks cost one null reference.
/// </remarks>
public sealed class SparsePhysicalMemory : IPhysicalMemory
{
    /// <summary>The largest size this implementation accepts: 1 TiB.</summary>
    public const ulong MaxSize = 1UL << 40;

    private const int FramesPerChunkShift = 9;
    private const int FramesPerChunk = 1 << FramesPerChunkShift;
    private const int WordsPerFrame = 512;

    private static readonly byte[] s_zeroFrame = new byte[4096];

    private readonly ulong[]?[]?[] _chunks;
    private readonly ulong _frameCount;
    private long _materializedFrames;

    /// <summary>Creates <paramref name="size"/> bytes of zeroed memory.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is 0, not a multiple of 4 KiB, or above <see cref="MaxSize"/>.</exception>
    public SparsePhysicalMemory(ulong size)
    {
        if (size == 0 || (size & 0xFFF) != 0 || size > MaxSize)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(size), size, $"Physical memory size must be a non-zero multiple of 4096 bytes, at most {MaxSize:#,0} (1 TiB).");
        }

        Size = size;
        _frameCount = size >> 12;
        _chunks = new ulong[]?[]?[(int)((_frameCount + FramesPerChunk - 1) >> FramesPerChunkShift)];
    }

    /// <inheritdoc/>
    public ulong Size { get; }

    /// <summary>The number of 4 KiB frames.</summary>
    public ulong FrameCount => _frameCount;

    /// <summary>How many frames currently have host backing store (4 KiB each).</summary>
    public long MaterializedFrames => Volatile.Read(ref _materializedFrames);

    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryReadUInt64(PhysicalAddress address, out ulong value)
    {
        ulong a = address.Value;
        if ((a & 7) != 0)
        {
            ThrowMisaligned(address);
        }

        if (a >= Size)
        {
            value = 0;
            return false;
        }

        ulong[]? frame = FrameOrNull(a >> 12);
        value = frame is null ? 0 : Volatile.Read(ref frame[(int)((a >> 3) & (WordsPerFrame - 1))]);
        return true;
    }

    /// <inheritdoc/>
    public void WriteUInt64(PhysicalAddress address, ulong value)
    {
        ulong[] frame = WritableFrameFor(address);
        Volatile.Write(ref frame[(int)((address.Value >> 3) & (WordsPerFrame - 1))], value);
    }

    /// <inheritdoc/>
    public ulong CompareExchangeUInt64(PhysicalAddress address, ulong value, ulong comparand)
    {
        ulong[] frame = WritableFrameFor(address);
        return Interlocked.CompareExchange(ref frame[(int)((address.Value >> 3) & (WordsPerFrame - 1))], value, comparand);
    }

    /// <inheritdoc/>
    public ReadOnlySpan<byte> ReadFrame(ulong frameNumber)
    {
        CheckFrame(frameNumber);
        ulong[]? frame = FrameOrNull(frameNumber);
        return frame is null ? s_zeroFrame : MemoryMarshal.AsBytes(frame.AsSpan());
    }

    /// <inheritdoc/>
    public Span<byte> GetWritableFrame(ulong frameNumber)
    {
        CheckFrame(frameNumber);
        return MemoryMarshal.AsBytes(Materialize(frameNumber).AsSpan());
    }

    /// <summary>The 512 words of a frame, for reading; a shared zero span when the frame was never written.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The frame is outside this memory.</exception>
    public ReadOnlySpan<ulong> ReadFrameWords(ulong frameNumber) => MemoryMarshal.Cast<byte, ulong>(ReadFrame(frameNumber));

    /// <summary>Whether frame <paramref name="frameNumber"/> has backing store.</summary>
    public bool IsMaterialized(ulong frameNumber)
    {
        CheckFrame(frameNumber);
        return FrameOrNull(frameNumber) is not null;
    }

    /// <summary>Drops the backing store of a frame: it reads as zero again and costs nothing.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The frame is outside this memory.</exception>
    public void DiscardFrame(ulong frameNumber)
    {
        CheckFrame(frameNumber);
        ulong[]?[]? chunk = _chunks[(int)(frameNumber >> FramesPerChunkShift)];
        if (chunk is not null && Interlocked.Exchange(ref chunk[(int)(frameNumber & (FramesPerChunk - 1))], null) is not null)
        {
            Interlocked.Decrement(ref _materializedFrames);
        }
    }

    /// <summary>
    /// The walker's read: no alignment check (entry addresses are 8-aligned by construction) and no bounds
    /// checks inside a chunk or frame (indices are masked to 0..511 and every chunk and frame has 512 slots).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool TryReadEntry(ulong address, out ulong value)
    {
        if (address >= Size)
        {
            value = 0;
            return false;
        }

        ulong[]?[]? chunk = _chunks[(int)(address >> 21)];
        ulong[]? frame = chunk is null ? null : Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(chunk), (nint)((address >> 12) & (FramesPerChunk - 1)));
        value = frame is null ? 0 : Volatile.Read(ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(frame), (nint)((address >> 3) & (WordsPerFrame - 1))));
        return true;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong[]? FrameOrNull(ulong frameNumber)
    {
        ulong[]?[]? chunk = _chunks[(int)(frameNumber >> FramesPerChunkShift)];
        return chunk?[(int)(frameNumber & (FramesPerChunk - 1))];
    }

    private ulong[] WritableFrameFor(PhysicalAddress address)
    {
        ulong a = address.Value;
        if ((a & 7) != 0)
        {
            ThrowMisaligned(address);
        }

        if (a >= Size)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(address), address.ToString(), $"No physical memory at {address} (size {Size:#,0} bytes).");
        }

        return FrameOrNull(a >> 12) ?? Materialize(a >> 12);
    }

    private ulong[] Materialize(ulong frameNumber)
    {
        ref ulong[]?[]? chunkSlot = ref _chunks[(int)(frameNumber >> FramesPerChunkShift)];
        ulong[]?[] chunk = Volatile.Read(ref chunkSlot)
            ?? Interlocked.CompareExchange(ref chunkSlot, new ulong[]?[FramesPerChunk], null)
            ?? Volatile.Read(ref chunkSlot)!;

        ref ulong[]? frameSlot = ref chunk[(int)(frameNumber & (FramesPerChunk - 1))];
        ulong[]? frame = Volatile.Read(ref frameSlot);
        if (frame is not null)
        {
            return frame;
        }

        ulong[] fresh = new ulong[WordsPerFrame];
        frame = Interlocked.CompareExchange(ref frameSlot, fresh, null);
        if (frame is not null)
        {
            return frame;
        }

        Interlocked.Increment(ref _materializedFrames);
        return fresh;
    }

    private void CheckFrame(ulong frameNumber)
    {
        if (frameNumber >= _frameCount)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(frameNumber), frameNumber, $"Frame {ThrowHelper.Hex(frameNumber)} is outside physical memory of {_frameCount:#,0} frames.");
        }
    }

    private static void ThrowMisaligned(PhysicalAddress address) =>
        ThrowHelper.ThrowArgument(nameof(address), $"64-bit physical memory accesses must be 8-byte aligned; {address} is not.");
}
