using System;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Text.RegularExpressions;
using ThpCore.Paging;

namespace ThpCore.Inspection;

/// <summary>
/// The paging registers of an x86-64 guest, parsed from the text of QEMU's HMP <c>info registers</c>: CR0, CR2,
/// CR3, CR4 and EFER. Together with a <see cref="GuestImage"/> of the same moment they let the walker translate the
/// guest's addresses.
/// </summary>
/// <remarks>
/// <para>
/// QEMU prints <c>NAME=hexvalue</c> fields, several to a line and padded (<c>R8 =…</c>, <c>ES =…</c>):
/// <code>
/// CR0=80050033 CR2=00007f2a1b1c9000 CR3=0000000004e0a000 CR4=00350ef0
/// EFER=0000000000000d01
/// </code>
/// Field names match whole words, so <c>CR3</c> is not found inside <c>XCR3</c>. From <c>info registers -a</c>
/// (several <c>CPU#n</c> blocks) the first CPU's block is read.
/// </para>
/// </remarks>
public sealed partial class QemuRegisters
{
    private const ulong Cr0WriteProtect = 1UL << 16;
    private const ulong RflagsAlignmentCheck = 1UL << 18;
    private const ulong Cr3ControlBits = 0b111UL << 61; // bit 63: no-flush hint; bits 62:61: LAM_U57, LAM_U48

    private readonly bool _alignmentCheck;

    private QemuRegisters(ulong cr0, ulong cr2, ulong cr3, ulong cr4, ulong efer, bool alignmentCheck)
    {
        Cr0 = cr0;
        Cr2 = cr2;
        Cr3 = cr3;
        Cr4 = cr4;
        Efer = efer;
        _alignmentCheck = alignmentCheck;
    }

    /// <summary>CR0 as printed (bit 16 is WP).</summary>
    public ulong Cr0 { get; }

    /// <summary>CR2, the last page-fault linear address.</summary>
    public ulong Cr2 { get; }

    /// <summary>CR3 as printed, with any PCID, PWT/PCD or LAM bits.</summary>
    public ulong Cr3 { get; }

    /// <summary>CR4 as printed.</summary>
    public ulong Cr4 { get; }

    /// <summary>IA32_EFER as printed (bit 11 is NXE).</summary>
    public ulong Efer { get; }

    /// <summary>Parses the text of <c>info registers</c>.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="text"/> is null.</exception>
    /// <exception cref="FormatException">
    /// A field is missing (for example "no CR3= field in the registers text") or its value is not a hexadecimal
    /// number of at most 64 bits.
    /// </exception>
    public static QemuRegisters Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (!TryParse(text, out QemuRegisters? registers, out string? error))
        {
            throw new FormatException(error);
        }

        return registers;
    }

    /// <summary>Parses the text of <c>info registers</c>; returns <see langword="false"/> if a field is missing or garbled.</summary>
    public static bool TryParse(string text, [NotNullWhen(true)] out QemuRegisters? registers) =>
        TryParse(text, out registers, out _);

    /// <summary>
    /// The CPU state for a page walk: CR3 (bit 63 and the LAM bits 62:61 cleared; with CR4.PCIDE its low 12 bits are
    /// the PCID, otherwise PWT and PCD), CR4 and EFER passed through raw (so LA57, PCIDE, SMEP, SMAP, PKE and NXE take
    /// effect), CR0.WP, and RFLAGS.AC when the text has an <c>RFL=</c> field.
    /// </summary>
    /// <param name="features">The CPU's features (MAXPHYADDR, 1 GiB pages, vendor); <see cref="CpuFeatures.Default"/> if null.</param>
    /// <exception cref="ArgumentException">CR3 sets bits between MAXPHYADDR and 60 (wrong <paramref name="features"/>, or a garbled dump).</exception>
    public CpuState ToCpuState(CpuFeatures? features = null) =>
        CpuState.Create(
            Cr3 & ~Cr3ControlBits,
            (Cr4Flags)Cr4,
            (EferFlags)Efer,
            writeProtect: (Cr0 & Cr0WriteProtect) != 0,
            alignmentCheck: _alignmentCheck,
            features: features);

    /// <summary>The five registers in QEMU's spelling, e.g. <c>CR0=80050033 CR2=0 CR3=4e0a000 CR4=350ef0 EFER=d01</c>.</summary>
    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"CR0={Cr0:x} CR2={Cr2:x} CR3={Cr3:x} CR4={Cr4:x} EFER={Efer:x}");

    private static bool TryParse(string? text, [NotNullWhen(true)] out QemuRegisters? registers, [NotNullWhen(false)] out string? error)
    {
        registers = null;
        if (text is null)
        {
            error = "the registers text is null.";
            return false;
        }

        ReadOnlySpan<char> block = FirstCpuBlock(text);
        if (!TryField(block, "CR0", out ulong cr0, out error)
            || !TryField(block, "CR2", out ulong cr2, out error)
            || !TryField(block, "CR3", out ulong cr3, out error)
            || !TryField(block, "CR4", out ulong cr4, out error)
            || !TryField(block, "EFER", out ulong efer, out error))
        {
            return false;
        }

        bool alignmentCheck = TryField(block, "RFL", out ulong rflags, out _) && (rflags & RflagsAlignmentCheck) != 0;
        registers = new QemuRegisters(cr0, cr2, cr3, cr4, efer, alignmentCheck);
        error = null;
        return true;
    }

    /// <summary>The text up to the second <c>CPU#n</c> header, if there is one.</summary>
    private static ReadOnlySpan<char> FirstCpuBlock(string text)
    {
        Match first = CpuHeader().Match(text);
        if (first.Success)
        {
            Match second = first.NextMatch();
            if (second.Success)
            {
                return text.AsSpan(0, second.Index);
            }
        }

        return text;
    }

    private static bool TryField(ReadOnlySpan<char> block, string name, out ulong value, [NotNullWhen(false)] out string? error)
    {
        value = 0;
        foreach (ValueMatch match in FieldName().EnumerateMatches(block))
        {
            ReadOnlySpan<char> found = block.Slice(match.Index, match.Length);
            int equals = found.IndexOf('=');
            if (!found[..equals].TrimEnd().Equals(name, StringComparison.Ordinal))
            {
                continue;
            }

            ReadOnlySpan<char> rest = block[(match.Index + match.Length)..].TrimStart(" \t");
            int tokenEnd = 0;
            while (tokenEnd < rest.Length && !char.IsWhiteSpace(rest[tokenEnd]))
            {
                tokenEnd++;
            }

            // "CR2= CR3=…" has no CR2 value: padding after '=' must not reach the next field.
            ReadOnlySpan<char> token = rest[..tokenEnd];
            if (token.Contains('='))
            {
                token = [];
            }

            if (token.IsEmpty || token.Length > 16 || !ulong.TryParse(token, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out value))
            {
                string shown = token.Length > 24 ? string.Concat(token[..24], "…") : token.ToString();
                error = token.IsEmpty
                    ? $"the {name}= field has no value."
                    : $"the {name}= field holds '{shown}', not a hexadecimal number of at most 16 digits.";
                return false;
            }

            error = null;
            return true;
        }

        error = $"no {name}= field in the registers text.";
        return false;
    }

    // A field name: a whole word of letters and digits, then optional padding and '='.
    [GeneratedRegex(@"(?<![A-Za-z0-9_])[A-Za-z][A-Za-z0-9]*[ \t]*=", RegexOptions.CultureInvariant)]
    private static partial Regex FieldName();

    [GeneratedRegex(@"^[ \t]*CPU#\d+", RegexOptions.Multiline | RegexOptions.CultureInvariant)]
    private static partial Regex CpuHeader();
}
