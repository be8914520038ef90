using System;
using System.Collections.Generic;
using ThpCore.Internal;
using ThpCore.Memory;
using ThpCore.Paging;

namespace ThpCore.Mm;

/// <summary>The reverse map: from an anonymous folio to every page-table entry that maps it.</summary>
/// <remarks>
/// <para>
/// <b>Family.</b> An address space made by the constructor starts a family; <see cref="Fork"/> adds the child to its
/// parent's family (Linux's <c>anon_vma_fork</c> links the child's <c>anon_vma</c> under the parent's). Anonymous
/// folios are shared only within a family, so the family's members are where the reverse map looks.
/// </para>
/// <para>
/// <b>Walk.</b> Linux's <c>rmap_walk_anon</c> visits the VMAs of the folio's <c>anon_vma</c> interval tree and
/// computes each address from <c>folio->index</c> (<c>vma_address</c>), then checks that entry
/// (<c>page_vma_mapped_walk</c>). The model keeps no <c>index</c> per frame (16-byte metadata), so
/// <see cref="FindMappings"/> walks the present page tables of every member within its VMAs and keeps the entries
/// whose frame lies in the folio. The answer is the same set of entries; the cost is proportional to the mapped
/// entries of the family rather than to the folio's mappings.
/// </para>
/// </remarks>
public sealed partial class AddressSpace
{
    private readonly AnonFamily _family;

    /// <summary>A unique id, increasing in creation order (an order for taking the locks of several address spaces).</summary>
    internal long Id { get; } = AnonFamily.NextId();

    /// <summary>The address spaces sharing anonymous folios with this one: the constructor's space and its fork descendants.</summary>
    internal AnonFamily Family => _family;

    /// <summary>
    /// Every mapping of <paramref name="folio"/> in this address space's family (this space, the space it was forked
    /// from, their other fork descendants): the address space, the virtual address, the level (PTE or PMD) and the page
    /// mapped, in family creation order and then by address. For a folio mapped only within the family, the count equals
    /// <see cref="Folio.MapCount"/> (a PMD mapping counts once, as there).
    /// </summary>
    /// <param name="folio">An anonymous folio of this space's node.</param>
    /// <returns>The mappings; empty when the folio is mapped nowhere.</returns>
    /// <exception cref="ArgumentException">
    /// <paramref name="folio"/> belongs to another node, or is not anonymous: the zero page and the huge zero page are
    /// mapped without a map count and have no <c>anon_vma</c> to walk (Linux's <c>rmap_walk</c> does not visit them).
    /// </exception>
    /// <exception cref="ObjectDisposedException"><paramref name="folio"/> was freed.</exception>
    public IReadOnlyList<FolioMapping> FindMappings(Folio folio)
    {
        // The node lock stands for the page-table locks of every family member (page_vma_mapped_walk takes each PTL).
        using LockScope locks = EnterRead(andNode: true);
        ThrowIfDisposed();
        if (!ReferenceEquals(folio.Node, Node))
        {
            ThrowHelper.ThrowArgument(nameof(folio), $"The {folio} belongs to another node.");
        }

        if (!folio.IsAnon)
        {
            ThrowHelper.ThrowArgument(nameof(folio), $"The {folio} is not anonymous (a zero page or another non-anonymous folio): it has no reverse map.");
        }

        return FamilyEntries(folio, migrationEntries: false);
    }

    /// <summary>Leaves the family (for teardown): later reverse-map walks no longer look at this space.</summary>
    internal void LeaveFamily() => _family.Leave(this);

    // The family's entries of folio: present mappings, or (migrationEntries) migration entries naming its frames.
    private List<FolioMapping> FamilyEntries(Folio folio, bool migrationEntries)
    {
        List<FolioMapping> found = new();
        foreach (AddressSpace member in _family.Members())
        {
            member.CollectEntries(folio, migrationEntries, found);
        }

        return found;
    }

    // page_vma_mapped_walk over every VMA of this space, for the frames of folio.
    private void CollectEntries(Folio folio, bool migrationEntries, List<FolioMapping> found)
    {
        ulong head = folio.HeadFrame;
        ulong end = head + (ulong)folio.PageCount;
        foreach ((Vma vma, ulong chunk, ulong pde) in VmaChunks())
        {
            if (IsHugeLeaf(pde) || (pde & P) == 0)
            {
                // A PMD leaf or PMD migration entry lies wholly inside one VMA: count it from that VMA only.
                ulong frame = PmdEntryFrame(pde, migrationEntries);
                if (frame == head && chunk >= vma.Start.Value && chunk + HugeSize <= vma.End.Value && folio.Order == Folio.PmdOrder)
                {
                    found.Add(new FolioMapping(this, VirtualAddress.FromRaw(chunk), PagingLevel.Pd, 0));
                }

                continue;
            }

            PhysicalAddress table = PhysicalAddress.FromMaskedBits(pde & PageTableEntry.AddressMask4K);
            ulong to = Math.Min(vma.End.Value, chunk + HugeSize);
            for (ulong va = Math.Max(vma.Start.Value, chunk); va < to; va += PageSize4K)
            {
                ulong frame = PteEntryFrame(Read(PteSlot(table, va)), migrationEntries);
                if (frame >= head && frame < end)
                {
                    found.Add(new FolioMapping(this, VirtualAddress.FromRaw(va), PagingLevel.Pt, (int)(frame - head)));
                }
            }
        }
    }

    // Every 2 MiB chunk that a VMA touches and that has a PMD slot, with the PMD entry read (non-zero or not).
    private IEnumerable<(Vma Vma, ulong Chunk, ulong Pde)> VmaChunks()
    {
        foreach (Vma vma in Vmas.All)
        {
            for (ulong chunk = vma.Start.Value & ~(HugeSize - 1); chunk < vma.End.Value; chunk += HugeSize)
            {
                if (TryFindPde(chunk, out PhysicalAddress pdeSlot))
                {
                    yield return (vma, chunk, Read(pdeSlot));
                }
            }
        }
    }

    // The frame a PTE maps (present) or names (a migration entry), by which kind is asked for; ulong.MaxValue otherwise.
    private static ulong PteEntryFrame(ulong pte, bool migrationEntry)
    {
        if (!migrationEntry)
        {
            return IsMapped(pte) ? FrameOf(pte) : ulong.MaxValue;
        }

        return TryDecodeMigration(pte, PagingLevel.Pt, out SwapEntry entry) ? entry.Pfn : ulong.MaxValue;
    }

    // The head frame a PMD leaf maps or a PMD migration entry names; ulong.MaxValue otherwise (a table, empty, the other kind).
    private static ulong PmdEntryFrame(ulong pde, bool migrationEntry)
    {
        if (!migrationEntry)
        {
            return IsHugeLeaf(pde) ? (pde & PageTableEntry.AddressMask2M) >> 12 : ulong.MaxValue;
        }

        return TryDecodeMigration(pde, PagingLevel.Pd, out SwapEntry entry) ? entry.Pfn : ulong.MaxValue;
    }
}
