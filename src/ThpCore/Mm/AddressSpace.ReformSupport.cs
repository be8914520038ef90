using System.Collections.Generic;
using ThpCore.Memory;
using ThpCore.Paging;

namespace ThpCore.Mm;

/// <content>
/// The primitives re-form in place (<c>ThpCore.Collapse</c>, ThpCore's own operation with no Linux counterpart) needs
/// from the address space: who maps each frame, and carrying out a checked plan. Every member expects the caller to
/// hold the address space's write lock and the node lock.
/// </content>
public sealed partial class AddressSpace
{
    /// <summary>
    /// For every frame some address space on this node maps by a PTE, the fork-family member to migrate it through
    /// (the walk compaction uses in place of following <c>folio-&gt;mapping</c> to the <c>anon_vma</c>).
    /// </summary>
    internal Dictionary<ulong, AddressSpace> MappedFolioOwnersOnNode() => Compaction.MappedFolioOwners(Node);

    /// <summary>
    /// Carries out a re-form plan the caller checked: fills every slot of <paramref name="slots"/> of the range at
    /// <paramref name="chunk"/> with frame <paramref name="block"/> + slot, so that PTE i maps frame block + i for all
    /// 512 slots. Returns <see langword="false"/> when a step failed (it should not after the checks); the state is
    /// consistent then, with the moves made so far kept.
    /// </summary>
    /// <remarks>
    /// <para>
    /// First every free frame of the block a slot needs is taken (<see cref="MemoryNode.TryAllocateFolioAt"/>), so no
    /// later allocation can land in the block. Then each of <paramref name="occupants"/> (a movable order-0 folio on a
    /// frame the range needs) is migrated through its owner to a frame the allocator hands out, necessarily outside the
    /// block, as compaction migrates (<c>migrate_pages</c>: <c>pgmigrate_success</c> counted in the owner), and its
    /// frame is taken as soon as it is freed. An occupant may be a misplaced page of this very range; its PTE then
    /// follows it.
    /// </para>
    /// <para>
    /// Then, slot by slot, the PTE is cleared (atomically, keeping A and D a walker set) and rewritten to the block's
    /// frame: a hole (none or the zero page) gets <paramref name="holeAttributes"/> with A (and D when writable), a zero-filled frame
    /// and anon-exclusive; a present page's bytes are copied, its attributes, anon-exclusive and dirty state kept, and
    /// the old page's mapping and reference dropped (it is freed). No TLB is invalidated here: the caller's PMD
    /// install invalidates the whole 2 MiB range, and until then the locks keep the range from being used.
    /// </para>
    /// </remarks>
    internal bool ReformFillBlockLocked(
        ulong chunk, ulong block, IReadOnlyList<int> slots, IReadOnlyList<(Folio Folio, AddressSpace Owner)> occupants, ulong holeAttributes, bool lazyFree, out int migrated)
    {
        migrated = 0;
        var targets = new Folio[512];
        foreach (int slot in slots)
        {
            if ((Node.Frames.Describe(block + (ulong)slot).Flags & FrameFlags.Free) != 0 && Node.TryAllocateFolioAt(block + (ulong)slot, 0, out Folio taken))
            {
                targets[slot] = taken;
            }
        }

        foreach ((Folio occupant, AddressSpace owner) in occupants)
        {
            ulong frame = occupant.HeadFrame;
            int slot = (int)(frame - block);
            if (!Node.TryAllocateFolio(0, out Folio destination) || !owner.MigrateForCompaction(occupant, destination)
                || !Node.TryAllocateFolioAt(frame, 0, out targets[slot]))
            {
                ReleaseUnused(targets);
                return false;
            }

            migrated++;
        }

        foreach (int slot in slots)
        {
            if (targets[slot] == default)
            {
                ReleaseUnused(targets);
                return false;
            }
        }

        if (!TryFindPde(chunk, out PhysicalAddress pdeSlot))
        {
            ReleaseUnused(targets);
            return false;
        }

        PhysicalAddress table = PhysicalAddress.FromMaskedBits(Read(pdeSlot) & PageTableEntry.AddressMask4K);
        foreach (int slot in slots)
        {
            FillSlot(table.Add((ulong)slot * 8), targets[slot], holeAttributes, lazyFree);
            targets[slot] = default;
        }

        return true;
    }

    // One slot: break (clear the PTE), copy or zero-fill, make (map the block's frame), drop the old page.
    private void FillSlot(PhysicalAddress slot, Folio target, ulong holeAttributes, bool lazyFree)
    {
        ulong old = Exchange(slot, 0);
        ulong frame = FrameOf(old);
        bool hole = !IsMapped(old) || frame == ZeroPage.HeadFrame;
        target.AddPteMapping(0);
        if (hole)
        {
            // do_anonymous_page's new page, already zero (TryAllocateFolioAt zero-fills): exclusive, dirty, and D in the
            // PTE only when it is writable (x86 reads Write=0, Dirty=1 as a shadow-stack page).
            target.SetAnonExclusive(0, true);
            target.SetDirty(true);
            target.SetSwapBacked(!lazyFree);
            Write(slot, target.Address.Value | holeAttributes | A | ((holeAttributes & RW) != 0 ? D : 0));
            return;
        }

        Folio source = Node.FolioOf(frame);
        if (_memory.IsMaterialized(frame))
        {
            _memory.ReadFrame(frame).CopyTo(_memory.GetWritableFrame(target.HeadFrame));
        }

        target.SetAnonExclusive(0, source.IsAnonExclusive(0));
        target.SetDirty(source.IsDirty || (old & D) != 0);
        target.SetLru(source.IsLru);
        target.SetSwapBacked(source.IsSwapBacked);
        Write(slot, (old & ~PageTableEntry.AddressMask4K) | target.Address.Value);
        ReleasePte(old);
    }

    private static void ReleaseUnused(Folio[] targets)
    {
        foreach (Folio target in targets)
        {
            if (target != default)
            {
                target.Put();
            }
        }
    }
}
