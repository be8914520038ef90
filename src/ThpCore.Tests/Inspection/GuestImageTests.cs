using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Threading;
using System.Threading.Tasks;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using ThpCore.Inspection;
using ThpCore.Paging;
using Xunit;
using static ThpCore.Tests.Inspection.TestImageFiles;

namespace ThpCore.Tests.Inspection;

public sealed class GuestImageTests : IDisposable
{
    private readonly TempImageDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    private static PhysicalAddress Pa(ulong value) => PhysicalAddress.Create(value);

    private static ulong Read(GuestImage image, ulong address)
    {
        Assert.True(image.TryReadUInt64(Pa(address), out ulong value), $"expected memory at {Pa(address)}");
        return value;
    }

    private static void AssertAbsent(GuestImage image, ulong address)
    {
        Assert.False(image.TryReadUInt64(Pa(address), out ulong value), $"expected no memory at {Pa(address)}");
        Assert.Equal(0UL, value);
    }

    private GuestImage OpenCore(TestPhdr[] phdrs, long? length = null, Action<byte[]>? patch = null, ImageFormat format = ImageFormat.Auto) =>
        GuestImage.Open(_dir.Write("core.elf", Elf(phdrs, length, patch)), format);

    private InvalidImageException Invalid(byte[] contents, ImageFormat format = ImageFormat.Auto)
    {
        string path = _dir.Write("bad-" + Guid.NewGuid().ToString("N"), contents);
        var ex = Assert.Throws<InvalidImageException>(() => GuestImage.Open(path, format));
        Assert.Equal(Path.GetFullPath(path), ex.Path);
        Assert.StartsWith(Path.GetFullPath(path) + ": ", ex.Message, StringComparison.Ordinal);
        return ex;
    }

    // ---- raw images ----

    [Fact]
    public void A_raw_image_reads_each_word_at_its_file_offset()
    {
        string path = _dir.Write("mem.raw", Raw(3 * 4096));
        using GuestImage image = GuestImage.Open(path);

        Assert.IsType<RawImage>(image);
        Assert.Equal(ImageFormat.Raw, image.Format);
        Assert.Equal(Path.GetFullPath(path), image.Path);
        Assert.Equal(3UL * 4096, image.Size);
        Assert.Equal([new PhysicalRange(Pa(0), 3 * 4096)], image.Ranges);
        Assert.Empty(image.Warnings);
        foreach (ulong a in new ulong[] { 0, 8, 0xFF8, 0x1000, 0x2FF8 })
        {
            Assert.Equal(PatternWord(a), Read(image, a));
        }

        AssertAbsent(image, 0x3000);
        Assert.Equal(Raw(3 * 4096).AsSpan(0x1000, 4096).ToArray(), image.ReadFrame(1).ToArray());
        Assert.Equal(PatternWord(0x2FF8), ((IPhysicalMemory)image).ReadUInt64(Pa(0x2FF8)));
    }

    [Fact]
    public void A_raw_file_whose_length_is_not_a_multiple_of_4096_warns_and_its_missing_bytes_read_as_absent()
    {
        using GuestImage image = GuestImage.Open(_dir.Write("odd.raw", Raw(0x1804)));

        string warning = Assert.Single(image.Warnings);
        Assert.Contains("not a multiple of 4096", warning, StringComparison.Ordinal);
        Assert.Equal(0x1804UL, image.Size);
        Assert.Equal(PatternWord(0x17F8), Read(image, 0x17F8));
        AssertAbsent(image, 0x1800); // only 4 of its 8 bytes are in the file

        byte[] frame = image.ReadFrame(1).ToArray();
        Assert.Equal(PatternByte(0x1803), frame[0x803]);
        Assert.All(frame[0x804..], b => Assert.Equal(0, b));
        Assert.Throws<ArgumentOutOfRangeException>(() => image.ReadFrame(2).ToArray());
    }

    [Fact]
    public void Auto_detects_elf_by_its_magic_and_reads_anything_else_as_raw()
    {
        using (GuestImage core = OpenCore(StandardCore()))
        {
            Assert.IsType<ElfCoreImage>(core);
            Assert.Equal(ImageFormat.Elf, core.Format);
        }

        using (GuestImage raw = GuestImage.Open(_dir.Write("mem.raw", Raw(4096))))
        {
            Assert.IsType<RawImage>(raw);
        }

        using (GuestImage tiny = GuestImage.Open(_dir.Write("tiny", [0x7F, (byte)'E', (byte)'L'])))
        {
            Assert.IsType<RawImage>(tiny); // too short to hold the magic
        }

        // Forcing Raw on an ELF file reads the file as flat memory.
        using GuestImage forced = GuestImage.Open(_dir.Write("core-as-raw", Elf(StandardCore())), ImageFormat.Raw);
        Assert.IsType<RawImage>(forced);
        Assert.Equal(0x464C457FUL, Read(forced, 0) & 0xFFFF_FFFF);
    }

    // ---- ELF cores ----

    [Fact]
    public void An_elf_core_maps_each_load_segment_to_its_file_data()
    {
        using GuestImage image = OpenCore(StandardCore());

        Assert.Empty(image.Warnings);
        Assert.Equal(
            [
                new PhysicalRange(Pa(0), 0xA_0000),
                new PhysicalRange(Pa(0x10_0000), 0x10_0000),
                new PhysicalRange(Pa(0x40_0000), 0x5000),
                new PhysicalRange(Pa(0x1_0000_0000), 0x1800),
            ],
            image.Ranges);
        Assert.Equal(0x1_0000_1800UL, image.Size);

        // First and last word of every segment's file data.
        foreach (ulong a in new ulong[] { 0, 0x9_FFF8, 0x10_0000, 0x1F_FFF8, 0x40_0000, 0x40_2FF8, 0x1_0000_0000, 0x1_0000_17F8 })
        {
            Assert.Equal(PatternWord(a), Read(image, a));
        }
    }

    [Fact]
    public void Holes_and_addresses_beyond_the_end_hold_no_memory()
    {
        using GuestImage image = OpenCore(StandardCore());

        foreach (ulong a in new ulong[] { 0xA_0000, 0xF_FFF8, 0x20_0000, 0x3F_FFF8, 0x40_5000, 0xFFFF_FFF8, 0x1_0000_1800, 0x1_0000_2000, (1UL << 52) - 8 })
        {
            AssertAbsent(image, a);
        }

        Assert.Throws<ArgumentOutOfRangeException>(() => image.ReadFrame(0xA0).ToArray());
        Assert.Throws<ArgumentOutOfRangeException>(() => image.ReadFrame(0x1_0000_2).ToArray());
        Assert.Throws<ArgumentOutOfRangeException>(() => image.ReadFrame(ulong.MaxValue).ToArray());
        Assert.Throws<ArgumentOutOfRangeException>(() => ((IPhysicalMemory)image).ReadUInt64(Pa(0x20_0000)));
    }

    [Fact]
    public void The_tail_beyond_p_filesz_reads_as_zero_up_to_p_memsz()
    {
        using GuestImage image = OpenCore(StandardCore());

        Assert.Equal(PatternWord(0x40_2FF8), Read(image, 0x40_2FF8));
        Assert.Equal(0UL, Read(image, 0x40_3000));
        Assert.Equal(0UL, Read(image, 0x40_4FF8));
        AssertAbsent(image, 0x40_5000);
        Assert.All(image.ReadFrame(0x404).ToArray(), b => Assert.Equal(0, b));
    }

    [Fact]
    public void A_frame_only_partly_in_a_segment_reads_its_missing_bytes_as_zero()
    {
        using GuestImage image = OpenCore(StandardCore());

        byte[] frame = image.ReadFrame(0x10_0001).ToArray();
        byte[] expected = new byte[4096];
        FillPattern(expected.AsSpan(0, 0x800), 0x1_0000_1000);
        Assert.Equal(expected, frame);
        AssertAbsent(image, 0x1_0000_1800);
    }

    [Fact]
    public void A_word_across_a_segment_boundary_that_is_not_8_aligned_is_read_from_both_segments()
    {
        // Two adjacent physical ranges whose data are not adjacent in the file, split 4 bytes into a word.
        TestPhdr[] phdrs =
        [
            TestPhdr.LoadAt(0x1000, 0x0, 0x1004),
            TestPhdr.LoadAt(0x3000, 0x1004, 0xFFC),
            TestPhdr.LoadAt(0x4000, 0x3000, 0x1004), // its neighbour is missing: the word at 0x4000 is cut
        ];
        using GuestImage image = OpenCore(phdrs);

        Assert.Equal([new PhysicalRange(Pa(0), 0x2000), new PhysicalRange(Pa(0x3000), 0x1004)], image.Ranges);
        Assert.Equal(PatternWord(0x1000), Read(image, 0x1000));
        Assert.Equal(PatternWord(0x1FF8), Read(image, 0x1FF8));
        AssertAbsent(image, 0x4000);
        Assert.Equal(PatternByte(0x4003), image.ReadFrame(4)[3]);
        Assert.Equal(0, image.ReadFrame(4)[4]);
    }

    [Fact]
    public void Program_headers_need_not_follow_the_elf_header()
    {
        // ELFSharp 2.17.3 failed on this valid layout (it read e_phoff as a section count).
        TestPhdr[] phdrs = [TestPhdr.LoadAt(0x2000, 0x0, 0x2000)];
        byte[] file = Elf(phdrs, 0x4000);
        byte[] phdr = file.AsSpan(ElfHeaderSize, PhdrSize).ToArray();
        file.AsSpan(ElfHeaderSize, PhdrSize).Clear();
        phdr.CopyTo(file, 0x1000);
        PutUInt64(file, 0x20, 0x1000);

        using GuestImage image = GuestImage.Open(_dir.Write("phoff.elf", file));
        Assert.Equal(PatternWord(0x1FF8), Read(image, 0x1FF8));
    }

    [Fact]
    public void A_garbage_section_table_is_ignored()
    {
        TestPhdr[] phdrs = StandardCore();
        using GuestImage image = OpenCore(phdrs, patch: file =>
        {
            PutUInt64(file, 0x28, 0x1000); // e_shoff: the note, read as section headers
            PutUInt16(file, 0x3C, 40); // e_shnum
            PutUInt16(file, 0x3E, 7); // e_shstrndx
        });

        Assert.Equal(4, image.Ranges.Count);
    }

    [Fact]
    public void An_executable_is_accepted_and_e_shentsize_may_be_zero()
    {
        using GuestImage image = OpenCore([TestPhdr.LoadAt(0x1000, 0x20_0000, 0x1000)], patch: file =>
        {
            PutUInt16(file, 0x10, 2); // ET_EXEC
            PutUInt16(file, 0x3A, 0); // e_shentsize
        });

        Assert.Equal(PatternWord(0x20_0000), Read(image, 0x20_0000));
    }

    [Fact]
    public void A_truncated_last_segment_warns_and_its_missing_part_reads_as_absent()
    {
        TestPhdr[] phdrs = StandardCore();
        using GuestImage image = OpenCore(phdrs, length: 0x1A_5000 + 0x800);

        string warning = Assert.Single(image.Warnings);
        Assert.Contains("truncated", warning, StringComparison.Ordinal);
        Assert.Contains("program header 4", warning, StringComparison.Ordinal);
        Assert.Equal(new PhysicalRange(Pa(0x1_0000_0000), 0x800), image.Ranges[^1]);
        Assert.Equal(0x1_0000_0800UL, image.Size);
        Assert.Equal(PatternWord(0x1_0000_07F8), Read(image, 0x1_0000_07F8));
        AssertAbsent(image, 0x1_0000_0800);
        Assert.Equal(PatternWord(0x40_0000), Read(image, 0x40_0000));
    }

    [Fact]
    public void Segments_wholly_beyond_the_end_of_a_truncated_file_warn_and_read_as_absent()
    {
        TestPhdr[] phdrs = StandardCore();
        using GuestImage image = OpenCore(phdrs, length: 0x10_2000); // inside the second PT_LOAD's data

        Assert.Equal(2, image.Warnings.Count);
        Assert.Contains("2 PT_LOAD segment(s) lie wholly beyond the end of the file", image.Warnings[1], StringComparison.Ordinal);
        Assert.Equal(
            [
                new PhysicalRange(Pa(0), 0xA_0000),
                new PhysicalRange(Pa(0x10_0000), 0x6_0000),
                new PhysicalRange(Pa(0x40_3000), 0x2000), // the zero-filled tail is not file data, so it is still there
            ],
            image.Ranges);
        AssertAbsent(image, 0x16_0000);
        AssertAbsent(image, 0x40_0000);
        Assert.Equal(0UL, Read(image, 0x40_3000));
        AssertAbsent(image, 0x1_0000_0000);
    }

    // ---- images that cannot be opened ----

    [Fact]
    public void An_empty_file_is_invalid_in_every_format()
    {
        foreach (ImageFormat format in new[] { ImageFormat.Auto, ImageFormat.Raw, ImageFormat.Elf })
        {
            Assert.Contains("empty", Invalid([], format).Message, StringComparison.Ordinal);
        }
    }

    public static TheoryData<string, string> BadCores() => new()
    {
        { "bad magic", "no ELF magic at offset 0" },
        { "32-bit", "ELFCLASS32" },
        { "big-endian", "ELFDATA2MSB" },
        { "short header", "shorter than the 64-byte ELF64 header" },
        { "EI_VERSION", "EI_VERSION (offset 0x6)" },
        { "no phdrs", "e_phnum (offset 0x38) is 0" },
        { "PN_XNUM", "PN_XNUM" },
        { "phentsize", "e_phentsize (offset 0x36) is 32" },
        { "phdrs beyond file", "extends beyond the end of the file" },
        { "phoff beyond file", "extends beyond the end of the file" },
        { "ET_REL", "e_type (offset 0x10) is 1 (ET_REL)" },
        { "ARM", "e_machine (offset 0x12) is 40 (EM_ARM)" },
        { "unnamed machine", "e_machine (offset 0x12) is 48879 (unknown)" },
        { "no PT_LOAD", "none of the 1 program headers" },
        { "overlap", "overlap in physical memory" },
        { "filesz > memsz", "exceeds p_memsz" },
        { "beyond 52 bits", "52-bit physical address space" },
        { "offset beyond any file", "beyond any possible file offset" },
        { "no data in file", "no PT_LOAD segment has any memory in the file" },
    };

    [Theory]
    [MemberData(nameof(BadCores))]
    public void A_malformed_elf_core_is_refused_with_a_message_that_says_what_is_wrong(string name, string expected)
    {
        TestPhdr[] one = [TestPhdr.LoadAt(0x1000, 0, 0x1000)];
        byte[] file = name switch
        {
            "bad magic" => Elf(one, patchHeader: f => f[1] = (byte)'X'),
            "32-bit" => Elf(one, patchHeader: f => f[4] = 1),
            "big-endian" => Elf(one, patchHeader: f => f[5] = 2),
            "short header" => Elf(one)[..40],
            "EI_VERSION" => Elf(one, patchHeader: f => f[6] = 0),
            "no phdrs" => Elf([], 0x100),
            "PN_XNUM" => Elf(one, patchHeader: f => PutUInt16(f, 0x38, 0xFFFF)),
            "phentsize" => Elf(one, patchHeader: f => PutUInt16(f, 0x36, 32)),
            "phdrs beyond file" => Elf(one, patchHeader: f => PutUInt16(f, 0x38, 200)),
            "phoff beyond file" => Elf(one, patchHeader: f => PutUInt64(f, 0x20, ulong.MaxValue - 8)),
            "ET_REL" => Elf(one, patchHeader: f => PutUInt16(f, 0x10, 1)),
            "ARM" => Elf(one, patchHeader: f => PutUInt16(f, 0x12, 40)),
            "unnamed machine" => Elf(one, patchHeader: f => PutUInt16(f, 0x12, 0xBEEF)),
            "no PT_LOAD" => Elf([new TestPhdr(TestPhdr.Note, 0x100, 0, 0x40, 0)]),
            "overlap" => Elf([TestPhdr.LoadAt(0x1000, 0, 0x2000), TestPhdr.LoadAt(0x3000, 0x1000, 0x1000)]),
            "filesz > memsz" => Elf([TestPhdr.LoadAt(0x1000, 0, 0x2000, 0x1000)]),
            "beyond 52 bits" => Elf([TestPhdr.LoadAt(0x1000, (1UL << 52) - 0x1000, 0x1000, 0x2000)]),
            "offset beyond any file" => Elf([TestPhdr.LoadAt(0x8000_0000_0000_0000, 0, 0x1000)], 0x1000),
            "no data in file" => Elf([TestPhdr.LoadAt(0x10_0000, 0, 0x1000)], 0x1000),
            _ => throw new ArgumentOutOfRangeException(nameof(name), name, null),
        };

        InvalidImageException ex = Invalid(file, ImageFormat.Elf);
        Assert.Contains(expected, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_file_without_the_elf_magic_is_refused_as_elf_but_opens_as_raw()
    {
        byte[] contents = Raw(4096);
        Assert.Contains("no ELF magic at offset 0", Invalid(contents, ImageFormat.Elf).Message, StringComparison.Ordinal);
        using GuestImage image = GuestImage.Open(_dir.Write("raw", contents));
        Assert.IsType<RawImage>(image);
    }

    [Fact]
    public void A_missing_file_is_a_FileNotFoundException_and_a_directory_is_invalid()
    {
        string missing = Path.Combine(_dir.Path, "nope.elf");
        Assert.Equal(Path.GetFullPath(missing), Assert.Throws<FileNotFoundException>(() => GuestImage.Open(missing)).FileName);
        Assert.Throws<FileNotFoundException>(() => GuestImage.Open(Path.Combine(_dir.Path, "no-such-dir", "core.elf")));
        Assert.Contains("is a directory", Assert.Throws<InvalidImageException>(() => GuestImage.Open(_dir.Path)).Message, StringComparison.Ordinal);
        Assert.ThrowsAny<ArgumentException>(() => GuestImage.Open(""));
        Assert.Throws<ArgumentOutOfRangeException>(() => GuestImage.Open(missing, (ImageFormat)7));
    }

    // ---- read-only, alignment, lifetime ----

    [Fact]
    public void A_guest_image_is_read_only()
    {
        using GuestImage image = OpenCore(StandardCore());

        var write = Assert.Throws<InvalidOperationException>(() => image.WriteUInt64(Pa(0), 1));
        Assert.Contains("WalkOptions { Probe = true }", write.Message, StringComparison.Ordinal);
        Assert.Throws<InvalidOperationException>(() => image.CompareExchangeUInt64(Pa(0), 1, 0));
        Assert.Throws<InvalidOperationException>(() => image.GetWritableFrame(0).ToArray());
        Assert.Equal(PatternWord(0), Read(image, 0));
    }

    [Fact]
    public void A_misaligned_read_is_an_argument_error_and_a_disposed_image_cannot_be_read()
    {
        GuestImage image = OpenCore(StandardCore());
        Assert.Throws<ArgumentException>(() => image.TryReadUInt64(Pa(4), out _));

        image.Dispose();
        Assert.Throws<ObjectDisposedException>(() => image.TryReadUInt64(Pa(0), out _));
        image.Dispose();
    }

    [Fact]
    public void Reading_a_word_allocates_nothing()
    {
        using GuestImage image = OpenCore(StandardCore());
        Read(image, 0x10_0000); // warm up

        ulong sum = 0;
        long allocated = Allocations.SteadyState(() =>
        {
            for (ulong a = 0; a < 0x2000; a += 8)
            {
                image.TryReadUInt64(Pa(0x10_0000 + a), out ulong value);
                image.TryReadUInt64(Pa(0x40_3000 + a), out ulong zero);
                image.TryReadUInt64(Pa(0x30_0000 + a), out ulong hole);
                sum += value + zero + hole;
            }
        });

        Assert.Equal(0, allocated);
        Assert.NotEqual(0UL, sum);
    }

    [Fact]
    public void Concurrent_reads_from_many_threads_all_see_the_file_contents()
    {
        using GuestImage image = OpenCore(StandardCore());
        ulong[] bases = [0x0, 0x10_0000, 0x40_0000, 0x1_0000_0000];
        ulong[] lengths = [0xA_0000, 0x10_0000, 0x3000, 0x1800];
        int failures = 0;

        Parallel.For(0, 8, new ParallelOptions { MaxDegreeOfParallelism = 8 }, thread =>
        {
            var random = new Random(thread);
            for (int i = 0; i < 20_000; i++)
            {
                int segment = random.Next(bases.Length);
                ulong a = bases[segment] + ((ulong)random.NextInt64((long)(lengths[segment] / 8)) * 8);
                if (!image.TryReadUInt64(Pa(a), out ulong value) || value != PatternWord(a))
                {
                    Interlocked.Increment(ref failures);
                }

                if (i % 1000 == 0 && image.ReadFrame(a >> 12)[(int)(a & 0xFF8)] != PatternByte(a & ~7UL))
                {
                    Interlocked.Increment(ref failures);
                }
            }
        });

        Assert.Equal(0, failures);
    }

    // ---- large files ----

    [Fact]
    public void A_6_GiB_sparse_raw_file_opens_and_reads_without_being_loaded()
    {
        const long size = 6L << 30;
        string path = Path.Combine(_dir.Path, "sparse.raw");
        try
        {
            using (var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write))
            {
                stream.SetLength(size);
                stream.Position = size - 8;
                stream.Write(BitConverter.GetBytes(0xFEED_FACE_CAFE_BEEFUL));
                stream.Position = 0x1_2345_6780;
                stream.Write(BitConverter.GetBytes(0x0123_4567_89AB_CDEFUL));
            }

            long managedBefore = GC.GetTotalMemory(forceFullCollection: true);
            using GuestImage image = GuestImage.Open(path);
            Assert.Equal((ulong)size, image.Size);
            Assert.Equal(0xFEED_FACE_CAFE_BEEFUL, Read(image, (ulong)size - 8));
            Assert.Equal(0x0123_4567_89AB_CDEFUL, Read(image, 0x1_2345_6780));
            Assert.Equal(0UL, Read(image, 0x1_0000_0000));
            AssertAbsent(image, (ulong)size);
            Assert.True(GC.GetTotalMemory(forceFullCollection: true) - managedBefore < (16 << 20), "opening must not load the file");
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void A_6_GiB_sparse_elf_core_opens_and_reads_without_being_loaded()
    {
        const ulong segment = 3UL << 30;
        string path = Path.Combine(_dir.Path, "sparse.elf");
        try
        {
            TestPhdr[] phdrs =
            [
                new TestPhdr(TestPhdr.Note, 0x1000, 0, 0x30, 0),
                TestPhdr.LoadAt(0x2000, 0, segment),
                TestPhdr.LoadAt(0x2000 + segment, 0x1_0000_0000, segment - 0x2000),
            ];
            using (var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write))
            {
                stream.Write(Elf(phdrs, 0x2000));
                stream.SetLength((long)(2 * segment));
                stream.Position = (long)(2 * segment) - 8;
                stream.Write(BitConverter.GetBytes(0xFEED_FACE_CAFE_BEEFUL));
            }

            long managedBefore = GC.GetTotalMemory(forceFullCollection: true);
            using GuestImage image = GuestImage.Open(path);
            Assert.Empty(image.Warnings);
            Assert.Equal(0x1_0000_0000 + segment - 0x2000, image.Size);
            Assert.Equal(0xFEED_FACE_CAFE_BEEFUL, Read(image, image.Size - 8));
            Assert.Equal(0UL, Read(image, segment - 8));
            AssertAbsent(image, segment);
            Assert.True(GC.GetTotalMemory(forceFullCollection: true) - managedBefore < (16 << 20), "opening must not load the file");
        }
        finally
        {
            File.Delete(path);
        }
    }

    // ---- garbage ----

    private static readonly Gen<byte[]> RandomBytes =
        from length in Gen.Choose(0, 4096)
        from bytes in Gen.ArrayOf(Gen.Choose(0, 255).Select(b => (byte)b), length)
        from elfStart in Gen.Frequency(
            (2, Gen.Constant(Array.Empty<byte>())),
            (3, Gen.Constant(new byte[] { 0x7F, (byte)'E', (byte)'L', (byte)'F' })),
            (5, Gen.Constant(new byte[] { 0x7F, (byte)'E', (byte)'L', (byte)'F', 2, 1, 1 })))
        select Prefix(elfStart, bytes);

    // The first 8 KiB of the standard core (ELF header, five program headers, the note, the start of the first
    // PT_LOAD) with a few header or program header bytes changed: reaches the checks behind the first ones.
    private static readonly byte[] CoreStart = Elf(StandardCore())[..0x2000];

    private static readonly Gen<byte[]> MutatedCore =
        from changes in Gen.ListOf(Gen.Choose(0, ElfHeaderSize + (5 * PhdrSize) - 1).Zip(Gen.Choose(0, 255)))
        from cut in Gen.Frequency((4, Gen.Constant(CoreStart.Length)), (1, Gen.Choose(0, CoreStart.Length)))
        select Mutate(changes, cut);

    private static readonly Gen<byte[]> Garbage = Gen.Frequency((1, RandomBytes), (1, MutatedCore));

    private static byte[] Mutate(IEnumerable<(int At, int Value)> changes, int cut)
    {
        byte[] result = CoreStart[..cut];
        foreach ((int at, int value) in changes)
        {
            if (at < result.Length)
            {
                result[at] = (byte)value;
            }
        }

        return result;
    }

    private static byte[] Prefix(byte[] start, byte[] bytes)
    {
        byte[] result = (byte[])bytes.Clone();
        start.AsSpan(0, Math.Min(start.Length, result.Length)).CopyTo(result);
        if (result.Length >= 64 && start.Length > 4)
        {
            // Keep the program header table small and near the start more often than chance would.
            result[0x36] = 56;
            result[0x37] = 0;
            result[0x39] = 0;
            result[0x21] = 0;
            for (int i = 0x22; i < 0x28; i++)
            {
                result[i] = 0;
            }
        }

        return result;
    }

    [Property(MaxTest = 500)]
    public Property Random_bytes_open_as_a_guest_image_or_fail_with_InvalidImageException() =>
        Prop.ForAll(Garbage.ToArbitrary(), bytes =>
        {
            string path = _dir.Write("garbage", bytes);
            foreach (ImageFormat format in new[] { ImageFormat.Auto, ImageFormat.Elf })
            {
                try
                {
                    using GuestImage image = GuestImage.Open(path, format);
                    foreach (PhysicalRange range in image.Ranges)
                    {
                        image.TryReadUInt64(range.Start.AlignDown(PageSize.Size4K), out _);
                        image.ReadFrame(range.Start.FrameNumber);
                    }

                    image.TryReadUInt64(PhysicalAddress.CreateTruncate(image.Size & ~7UL), out _);
                }
                catch (InvalidImageException ex) when (ex.Path == path)
                {
                }
            }

            return true;
        });
}
