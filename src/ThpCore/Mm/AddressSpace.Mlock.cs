using System;
using ThpCore.Internal;
using ThpCore.Paging;

namespace ThpCore.Mm;

public sealed partial class AddressSpace
{
    /// <summary>
    /// Locks a range in memory, like <c>mlock(start, length)</c> (Linux v6.12 <c>do_mlock</c>): the VMAs in the range
    /// get <see cref="VmaFlags.Locked"/> (split and re-merged as <c>mlock_fixup</c> → <c>vma_modify_flags</c> does, a
    /// PMD leaf straddling a new VMA edge being split), then every page is faulted in (<c>__mm_populate</c>): by a
    /// write where the VMA is writable (<c>FOLL_WRITE</c> for a private writable mapping, which breaks copy-on-write
    /// and replaces zero pages), by a read otherwise.
    /// </summary>
    /// <remarks>
    /// A locked page is unevictable: <see cref="SwapOut"/> refuses it (<see cref="SwapOutStatus.Mlocked"/>), and
    /// <see cref="Advice.DontNeed"/>, <see cref="Advice.Free"/>, <see cref="Advice.Cold"/> and <see cref="Advice.PageOut"/>
    /// refuse a locked VMA (<c>-EINVAL</c>). Migration and compaction still move locked pages (Linux's
    /// <c>compact_unevictable_allowed</c> is 1 by default). A fork child's VMAs are not locked. Not modelled:
    /// <c>RLIMIT_MEMLOCK</c>, <c>MLOCK_ONFAULT</c>, <c>mlockall</c>, the mlock counters (<c>unevictable_pgs_*</c>) and
    /// the unevictable LRU itself. A <see cref="Protection.None"/> VMA is locked but not populated (Linux's populate then
    /// fails and <c>mlock</c> returns <c>-ENOMEM</c> after locking).
    /// </remarks>
    /// <param name="start">The first page; 4 KiB-aligned (Linux rounds it down).</param>
    /// <param name="length">A non-zero multiple of 4 KiB.</param>
    /// <exception cref="ArgumentException">The range is not page-aligned, empty, or reaches above <see cref="VmaList.TaskSize"/>.</exception>
    /// <exception cref="InvalidOperationException">
    /// Part of the range is not mapped (<c>-ENOMEM</c>; nothing is changed), or the node ran out of frames while
    /// populating (<c>-EAGAIN</c>; the range stays locked and the pages faulted so far stay).
    /// </exception>
    public void Lock(VirtualAddress start, ulong length)
    {
        using LockScope locks = EnterWrite(andNode: true);
        ThrowIfDisposed();
        ulong end = CheckRange(start, length);
        CheckFullyMapped(start, end, "mlock");
        SetLocked(start, end, locked: true);

        Populate(start.Value, end, ignoreErrors: false);
    }

    // __mm_populate → populate_vma_page_range, VMA by VMA: a write fault per page of a writable private VMA, a read
    // fault otherwise, none in a PROT_NONE VMA; a THP fault covers its 2 MiB.
    private void Populate(ulong start, ulong end, bool ignoreErrors)
    {
        foreach (Vma vma in Vmas.FindIntersecting(VirtualAddress.FromRaw(start), VirtualAddress.FromRaw(end)))
        {
            if (vma.Protection == Protection.None)
            {
                continue;
            }

            AccessKind kind = (vma.Protection & Protection.Write) != 0 ? AccessKind.Write : AccessKind.Read;
            ulong from = Math.Max(start, vma.Start.Value);
            ulong to = Math.Min(end, vma.End.Value);
            for (ulong va = from; va < to; va += PageSize4K)
            {
                AccessResult result = AccessLocked(VirtualAddress.FromRaw(va), kind);
                if (result.Status == AccessStatus.OutOfMemory)
                {
                    if (ignoreErrors)
                    {
                        return;
                    }

                    ThrowHelper.ThrowInvalidOperation($"mlock could not fault in {VirtualAddress.FromRaw(va)}: the node has no free frame (-EAGAIN); the range stays locked.");
                }

                if (result.PageSize == PageSize.Size2M)
                {
                    va = Math.Min(to, (va & ~(HugeSize - 1)) + HugeSize) - PageSize4K; // the whole PMD is in
                }
            }
        }
    }

    /// <summary>
    /// Unlocks a range, like <c>munlock(start, length)</c>: the VMAs lose <see cref="VmaFlags.Locked"/> (split and
    /// re-merged as <see cref="Lock"/> does); no page is unmapped or freed, they just become evictable again.
    /// </summary>
    /// <param name="start">The first page; 4 KiB-aligned.</param>
    /// <param name="length">A non-zero multiple of 4 KiB.</param>
    /// <exception cref="ArgumentException">The range is not page-aligned, empty, or reaches above <see cref="VmaList.TaskSize"/>.</exception>
    /// <exception cref="InvalidOperationException">Part of the range is not mapped (<c>-ENOMEM</c>); nothing is changed.</exception>
    public void Unlock(VirtualAddress start, ulong length)
    {
        using LockScope locks = EnterWrite(andNode: true);
        ThrowIfDisposed();
        ulong end = CheckRange(start, length);
        CheckFullyMapped(start, end, "munlock");
        SetLocked(start, end, locked: false);
    }

    // apply_vma_lock_flags → mlock_fixup; vma_adjust_trans_huge splits a PMD leaf on a new VMA edge.
    private void SetLocked(VirtualAddress start, ulong end, bool locked)
    {
        Vmas.Modify(start, VirtualAddress.FromRaw(end), v => v with { Flags = locked ? v.Flags | VmaFlags.Locked : v.Flags & ~VmaFlags.Locked });
        SplitHugePmdAtVmaBoundary(start.Value);
        SplitHugePmdAtVmaBoundary(end);
    }

    // A hole in the range is -ENOMEM (apply_vma_lock_flags, madvise_walk_vmas), checked before anything changes here;
    // with refuseLocked a VM_LOCKED VMA is -EINVAL (madvise_dontneed_free_valid_vma for DONTNEED and FREE,
    // can_madv_lru_vma for COLD and PAGEOUT).
    private void CheckFullyMapped(VirtualAddress start, ulong end, string name, bool refuseLocked = false)
    {
        ulong covered = start.Value;
        foreach (Vma vma in Vmas.FindIntersecting(start, VirtualAddress.FromRaw(end)))
        {
            if (vma.Start.Value > covered)
            {
                break;
            }

            if (refuseLocked && (vma.Flags & VmaFlags.Locked) != 0)
            {
                ThrowHelper.ThrowInvalidOperation($"{name} of the locked VMA {vma} (-EINVAL).");
            }

            covered = vma.End.Value;
        }

        if (covered < end)
        {
            ThrowHelper.ThrowInvalidOperation($"{name}: [{start}, {VirtualAddress.FromRaw(end)}) is not fully mapped: nothing is mapped at {VirtualAddress.FromRaw(covered)} (-ENOMEM).");
        }
    }
}
