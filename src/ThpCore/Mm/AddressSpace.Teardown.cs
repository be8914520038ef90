using System;
using System.Collections.Generic;
using ThpCore.Diagnostics;
using ThpCore.Memory;

namespace ThpCore.Mm;

/// <content>Teardown (<see cref="Dispose"/>, Linux's <c>exit_mmap</c>) and the zero pages a fork family shares.</content>
public sealed partial class AddressSpace
{
    private bool _disposed;

    /// <summary>Whether <see cref="Dispose"/> has torn the address space down.</summary>
    public bool IsDisposed => _disposed;

    /// <summary>
    /// Tears the address space down like Linux's <c>exit_mmap</c> at the last <c>mmput</c>: every VMA is zapped
    /// (<c>unmap_vmas</c>, the same zap as <see cref="Unmap"/>: folios lose their mappings and references, deposited
    /// tables are freed), every page table is freed (<c>free_pgtables</c> from <c>FIRST_USER_ADDRESS</c> to
    /// <c>USER_PGTABLES_CEILING</c>), the VMAs are removed (<c>remove_vma</c>) and the root table is freed
    /// (<c>mm_free_pgd</c>). The zero pages are released when this is the last address space of its fork family to go.
    /// Calling it again does nothing.
    /// </summary>
    /// <remarks>
    /// A folio that a <see cref="PinHandle"/> pins keeps the pin's references, so it outlives the teardown, unmapped, and
    /// is freed when the handle is disposed (Linux: GUP pins are references, the last <c>unpin_user_page</c> frees the
    /// page). A folio left partly mapped on the deferred-split queue leaves the queue when it is freed. After teardown
    /// every member that works on the page tables or VMAs throws <see cref="ObjectDisposedException"/>;
    /// <see cref="Root"/> names a freed frame.
    /// </remarks>
    public void Dispose()
    {
        using LockScope locks = EnterWrite(andNode: true);
        if (_disposed)
        {
            return;
        }

        TearDown();
    }

    // exit_mmap for a caller holding the locks (or the only reference: a fork child that failed part-way).
    private void TearDown()
    {
        _disposed = true;
        List<Vma> vmas = new(Vmas.All);
        foreach (Vma vma in vmas)
        {
            ZapRange(vma.Start.Value, vma.End.Value);
        }

        FreePgTables(vmas, floor: 0, ceiling: 0);
        foreach (Vma vma in vmas)
        {
            Vmas.Remove(vma.Start, vma.End);
        }

        Node.FreeFrame(Root);

        LeaveFamily(); // the last member releases the zero pages
    }

    // deferred_split_folio(folio, partially_mapped: true), as __folio_remove_rmap calls it: the first time, the folio is
    // marked partially mapped and queued, and thp_deferred_split_page is counted for a PMD-sized folio; a folio already
    // marked, or in the swap cache (deferred_split_folio leaves those alone), is not counted again.
    private void QueuePartiallyMapped(Folio folio)
    {
        if (folio.IsPartiallyMapped)
        {
            return;
        }

        folio.QueueForDeferredSplit(partiallyMapped: true);
        if (folio.IsPartiallyMapped && folio.Order >= Folio.PmdOrder)
        {
            Counters.Count(VmEvent.ThpDeferredSplitPage);
        }
    }

    // The number of the folio's pages that at least one PTE maps (Linux's _nr_pages_mapped without ENTIRELY_MAPPED).
    private static int PteMappedPages(Folio folio)
    {
        int mapped = 0;
        for (int i = 0; i < folio.PageCount; i++)
        {
            if (folio.PageMapCount(i) > 0)
            {
                mapped++;
            }
        }

        return mapped;
    }

    // Every public member that needs the page tables or the VMAs calls this first.
    private void ThrowIfDisposed()
    {
        if (_disposed)
        {
            throw new ObjectDisposedException(nameof(AddressSpace), "The address space was torn down by Dispose (exit_mmap); its page tables are freed.");
        }
    }
}
