using System;
using System.Collections.Generic;
using ThpCore.Internal;

namespace ThpCore.Paging;

/// <summary>
/// Builds and edits one set of IA-32e paging structures (4-level or 5-level) in an <see cref="IPhysicalMemory"/>:
/// maps and unmaps 4 KiB, 2 MiB and 1 GiB pages, allocating and zeroing table frames through an
/// <see cref="IFrameAllocator"/>. The ideas follow the x86_64 crate's <c>Mapper</c> (map_to, unmap,
/// update_flags, <c>MapperFlush</c>), adapted to 5-level paging and to level-aware entries.
/// </summary>
/// <remarks>
/// <para><b>Intermediate entries.</b> A missing table is allocated, zeroed with
/// <c>memory.GetWritableFrame(...).Clear()</c> and linked with P = 1, plus R/W and U/S when the leaf has them;
/// on an existing intermediate entry R/W and U/S are OR-ed in the same way (as <c>map_to</c> does), so that the
/// leaf's rights are the effective ones. Rights are only ever widened on intermediates, never narrowed; XD,
/// PWT, PCD and the software bits are never set there.</para>
/// <para><b>What is refused.</b> <see cref="Map"/> never splits, merges or overwrites: it throws
/// <see cref="InvalidOperationException"/> for a page that lies inside an existing larger leaf, for a large page
/// whose range already holds a table with entries, for an entry that is already present, and for an entry
/// that is not present but not zero (software-owned, such as a swap entry).</para>
/// <para><b>Empty tables.</b> <see cref="Unmap"/> clears only the leaf; tables that become empty stay linked.
/// When a 2 MiB (1 GiB) page is mapped where the PDE (PDPTE) references a page table (page directory) whose
/// 512 entries are all zero, the mapper replaces the table by the leaf and frees the table frame through the
/// allocator, but only once the returned <see cref="TlbFlush"/> is flushed or ignored: until an invalidation,
/// paging-structure caches may still hold the old PDE (PDPTE) and walk the old table, so its frame must not be
/// reused (SDM Vol. 3A §4.10.4.2; INVLPG removes all paging-structure-cache entries of the current PCID,
/// §4.10.4.1). Ignoring the token asserts that no processor needs the invalidation (or that the caller did it,
/// on every processor and PCID that uses these tables). Only a table that is entirely zero is replaced; a
/// table whose entries reference further (even empty) tables counts as in use.</para>
/// <para><b>Atomicity.</b> All checks and all allocations happen before the first write, so a refusal, an
/// exception or a failed allocation leaves memory and allocator exactly as they were. New tables are filled
/// bottom-up and linked last, so a concurrent walk sees either no mapping or the complete one.</para>
/// <para><b>Invalidation.</b> Every change returns a <see cref="TlbFlush"/> and is recorded in
/// <see cref="PendingInvalidations"/> until that token is flushed or ignored. (A not-present to present change
/// needs no invalidation by the SDM, §4.10.4.3, but <see cref="Map"/> returns a token anyway, like the x86_64
/// crate, because it may have replaced an empty table.)</para>
/// <para>Not thread-safe: use one mapper per set of tables from one thread at a time. Concurrent page walks
/// (which set A and D) are tolerated.</para>
/// </remarks>
public sealed class PageTableMapper
{
    private const PageTableFlags ParentRights = PageTableFlags.Writable | PageTableFlags.User;

    private readonly IPhysicalMemory _memory;
    private readonly IFrameAllocator _allocator;
    private readonly Dictionary<VirtualAddress, PendingChange> _pending = new();
    private long _sequence;

    /// <summary>Creates a mapper with a new, zeroed root table (PML4, or PML5 in 5-level mode) taken from <paramref name="allocator"/>.</summary>
    /// <param name="memory">The physical memory the tables live in.</param>
    /// <param name="allocator">Where table frames come from and go back to.</param>
    /// <param name="mode">4-level or 5-level paging.</param>
    /// <exception cref="ArgumentNullException"><paramref name="memory"/> or <paramref name="allocator"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="mode"/> is not a defined value.</exception>
    /// <exception cref="InvalidOperationException">The allocator has no frame for the root table, or handed out a misaligned one.</exception>
    public PageTableMapper(IPhysicalMemory memory, IFrameAllocator allocator, PagingMode mode)
    {
        ArgumentNullException.ThrowIfNull(memory);
        ArgumentNullException.ThrowIfNull(allocator);
        _memory = memory;
        _allocator = allocator;
        Mode = PagingModeExtensions.Validate(mode);

        Span<ulong> root = stackalloc ulong[1];
        if (!TryAllocateTables(root))
        {
            ThrowHelper.ThrowInvalidOperation($"The frame allocator has no frame for the {mode.RootLevel().TableName()} root table.");
        }

        Root = PhysicalAddress.FromMaskedBits(root[0]);
    }

    /// <summary>Creates a mapper for existing tables whose root (PML4, or PML5 in 5-level mode) is at <paramref name="existingRoot"/>.</summary>
    /// <param name="memory">The physical memory the tables live in.</param>
    /// <param name="allocator">Where new table frames come from; frames of tables the mapper frees go back to it.</param>
    /// <param name="mode">4-level or 5-level paging.</param>
    /// <param name="existingRoot">The root table, as CR3 would hold it (bits 11:0 zero).</param>
    /// <exception cref="ArgumentNullException"><paramref name="memory"/> or <paramref name="allocator"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="mode"/> is not a defined value.</exception>
    /// <exception cref="ArgumentException"><paramref name="existingRoot"/> is not 4 KiB-aligned.</exception>
    public PageTableMapper(IPhysicalMemory memory, IFrameAllocator allocator, PagingMode mode, PhysicalAddress existingRoot)
    {
        ArgumentNullException.ThrowIfNull(memory);
        ArgumentNullException.ThrowIfNull(allocator);
        if (!existingRoot.IsAligned(PageSize.Size4K))
        {
            ThrowHelper.ThrowArgument(nameof(existingRoot), $"A root table is 4 KiB-aligned; {existingRoot} is not.");
        }

        _memory = memory;
        _allocator = allocator;
        Mode = PagingModeExtensions.Validate(mode);
        Root = existingRoot;
    }

    /// <summary>The physical address of the root table (what CR3 bits 51:12 would hold).</summary>
    public PhysicalAddress Root { get; }

    /// <summary>4-level or 5-level paging.</summary>
    public PagingMode Mode { get; }

    /// <summary>
    /// The pages whose <see cref="TlbFlush"/> has been neither flushed nor ignored, in address order (a snapshot).
    /// Empty when every change has been dealt with.
    /// </summary>
    public IReadOnlyCollection<VirtualAddress> PendingInvalidations
    {
        get
        {
            var pages = new VirtualAddress[_pending.Count];
            _pending.Keys.CopyTo(pages, 0);
            Array.Sort(pages);
            return pages;
        }
    }

    /// <summary>Maps the page of <paramref name="size"/> at <paramref name="page"/> to <paramref name="frame"/>.</summary>
    /// <param name="page">The first byte of the page; canonical for <see cref="Mode"/> and aligned to <paramref name="size"/>.</param>
    /// <param name="frame">The first byte of the frame; aligned to <paramref name="size"/>.</param>
    /// <param name="size">4 KiB (PTE), 2 MiB (PDE with PS) or 1 GiB (PDPTE with PS).</param>
    /// <param name="flags">The leaf's fixed-position flags; must include <see cref="PageTableFlags.Present"/>.</param>
    /// <param name="pat">The PAT bit (bit 7 of a PTE, bit 12 of a large leaf).</param>
    /// <param name="protectionKey">The protection key, 0..15 (bits 62:59).</param>
    /// <returns>The invalidation to perform (see <see cref="TlbFlush"/>).</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="page"/> is not canonical, or <paramref name="size"/> or <paramref name="protectionKey"/> is out of range.</exception>
    /// <exception cref="ArgumentException"><paramref name="page"/> or <paramref name="frame"/> is misaligned, or <paramref name="flags"/> lacks Present or has undefined bits.</exception>
    /// <exception cref="InvalidOperationException">The page overlaps an existing mapping (see the class remarks), or the allocator has no frame for a needed table.</exception>
    public TlbFlush Map(VirtualAddress page, PhysicalAddress frame, PageSize size, PageTableFlags flags, bool pat = false, int protectionKey = 0)
    {
        if (!TryMap(page, frame, size, flags, out TlbFlush flush, pat, protectionKey))
        {
            ThrowHelper.ThrowInvalidOperation($"Cannot map the {size.ShortName()} page at {page}: the frame allocator has no frame left for a paging structure. Nothing was changed.");
        }

        return flush;
    }

    /// <summary>
    /// Like <see cref="Map"/>, but returns <see langword="false"/> instead of throwing when a table frame cannot be
    /// allocated. In that case nothing was changed: frames taken for this call are given back and no entry was written.
    /// </summary>
    /// <param name="page">The first byte of the page; canonical for <see cref="Mode"/> and aligned to <paramref name="size"/>.</param>
    /// <param name="frame">The first byte of the frame; aligned to <paramref name="size"/>.</param>
    /// <param name="size">4 KiB (PTE), 2 MiB (PDE with PS) or 1 GiB (PDPTE with PS).</param>
    /// <param name="flags">The leaf's fixed-position flags; must include <see cref="PageTableFlags.Present"/>.</param>
    /// <param name="flush">The invalidation to perform; <see langword="default"/> (a no-op) on failure.</param>
    /// <param name="pat">The PAT bit (bit 7 of a PTE, bit 12 of a large leaf).</param>
    /// <param name="protectionKey">The protection key, 0..15 (bits 62:59).</param>
    /// <returns><see langword="false"/> only when the allocator ran out of frames.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="page"/> is not canonical, or <paramref name="size"/> or <paramref name="protectionKey"/> is out of range.</exception>
    /// <exception cref="ArgumentException"><paramref name="page"/> or <paramref name="frame"/> is misaligned, or <paramref name="flags"/> lacks Present or has undefined bits.</exception>
    /// <exception cref="InvalidOperationException">The page overlaps an existing mapping (see the class remarks).</exception>
    public bool TryMap(VirtualAddress page, PhysicalAddress frame, PageSize size, PageTableFlags flags, out TlbFlush flush, bool pat = false, int protectionKey = 0)
    {
        CheckCanonical(page, nameof(page));
        PagingLevel leafLevel = size.LeafLevel();
        if (!page.IsAligned(size))
        {
            ThrowHelper.ThrowArgument(nameof(page), $"A {size.ShortName()} page must start on a {size.ShortName()} boundary; {page} does not (offset {ThrowHelper.Hex(page.PageOffset(size))}).");
        }

        if (!frame.IsAligned(size))
        {
            ThrowHelper.ThrowArgument(nameof(frame), $"A {size.ShortName()} page frame must be {size.ShortName()}-aligned; {frame} is not (offset {ThrowHelper.Hex(frame.PageOffset(size))}).");
        }

        CheckLeafFlags(flags);
        if ((uint)protectionKey > 15)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(protectionKey), protectionKey, "A protection key is 0..15.");
        }

        ulong leaf = PageTableEntry.Leaf(size, frame, flags, pat, protectionKey).Raw;
        ulong parentFlags = (ulong)(PageTableFlags.Present | (flags & ParentRights));

        // Phase 1: read only. Follow existing tables down to the leaf's level or the first empty entry.
        Span<ulong> path = stackalloc ulong[5];
        int pathLength = 0;
        ulong table = Root.Value;
        PagingLevel level = Mode.RootLevel();
        while (level > leafLevel)
        {
            ulong entryAddress = EntryAddress(table, page, level);
            ulong raw = ReadEntry(entryAddress, level, page);
            if (raw == 0)
            {
                break;
            }

            var entry = new PageTableEntry(level, raw);
            if (!entry.IsPresent)
            {
                ThrowNotPresentButNotEmpty(page, size, entry, entryAddress);
            }

            if (entry.IsLeaf)
            {
                PageSize existing = entry.LeafSize!.Value;
                ThrowHelper.ThrowInvalidOperation(
                    $"Cannot map a {size.ShortName()} page at {page}: it lies inside the existing {existing.ShortName()} page at {page.AlignDown(existing)}, mapped by the {level.EntryName()} at {ThrowHelper.Hex(entryAddress)} ({entry}). A {existing.ShortName()} page is not split implicitly; unmap it first.");
            }

            path[pathLength++] = entryAddress;
            table = entry.Address.Value;
            level--;
        }

        // 'level' is now where the new part goes: the leaf's own level if every table exists, otherwise the
        // level of the empty entry that will reference the first new table.
        int newTableCount = level - leafLevel;
        ulong slot = EntryAddress(table, page, level);
        ulong? tableToFree = null;
        if (newTableCount == 0)
        {
            ulong raw = ReadEntry(slot, level, page);
            if (raw != 0)
            {
                var entry = new PageTableEntry(level, raw);
                if (!entry.IsPresent)
                {
                    ThrowNotPresentButNotEmpty(page, size, entry, slot);
                }

                if (entry.IsLeaf)
                {
                    ThrowHelper.ThrowInvalidOperation(
                        $"Cannot map a {size.ShortName()} page at {page}: it is already mapped by the {level.EntryName()} at {ThrowHelper.Hex(slot)} ({entry}). Unmap it first.");
                }

                CheckTableIsEmpty(page, size, entry, slot);
                tableToFree = entry.Address.Value;
            }
        }

        // Phase 2: take and zero every frame needed before writing anything.
        Span<ulong> newTables = stackalloc ulong[4];
        newTables = newTables[..newTableCount];
        if (!TryAllocateTables(newTables))
        {
            flush = default;
            return false;
        }

        // Phase 3: fill the new tables bottom-up, widen the rights of the existing path, then link.
        // newTables[i] is a table of level (level - 1 - i); the last one receives the leaf.
        ulong pending = leaf;
        for (int i = newTableCount - 1; i >= 0; i--)
        {
            PagingLevel tableLevel = (PagingLevel)((int)level - 1 - i);
            WriteEntry(EntryAddress(newTables[i], page, tableLevel), pending);
            pending = newTables[i] | parentFlags;
        }

        for (int i = 0; i < pathLength; i++)
        {
            OrBits(path[i], parentFlags);
        }

        WriteEntry(slot, pending);
        flush = Record(page, size, tableToFree);
        return true;
    }

    /// <summary>Unmaps the page that starts at <paramref name="page"/>: its leaf becomes all zero. Tables are not freed.</summary>
    /// <param name="page">The first byte of a mapped page of any size; canonical for <see cref="Mode"/>.</param>
    /// <returns>The frame and size the page had, and the invalidation to perform.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="page"/> is not canonical.</exception>
    /// <exception cref="ArgumentException"><paramref name="page"/> lies inside a mapped page but is not its first byte.</exception>
    /// <exception cref="InvalidOperationException">No present leaf maps <paramref name="page"/>.</exception>
    public (PhysicalAddress Frame, PageSize Size, TlbFlush Flush) Unmap(VirtualAddress page)
    {
        CheckCanonical(page, nameof(page));
        PageTableEntry leaf = FindPageStart(page, "unmap", out ulong entryAddress);
        PageSize size = leaf.LeafSize!.Value;
        WriteEntry(entryAddress, 0);
        return (leaf.Address, size, Record(page, size, null));
    }

    /// <summary>
    /// Replaces the fixed-position flags (P, R/W, U/S, PWT, PCD, A, D, G, XD) of the leaf of the page that starts at
    /// <paramref name="page"/>; the frame, PS, PAT, protection key and software bits are kept. R/W and U/S are
    /// OR-ed into the intermediate entries as <see cref="Map"/> does, so that the new rights take effect.
    /// </summary>
    /// <param name="page">The first byte of a mapped page of any size; canonical for <see cref="Mode"/>.</param>
    /// <param name="flags">The new flags; must include <see cref="PageTableFlags.Present"/> (use <see cref="Unmap"/> to remove a mapping).</param>
    /// <returns>The invalidation to perform.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="page"/> is not canonical.</exception>
    /// <exception cref="ArgumentException"><paramref name="flags"/> lacks Present or has undefined bits, or <paramref name="page"/> lies inside a mapped page but is not its first byte.</exception>
    /// <exception cref="InvalidOperationException">No present leaf maps <paramref name="page"/>.</exception>
    public TlbFlush UpdateFlags(VirtualAddress page, PageTableFlags flags)
    {
        CheckCanonical(page, nameof(page));
        CheckLeafFlags(flags);
        PageTableEntry leaf = FindPageStart(page, "update the flags of", out ulong entryAddress);
        ulong parentFlags = (ulong)(PageTableFlags.Present | (flags & ParentRights));
        ulong table = Root.Value;
        for (PagingLevel level = Mode.RootLevel(); level > leaf.Level; level--)
        {
            ulong parent = EntryAddress(table, page, level);
            OrBits(parent, parentFlags);
            table = ReadEntry(parent, level, page) & PageTableEntry.AddressMask4K;
        }

        WriteEntry(entryAddress, (leaf.Raw & ~(ulong)PageTableEntry.AllFlags) | (ulong)flags);
        return Record(page, leaf.LeafSize!.Value, null);
    }

    /// <summary>Finds the leaf that maps <paramref name="address"/> (any byte of the page), reading the tables without changing them.</summary>
    /// <param name="address">Any address; canonical for <see cref="Mode"/>.</param>
    /// <param name="leaf">The present leaf; when the method returns <see langword="false"/>, the not-present entry where the walk stopped.</param>
    /// <param name="entryAddress">The physical address of <paramref name="leaf"/>.</param>
    /// <returns>Whether a present leaf maps <paramref name="address"/>.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="address"/> is not canonical.</exception>
    /// <exception cref="InvalidOperationException">A table on the way lies outside physical memory.</exception>
    /// <remarks>Only P and PS are looked at: reserved bits, which would make a real walk fault, are not checked (use <see cref="PageWalker"/>).</remarks>
    public bool TryGetLeaf(VirtualAddress address, out PageTableEntry leaf, out PhysicalAddress entryAddress)
    {
        CheckCanonical(address, nameof(address));
        bool found = Find(address, out leaf, out ulong at);
        entryAddress = PhysicalAddress.FromMaskedBits(at);
        return found;
    }

    internal void CompleteInvalidation(VirtualAddress page, long sequence, bool flushed)
    {
        if (!_pending.TryGetValue(page, out PendingChange? change) || (!flushed && change.Latest != sequence))
        {
            return;
        }

        _pending.Remove(page);
        if (change.DeferredFrees is { } frames)
        {
            foreach (ulong frame in frames)
            {
                _allocator.FreeFrame(PhysicalAddress.FromMaskedBits(frame));
            }
        }
    }

    private static ulong EntryAddress(ulong table, VirtualAddress address, PagingLevel level) =>
        table + ((ulong)address.IndexAt(level) * 8);

    private static void CheckLeafFlags(PageTableFlags flags)
    {
        if ((flags & PageTableFlags.Present) == 0)
        {
            ThrowHelper.ThrowArgument(nameof(flags), $"The flags of a mapping must include Present; got {flags}.");
        }

        ulong undefined = (ulong)flags & ~(ulong)PageTableEntry.AllFlags;
        if (undefined != 0)
        {
            ThrowHelper.ThrowArgument(nameof(flags), $"The flags {ThrowHelper.Hex((ulong)flags)} include bits {ThrowHelper.Hex(undefined)} that are not fixed-position flags (PS, PAT, the address and the protection key are set through their own parameters).");
        }
    }

    private static void ThrowNotPresentButNotEmpty(VirtualAddress page, PageSize size, PageTableEntry entry, ulong entryAddress) =>
        ThrowHelper.ThrowInvalidOperation(
            $"Cannot map a {size.ShortName()} page at {page}: the {entry.Level.EntryName()} at {ThrowHelper.Hex(entryAddress)} is not present but not empty ({ThrowHelper.Hex(entry.Raw)}); the mapper does not overwrite software-owned entries.");

    private void CheckCanonical(VirtualAddress address, string paramName)
    {
        if (!address.IsCanonicalIn(Mode))
        {
            int bits = Mode.VirtualAddressBits();
            ThrowHelper.ThrowArgumentOutOfRange(paramName, address.ToString(), $"{address} is not canonical in {Mode} paging: bits 63:{bits} must all equal bit {bits - 1}.");
        }
    }

    private void CheckTableIsEmpty(VirtualAddress page, PageSize size, PageTableEntry entry, ulong entryAddress)
    {
        ulong tableFrame = entry.Address.FrameNumber;
        ReadOnlySpan<byte> bytes = ReadTable(tableFrame, entry, entryAddress);
        int firstByte = bytes.IndexOfAnyExcept((byte)0);
        if (firstByte < 0)
        {
            return;
        }

        int index = firstByte / 8;
        PagingLevel below = entry.Level.Next();
        var used = new PageTableEntry(below, BitConverter.ToUInt64(bytes.Slice(index * 8, 8)));
        string holds = !used.IsPresent
            ? "a not-present entry holding software bits"
            : used.IsLeaf
                ? $"a {used.LeafSize!.Value.ShortName()} page"
                : $"a {below.Next().TableName()} for {below.Next().LeafPageSize().ShortName()} pages";
        ThrowHelper.ThrowInvalidOperation(
            $"Cannot map a {size.ShortName()} page at {page}: the {entry.Level.EntryName()} at {ThrowHelper.Hex(entryAddress)} references a {below.TableName()} at {entry.Address} that is not empty: its entry {index} ({used}) holds {holds}. Unmap the smaller mappings first; only an all-zero table is replaced.");
    }

    private ReadOnlySpan<byte> ReadTable(ulong frameNumber, PageTableEntry entry, ulong entryAddress)
    {
        if (frameNumber >= _memory.Size >> 12)
        {
            ThrowHelper.ThrowInvalidOperation($"The {entry.Level.EntryName()} at {ThrowHelper.Hex(entryAddress)} references a table at {entry.Address}, outside physical memory of {_memory.Size:#,0} bytes.");
        }

        return _memory.ReadFrame(frameNumber);
    }

    private PageTableEntry FindPageStart(VirtualAddress page, string verb, out ulong entryAddress)
    {
        if (!Find(page, out PageTableEntry leaf, out entryAddress))
        {
            ThrowHelper.ThrowInvalidOperation(
                $"Cannot {verb} {page}: it is not mapped (the {leaf.Level.EntryName()} at {ThrowHelper.Hex(entryAddress)} is {(leaf.IsEmpty ? "empty" : "not present")}).");
        }

        PageSize size = leaf.LeafSize!.Value;
        if (!page.IsAligned(size))
        {
            ThrowHelper.ThrowArgument(nameof(page), $"{page} lies inside the {size.ShortName()} page at {page.AlignDown(size)}; pass the first byte of the page.");
        }

        return leaf;
    }

    private bool Find(VirtualAddress address, out PageTableEntry leaf, out ulong entryAddress)
    {
        ulong table = Root.Value;
        PagingLevel level = Mode.RootLevel();
        while (true)
        {
            entryAddress = EntryAddress(table, address, level);
            leaf = new PageTableEntry(level, ReadEntry(entryAddress, level, address));
            if (!leaf.IsPresent)
            {
                return false;
            }

            if (leaf.IsLeaf)
            {
                return true;
            }

            table = leaf.Address.Value;
            level--;
        }
    }

    private ulong ReadEntry(ulong entryAddress, PagingLevel level, VirtualAddress address)
    {
        if (!_memory.TryReadUInt64(PhysicalAddress.FromMaskedBits(entryAddress), out ulong raw))
        {
            ThrowHelper.ThrowInvalidOperation($"The {level.EntryName()} for {address} would be at {ThrowHelper.Hex(entryAddress)}, outside physical memory of {_memory.Size:#,0} bytes.");
        }

        return raw;
    }

    private void WriteEntry(ulong entryAddress, ulong raw) =>
        _memory.WriteUInt64(PhysicalAddress.FromMaskedBits(entryAddress), raw);

    /// <summary>Sets <paramref name="bits"/> in an entry without losing A/D bits a concurrent walk may set.</summary>
    private void OrBits(ulong entryAddress, ulong bits)
    {
        var at = PhysicalAddress.FromMaskedBits(entryAddress);
        ulong current = _memory.ReadUInt64(at);
        while ((current & bits) != bits)
        {
            ulong found = _memory.CompareExchangeUInt64(at, current | bits, current);
            if (found == current)
            {
                return;
            }

            current = found;
        }
    }

    /// <summary>Fills <paramref name="frames"/> with zeroed table frames, or gives every one back and returns false.</summary>
    private bool TryAllocateTables(Span<ulong> frames)
    {
        for (int i = 0; i < frames.Length; i++)
        {
            if (!_allocator.TryAllocateFrame(out PhysicalAddress frame))
            {
                FreeAll(frames[..i]);
                return false;
            }

            frames[i] = frame.Value;
            try
            {
                if (!frame.IsAligned(PageSize.Size4K))
                {
                    ThrowHelper.ThrowInvalidOperation($"The frame allocator handed out {frame}, which is not 4 KiB-aligned.");
                }

                _memory.GetWritableFrame(frame.FrameNumber).Clear();
            }
            catch
            {
                FreeAll(frames[..(i + 1)]);
                throw;
            }
        }

        return true;
    }

    private void FreeAll(ReadOnlySpan<ulong> frames)
    {
        foreach (ulong frame in frames)
        {
            _allocator.FreeFrame(PhysicalAddress.FromMaskedBits(frame));
        }
    }

    private TlbFlush Record(VirtualAddress page, PageSize size, ulong? freeAfterInvalidation)
    {
        long sequence = ++_sequence;
        if (!_pending.TryGetValue(page, out PendingChange? change))
        {
            change = new PendingChange();
            _pending.Add(page, change);
        }

        change.Latest = sequence;
        if (freeAfterInvalidation is ulong frame)
        {
            (change.DeferredFrees ??= new List<ulong>(1)).Add(frame);
        }

        return new TlbFlush(this, page, size, sequence);
    }

    /// <summary>The latest unsettled change to one page, and the table frames to free once it is settled.</summary>
    private sealed class PendingChange
    {
        public long Latest { get; set; }

        public List<ulong>? DeferredFrees { get; set; }
    }
}
