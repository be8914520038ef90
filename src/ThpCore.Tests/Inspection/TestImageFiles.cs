using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.IO;

namespace ThpCore.Tests.Inspection;

/// <summary>A program header for <see cref="TestImageFiles.Elf"/>; <c>Type</c> 1 is PT_LOAD, 4 is PT_NOTE.</summary>
internal sealed record TestPhdr(uint Type, ulong Offset, ulong PhysicalAddress, ulong FileSize, ulong MemorySize)
{
    public const uint Load = 1;
    public const uint Note = 4;

    public static TestPhdr LoadAt(ulong offset, ulong physicalAddress, ulong fileSize, ulong? memorySize = null) =>
        new(Load, offset, physicalAddress, fileSize, memorySize ?? fileSize);
}

/// <summary>
/// Writes small guest images byte by byte: raw dumps, and ELF64 cores laid out as QEMU's dump-guest-memory lays
/// them out (ELF header, program headers, a PT_NOTE, then the PT_LOAD data). Every backed physical byte holds
/// <see cref="PatternByte"/> of its address, so any read can be checked.
/// </summary>
internal static class TestImageFiles
{
    public const int ElfHeaderSize = 64;
    public const int PhdrSize = 56;

    /// <summary>The byte stored at physical address <paramref name="address"/>; never the same for the 8 bytes of a word.</summary>
    public static byte PatternByte(ulong address) => (byte)((address >> 3) * 0x9D ^ (address >> 12) * 0x3B ^ (address & 7) * 0x21 ^ 0x5A);

    /// <summary>The little-endian word that the pattern gives at <paramref name="address"/>.</summary>
    public static ulong PatternWord(ulong address)
    {
        ulong value = 0;
        for (int i = 7; i >= 0; i--)
        {
            value = (value << 8) | PatternByte(address + (ulong)i);
        }

        return value;
    }

    public static void FillPattern(Span<byte> destination, ulong physicalStart)
    {
        for (int i = 0; i < destination.Length; i++)
        {
            destination[i] = PatternByte(physicalStart + (ulong)i);
        }
    }

    /// <summary>A raw dump of <paramref name="length"/> bytes from physical address 0.</summary>
    public static byte[] Raw(int length)
    {
        byte[] bytes = new byte[length];
        FillPattern(bytes, 0);
        return bytes;
    }

    /// <summary>
    /// An ELF64 little-endian x86-64 ET_CORE with the program headers at offset 64. The file is
    /// <paramref name="length"/> bytes (by default just long enough for every segment's data); PT_LOAD data is the
    /// pattern of its physical addresses, PT_NOTE data a CORE note. <paramref name="patchHeader"/> may then change
    /// any header byte.
    /// </summary>
    public static byte[] Elf(IReadOnlyList<TestPhdr> phdrs, long? length = null, Action<byte[]>? patchHeader = null)
    {
        long end = ElfHeaderSize + (phdrs.Count * PhdrSize);
        foreach (TestPhdr p in phdrs)
        {
            end = Math.Max(end, (long)(p.Offset + p.FileSize));
        }

        byte[] file = new byte[length ?? end];
        Span<byte> header = stackalloc byte[ElfHeaderSize];
        header.Clear();
        header[0] = 0x7F;
        header[1] = (byte)'E';
        header[2] = (byte)'L';
        header[3] = (byte)'F';
        header[4] = 2; // ELFCLASS64
        header[5] = 1; // ELFDATA2LSB
        header[6] = 1; // EV_CURRENT
        BinaryPrimitives.WriteUInt16LittleEndian(header[0x10..], 4); // ET_CORE
        BinaryPrimitives.WriteUInt16LittleEndian(header[0x12..], 62); // EM_X86_64
        BinaryPrimitives.WriteUInt32LittleEndian(header[0x14..], 1); // e_version
        BinaryPrimitives.WriteUInt64LittleEndian(header[0x20..], ElfHeaderSize); // e_phoff
        BinaryPrimitives.WriteUInt16LittleEndian(header[0x34..], ElfHeaderSize); // e_ehsize
        BinaryPrimitives.WriteUInt16LittleEndian(header[0x36..], PhdrSize); // e_phentsize
        BinaryPrimitives.WriteUInt16LittleEndian(header[0x38..], (ushort)phdrs.Count); // e_phnum
        BinaryPrimitives.WriteUInt16LittleEndian(header[0x3A..], 64); // e_shentsize (QEMU fills it in with no sections)
        Copy(header, file, 0);

        Span<byte> phdr = stackalloc byte[PhdrSize];
        for (int i = 0; i < phdrs.Count; i++)
        {
            TestPhdr p = phdrs[i];
            phdr.Clear();
            BinaryPrimitives.WriteUInt32LittleEndian(phdr, p.Type);
            BinaryPrimitives.WriteUInt64LittleEndian(phdr[0x08..], p.Offset);
            BinaryPrimitives.WriteUInt64LittleEndian(phdr[0x18..], p.PhysicalAddress);
            BinaryPrimitives.WriteUInt64LittleEndian(phdr[0x20..], p.FileSize);
            BinaryPrimitives.WriteUInt64LittleEndian(phdr[0x28..], p.MemorySize);
            Copy(phdr, file, ElfHeaderSize + (i * PhdrSize));
            WriteSegmentData(p, file);
        }

        patchHeader?.Invoke(file);
        return file;
    }

    /// <summary>
    /// The core most tests read: a note, then four PT_LOADs with holes between them, one whose p_memsz exceeds its
    /// p_filesz, and one above 4 GiB whose end is not frame-aligned.
    /// </summary>
    public static TestPhdr[] StandardCore() =>
    [
        new TestPhdr(TestPhdr.Note, 0x1000, 0, 0x30, 0),
        TestPhdr.LoadAt(0x2000, 0x0, 0xA_0000), // conventional memory, up to the VGA hole
        TestPhdr.LoadAt(0xA_2000, 0x10_0000, 0x10_0000), // 1 MiB .. 2 MiB
        TestPhdr.LoadAt(0x1A_2000, 0x40_0000, 0x3000, 0x5000), // a zero-filled tail of 0x2000 bytes
        TestPhdr.LoadAt(0x1A_5000, 0x1_0000_0000, 0x1800), // above 4 GiB; the last frame is half backed
    ];

    public static void PutUInt16(byte[] file, int offset, ushort value) => BinaryPrimitives.WriteUInt16LittleEndian(file.AsSpan(offset), value);

    public static void PutUInt64(byte[] file, int offset, ulong value) => BinaryPrimitives.WriteUInt64LittleEndian(file.AsSpan(offset), value);

    private static void WriteSegmentData(TestPhdr p, byte[] file)
    {
        if (p.Offset >= (ulong)file.Length)
        {
            return;
        }

        int available = (int)Math.Min(p.FileSize, (ulong)file.Length - p.Offset);
        Span<byte> data = file.AsSpan((int)p.Offset, available);
        if (p.Type == TestPhdr.Load)
        {
            FillPattern(data, p.PhysicalAddress);
        }
        else if (p.Type == TestPhdr.Note && available >= 12 + 8)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(data, 5); // namesz
            BinaryPrimitives.WriteUInt32LittleEndian(data[4..], (uint)(available - 20)); // descsz
            BinaryPrimitives.WriteUInt32LittleEndian(data[8..], 1); // NT_PRSTATUS
            "CORE\0"u8.CopyTo(data[12..]);
        }
    }

    private static void Copy(ReadOnlySpan<byte> source, byte[] file, int offset)
    {
        int count = Math.Min(source.Length, file.Length - offset);
        if (count > 0)
        {
            source[..count].CopyTo(file.AsSpan(offset));
        }
    }
}

/// <summary>A directory of its own under the temporary directory, deleted with everything in it on dispose.</summary>
internal sealed class TempImageDirectory : IDisposable
{
    public TempImageDirectory() =>
        Path = Directory.CreateDirectory(System.IO.Path.Combine(System.IO.Path.GetTempPath(), "thpcore-images-" + Guid.NewGuid().ToString("N"))).FullName;

    public string Path { get; }

    public string Write(string name, byte[] contents)
    {
        string file = System.IO.Path.Combine(Path, name);
        File.WriteAllBytes(file, contents);
        return file;
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
            // Best effort: a file still open elsewhere is left for the OS to clean up.
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
