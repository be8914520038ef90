using ThpCore.Paging;

namespace ThpCore.Mm;

/// <summary>One mapping of a folio found by the reverse map (<see cref="AddressSpace.FindMappings"/>).</summary>
/// <param name="Space">The address space whose page table holds the entry.</param>
/// <param name="Address">The virtual address the entry maps: the page's address for a PTE, the 2 MiB-aligned start for a PMD.</param>
/// <param name="Level"><see cref="PagingLevel.Pt"/> for a PTE, <see cref="PagingLevel.Pd"/> for a PMD leaf (or a PMD migration entry).</param>
/// <param name="PageIndex">The page of the folio the entry maps: 0..<c>PageCount − 1</c> for a PTE; 0 for a PMD, which maps the whole folio from its head.</param>
public readonly record struct FolioMapping(AddressSpace Space, VirtualAddress Address, PagingLevel Level, int PageIndex);
