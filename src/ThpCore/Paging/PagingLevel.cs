using System;

namespace ThpCore.Paging;

/// <summary>
/// A level of the paging hierarchy, numbered as the SDM does: the page table is level 1 and the
/// PML5 table is level 5 (Linux: pte, pmd, pud, p4d, pgd).
/// </summary>
public enum PagingLevel : byte
{
    /// <summary>Page table; its entries (PTEs) map 4 KiB pages.</summary>
    Pt = 1,

    /// <summary>Page directory; a PDE references a page table or maps a 2 MiB page.</summary>
    Pd = 2,

    /// <summary>Page-directory-pointer table; a PDPTE references a page directory or maps a 1 GiB page.</summary>
    Pdpt = 3,

    /// <summary>PML4 table; a PML4E references a PDPT. It never maps a page.</summary>
    Pml4 = 4,

    /// <summary>PML5 table (5-level paging only); a PML5E references a PML4 table. It never maps a page.</summary>
    Pml5 = 5,
}

/// <summary>Facts about each <see cref="PagingLevel"/>.</summary>
public static class PagingLevelExtensions
{
    /// <summary>Bit position of the lowest virtual-address bit that indexes this level: 12, 21, 30, 39 or 48.</summary>
    public static int IndexShift(this PagingLevel level) => 12 + (9 * ((int)Validate(level) - 1));

    /// <summary>Bytes of virtual address space one entry at this level covers (4 KiB … 256 TiB).</summary>
    public static ulong EntryCoverage(this PagingLevel level) => 1UL << level.IndexShift();

    /// <summary>Whether an entry at this level can map a page (PT always; PD and PDPT with PS = 1).</summary>
    public static bool CanMapPage(this PagingLevel level) => Validate(level) <= PagingLevel.Pdpt;

    /// <summary>The size of page a leaf at this level maps; throws for PML4 and PML5.</summary>
    public static PageSize LeafPageSize(this PagingLevel level)
    {
        if (!level.CanMapPage())
        {
            throw new ArgumentOutOfRangeException(nameof(level), level, "A PML4E or PML5E never maps a page.");
        }

        return (PageSize)((int)level - 1);
    }

    /// <summary>The level below this one; throws for <see cref="PagingLevel.Pt"/>.</summary>
    public static PagingLevel Next(this PagingLevel level)
    {
        if (Validate(level) == PagingLevel.Pt)
        {
            throw new ArgumentOutOfRangeException(nameof(level), level, "The page table is the last level.");
        }

        return level - 1;
    }

    /// <summary>The SDM's short name of one entry at this level: "PTE", "PDE", "PDPTE", "PML4E", "PML5E".</summary>
    public static string EntryName(this PagingLevel level) => Validate(level) switch
    {
        PagingLevel.Pt => "PTE",
        PagingLevel.Pd => "PDE",
        PagingLevel.Pdpt => "PDPTE",
        PagingLevel.Pml4 => "PML4E",
        _ => "PML5E",
    };

    /// <summary>The SDM's short name of a table at this level: "PT", "PD", "PDPT", "PML4", "PML5".</summary>
    public static string TableName(this PagingLevel level) => Validate(level) switch
    {
        PagingLevel.Pt => "PT",
        PagingLevel.Pd => "PD",
        PagingLevel.Pdpt => "PDPT",
        PagingLevel.Pml4 => "PML4",
        _ => "PML5",
    };

    internal static PagingLevel Validate(PagingLevel level)
    {
        if (level is < PagingLevel.Pt or > PagingLevel.Pml5)
        {
            throw new ArgumentOutOfRangeException(nameof(level), level, "A paging level is 1 (PT) to 5 (PML5).");
        }

        return level;
    }
}
