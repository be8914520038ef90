using System;
using System.Collections.Generic;
using System.Threading;
using ThpCore.Memory;
using ThpCore.Paging;

namespace ThpCore.Mm;

/// <summary>
/// The pages pinned by one <see cref="AddressSpace.Pin"/> call (the <c>pages</c> array that Linux's
/// <c>pin_user_pages</c> fills): one FOLL_PIN pin per 4 KiB page, released together by <see cref="Dispose"/>
/// (Linux <c>unpin_user_pages</c>).
/// </summary>
/// <remarks>
/// A page of the 4 KiB zero page is listed in <see cref="Pages"/> but holds no pin: Linux's <c>try_grab_folio</c>
/// takes none on the zero folio, and <c>unpin_user_pages</c> skips it. The pins stay on the folios even when the
/// address space later unmaps, remaps or copies the pages, as in Linux: the handle refers to folios, not addresses.
/// </remarks>
public sealed class PinHandle : IDisposable
{
    private readonly IReadOnlyList<PhysicalAddress> _pages;
    private readonly Folio[] _folios;
    private readonly bool[] _pinned;
    private bool _disposed;

    internal PinHandle(PhysicalAddress[] pages, Folio[] folios, bool[] pinned)
    {
        _pages = Array.AsReadOnly(pages);
        _folios = folios;
        _pinned = pinned;
    }

    /// <summary>The physical address of each 4 KiB page, in the order of the virtual range (Linux's <c>pages[i]</c>).</summary>
    public IReadOnlyList<PhysicalAddress> Pages => _pages;

    /// <summary>Whether <see cref="Dispose"/> has released the pins.</summary>
    public bool IsDisposed => Volatile.Read(ref _disposed);

    /// <summary>
    /// Drops every pin once (Linux <c>unpin_user_pages</c>: <see cref="Folio.Unpin"/> per pinned page). A folio whose
    /// last reference was the pin is freed. Calling it again does nothing.
    /// </summary>
    /// <remarks>Takes only the node lock (Linux's <c>unpin_user_pages</c> takes no <c>mmap_lock</c>): it may run on any thread, concurrently with anything.</remarks>
    public void Dispose()
    {
        lock (_folios[0].Node.SyncRoot)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            Release(_folios, _pinned, _pinned.Length);
        }
    }

    internal static void Release(Folio[] folios, bool[] pinned, int count)
    {
        for (int i = count - 1; i >= 0; i--)
        {
            if (pinned[i])
            {
                folios[i].Unpin();
            }
        }
    }
}
