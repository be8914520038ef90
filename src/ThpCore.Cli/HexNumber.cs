using System;
using System.Globalization;

namespace ThpCore.Cli;

/// <summary>Parses the hexadecimal numbers the commands take (CR3, virtual addresses): with or without 0x, underscores allowed.</summary>
internal static class HexNumber
{
    public static ulong Parse(string text, string what)
    {
        string digits = text.Trim().Replace("_", string.Empty, StringComparison.Ordinal);
        if (digits.StartsWith("0x", StringComparison.OrdinalIgnoreCase))
        {
            digits = digits[2..];
        }

        if (digits.Length == 0 || digits.Length > 16
            || !ulong.TryParse(digits, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong value))
        {
            throw new CliException(ExitCodes.Usage, $"{what}: '{text}' is not a 64-bit hexadecimal number (e.g. 0x1a2b000).");
        }

        return value;
    }
}
