using System.Collections.Generic;
using ThpCore.Internal;
using ThpCore.Paging;

namespace ThpCore.Mm;

/// <content>
/// Freeing page tables (Linux's <c>free_pgtables</c> and <c>free_pgd_range</c> in <c>mm/memory.c</c>): after
/// <see cref="Unmap"/> (and the unmap of a moved range in <see cref="Remap"/>) and at teardown (<see cref="Dispose"/>).
/// </content>
public sealed partial class AddressSpace
{
    // Linux's PMD_SIZE: the span of one page table (a PDE's reach).
    private const ulong PmdSpan = HugeSize;

    /// <summary>
    /// <c>free_pgtables</c> for a range whose VMAs were just removed and whose entries were zapped, as munmap does
    /// (<c>vms_clear_ptes</c>): the floor is the end of the VMA before <paramref name="start"/> (0 when none,
    /// <c>FIRST_USER_ADDRESS</c>) and the ceiling the start of the VMA after <paramref name="end"/> (0 when none,
    /// <c>USER_PGTABLES_CEILING</c>, the top).
    /// </summary>
    /// <remarks>
    /// Linux walks the detached VMAs, gathering those less than 2 MiB apart; here the whole unmapped range is walked as
    /// one. That frees the same tables: a table under a part of the range that no detached VMA covered exists only when
    /// its span overlaps the neighbour VMA that kept it, and the same floor and ceiling keep it again.
    /// </remarks>
    private void FreePgTablesAfterUnmap(ulong start, ulong end)
    {
        (ulong floor, ulong ceiling) = NeighbourBounds(start, end);
        FreePgdRange(start, end, floor, ceiling);
    }

    /// <summary>
    /// <c>free_pgtables</c> over the given VMA extents (address order): extents less than <c>PMD_SIZE</c> apart are
    /// gathered into one <c>free_pgd_range</c> call whose ceiling is the next extent's start, or
    /// <paramref name="ceiling"/> after the last; <paramref name="floor"/> stays the same for every call, as in Linux.
    /// </summary>
    private void FreePgTables(IReadOnlyList<Vma> vmas, ulong floor, ulong ceiling)
    {
        int i = 0;
        while (i < vmas.Count)
        {
            ulong addr = vmas[i].Start.Value;
            int last = i;
            while (last + 1 < vmas.Count && vmas[last + 1].Start.Value <= vmas[last].End.Value + PmdSpan)
            {
                last++;
            }

            ulong groupCeiling = last + 1 < vmas.Count ? vmas[last + 1].Start.Value : ceiling;
            FreePgdRange(addr, vmas[last].End.Value, floor, groupCeiling);
            i = last + 1;
        }
    }

    /// <summary>
    /// Linux's <c>free_pgd_range</c>: frees the page tables of <c>[addr, end)</c> whose span lies within
    /// <c>[floor, ceiling)</c> (the gap between the neighbouring VMAs), with Linux's arithmetic exactly. <c>addr</c> is rounded down to 2 MiB and
    /// moved up 2 MiB when that falls below <paramref name="floor"/> (the previous VMA shares the first page table);
    /// <paramref name="ceiling"/> is rounded down to 2 MiB and <c>end</c> moved down 2 MiB when it reaches past it (the
    /// next VMA shares the last one). A ceiling or end of 0 means the top of the address space; comparisons use
    /// <c>x - 1</c> so that 0 wraps to the top. Every page table left in the range is freed (<c>free_pte_range</c>);
    /// a page directory, PDPT or (5-level) PML4 table is freed only when its whole 1 GiB / 512 GiB / 256 TiB span,
    /// rounded as Linux rounds it, lies within the floor and ceiling (<c>free_pmd_range</c>, <c>free_pud_range</c>,
    /// <c>free_p4d_range</c>). The root is never freed here.
    /// </summary>
    private void FreePgdRange(ulong addr, ulong end, ulong floor, ulong ceiling)
    {
        addr &= ~(PmdSpan - 1);
        if (addr < floor)
        {
            addr += PmdSpan;
            if (addr == 0)
            {
                return;
            }
        }

        if (ceiling != 0)
        {
            ceiling &= ~(PmdSpan - 1);
            if (ceiling == 0)
            {
                return;
            }
        }

        if (end - 1 > ceiling - 1)
        {
            end -= PmdSpan;
        }

        if (addr > end - 1)
        {
            return;
        }

        // The pgd loop. With 4-level paging Linux folds the p4d level onto the root: free_p4d_range runs once per
        // root entry and frees nothing itself, so the root's entries lead straight to PDPTs (free_pud_range).
        FreeEntries(Root, (int)_mode, addr, end, floor, ceiling);
    }

    // free_pte_range (level 1), free_pmd_range (2), free_pud_range (3), free_p4d_range (4, 5-level only): the table at
    // level `level` referenced by the entry at `slot`, for [addr, end) of its span.
    private void FreeTableRange(PhysicalAddress slot, int level, ulong addr, ulong end, ulong floor, ulong ceiling)
    {
        PhysicalAddress table = PhysicalAddress.FromMaskedBits(Read(slot) & PageTableEntry.AddressMask4K);
        if (level == 1)
        {
            // free_pte_range: the caller's range covers this table's 2 MiB after free_pgd_range's adjustments.
            Write(slot, 0);
            Node.FreeFrame(table);
            return;
        }

        FreeEntries(table, level, addr, end, floor, ceiling);

        // This table's span: 1 GiB for a page directory (PUD_MASK), 512 GiB for a PDPT (P4D_MASK), 256 TiB for a
        // 5-level PML4 table (PGDIR_MASK).
        ulong mask = ~((1UL << (12 + (9 * level))) - 1);
        ulong start = addr & mask;
        if (start < floor)
        {
            return;
        }

        if (ceiling != 0)
        {
            ceiling &= mask;
            if (ceiling == 0)
            {
                return;
            }
        }

        if (end - 1 > ceiling - 1)
        {
            return;
        }

        Write(slot, 0);
        Node.FreeFrame(table);
    }

    // The loop of free_pgd_range, free_p4d_range, free_pud_range and free_pmd_range: every present entry of `table` (a
    // table at `level`) that [addr, end) touches has the table below it freed for its part of the range.
    private void FreeEntries(PhysicalAddress table, int level, ulong addr, ulong end, ulong floor, ulong ceiling)
    {
        int entryShift = 12 + (9 * (level - 1));
        do
        {
            ulong next = EntryRangeEnd(addr, end, entryShift);
            PhysicalAddress slot = table.Add(((addr >> entryShift) & 0x1FF) * 8);
            if (IsPresentTable(slot, level - 1))
            {
                FreeTableRange(slot, level - 1, addr, next, floor, ceiling);
            }

            addr = next;
        }
        while (addr != end);
    }

    // pgd_addr_end and friends: the end of the entry's span that addr lies in, or end if that comes first (with end 0
    // meaning the top).
    private static ulong EntryRangeEnd(ulong addr, ulong end, int entryShift)
    {
        ulong boundary = (addr + (1UL << entryShift)) & ~((1UL << entryShift) - 1);
        return boundary - 1 < end - 1 ? boundary : end;
    }

    // *_none_or_clear_bad: false for an empty entry. Every leaf was zapped before tables are freed, so a PMD leaf here
    // is the model's bug (Linux would report a bad PMD and clear it).
    private bool IsPresentTable(PhysicalAddress slot, int tableLevel)
    {
        ulong entry = Read(slot);
        if ((entry & P) == 0)
        {
            return false;
        }

        if (tableLevel == 1 && (entry & PS) != 0)
        {
            ThrowHelper.ThrowInvalidOperation($"A PMD leaf {ThrowHelper.Hex(entry)} is left where page tables are being freed; it should have been zapped first.");
        }

        return true;
    }

    // The end of the VMA before start and the start of the VMA after end; 0 for none (FIRST_USER_ADDRESS and
    // USER_PGTABLES_CEILING on x86-64).
    private (ulong Floor, ulong Ceiling) NeighbourBounds(ulong start, ulong end)
    {
        IReadOnlyList<Vma> all = Vmas.All;
        int low = 0;
        int high = all.Count;
        while (low < high)
        {
            int middle = (low + high) / 2;
            if (all[middle].End.Value <= start)
            {
                low = middle + 1;
            }
            else
            {
                high = middle;
            }
        }

        ulong floor = low > 0 ? all[low - 1].End.Value : 0;
        int nextIndex = low;
        while (nextIndex < all.Count && all[nextIndex].Start.Value < end)
        {
            nextIndex++;
        }

        ulong ceiling = nextIndex < all.Count ? all[nextIndex].Start.Value : 0;
        return (floor, ceiling);
    }
}
