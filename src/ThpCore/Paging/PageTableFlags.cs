using System;

namespace ThpCore.Paging;

/// <summary>
/// The bits of a paging-structure entry whose position is the same at every level
/// (Intel SDM Vol. 3A §4.5, Tables 4-14 … 4-19). Bit 7 (PS in a PDE/PDPTE, PAT in a PTE, reserved in a
/// PML4E/PML5E) and bit 12 (PAT in a 2 MiB/1 GiB leaf, an address bit elsewhere) are deliberately absent:
/// they are reached only through <see cref="PageTableEntry"/>, which knows the level.
/// </summary>
[Flags]
public enum PageTableFlags : ulong
{
    /// <summary>No bit.</summary>
    None = 0,

    /// <summary>P (bit 0): the entry is used for translation; when 0, bits 63:1 are ignored (free for software).</summary>
    Present = 1UL << 0,

    /// <summary>R/W (bit 1): writes allowed if 1 in every entry of the walk (supervisor writes need it only when CR0.WP = 1).</summary>
    Writable = 1UL << 1,

    /// <summary>U/S (bit 2): user-mode accesses allowed if 1 in every entry of the walk.</summary>
    User = 1UL << 2,

    /// <summary>PWT (bit 3): page-level write-through; in a non-leaf entry it applies to the next table.</summary>
    WriteThrough = 1UL << 3,

    /// <summary>PCD (bit 4): page-level cache disable; in a non-leaf entry it applies to the next table.</summary>
    CacheDisable = 1UL << 4,

    /// <summary>A (bit 5): set by the processor whenever it uses the entry for translation.</summary>
    Accessed = 1UL << 5,

    /// <summary>D (bit 6): set by the processor on a write through a leaf; ignored in non-leaf entries.</summary>
    Dirty = 1UL << 6,

    /// <summary>G (bit 8): global translation when CR4.PGE = 1; meaningful in leaves only (ignored by Intel, reserved by AMD in PML4Es/PML5Es).</summary>
    Global = 1UL << 8,

    /// <summary>XD (bit 63): instruction fetches disallowed if 1 in any entry of the walk; reserved when EFER.NXE = 0.</summary>
    ExecuteDisable = 1UL << 63,
}
