using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using LibObjectFile.Diagnostics;
using LibObjectFile.Elf;
using Microsoft.Win32.SafeHandles;
using ThpCore.Paging;

namespace ThpCore.Inspection;

/// <summary>
/// An ELF64 core of a guest's physical memory, as QEMU's <c>dump-guest-memory FILE</c> writes it (without
/// <c>-z</c>, <c>-l</c>, <c>-s</c>: those write kdump-compressed files, which are not read here). Each
/// <c>PT_LOAD</c> maps physical <c>p_paddr .. p_paddr + p_filesz</c> to file offset <c>p_offset</c>; a
/// <c>p_memsz</c> beyond <c>p_filesz</c> reads as zeros; physical memory in no segment is absent. Open one with
/// <see cref="GuestImage.Open"/>.
/// </summary>
/// <remarks>
/// The ELF header and program headers are read with LibObjectFile; segment data is read from the file on demand.
/// A file cut short (an interrupted dump) still opens: what it lacks reads as absent and <see cref="GuestImage.Warnings"/>
/// says so. Extended program header numbering (<c>e_phnum = PN_XNUM</c>, which QEMU uses for more than 65534
/// memory ranges) is not supported.
/// </remarks>
public sealed class ElfCoreImage : GuestImage
{
    private const int HeaderSize = 64;
    private const int ProgramHeaderSize = 56;
    private const ushort PnXnum = 0xFFFF;
    private const uint PtLoad = 1;
    private const int MaxRangesListed = 4;

    private ElfCoreImage(string path, SafeFileHandle handle, ImageExtent[] extents, IReadOnlyList<string> warnings)
        : base(path, ImageFormat.Elf, handle, extents, warnings)
    {
    }

    internal static bool IsElfMagic(ReadOnlySpan<byte> bytes) =>
        bytes.Length >= 4 && bytes[0] == 0x7F && bytes[1] == (byte)'E' && bytes[2] == (byte)'L' && bytes[3] == (byte)'F';

    internal static ElfCoreImage Create(string path, SafeFileHandle handle, long length)
    {
        (ulong programHeaderOffset, int programHeaderCount) = CheckHeader(path, handle, length);
        ElfFile elf = ReadHeaders(path, handle, length);

        if (elf.FileType is not (ElfFileType.Core or ElfFileType.Executable))
        {
            string name = (ushort)elf.FileType switch
            {
                0 => "ET_NONE",
                1 => "ET_REL",
                3 => "ET_DYN",
                _ => "unknown",
            };
            throw Invalid(path, $"e_type (offset 0x10) is {(ushort)elf.FileType} ({name}); a guest memory image is an ET_CORE (4) file as QEMU's dump-guest-memory writes it, or an ET_EXEC (2).");
        }

        if (elf.Arch.Value != ElfArch.X86_64)
        {
            // Not elf.Arch.ToString(): LibObjectFile 2.3.1 throws FormatException on it for a value it has no name for.
            string name = Enum.GetName(elf.Arch.Value) is { } known ? $"EM_{known}" : "unknown";
            throw Invalid(path, $"e_machine (offset 0x12) is {(ushort)elf.Arch.Value} ({name}); only x86-64 guests (EM_X86_64, 62) are supported.");
        }

        if (elf.Segments.Count != programHeaderCount)
        {
            throw Invalid(path, $"the ELF reader found {elf.Segments.Count} program headers where e_phnum (offset 0x38) says {programHeaderCount}.");
        }

        var loads = new List<LoadSegment>();
        for (int i = 0; i < elf.Segments.Count; i++)
        {
            ElfSegment segment = elf.Segments[i];
            if (segment.Type.Value == PtLoad)
            {
                var load = new LoadSegment(i, programHeaderOffset + ((ulong)i * ProgramHeaderSize), segment.PhysicalAddress, segment.Position, segment.Size, segment.SizeInMemory);
                CheckSegment(path, load);
                loads.Add(load);
            }
        }

        if (loads.Count == 0)
        {
            throw Invalid(path, $"none of the {programHeaderCount} program headers (from offset {Hex(programHeaderOffset)}) is a PT_LOAD segment, so the file describes no memory.");
        }

        CheckOverlaps(path, loads);
        var warnings = new List<string>();
        Span<byte> ehsize = stackalloc byte[2];
        if (RandomAccess.Read(handle, ehsize, ElfHeaderView.EhsizeOffset) == 2
            && BinaryPrimitives.ReadUInt16LittleEndian(ehsize) is var size && size != ElfHeaderView.Elf64HeaderSize)
        {
            warnings.Add($"e_ehsize (offset 0x34) is {size}, not {ElfHeaderView.Elf64HeaderSize}; read as {ElfHeaderView.Elf64HeaderSize} (QEMU 7.2's dump-guest-memory writes 8 there).");
        }

        ImageExtent[] extents = BuildExtents(path, loads, (ulong)length, warnings);
        return new ElfCoreImage(path, handle, extents, warnings);
    }

    /// <summary>
    /// Checks the ELF identification and the program header table's place in the file before LibObjectFile sees
    /// the file, so that the messages can name offsets and the reader is never sent past the end of the file.
    /// </summary>
    private static (ulong ProgramHeaderOffset, int ProgramHeaderCount) CheckHeader(string path, SafeFileHandle handle, long length)
    {
        Span<byte> header = stackalloc byte[HeaderSize];
        header = header[..RandomAccess.Read(handle, header, 0)];

        if (!IsElfMagic(header))
        {
            string found = Convert.ToHexString(header[..Math.Min(4, header.Length)]);
            throw Invalid(path, $"no ELF magic at offset 0: expected 7F454C46 (\"\\x7fELF\"), found {(found.Length == 0 ? "nothing" : found)}.");
        }

        if (header.Length > 4 && header[4] != 2)
        {
            throw Invalid(path, header[4] == 1
                ? "EI_CLASS (offset 0x4) is 1 (ELFCLASS32): a 32-bit ELF. QEMU writes x86-64 guest memory as ELF64 (EI_CLASS 2)."
                : $"EI_CLASS (offset 0x4) is {header[4]}, neither ELFCLASS32 (1) nor ELFCLASS64 (2).");
        }

        if (header.Length > 5 && header[5] != 1)
        {
            throw Invalid(path, header[5] == 2
                ? "EI_DATA (offset 0x5) is 2 (ELFDATA2MSB): a big-endian ELF. x86-64 cores are little-endian (EI_DATA 1)."
                : $"EI_DATA (offset 0x5) is {header[5]}, neither ELFDATA2LSB (1) nor ELFDATA2MSB (2).");
        }

        if (header.Length < HeaderSize)
        {
            throw Invalid(path, $"the file is {length} bytes, shorter than the {HeaderSize}-byte ELF64 header.");
        }

        if (header[6] != 1)
        {
            throw Invalid(path, $"EI_VERSION (offset 0x6) is {header[6]}; the only ELF version is EV_CURRENT (1).");
        }

        ulong phoff = BinaryPrimitives.ReadUInt64LittleEndian(header[0x20..]);
        ushort phentsize = BinaryPrimitives.ReadUInt16LittleEndian(header[0x36..]);
        ushort phnum = BinaryPrimitives.ReadUInt16LittleEndian(header[0x38..]);

        if (phnum == PnXnum)
        {
            throw Invalid(path, "e_phnum (offset 0x38) is PN_XNUM (0xffff): the program header count is in section header 0, as QEMU writes it for more than 65534 memory ranges. Extended numbering is not supported.");
        }

        if (phnum == 0)
        {
            throw Invalid(path, "e_phnum (offset 0x38) is 0: there are no program headers, so no PT_LOAD segment describes memory.");
        }

        if (phentsize != ProgramHeaderSize)
        {
            throw Invalid(path, $"e_phentsize (offset 0x36) is {phentsize}; an ELF64 program header is {ProgramHeaderSize} bytes.");
        }

        ulong tableSize = (ulong)phnum * ProgramHeaderSize;
        if (phoff > (ulong)length || tableSize > (ulong)length - phoff)
        {
            throw Invalid(path, $"the program header table ({phnum} × {ProgramHeaderSize} bytes at e_phoff {Hex(phoff)}, ending at {Hex(phoff + tableSize)}) extends beyond the end of the file ({Hex((ulong)length)} bytes).");
        }

        return (phoff, phnum);
    }

    private static ElfFile ReadHeaders(string path, SafeFileHandle handle, long length)
    {
        bool ok;
        ElfFile? elf;
        DiagnosticBag? diagnostics;
        try
        {
            using var view = new ElfHeaderView(handle, length, path);
            ok = ElfFile.TryRead(view, out elf, out diagnostics, new ElfReaderOptions { UseSubStream = true });
        }
        catch (InvalidImageException)
        {
            throw;
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            throw new InvalidImageException(path, $"the ELF headers could not be read: {ex.Message}", ex);
        }

        // LibObjectFile reports a segment whose data lies (partly) beyond the end of the file as an error; here that
        // is a truncated dump, which CheckSegment and BuildExtents handle, so only other errors are fatal.
        string[] errors = (diagnostics?.Messages ?? [])
            .Where(m => m.Kind == DiagnosticKind.Error && m.Id != DiagnosticId.ELF_ERR_InvalidSegmentRange)
            .Select(m => m.Message)
            .ToArray();
        if (elf is null || (!ok && errors.Length > 0))
        {
            string detail = errors.Length == 0 ? "no detail" : string.Join("; ", errors.Take(3)) + (errors.Length > 3 ? $"; and {errors.Length - 3} more" : "");
            throw Invalid(path, $"the ELF headers are malformed: {detail}.");
        }

        return elf;
    }

    private static void CheckSegment(string path, LoadSegment load)
    {
        if (load.FileSize > load.MemorySize)
        {
            throw Invalid(path, $"{load.Name}: p_filesz {Hex(load.FileSize)} exceeds p_memsz {Hex(load.MemorySize)}.");
        }

        if (load.MemorySize != 0
            && ((load.PhysicalAddress >> PhysicalAddress.ArchitecturalMaxBits) != 0
                || load.MemorySize > (1UL << PhysicalAddress.ArchitecturalMaxBits) - load.PhysicalAddress))
        {
            throw Invalid(path, $"{load.Name}: physical memory p_paddr {Hex(load.PhysicalAddress)} + p_memsz {Hex(load.MemorySize)} goes beyond the 52-bit physical address space.");
        }

        if (load.FileSize != 0 && (load.FileOffset > long.MaxValue || load.FileSize > (ulong)long.MaxValue - load.FileOffset))
        {
            throw Invalid(path, $"{load.Name}: its data at p_offset {Hex(load.FileOffset)} + p_filesz {Hex(load.FileSize)} lies beyond any possible file offset.");
        }
    }

    private static void CheckOverlaps(string path, List<LoadSegment> loads)
    {
        LoadSegment[] sorted = [.. loads.Where(l => l.MemorySize != 0).OrderBy(l => l.PhysicalAddress)];
        for (int i = 1; i < sorted.Length; i++)
        {
            LoadSegment previous = sorted[i - 1];
            LoadSegment current = sorted[i];
            if (current.PhysicalAddress < previous.PhysicalEnd)
            {
                throw Invalid(path, $"{previous.Name} and {current.Name} overlap in physical memory: {previous.PhysicalRangeText} and {current.PhysicalRangeText}.");
            }
        }
    }

    private static ImageExtent[] BuildExtents(string path, List<LoadSegment> loads, ulong fileLength, List<string> warnings)
    {
        var extents = new List<ImageExtent>(loads.Count + 1);
        var missing = new List<LoadSegment>();
        ulong missingBytes = 0;
        foreach (LoadSegment load in loads.OrderBy(l => l.PhysicalAddress))
        {
            if (load.MemorySize == 0)
            {
                continue;
            }

            ulong present = load.FileOffset >= fileLength ? 0 : Math.Min(load.FileSize, fileLength - load.FileOffset);
            if (present != 0)
            {
                extents.Add(new ImageExtent(load.PhysicalAddress, present, (long)load.FileOffset));
            }

            if (load.MemorySize > load.FileSize)
            {
                extents.Add(new ImageExtent(load.PhysicalAddress + load.FileSize, load.MemorySize - load.FileSize, ImageExtent.ZeroFill));
            }

            if (present < load.FileSize)
            {
                ulong absentStart = load.PhysicalAddress + present;
                ulong absent = load.FileSize - present;
                if (present == 0)
                {
                    missing.Add(load);
                    missingBytes += absent;
                }
                else
                {
                    warnings.Add(
                        $"{load.Name} ({load.PhysicalRangeText}) is truncated: the file ends at {Hex(fileLength)}, inside its data " +
                        $"(p_offset {Hex(load.FileOffset)}, p_filesz {Hex(load.FileSize)}); physical [{Hex(absentStart)}, {Hex(absentStart + absent)}) " +
                        $"({absent.ToString("#,0", CultureInfo.InvariantCulture)} bytes) is missing and reads as absent.");
                }
            }
        }

        if (missing.Count != 0)
        {
            string listed = string.Join(", ", missing.Take(MaxRangesListed).Select(m => $"{m.Name} {m.PhysicalRangeText}"));
            string more = missing.Count > MaxRangesListed ? $" and {missing.Count - MaxRangesListed} more" : "";
            warnings.Add(
                $"{missing.Count} PT_LOAD segment(s) lie wholly beyond the end of the file ({Hex(fileLength)} bytes): {listed}{more}; " +
                $"their {missingBytes.ToString("#,0", CultureInfo.InvariantCulture)} bytes of file data are missing and read as absent. The dump is truncated.");
        }

        if (extents.Count == 0)
        {
            throw Invalid(path, $"no PT_LOAD segment has any memory in the file: the file ends at {Hex(fileLength)}, before the data of all {loads.Count} segment(s). The dump is truncated.");
        }

        return [.. extents];
    }

    private static InvalidImageException Invalid(string path, string message) => new(path, message);

    /// <summary>One <c>PT_LOAD</c> program header, as read.</summary>
    private readonly record struct LoadSegment(int Index, ulong HeaderOffset, ulong PhysicalAddress, ulong FileOffset, ulong FileSize, ulong MemorySize)
    {
        public ulong PhysicalEnd => PhysicalAddress + MemorySize;

        public string Name => $"PT_LOAD program header {Index} (at offset {Hex(HeaderOffset)})";

        public string PhysicalRangeText => $"physical [{Hex(PhysicalAddress)}, {Hex(PhysicalEnd)})";
    }
}
