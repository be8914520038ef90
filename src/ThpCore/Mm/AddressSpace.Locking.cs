using System;
using System.Collections.Generic;
using System.Threading;
using ThpCore.Internal;
using ThpCore.Paging;

namespace ThpCore.Mm;

/// <content>
/// Locking: the address space's reader/writer lock (Linux's <c>mmap_lock</c>) and the node lock (Linux's page-table
/// locks, zone lock and folio locks in one).
/// </content>
/// <remarks>
/// <para>
/// <b>Lock order</b>, always, on every thread:
/// </para>
/// <list type="number">
/// <item>address-space locks (<see cref="EnterRead"/>, <see cref="EnterWrite"/>); when several address spaces must be
/// locked together (for example every member of a forked family, to migrate a folio they share), all of them, in
/// ascending <see cref="Id"/> (creation order) order (<see cref="EnterWriteAll"/>);</item>
/// <item>the node lock (<see cref="EnterNode"/>, <c>MemoryNode.SyncRoot</c>): every change to a page table, to folio
/// counters and flags, to the allocator, to the deposited tables, the huge zero page or the swap cache happens under it;</item>
/// <item>leaf locks inside <c>BuddyAllocator</c> and <c>SwapDevice</c>, which call nothing back.</item>
/// </list>
/// <para>
/// Never take an address-space lock while holding the node lock: the scopes throw
/// <see cref="InvalidOperationException"/> when asked to. A nested call on a thread that already holds the address
/// space's lock joins it (write covers read; <see cref="Remap"/> calling <see cref="Unmap"/>, <see cref="Advise"/>
/// calling <see cref="SplitHugePmd"/>); asking for write while holding only read throws (no upgrade, as in Linux).
/// The node lock (a <see cref="Lock"/>) is re-entrant.
/// </para>
/// </remarks>
public sealed partial class AddressSpace
{
    private readonly ReaderWriterLockSlim _mmapLock = new(LockRecursionPolicy.NoRecursion);

    /// <summary>
    /// Takes the address space's lock for reading (Linux <c>mmap_read_lock</c>), and then the node lock when
    /// <paramref name="andNode"/> is set. Joins a lock this thread already holds.
    /// </summary>
    /// <exception cref="InvalidOperationException">This thread holds the node lock but not this address space's lock (lock order).</exception>
    internal LockScope EnterRead(bool andNode = false) => Enter(write: false, andNode);

    /// <summary>
    /// Takes the address space's lock for writing (Linux <c>mmap_write_lock</c>), and then the node lock when
    /// <paramref name="andNode"/> is set. Joins the write lock when this thread already holds it.
    /// </summary>
    /// <exception cref="InvalidOperationException">This thread holds only the read lock (no upgrade), or holds the node lock but not this address space's lock (lock order).</exception>
    internal LockScope EnterWrite(bool andNode = false) => Enter(write: true, andNode);

    /// <summary>Takes the node lock only (re-entrant): Linux's page-table lock, taken under the address space's lock or alone (unpin).</summary>
    internal LockScope EnterNode()
    {
        LockScope scope = default;
        Node.SyncRoot.Enter();
        scope.Node = Node.SyncRoot;
        return scope;
    }

    /// <summary>
    /// Write-locks every address space of <paramref name="spaces"/> in ascending <see cref="Id"/> (creation order) order, then
    /// their node's lock: for operations that rewrite the page tables of several address spaces at once (a folio
    /// shared across a forked family). Dispose the result, on the same thread, to release everything (node lock first).
    /// </summary>
    /// <exception cref="ArgumentException">The address spaces are not all on one node, or the list is empty.</exception>
    /// <exception cref="InvalidOperationException">This thread already holds the node lock or one of the locks (lock order).</exception>
    internal static IDisposable EnterWriteAll(IEnumerable<AddressSpace> spaces)
    {
        ArgumentNullException.ThrowIfNull(spaces);
        var ordered = new List<AddressSpace>(new HashSet<AddressSpace>(spaces));
        if (ordered.Count == 0 || ordered.Exists(s => s.Node != ordered[0].Node))
        {
            ThrowHelper.ThrowArgument(nameof(spaces), "EnterWriteAll needs at least one address space, all on one node.");
        }

        ordered.Sort((a, b) => a.Id.CompareTo(b.Id));
        var held = new FamilyLock(ordered[0].Node.SyncRoot);
        try
        {
            foreach (AddressSpace space in ordered)
            {
                space.CheckLockOrder(space._mmapLock.IsReadLockHeld || space._mmapLock.IsWriteLockHeld);
                space._mmapLock.EnterWriteLock();
                held.Spaces.Add(space._mmapLock);
            }

            held.Node.Enter();
            held.NodeHeld = true;
            return held;
        }
        catch
        {
            held.Dispose();
            throw;
        }
    }

    // Atomically replaces an entry a walker may be setting A/D on (Linux's xchg in ptep_get_and_clear /
    // pmdp_invalidate): the value returned carries every bit set before the replacement.
    private ulong Exchange(PhysicalAddress slot, ulong value)
    {
        ulong seen = Read(slot);
        while (true)
        {
            ulong found = _memory.CompareExchangeUInt64(slot, value, seen);
            if (found == seen)
            {
                return seen;
            }

            seen = found;
        }
    }

    private LockScope Enter(bool write, bool andNode)
    {
        LockScope scope = default;
        if (!_mmapLock.IsWriteLockHeld)
        {
            if (_mmapLock.IsReadLockHeld)
            {
                if (write)
                {
                    ThrowHelper.ThrowInvalidOperation("This thread holds the address space's lock for reading and asked for writing: the lock is never upgraded (take it for writing first).");
                }
            }
            else
            {
                CheckLockOrder(alreadyHeld: false);
                if (write)
                {
                    _mmapLock.EnterWriteLock();
                }
                else
                {
                    _mmapLock.EnterReadLock();
                }

                scope.Mmap = _mmapLock;
                scope.Write = write;
            }
        }

        if (andNode)
        {
            Node.SyncRoot.Enter();
            scope.Node = Node.SyncRoot;
        }

        return scope;
    }

    private void CheckLockOrder(bool alreadyHeld)
    {
        if (alreadyHeld || Node.SyncRoot.IsHeldByCurrentThread)
        {
            ThrowHelper.ThrowInvalidOperation(alreadyHeld
                ? "This thread already holds an address space's lock that EnterWriteAll was asked to take."
                : "An address space's lock was requested while this thread holds the node lock: the order is address space first, then node.");
        }
    }

    /// <summary>Locks taken by <see cref="EnterRead"/>, <see cref="EnterWrite"/> or <see cref="EnterNode"/>; <c>using</c> releases them, node first.</summary>
    internal ref struct LockScope
    {
        internal ReaderWriterLockSlim? Mmap;
        internal bool Write;
        internal Lock? Node;

        /// <summary>Releases the node lock, then the address space's lock, if this scope took them.</summary>
        public void Dispose()
        {
            Node?.Exit();
            Node = null;
            if (Mmap is ReaderWriterLockSlim mmap)
            {
                if (Write)
                {
                    mmap.ExitWriteLock();
                }
                else
                {
                    mmap.ExitReadLock();
                }

                Mmap = null;
            }
        }
    }

    private sealed class FamilyLock(Lock node) : IDisposable
    {
        public Lock Node { get; } = node;

        public List<ReaderWriterLockSlim> Spaces { get; } = new();

        public bool NodeHeld { get; set; }

        public void Dispose()
        {
            if (NodeHeld)
            {
                Node.Exit();
                NodeHeld = false;
            }

            for (int i = Spaces.Count - 1; i >= 0; i--)
            {
                Spaces[i].ExitWriteLock();
            }

            Spaces.Clear();
        }
    }
}
