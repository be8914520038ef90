using System;
using System.IO;
using Microsoft.Win32.SafeHandles;
using ThpCore.Internal;

namespace ThpCore.Inspection;

/// <summary>
/// The stream LibObjectFile reads an ELF core's headers through: the file as it is, except that the ELF header
/// shows no section header table, and with a cap on how much may be read.
/// </summary>
/// <remarks>
/// <para>
/// A memory image needs only the ELF header and the program headers. LibObjectFile, with
/// <c>UseSubStream</c>, reads those and never copies segment data, but it parses the contents of some sections
/// (notes, string and symbol tables) eagerly, and a corrupt section table in a file of many GiB could make it read
/// and allocate gigabytes. QEMU's x86-64 cores have no sections (at most the one that carries the program header
/// count for <c>PN_XNUM</c>, which is refused before this), so the view reads <c>e_shoff</c>, <c>e_shnum</c> and
/// <c>e_shstrndx</c> as 0 and <c>e_ehsize</c> as 64 (QEMU 7.2 writes 8 there), and any read past <see cref="MaxBytesRead"/> in total fails with
/// <see cref="InvalidImageException"/>.
/// </para>
/// <para>The view does not own the handle.</para>
/// </remarks>
internal sealed class ElfHeaderView : Stream
{
    /// <summary>The most the reader may read: far more than a 64-byte header and 65534 program headers of 56 bytes.</summary>
    internal const long MaxBytesRead = 8L << 20;

    // e_ehsize (2 bytes at 52): QEMU 7.2's dump.c writes sizeof(a pointer), 8, where the header size 64 belongs;
    // the view shows 64, the only size an ELF64 header has.
    internal const int EhsizeOffset = 52;
    internal const ushort Elf64HeaderSize = 64;

    // e_shoff (8 bytes at 40), e_shnum (2 at 60) and e_shstrndx (2 at 62) of an ELF64 header.
    private const int ShoffStart = 40;
    private const int ShoffEnd = 48;
    private const int ShnumStart = 60;
    private const int ShstrndxEnd = 64;

    private readonly SafeFileHandle _handle;
    private readonly long _length;
    private readonly string _path;
    private long _position;
    private long _bytesRead;

    internal ElfHeaderView(SafeFileHandle handle, long length, string path)
    {
        _handle = handle;
        _length = length;
        _path = path;
    }

    /// <inheritdoc/>
    public override bool CanRead => true;

    /// <inheritdoc/>
    public override bool CanSeek => true;

    /// <inheritdoc/>
    public override bool CanWrite => false;

    /// <inheritdoc/>
    public override long Length => _length;

    /// <inheritdoc/>
    public override long Position
    {
        get => _position;
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            _position = value;
        }
    }

    /// <inheritdoc/>
    public override int Read(byte[] buffer, int offset, int count)
    {
        ValidateBufferArguments(buffer, offset, count);
        return Read(buffer.AsSpan(offset, count));
    }

    /// <inheritdoc/>
    public override int Read(Span<byte> buffer)
    {
        if (_position >= _length || buffer.IsEmpty)
        {
            return 0;
        }

        if (buffer.Length > _length - _position)
        {
            buffer = buffer[..(int)(_length - _position)];
        }

        _bytesRead += buffer.Length;
        if (_bytesRead > MaxBytesRead)
        {
            throw new InvalidImageException(_path, $"reading the ELF headers took more than {MaxBytesRead:#,0} bytes (at offset {ThrowHelper.Hex((ulong)_position)}); the headers are corrupt.");
        }

        int read = RandomAccess.Read(_handle, buffer, _position);
        HideSectionTable(_position, buffer[..read]);
        _position += read;
        return read;
    }

    /// <inheritdoc/>
    public override long Seek(long offset, SeekOrigin origin)
    {
        long target = origin switch
        {
            SeekOrigin.Begin => offset,
            SeekOrigin.Current => _position + offset,
            SeekOrigin.End => _length + offset,
            _ => throw new ArgumentOutOfRangeException(nameof(origin), origin, "Begin, Current or End."),
        };

        if (target < 0)
        {
            throw new IOException($"Cannot seek before the start of the file (to {target}).");
        }

        _position = target;
        return target;
    }

    /// <inheritdoc/>
    public override void Flush()
    {
    }

    /// <inheritdoc/>
    public override void SetLength(long value) => throw new NotSupportedException("The ELF header view is read-only.");

    /// <inheritdoc/>
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException("The ELF header view is read-only.");

    private static void HideSectionTable(long position, Span<byte> bytes)
    {
        if (position >= ShstrndxEnd)
        {
            return;
        }

        for (int i = 0; i < bytes.Length && position + i < ShstrndxEnd; i++)
        {
            long at = position + i;
            if (at is (>= ShoffStart and < ShoffEnd) or (>= ShnumStart and < ShstrndxEnd))
            {
                bytes[i] = 0;
            }
            else if (at == EhsizeOffset)
            {
                bytes[i] = (byte)Elf64HeaderSize;
            }
            else if (at == EhsizeOffset + 1)
            {
                bytes[i] = 0;
            }
        }
    }
}
