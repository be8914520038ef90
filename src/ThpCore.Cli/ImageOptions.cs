using System;
using System.CommandLine;
using System.Globalization;
using System.IO;
using System.Linq;
using ThpCore.Inspection;
using ThpCore.Paging;

namespace ThpCore.Cli;

/// <summary>The options <c>inspect</c> and <c>walk</c> share: the image, CR3 (or a registers file) and the CPU facts.</summary>
internal sealed class ImageOptions
{
    public Argument<FileInfo> Image { get; } = new("IMAGE")
    {
        Description = "A guest physical-memory image: QEMU 'pmemsave 0 SIZE FILE' (raw) or 'dump-guest-memory FILE' (ELF).",
    };

    public Option<string?> Cr3 { get; } = new("--cr3")
    {
        Description = "CR3 in hexadecimal (the root table's physical address, with PCID or PWT/PCD in bits 11:0). Overrides --registers.",
        HelpName = "HEX",
    };

    public Option<string?> Cr4 { get; } = new("--cr4")
    {
        Description = "CR4 in hexadecimal (LA57 bit 12, PCIDE bit 17, ...). Default 0x20 (PAE), or from --registers.",
        HelpName = "HEX",
    };

    public Option<string?> Efer { get; } = new("--efer")
    {
        Description = "IA32_EFER in hexadecimal (NXE is bit 11). Default 0xd00 (LME, LMA, NXE), or from --registers.",
        HelpName = "HEX",
    };

    public Option<FileInfo?> Registers { get; } = new("--registers")
    {
        Description = "A saved QEMU 'info registers' text: CR3, CR4 (LA57, PCIDE) and EFER (NXE) are taken from it.",
        HelpName = "FILE",
    };

    public Option<string> Format { get; } = new("--format")
    {
        Description = "Image format; by default an ELF header means ELF, anything else raw.",
        HelpName = "raw|elf",
        DefaultValueFactory = _ => "auto",
    };

    public Option<bool> La57 { get; } = new("--la57")
    {
        Description = "5-level paging: CR3 points to a PML5 table.",
    };

    public Option<int> MaxPhysicalAddress { get; } = new("--maxphyaddr")
    {
        Description = "MAXPHYADDR of the guest CPU in bits (32..52); entry bits at and above it are reserved.",
        HelpName = "N",
        DefaultValueFactory = _ => PhysicalAddress.ArchitecturalMaxBits,
    };

    public void AddTo(Command command)
    {
        Format.AcceptOnlyFromAmong("auto", "raw", "elf");
        command.Arguments.Add(Image);
        command.Options.Add(Cr3);
        command.Options.Add(Cr4);
        command.Options.Add(Efer);
        command.Options.Add(Registers);
        command.Options.Add(Format);
        command.Options.Add(La57);
        command.Options.Add(MaxPhysicalAddress);
    }

    /// <summary>Opens the image and builds the CPU state; failures become <see cref="CliException"/>s with exit codes.</summary>
    public (GuestImage Image, CpuState Cpu) Open(ParseResult parse)
    {
        CpuState cpu = BuildCpu(parse);
        FileInfo file = parse.GetValue(Image)!;
        ImageFormat format = parse.GetValue(Format) switch
        {
            "raw" => ImageFormat.Raw,
            "elf" => ImageFormat.Elf,
            _ => ImageFormat.Auto,
        };

        GuestImage image;
        try
        {
            image = GuestImage.Open(file.FullName, format);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidImageException)
        {
            throw new CliException(ExitCodes.BadFile, $"{file.FullName}: {e.Message}");
        }

        if (!image.TryReadUInt64(cpu.RootTable, out _))
        {
            string ranges = string.Join(", ", image.Ranges.Select(r => $"{r.Start}-{r.End}"));
            image.Dispose();
            throw new CliException(
                ExitCodes.RootOutsideImage,
                $"CR3 {cpu.RootTable} points outside the image {file.Name} (backed physical ranges: {(ranges.Length == 0 ? "none" : ranges)}).");
        }

        return (image, cpu);
    }

    private CpuState BuildCpu(ParseResult parse)
    {
        int maxPhysicalAddress = parse.GetValue(MaxPhysicalAddress);
        if (maxPhysicalAddress is < 32 or > PhysicalAddress.ArchitecturalMaxBits)
        {
            throw new CliException(ExitCodes.Usage, $"--maxphyaddr: {maxPhysicalAddress} is outside 32..52.");
        }

        var features = CpuFeatures.Default with { MaxPhysicalAddressBits = maxPhysicalAddress };
        string? cr3Text = parse.GetValue(Cr3);
        FileInfo? registersFile = parse.GetValue(Registers);
        if (cr3Text is null && registersFile is null)
        {
            throw new CliException(ExitCodes.Usage, "Give the page-table root: --cr3 HEX, or --registers FILE with a saved QEMU 'info registers'.");
        }

        try
        {
            CpuState cpu = registersFile is not null
                ? ReadRegisters(registersFile).ToCpuState(features)
                : CpuState.Create(HexNumber.Parse(cr3Text!, "--cr3"), features: features);
            if (cr3Text is not null)
            {
                cpu = cpu.WithCr3(HexNumber.Parse(cr3Text, "--cr3"));
            }

            if (parse.GetValue(Cr4) is { } cr4Text)
            {
                cpu = cpu.WithCr4((Cr4Flags)HexNumber.Parse(cr4Text, "--cr4"));
            }

            if (parse.GetValue(Efer) is { } eferText)
            {
                cpu = cpu.WithEfer((EferFlags)HexNumber.Parse(eferText, "--efer"));
            }

            return parse.GetValue(La57) ? cpu.WithCr4(cpu.Cr4 | Cr4Flags.La57) : cpu;
        }
        catch (ArgumentException e)
        {
            throw new CliException(ExitCodes.Usage, e.Message);
        }
    }

    private static QemuRegisters ReadRegisters(FileInfo file)
    {
        try
        {
            return QemuRegisters.Parse(File.ReadAllText(file.FullName));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
        {
            throw new CliException(ExitCodes.BadFile, $"{file.FullName}: {e.Message}");
        }
    }

    public static string Describe(CpuState cpu) => string.Create(
        CultureInfo.InvariantCulture,
        $"CR3={cpu.RootTable}{(cpu.PcidEnabled ? $" PCID={cpu.Pcid}" : string.Empty)} {(cpu.PagingMode == PagingMode.FiveLevel ? "5-level" : "4-level")} NXE={(cpu.NoExecuteEnabled ? 1 : 0)} MAXPHYADDR={cpu.MaxPhysicalAddressBits}");
}
