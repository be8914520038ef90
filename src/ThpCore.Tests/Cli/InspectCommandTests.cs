using System;
using System.IO;
using System.Text.Json;
using ThpCore.Cli;
using ThpCore.Paging;
using Xunit;

namespace ThpCore.Tests.Cli;

public sealed class InspectCommandTests : IDisposable
{
    private const PageTableFlags UserData = PageTableFlags.Present | PageTableFlags.Writable | PageTableFlags.User | PageTableFlags.ExecuteDisable;
    private readonly string _dir = Directory.CreateTempSubdirectory("thp-cli-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>
    /// A 64 MiB raw image: tables from 1 MiB; a 4K page 0x400000 -> 0x2345000 (user, written), a 2M page
    /// 0x7f0000200000 -> 0x1000000, and 0x7f0000400000.. mapped by 512 PTEs onto 0x1200000.. (contiguous).
    /// </summary>
    private (string Path, ulong Cr3) MakeImage()
    {
        var memory = new SparsePhysicalMemory(64UL << 20);
        var mapper = new PageTableMapper(memory, new SimpleFrameAllocator(PhysicalAddress.Create(0x10_0000), PhysicalAddress.Create(0x80_0000)), PagingMode.FourLevel);
        mapper.Map(VirtualAddress.Create(0x40_0000), PhysicalAddress.Create(0x234_5000), PageSize.Size4K, UserData | PageTableFlags.Accessed | PageTableFlags.Dirty).Ignore();
        mapper.Map(VirtualAddress.Create(0x7f00_0020_0000), PhysicalAddress.Create(0x100_0000), PageSize.Size2M, PageTableFlags.Present | PageTableFlags.Writable | PageTableFlags.Global).Ignore();
        for (ulong i = 0; i < 512; i++)
        {
            mapper.Map(VirtualAddress.Create(0x7f00_0040_0000 + (i * 4096)), PhysicalAddress.Create(0x120_0000 + (i * 4096)), PageSize.Size4K, UserData).Ignore();
        }

        string path = Path.Combine(_dir, "guest.raw");
        using (FileStream file = File.Create(path))
        {
            file.SetLength((long)memory.Size);
            for (ulong frame = 0; frame < memory.FrameCount; frame++)
            {
                if (memory.IsMaterialized(frame))
                {
                    file.Position = (long)(frame * 4096);
                    file.Write(memory.ReadFrame(frame));
                }
            }
        }

        return (path, mapper.Root.Value);
    }

    private static (int Exit, string Output, string Error) Thp(params string[] args) => ThpRunner.Run(args);

    [Fact]
    public void Info_tlb_prints_QEMUs_line_format_for_each_page_size()
    {
        var (path, cr3) = MakeImage();
        var (exit, output, error) = Thp("inspect", path, "--cr3", cr3.ToString("x"), "--info-tlb");

        Assert.True(exit == ExitCodes.Success, error);
        string[] lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(1 + 1 + 512, lines.Length);

        // Written by hand from QEMU's print_pte: "%016x: %016x " then XGPDACTUW from the leaf's own bits.
        Assert.Equal("0000000000400000: 0000000002345000 X--DA--UW", lines[0]);
        Assert.Equal("00007f0000200000: 0000000001000000 -GP-----W", lines[1]);
        Assert.Equal("00007f0000400000: 0000000001200000 X------UW", lines[2]);
        Assert.Equal("00007f00005ff000: 00000000013ff000 X------UW", lines[^1]);
    }

    [Fact]
    public void Json_lists_every_mapping_with_size_and_combined_rights()
    {
        var (path, cr3) = MakeImage();
        var (exit, output, error) = Thp("inspect", path, "--cr3", "0x" + cr3.ToString("x"), "--json");

        Assert.True(exit == ExitCodes.Success, error);
        using JsonDocument json = JsonDocument.Parse(output);
        JsonElement root = json.RootElement;
        Assert.Equal(514, root.GetProperty("mappingCount").GetInt64());
        Assert.True(root.GetProperty("complete").GetBoolean());
        JsonElement huge = root.GetProperty("mappings")[1];
        Assert.Equal("0x7f0000200000", huge.GetProperty("virtualAddress").GetString());
        Assert.Equal("2M", huge.GetProperty("pageSize").GetString());
        Assert.Equal("0x1000000", huge.GetProperty("physicalAddress").GetString());
        Assert.False(huge.GetProperty("user").GetBoolean());
        Assert.True(huge.GetProperty("global").GetBoolean());
    }

    [Fact]
    public void Summary_counts_leaves_and_finds_the_range_that_could_collapse_in_place()
    {
        var (path, cr3) = MakeImage();
        var (exit, output, error) = Thp("inspect", path, "--cr3", cr3.ToString("x"), "--summary");

        Assert.True(exit == ExitCodes.Success, error);
        Assert.Contains("leaves: 0 x 1G, 1 x 2M, 513 x 4K", output, StringComparison.Ordinal);
        Assert.Contains("could be collapsed in place: 1", output, StringComparison.Ordinal);
        Assert.Contains("00007f0000400000 -> 0x1200000", output, StringComparison.Ordinal);
    }

    [Fact]
    public void The_default_output_is_a_table_with_one_row_per_mapping()
    {
        var (path, cr3) = MakeImage();
        var (exit, output, _) = Thp("inspect", path, "--cr3", cr3.ToString("x"));

        Assert.Equal(ExitCodes.Success, exit);
        Assert.Contains("0000000000400000  4K             2345000  user w-", output, StringComparison.Ordinal);
        Assert.Contains("# 514 mappings", output, StringComparison.Ordinal);
    }

    [Fact]
    public void With_EFER_NXE_clear_XD_is_a_reserved_bit_so_those_leaves_are_reported_not_listed()
    {
        var (path, cr3) = MakeImage();

        // EFER = LME | LMA (0x500), no NXE: bit 63 is reserved (SDM §4.5), and the 4K page and the PT-mapped range set it.
        var (exit, output, error) = Thp("inspect", path, "--cr3", cr3.ToString("x"), "--efer", "500", "--info-tlb");

        Assert.Equal(ExitCodes.Success, exit);
        Assert.Equal(["00007f0000200000: 0000000001000000 -GP-----W"], output.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("ReservedBits", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Walk_translates_step_by_step_and_exits_zero()
    {
        var (path, cr3) = MakeImage();
        var (exit, output, error) = Thp("walk", path, "--cr3", cr3.ToString("x"), "0x400123", "--user", "--write");

        Assert.True(exit == ExitCodes.Success, error);
        Assert.Contains("PML4E [0]", output, StringComparison.Ordinal);
        Assert.Contains("PTE [0]", output, StringComparison.Ordinal);
        Assert.Contains("0x400123 -> 0x2345123 (4K page", output, StringComparison.Ordinal);
    }

    [Fact]
    public void Walk_of_an_unmapped_address_shows_the_fault_and_exits_6()
    {
        var (path, cr3) = MakeImage();
        var (exit, output, _) = Thp("walk", path, "--cr3", cr3.ToString("x"), "401000", "--user");

        Assert.Equal(ExitCodes.WalkFaulted, exit);
        Assert.Contains("error code 0x4 = not-present U", output, StringComparison.Ordinal);
    }

    [Fact]
    public void A_bad_number_is_a_usage_error()
    {
        var (path, _) = MakeImage();
        var (exit, _, error) = Thp("inspect", path, "--cr3", "12zz");

        Assert.Equal(ExitCodes.Usage, exit);
        Assert.Contains("--cr3: '12zz' is not a 64-bit hexadecimal number", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Two_output_modes_at_once_are_a_usage_error()
    {
        var (path, cr3) = MakeImage();
        var (exit, _, error) = Thp("inspect", path, "--cr3", cr3.ToString("x"), "--json", "--summary");

        Assert.Equal(ExitCodes.Usage, exit);
        Assert.Contains("Choose one of --info-tlb, --json and --summary", error, StringComparison.Ordinal);
    }

    [Fact]
    public void A_missing_file_exits_3_and_names_it()
    {
        string missing = Path.Combine(_dir, "nope.raw");
        var (exit, _, error) = Thp("inspect", missing, "--cr3", "1000");

        Assert.Equal(ExitCodes.BadFile, exit);
        Assert.Contains("nope.raw", error, StringComparison.Ordinal);
    }

    [Fact]
    public void A_CR3_outside_the_image_exits_4()
    {
        var (path, _) = MakeImage();
        var (exit, _, error) = Thp("inspect", path, "--cr3", "0x40000000");

        Assert.Equal(ExitCodes.RootOutsideImage, exit);
        Assert.Contains("CR3 0x40000000 points outside the image", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Reaching_the_limit_exits_5_with_the_partial_output()
    {
        var (path, cr3) = MakeImage();
        var (exit, output, error) = Thp("inspect", path, "--cr3", cr3.ToString("x"), "--info-tlb", "--limit", "2");

        Assert.Equal(ExitCodes.LimitReached, exit);
        Assert.Equal(2, output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
        Assert.Contains("LeafLimitReached", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Missing_CR3_and_registers_is_a_usage_error()
    {
        var (path, _) = MakeImage();
        var (exit, _, error) = Thp("inspect", path);

        Assert.Equal(ExitCodes.Usage, exit);
        Assert.Contains("--cr3 HEX, or --registers FILE", error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("inspect")]
    [InlineData("walk")]
    [InlineData("walk-demo")]
    public void Each_command_has_help(string command)
    {
        var (exit, output, _) = Thp(command, "--help");

        Assert.Equal(ExitCodes.Success, exit);
        Assert.Contains("Usage:", output, StringComparison.Ordinal);
    }
}
