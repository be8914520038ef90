using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.Collections.ObjectModel;
using System.IO;
using Microsoft.Win32.SafeHandles;
using ThpCore.Internal;
using ThpCore.Paging;

namespace ThpCore.Inspection;

/// <summary>
/// A guest's physical memory saved by QEMU, opened read-only as <see cref="IPhysicalMemory"/> so that the page
/// walker and the page-table enumerator can read it. Open one with <see cref="Open"/>.
/// </summary>
/// <remarks>
/// <para>
/// The file is never loaded whole: each read is a positional read of the file (<see cref="RandomAccess"/>), so
/// images of many GiB open at once and cost no memory. Reads are thread-safe. Reading a word allocates nothing;
/// <see cref="ReadFrame"/> allocates the 4 KiB it returns.
/// </para>
/// <para>
/// Memory is present only where <see cref="Ranges"/> say: in a hole between ranges, beyond <see cref="Size"/>,
/// or in a part of the file that is missing (a truncated dump), <see cref="TryReadUInt64"/> returns
/// <see langword="false"/>. The image is read-only: walk it with <c>WalkOptions { Probe = true }</c>, which sets
/// no accessed or dirty bits.
/// </para>
/// </remarks>
public abstract class GuestImage : IPhysicalMemory, IDisposable
{
    private const string ReadOnlyMessage = "Guest images are read-only; walk them with WalkOptions { Probe = true }.";
    private const int FrameBytes = 4096;

    private readonly SafeFileHandle _handle;
    private readonly ImageExtent[] _extents;

    private protected GuestImage(string path, ImageFormat format, SafeFileHandle handle, ImageExtent[] extents, IReadOnlyList<string> warnings)
    {
        Path = path;
        Format = format;
        _handle = handle;
        _extents = extents;
        Ranges = new ReadOnlyCollection<PhysicalRange>(MergeRanges(extents));
        Warnings = new ReadOnlyCollection<string>([.. warnings]);
        Size = extents.Length == 0 ? 0 : extents[^1].End;
    }

    /// <summary>The full path of the image file.</summary>
    public string Path { get; }

    /// <summary>The format the file was read as (never <see cref="ImageFormat.Auto"/>).</summary>
    public ImageFormat Format { get; }

    /// <summary>
    /// The physical ranges this image holds, sorted and merged where adjacent. Reads inside them succeed (the
    /// zero-filled tail of an ELF segment whose <c>p_memsz</c> exceeds <c>p_filesz</c> counts); reads outside
    /// them find no memory.
    /// </summary>
    public IReadOnlyList<PhysicalRange> Ranges { get; }

    /// <summary>
    /// What is odd about the file but did not stop it opening, one sentence each: for example a truncated last
    /// segment, or a raw file whose length is not a multiple of 4096. What is missing reads as absent.
    /// </summary>
    public IReadOnlyList<string> Warnings { get; }

    /// <summary>The end of the highest range: every present byte lies below it.</summary>
    public ulong Size { get; }

    /// <summary>
    /// Opens the guest image at <paramref name="path"/>.
    /// </summary>
    /// <param name="path">The image file.</param>
    /// <param name="format">
    /// The format, or <see cref="ImageFormat.Auto"/> to detect it: a file that starts with the ELF magic
    /// <c>7f 45 4c 46</c> is read as an ELF core, any other as a raw dump.
    /// </param>
    /// <returns>A <see cref="RawImage"/> or an <see cref="ElfCoreImage"/>; dispose it to close the file.</returns>
    /// <exception cref="ArgumentException"><paramref name="path"/> is null or empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="format"/> is not a defined <see cref="ImageFormat"/>.</exception>
    /// <exception cref="FileNotFoundException">No file is at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidImageException">
    /// The file cannot be read or is not a usable image: it is empty, or (as ELF) it is not an ELF64 little-endian
    /// x86-64 core or executable, has no <c>PT_LOAD</c> segment, has program headers beyond the end of the file,
    /// impossible segment offsets or sizes, or segments that overlap in physical memory.
    /// </exception>
    public static GuestImage Open(string path, ImageFormat format = ImageFormat.Auto)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (format is not (ImageFormat.Auto or ImageFormat.Raw or ImageFormat.Elf))
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(format), format, "The image format is Auto, Raw or Elf.");
        }

        string fullPath = System.IO.Path.GetFullPath(path);
        SafeFileHandle handle = OpenHandle(fullPath);
        try
        {
            long length = RandomAccess.GetLength(handle);
            if (length == 0)
            {
                throw new InvalidImageException(fullPath, "the file is empty (0 bytes); a guest image holds at least one byte of memory.");
            }

            if (format == ImageFormat.Auto)
            {
                format = StartsWithElfMagic(handle, length) ? ImageFormat.Elf : ImageFormat.Raw;
            }

            return format == ImageFormat.Elf
                ? ElfCoreImage.Create(fullPath, handle, length)
                : RawImage.Create(fullPath, handle, length);
        }
        catch (IOException ex)
        {
            handle.Dispose();
            throw new InvalidImageException(fullPath, $"the file cannot be read: {ex.Message}", ex);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <inheritdoc/>
    /// <remarks>Returns <see langword="false"/> unless all 8 bytes lie in <see cref="Ranges"/>; never throws for an aligned address.</remarks>
    /// <exception cref="ArgumentException"><paramref name="address"/> is not 8-byte aligned.</exception>
    /// <exception cref="ObjectDisposedException">The image was disposed.</exception>
    public bool TryReadUInt64(PhysicalAddress address, out ulong value)
    {
        ulong a = address.Value;
        if ((a & 7) != 0)
        {
            ThrowMisaligned(address);
        }

        int index = FindExtent(a);
        if (index >= 0)
        {
            ref readonly ImageExtent extent = ref _extents[index];
            if (extent.End - a >= sizeof(ulong))
            {
                if (extent.IsZeroFill)
                {
                    value = 0;
                    return true;
                }

                Span<byte> word = stackalloc byte[sizeof(ulong)];
                if (ReadFile(extent.FileOffset + (long)(a - extent.Start), word) == sizeof(ulong))
                {
                    value = BinaryPrimitives.ReadUInt64LittleEndian(word);
                    return true;
                }

                value = 0;
                return false;
            }
        }

        // The word straddles the end of an extent (a segment boundary that is not 8-aligned), or starts in a hole.
        Span<byte> bytes = stackalloc byte[sizeof(ulong)];
        if (index >= 0 && ReadPhysical(a, bytes) == sizeof(ulong))
        {
            value = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
            return true;
        }

        value = 0;
        return false;
    }

    /// <summary>Not supported: guest images are read-only.</summary>
    /// <exception cref="InvalidOperationException">Always.</exception>
    public void WriteUInt64(PhysicalAddress address, ulong value) => ThrowHelper.ThrowInvalidOperation(ReadOnlyMessage);

    /// <summary>Not supported: guest images are read-only (walk them with <c>WalkOptions { Probe = true }</c>).</summary>
    /// <exception cref="InvalidOperationException">Always.</exception>
    public ulong CompareExchangeUInt64(PhysicalAddress address, ulong value, ulong comparand) => ThrowHelper.ThrowInvalidOperation<ulong>(ReadOnlyMessage);

    /// <summary>
    /// A copy of the 4096 bytes of frame <paramref name="frameNumber"/> (a new array each call). Bytes of the frame
    /// that no range backs read as zero.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">No byte of the frame lies in <see cref="Ranges"/>.</exception>
    /// <exception cref="ObjectDisposedException">The image was disposed.</exception>
    public ReadOnlySpan<byte> ReadFrame(ulong frameNumber)
    {
        if (frameNumber > (ulong.MaxValue >> 12))
        {
            ThrowNoFrame(frameNumber);
        }

        byte[] frame = new byte[FrameBytes];
        if (ReadPhysical(frameNumber << 12, frame) == 0)
        {
            ThrowNoFrame(frameNumber);
        }

        return frame;
    }

    /// <summary>Not supported: guest images are read-only.</summary>
    /// <exception cref="InvalidOperationException">Always.</exception>
    public Span<byte> GetWritableFrame(ulong frameNumber) => ThrowHelper.ThrowInvalidOperation<byte[]>(ReadOnlyMessage);

    /// <summary>Closes the file. Reads after this throw <see cref="ObjectDisposedException"/>.</summary>
    public void Dispose()
    {
        _handle.Dispose();
        GC.SuppressFinalize(this);
    }

    /// <summary>One line: the format, the file, the ranges and the size.</summary>
    public override string ToString() =>
        $"{Format} image {Path}: {Ranges.Count} range(s), {Size:#,0} bytes of physical address space" + (Warnings.Count == 0 ? "" : $", {Warnings.Count} warning(s)");

    /// <summary>The hexadecimal form used in messages, e.g. <c>0x1f000</c>.</summary>
    private protected static string Hex(ulong value) => ThrowHelper.Hex(value);

    /// <summary>
    /// Copies physical bytes from <paramref name="start"/> into <paramref name="destination"/>; bytes no extent
    /// backs (or that the file no longer holds) are zero. Returns how many bytes were backed.
    /// </summary>
    private int ReadPhysical(ulong start, Span<byte> destination)
    {
        destination.Clear();
        int backed = 0;
        ulong end = start + (ulong)destination.Length;
        if (end < start)
        {
            end = ulong.MaxValue;
        }

        int index = FindFirstExtentEndingAfter(start);
        for (; index < _extents.Length && _extents[index].Start < end; index++)
        {
            ref readonly ImageExtent extent = ref _extents[index];
            ulong from = Math.Max(extent.Start, start);
            ulong to = Math.Min(extent.End, end);
            Span<byte> part = destination.Slice((int)(from - start), (int)(to - from));
            if (extent.IsZeroFill)
            {
                backed += part.Length;
            }
            else
            {
                backed += ReadFile(extent.FileOffset + (long)(from - extent.Start), part);
            }
        }

        return backed;
    }

    /// <summary>Reads from the file at <paramref name="offset"/> until <paramref name="buffer"/> is full or the file ends.</summary>
    private int ReadFile(long offset, Span<byte> buffer)
    {
        int total = 0;
        while (total < buffer.Length)
        {
            int read = RandomAccess.Read(_handle, buffer[total..], offset + total);
            if (read == 0)
            {
                break;
            }

            total += read;
        }

        return total;
    }

    /// <summary>The index of the extent that contains <paramref name="address"/>, or -1.</summary>
    private int FindExtent(ulong address)
    {
        int index = FindFirstExtentEndingAfter(address);
        return index < _extents.Length && _extents[index].Start <= address ? index : -1;
    }

    /// <summary>The index of the first extent whose end lies above <paramref name="address"/> (the extents are sorted and disjoint).</summary>
    private int FindFirstExtentEndingAfter(ulong address)
    {
        ImageExtent[] extents = _extents;
        int lo = 0;
        int hi = extents.Length;
        while (lo < hi)
        {
            int mid = (int)((uint)(lo + hi) >> 1);
            if (extents[mid].End <= address)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid;
            }
        }

        return lo;
    }

    private static PhysicalRange[] MergeRanges(ImageExtent[] extents)
    {
        var ranges = new List<PhysicalRange>(extents.Length);
        foreach (ImageExtent extent in extents)
        {
            if (ranges.Count > 0 && ranges[^1].End.Value == extent.Start)
            {
                PhysicalRange last = ranges[^1];
                ranges[^1] = last with { Length = last.Length + extent.Length };
            }
            else
            {
                ranges.Add(new PhysicalRange(PhysicalAddress.FromMaskedBits(extent.Start), extent.Length));
            }
        }

        return [.. ranges];
    }

    private static SafeFileHandle OpenHandle(string fullPath)
    {
        if (Directory.Exists(fullPath))
        {
            throw new InvalidImageException(fullPath, "is a directory, not a guest image file.");
        }

        try
        {
            return File.OpenHandle(fullPath, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.RandomAccess);
        }
        catch (FileNotFoundException ex)
        {
            throw new FileNotFoundException($"No guest image at '{fullPath}'.", fullPath, ex);
        }
        catch (DirectoryNotFoundException ex)
        {
            throw new FileNotFoundException($"No guest image at '{fullPath}': a directory on the path does not exist.", fullPath, ex);
        }
        catch (UnauthorizedAccessException ex)
        {
            throw new InvalidImageException(fullPath, $"the file cannot be opened for reading: {ex.Message}", ex);
        }
        catch (IOException ex)
        {
            throw new InvalidImageException(fullPath, $"the file cannot be opened for reading: {ex.Message}", ex);
        }
    }

    private static bool StartsWithElfMagic(SafeFileHandle handle, long length)
    {
        if (length < 4)
        {
            return false;
        }

        Span<byte> magic = stackalloc byte[4];
        return RandomAccess.Read(handle, magic, 0) == 4 && ElfCoreImage.IsElfMagic(magic);
    }

    private static void ThrowMisaligned(PhysicalAddress address) =>
        ThrowHelper.ThrowArgument(nameof(address), $"64-bit physical memory accesses must be 8-byte aligned; {address} is not.");

    private void ThrowNoFrame(ulong frameNumber) =>
        ThrowHelper.ThrowArgumentOutOfRange(nameof(frameNumber), frameNumber, $"Frame {Hex(frameNumber)} holds no memory of this image: it lies in a hole or beyond its end ({Ranges.Count} range(s) up to {Hex(Size)}).");
}
