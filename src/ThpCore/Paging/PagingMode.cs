using System;

namespace ThpCore.Paging;

/// <summary>The IA-32e paging modes: 4-level (48-bit linear addresses) and 5-level (CR4.LA57, 57-bit).</summary>
public enum PagingMode : byte
{
    /// <summary>4-level paging: CR3 points to a PML4 table; linear addresses have 48 significant bits.</summary>
    FourLevel = 4,

    /// <summary>5-level paging (CR4.LA57 = 1): CR3 points to a PML5 table; linear addresses have 57 significant bits.</summary>
    FiveLevel = 5,
}

/// <summary>Facts about each <see cref="PagingMode"/>.</summary>
public static class PagingModeExtensions
{
    /// <summary>The level of the table CR3 points to.</summary>
    public static PagingLevel RootLevel(this PagingMode mode) => (PagingLevel)(byte)Validate(mode);

    /// <summary>The number of significant linear-address bits: 48 or 57.</summary>
    public static int VirtualAddressBits(this PagingMode mode) => Validate(mode) == PagingMode.FourLevel ? 48 : 57;

    internal static PagingMode Validate(PagingMode mode)
    {
        if (mode is not (PagingMode.FourLevel or PagingMode.FiveLevel))
        {
            throw new ArgumentOutOfRangeException(nameof(mode), mode, "A paging mode is FourLevel or FiveLevel.");
        }

        return mode;
    }
}
