using System;
using ThpCore.Paging;

namespace ThpCore.Inspection;

/// <summary>
/// One present leaf mapping found by <see cref="PageTableEnumerator"/>: a page of <paramref name="Size"/> at
/// <paramref name="Address"/>, mapped by <paramref name="Leaf"/>, reached by one path of table entries from CR3.
/// </summary>
/// <param name="Address">The first byte of the page, canonical for the paging mode (sign-extended from bit 47, or bit 56 with LA57).</param>
/// <param name="Size">4 KiB (a PTE), 2 MiB (a PDE with PS = 1) or 1 GiB (a PDPTE with PS = 1).</param>
/// <param name="Leaf">The leaf entry exactly as read from memory, with its level.</param>
/// <param name="EntryAddress">The physical address of <paramref name="Leaf"/>.</param>
/// <param name="Rights">
/// The rights combined over the whole path as the CPU combines them (<see cref="PageWalker"/>): R/W and U/S
/// ANDed, XD ORed.
/// </param>
/// <remarks>
/// A table that is reached by several entries (Linux shares tables; a recursive PML4 slot is legal) gives one
/// mapping per path, each at its own virtual address, so <see cref="Address"/> is unique within one enumeration.
/// </remarks>
public readonly record struct Mapping(VirtualAddress Address, PageSize Size, PageTableEntry Leaf, PhysicalAddress EntryAddress, EffectiveRights Rights)
{
    /// <summary>The first byte of the page frame: the leaf's address field (bits 51:12, 51:21 or 51:30 by size).</summary>
    public PhysicalAddress Frame => Leaf.Address;
}
