using System;
using ThpCore.Internal;
using ThpCore.Memory;
using ThpCore.Paging;

namespace ThpCore.Mm;

public sealed partial class AddressSpace
{
    /// <summary>
    /// Faults in and pins every 4 KiB page of a range, like <c>pin_user_pages</c> (FOLL_PIN, with FOLL_WRITE when
    /// <paramref name="write"/> is set; Linux's <c>__get_user_pages</c> loop of <c>follow_page_mask</c> and
    /// <c>faultin_page</c>).
    /// </summary>
    /// <remarks>
    /// <para>
    /// Page by page, in address order: the page is faulted in through <see cref="Access"/> — a write for a write pin
    /// (which breaks copy-on-write and replaces a zero page with a private one, so the pinned page is anon-exclusive),
    /// a read otherwise — and the folio mapping it is pinned with <see cref="Folio.Pin"/>. Every 4 KiB page takes its
    /// own pin, also the pages of a PMD-mapped THP: Linux's <c>__get_user_pages</c> grabs the folio once for the page
    /// <c>follow_page_mask</c> returned and then <c>try_grab_folio(folio, page_increm - 1)</c> for the rest of the
    /// PMD, so a large folio gains one reference and one <c>_pincount</c> per page, and an order-0 folio
    /// <see cref="Folio.PinCountingBias"/> references. The 4 KiB zero page is not pinned (<c>try_grab_folio</c>
    /// skips <c>is_zero_folio</c>) but is listed; the huge zero page is an ordinary large folio there and is pinned.
    /// </para>
    /// <para>
    /// <b>Simplified.</b> A read pin of a shared (not anon-exclusive) anonymous page does not unshare it: Linux's
    /// <c>gup_must_unshare</c> triggers a <c>FAULT_FLAG_UNSHARE</c> fault that copies the page first. Neither
    /// FOLL_LONGTERM (migration out of movable zones) nor FOLL_FORCE is modelled; <c>MMF_HAS_PINNED</c> is assumed
    /// set (see <see cref="Fork"/>).
    /// </para>
    /// </remarks>
    /// <param name="start">The first byte; a multiple of 4 KiB.</param>
    /// <param name="length">The number of bytes; a non-zero multiple of 4 KiB.</param>
    /// <param name="write">Whether the pages will be written through the pin (FOLL_WRITE).</param>
    /// <returns>The pinned pages; dispose it to unpin them.</returns>
    /// <exception cref="ArgumentException"><paramref name="start"/> or <paramref name="length"/> is not 4 KiB aligned, or the range leaves user space.</exception>
    /// <exception cref="InvalidOperationException">
    /// A page could not be faulted in (no VMA, rights the VMA forbids — Linux <c>-EFAULT</c> — or no free memory,
    /// <c>-ENOMEM</c>); the pins already taken are dropped first, so nothing stays pinned. Faults already handled
    /// are not undone.
    /// </exception>
    public PinHandle Pin(VirtualAddress start, ulong length, bool write)
    {
        using LockScope locks = EnterRead(andNode: true);
        ThrowIfDisposed();
        ulong end = CheckRange(start, length);
        int count = checked((int)(length / PageSize4K));
        PhysicalAddress[] pages = new PhysicalAddress[count];
        Folio[] folios = new Folio[count];
        bool[] pinned = new bool[count];
        AccessKind kind = write ? AccessKind.Write : AccessKind.Read;
        int done = 0;
        try
        {
            for (ulong va = start.Value; va < end; va += PageSize4K, done++)
            {
                VirtualAddress address = start.Add(va - start.Value);
                AccessResult result = AccessLocked(address, kind);
                if (!result.IsTranslated)
                {
                    string reason = result.Status == AccessStatus.OutOfMemory
                        ? "the fault ran out of memory (-ENOMEM)"
                        : write ? "no writable VMA maps it (-EFAULT)" : "no readable VMA maps it (-EFAULT)";
                    ThrowHelper.ThrowInvalidOperation($"Cannot pin the page at {address}: {reason}. Nothing was left pinned.");
                }

                PhysicalAddress page = PhysicalAddress.FromFrameNumber(result.PhysicalAddress.FrameNumber);
                Folio folio = Node.FolioOf(page.FrameNumber);
                pages[done] = page;
                folios[done] = folio;
                if (folio != ZeroPage)
                {
                    folio.Pin();
                    pinned[done] = true;
                }
            }
        }
        catch
        {
            PinHandle.Release(folios, pinned, done);
            throw;
        }

        return new PinHandle(pages, folios, pinned);
    }
}
