using System;
using System.Collections.Generic;
using System.Threading;
using ThpCore.Internal;

namespace ThpCore.Paging;

/// <summary>
/// A simple frame allocator for tests, demos and hosts: hands out the 4 KiB frames of the physical range
/// [<see cref="Start"/>, <see cref="End"/>), lowest first, and reuses freed frames (most recently freed first)
/// before touching new ones. Thread-safe.
/// </summary>
/// <remarks>
/// It checks every free: freeing a frame it never handed out, or freeing one twice, throws
/// <see cref="ArgumentException"/>. Frames are not zeroed; the memory behind them is not touched at all.
/// </remarks>
public sealed class SimpleFrameAllocator : IFrameAllocator
{
    private readonly Lock _lock = new();
    private readonly HashSet<ulong> _allocated = new();
    private readonly Stack<ulong> _freed = new();
    private ulong _next;

    /// <summary>An allocator for the frames of [<paramref name="start"/>, <paramref name="end"/>).</summary>
    /// <param name="start">The first byte of the first frame; 4 KiB-aligned.</param>
    /// <param name="end">One past the last byte of the last frame; 4 KiB-aligned and not below <paramref name="start"/>.</param>
    /// <exception cref="ArgumentException"><paramref name="start"/> or <paramref name="end"/> is not 4 KiB-aligned.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="end"/> is below <paramref name="start"/>.</exception>
    public SimpleFrameAllocator(PhysicalAddress start, PhysicalAddress end)
    {
        if (!start.IsAligned(PageSize.Size4K))
        {
            ThrowHelper.ThrowArgument(nameof(start), $"The range of frames must start on a 4 KiB boundary; {start} does not.");
        }

        if (!end.IsAligned(PageSize.Size4K))
        {
            ThrowHelper.ThrowArgument(nameof(end), $"The range of frames must end on a 4 KiB boundary; {end} does not.");
        }

        if (end < start)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(end), end.ToString(), $"The end of the range ({end}) is below its start ({start}).");
        }

        Start = start;
        End = end;
        _next = start.Value;
    }

    /// <summary>The first byte of the range.</summary>
    public PhysicalAddress Start { get; }

    /// <summary>One past the last byte of the range.</summary>
    public PhysicalAddress End { get; }

    /// <summary>The number of frames in the range.</summary>
    public int Capacity => (int)Math.Min((End.Value - Start.Value) >> 12, int.MaxValue);

    /// <summary>How many frames are handed out and not yet freed.</summary>
    public int AllocatedCount
    {
        get
        {
            lock (_lock)
            {
                return _allocated.Count;
            }
        }
    }

    /// <inheritdoc/>
    public bool TryAllocateFrame(out PhysicalAddress frame)
    {
        lock (_lock)
        {
            ulong value;
            if (_freed.Count > 0)
            {
                value = _freed.Pop();
            }
            else if (_next < End.Value)
            {
                value = _next;
                _next += PageSize.Size4K.Bytes();
            }
            else
            {
                frame = PhysicalAddress.Zero;
                return false;
            }

            _allocated.Add(value);
            frame = PhysicalAddress.Create(value);
            return true;
        }
    }

    /// <inheritdoc/>
    /// <exception cref="ArgumentException"><paramref name="frame"/> was never handed out by this allocator, or is already free.</exception>
    public void FreeFrame(PhysicalAddress frame)
    {
        lock (_lock)
        {
            if (!_allocated.Remove(frame.Value))
            {
                bool ours = frame >= Start && frame < End && frame.IsAligned(PageSize.Size4K) && frame.Value < _next;
                ThrowHelper.ThrowArgument(
                    nameof(frame),
                    ours
                        ? $"Frame {frame} is already free (double free)."
                        : $"Frame {frame} was never handed out by this allocator (range {Start}–{End}).");
            }

            _freed.Push(frame.Value);
        }
    }

    /// <summary>Whether <paramref name="frame"/> is currently handed out by this allocator.</summary>
    public bool IsAllocated(PhysicalAddress frame)
    {
        lock (_lock)
        {
            return _allocated.Contains(frame.Value);
        }
    }
}
