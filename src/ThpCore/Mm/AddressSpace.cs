using System;
using System.Collections.Generic;
using ThpCore.Diagnostics;
using ThpCore.Internal;
using ThpCore.Memory;
using ThpCore.Paging;

namespace ThpCore.Mm;

/// <summary>
/// One process's user address space (Linux's <c>struct mm_struct</c>): its VMAs, its page tables in a
/// <see cref="MemoryNode"/>, and the anonymous fault handler that fills them, with transparent huge pages.
/// </summary>
/// <remarks>
/// <para>
/// <b>Scope.</b> Private anonymous memory only; <see cref="Fork"/> shares pages copy-on-write; swap-out and swap-in of single folios (<see cref="SwapOut"/>); no reclaim policy (khugepaged and the collapse paths live in <c>ThpCore.Collapse</c>). Page
/// tables are built with x86-64 Linux's bits: a table entry is P|R/W|U/S|A (<c>_PAGE_TABLE</c>); a leaf has P, U/S, A
/// (x86's <c>vm_page_prot</c> always carries A), XD unless the VMA is executable, and R/W|D when it maps a private
/// page of a writable VMA. A PMD leaf of an anonymous THP is always dirty (<c>pmd_mkdirty</c> in
/// <c>map_anon_folio_pmd</c>). <c>PROT_NONE</c> entries are x86's: P clear, <c>_PAGE_PROTNONE</c> (bit 8) set, the
/// address kept.
/// </para>
/// <para>
/// <b>Deposited tables.</b> As on x86 Linux, every PMD leaf (a THP or the huge zero page) has a page table deposited
/// with it when it is mapped (<c>pgtable_trans_huge_deposit</c>); a split uses that table, so it never needs memory,
/// and unmapping the whole PMD frees it (<c>zap_deposited_table</c>).
/// </para>
/// <para>
/// <b>Zero pages.</b> The 4 KiB zero page is one order-0 non-anonymous folio taken when the address space is created
/// and never mapped with a reference or a map count (Linux's <c>pte_special</c> zero page). The huge zero page is an
/// order-9 non-anonymous folio taken at the first read fault that wants it (<c>thp_zero_page_alloc</c>). Both are
/// shared by the address space's fork family and freed when its last member is disposed (Linux shares one of each
/// per system and frees the huge one under memory pressure once no mm uses it).
/// </para>
/// <para>
/// <b>Page tables.</b> <see cref="Unmap"/> frees the page tables no VMA needs any more (<c>free_pgtables</c>), and
/// <see cref="Dispose"/> frees them all (<c>exit_mmap</c>); <see cref="Advise"/> with <see cref="Advice.DontNeed"/>
/// frees none, as in Linux.
/// </para>
/// <para>
/// <b>TLB.</b> There is no TLB here yet: every change of an entry is where Linux would flush (<c>flush_tlb_range</c>,
/// <c>pmdp_invalidate</c>); a caller that keeps a <see cref="Tlb"/> must invalidate the changed ranges itself.
/// </para>
/// <para>
/// <b>Threads.</b> Many threads may call <see cref="Access"/> at once (vCPUs): it holds the address space's lock for
/// reading (Linux's <c>mmap_lock</c>) and takes the node lock (the page-table lock) to handle a fault. Every other
/// operation takes the lock for writing, then the node lock; <see cref="Pin"/> and <see cref="TryGetSwapCacheFolio"/>
/// read it. See <c>docs/address-space.md</c>, "Thread safety".
/// </para>
/// </remarks>
public sealed partial class AddressSpace : IDisposable
{
    /// <summary>
    /// The distance of <see cref="MmapBase"/> below <see cref="VmaList.TaskSize"/>: 128 MiB, Linux's minimum stack gap
    /// (<c>mmap_base</c> in <c>arch/x86/mm/mmap.c</c> clamps the 8 MiB stack limit plus the guard gap up to it) without
    /// address-space randomization.
    /// </summary>
    public const ulong MmapGap = 128UL << 20;

    /// <summary>The lowest address <see cref="Map"/> uses: 4 KiB (the search's <c>low_limit</c> is <c>PAGE_SIZE</c>; <c>mmap_min_addr</c> is not modelled).</summary>
    public const ulong MmapMinAddress = PageSize4K;

    private const ulong PageSize4K = 4096;
    private const ulong HugeSize = 2UL << 20;
    private const ulong P = 1UL << 0;
    private const ulong RW = 1UL << 1;
    private const ulong US = 1UL << 2;
    private const ulong PWT = 1UL << 3;
    private const ulong PCD = 1UL << 4;
    private const ulong A = 1UL << 5;
    private const ulong D = 1UL << 6;
    private const ulong PS = 1UL << 7;
    private const ulong PatPte = 1UL << 7;
    private const ulong ProtNone = 1UL << 8;
    private const ulong PatLarge = 1UL << 12;
    private const ulong XD = 1UL << 63;
    private const ulong TableEntryFlags = P | RW | US | A;

    private readonly SparsePhysicalMemory _memory;
    private readonly PagingMode _mode;
    private readonly Dictionary<ulong, PhysicalAddress> _deposited = new();
    // The huge zero page lives with the fork family (AnonFamily) that owns the zero pages.
    private Folio? _hugeZeroPage { get => _family.HugeZeroPage; set => _family.HugeZeroPage = value; }

    /// <summary>Creates an empty address space whose root table and zero page come from <paramref name="node"/>.</summary>
    /// <param name="node">Physical memory: page tables, folios and the zero pages are allocated from it.</param>
    /// <param name="settings">The THP knobs; <see cref="ThpSettings.Default"/> when <see langword="null"/>.</param>
    /// <param name="counters">Where vm events are counted; a new set when <see langword="null"/>.</param>
    /// <param name="mode">4- or 5-level paging.</param>
    /// <exception cref="ArgumentException"><paramref name="mode"/> is not defined.</exception>
    /// <exception cref="InvalidOperationException"><paramref name="node"/> has no two free frames for the root table and the zero page.</exception>
    public AddressSpace(MemoryNode node, ThpSettings? settings = null, VmEventCounters? counters = null, PagingMode mode = PagingMode.FourLevel)
    {
        ArgumentNullException.ThrowIfNull(node);
        if (mode is not (PagingMode.FourLevel or PagingMode.FiveLevel))
        {
            ThrowHelper.ThrowArgument(nameof(mode), $"Paging mode {mode} is not defined.");
        }

        Node = node;
        _memory = node.Memory;
        _mode = mode;
        Settings = settings ?? ThpSettings.Default;
        Counters = counters ?? new VmEventCounters();
        Vmas = new VmaList(mode);
        MmapBase = Math.Min(Vmas.TaskSize, DefaultMapWindow) - MmapGap;
        if (!node.TryAllocateFrame(out PhysicalAddress root))
        {
            ThrowHelper.ThrowInvalidOperation("The node has no free frame for the root page table.");
        }

        if (!node.TryAllocateFolio(0, out Folio zero, anon: false))
        {
            node.FreeFrame(root);
            ThrowHelper.ThrowInvalidOperation("The node has no free frame for the zero page.");
        }

        Root = root;
        ZeroPage = zero;
        Cpu = CpuState.Create(root.Value, mode == PagingMode.FiveLevel ? Cr4Flags.Pae | Cr4Flags.La57 : Cr4Flags.Pae);
        _family = AnonFamily.Found(this);
    }

    /// <summary>The memory node everything is allocated from.</summary>
    public MemoryNode Node { get; }

    /// <summary>The VMAs.</summary>
    public VmaList Vmas { get; }

    /// <summary>The root page table (PML4 or PML5), a page-table frame of <see cref="Node"/>.</summary>
    public PhysicalAddress Root { get; }

    /// <summary>The CPU the accesses run on: CR3 = <see cref="Root"/>, CR0.WP = 1, EFER.NXE = 1, CR4.LA57 with 5-level paging.</summary>
    public CpuState Cpu { get; }

    /// <summary>The vm event counters (<c>pgfault</c>, <c>thp_fault_alloc</c>, ...).</summary>
    public VmEventCounters Counters { get; }

    /// <summary>The THP knobs read by the fault handler.</summary>
    public ThpSettings Settings { get; }

    /// <summary>
    /// The top of the area <see cref="Map"/> searches top-down: the 47-bit default window (<c>DEFAULT_MAP_WINDOW</c>,
    /// which is <see cref="VmaList.TaskSize"/> with 4-level paging) − <see cref="MmapGap"/>: <c>0x7fff_f7ff_f000</c> with
    /// either paging mode, as Linux's <c>mmap_base(task_size_64bit(0))</c> without randomisation.
    /// </summary>
    public ulong MmapBase { get; }

    /// <summary>The 4 KiB zero page: read faults map it read-only.</summary>
    public Folio ZeroPage { get; }

    /// <summary>The huge zero page, once a read fault has allocated it; otherwise <see langword="null"/>.</summary>
    public Folio? HugeZeroPage => _hugeZeroPage;

    /// <summary>
    /// Maps <paramref name="length"/> bytes of private anonymous memory, like <c>mmap(address, length, protection,
    /// MAP_PRIVATE | MAP_ANONYMOUS | mapFlags, -1, 0)</c> on x86-64. The new VMA merges with compatible neighbours
    /// (its page offset is its address in pages, as Linux gives anonymous VMAs). Nothing is populated.
    /// </summary>
    /// <remarks>
    /// <para>
    /// Without an address, <see cref="VmaList.FindFreeRangeForAnonymous"/> places the mapping top-down below
    /// <see cref="MmapBase"/> (2 MiB-aligned when the length is a multiple of 2 MiB: <c>thp_get_unmapped_area</c>).
    /// </para>
    /// <para>
    /// With an address and no flag it is a hint (<c>round_hint_to_min</c>, then x86's
    /// <c>arch_get_unmapped_area_topdown</c>): rounded down to 4 KiB, raised to <see cref="MmapMinAddress"/> when
    /// below it, and used when <c>[hint, hint + length)</c> fits below <see cref="VmaList.TaskSize"/>, does not straddle
    /// the 47-bit default window (<c>mmap_address_hint_valid</c>) and ends at or below the next VMA's start (less its
    /// stack guard gap when it grows down); otherwise the top-down search runs as without a hint, with no THP
    /// alignment (Linux aligns only hint-less mappings), up to <see cref="MmapBase"/> — or, with 5-level paging and a
    /// hint above the 47-bit window, up to the same distance below the top of the 56-bit space. Linux's bottom-up
    /// fallback when the top-down search fails is not modelled.
    /// </para>
    /// <para>
    /// With <see cref="MapFlags.Fixed"/> the mapping goes exactly at the address, and whatever was mapped there is
    /// unmapped first as by <see cref="Unmap"/>; with <see cref="MapFlags.FixedNoReplace"/> an existing mapping in the
    /// range is an error (<c>-EEXIST</c>) and nothing changes.
    /// </para>
    /// </remarks>
    /// <param name="length">A non-zero multiple of 4 KiB.</param>
    /// <param name="protection">The access rights.</param>
    /// <param name="flags"><see cref="VmaFlags.Anonymous"/>, optionally with <see cref="VmaFlags.HugePage"/> or <see cref="VmaFlags.NoHugePage"/>.</param>
    /// <param name="address">The hint, or with a fixed flag the address; <see langword="null"/> for none (<c>NULL</c>).</param>
    /// <param name="mapFlags"><see cref="MapFlags.None"/>, <see cref="MapFlags.Fixed"/> or <see cref="MapFlags.FixedNoReplace"/>, optionally with <see cref="MapFlags.Locked"/>.</param>
    /// <returns>The start of the mapping.</returns>
    /// <exception cref="ArgumentException">
    /// <paramref name="length"/> is zero or not a multiple of 4 KiB; the flags or protection are not supported; a fixed
    /// flag without an address or with one not 4 KiB-aligned (<c>-EINVAL</c>); <see cref="MapFlags.FixedNoReplace"/>
    /// over an existing mapping (<c>-EEXIST</c>).
    /// </exception>
    /// <exception cref="ArgumentOutOfRangeException">
    /// A fixed address below <see cref="MmapMinAddress"/> (<c>-EPERM</c>) or a fixed range reaching above
    /// <see cref="VmaList.TaskSize"/> (<c>-ENOMEM</c>).
    /// </exception>
    /// <exception cref="InvalidOperationException">No free range is large enough (Linux: <c>-ENOMEM</c>).</exception>
    public VirtualAddress Map(ulong length, Protection protection, VmaFlags flags = VmaFlags.Anonymous, VirtualAddress? address = null, MapFlags mapFlags = MapFlags.None)
    {
        using LockScope locks = EnterWrite(andNode: true);
        ThrowIfDisposed();
        if (length == 0 || (length & (PageSize4K - 1)) != 0)
        {
            ThrowHelper.ThrowArgument(nameof(length), $"Length {ThrowHelper.Hex(length)} is not a non-zero multiple of 4 KiB.");
        }

        if ((flags & VmaFlags.Anonymous) == 0 || (flags & ~(VmaFlags.Anonymous | VmaFlags.HugePage | VmaFlags.NoHugePage)) != 0
            || (flags & (VmaFlags.HugePage | VmaFlags.NoHugePage)) == (VmaFlags.HugePage | VmaFlags.NoHugePage))
        {
            ThrowHelper.ThrowArgument(nameof(flags), $"Only private anonymous mappings are supported (Anonymous, optionally HugePage or NoHugePage); {flags} is not.");
        }

        if ((mapFlags & ~(MapFlags.Fixed | MapFlags.FixedNoReplace | MapFlags.Locked)) != 0)
        {
            ThrowHelper.ThrowArgument(nameof(mapFlags), $"Map flags {mapFlags} are not a combination of Fixed, FixedNoReplace and Locked.");
        }

        CheckProtection(protection);
        MapFlags placement = mapFlags & (MapFlags.Fixed | MapFlags.FixedNoReplace);
        VirtualAddress start = placement == MapFlags.None ? FindUnmappedArea(length, address) : PrepareFixed(length, address, placement);
        bool locked = (mapFlags & MapFlags.Locked) != 0;
        Vmas.Insert(new Vma(start, start.Add(length), protection, locked ? flags | VmaFlags.Locked : flags, start.Value >> 12));
        if (locked)
        {
            Populate(start.Value, start.Value + length, ignoreErrors: true);
        }

        return start;
    }

    // The 47-bit default mmap window of x86-64 (DEFAULT_MAP_WINDOW): with 5-level paging, mappings go above it only
    // when a hint asks for it.
    private const ulong DefaultMapWindow = (1UL << 47) - PageSize4K;

    // get_unmapped_area for a private anonymous mapping without MAP_FIXED.
    private VirtualAddress FindUnmappedArea(ulong length, VirtualAddress? hint)
    {
        ulong high = MmapBase;
        if (hint is VirtualAddress wanted)
        {
            // round_hint_to_min (do_mmap), then x86's arch_get_unmapped_area_topdown.
            ulong addr = wanted.Value & ~(PageSize4K - 1);
            if (addr < MmapMinAddress)
            {
                addr = MmapMinAddress;
            }

            if (length <= Vmas.TaskSize && addr <= Vmas.TaskSize - length
                && (addr > DefaultMapWindow) == (addr + length > DefaultMapWindow)
                && FitsBelowNextVma(addr, length))
            {
                return VirtualAddress.FromRaw(addr);
            }

            if (addr > DefaultMapWindow && Vmas.TaskSize > DefaultMapWindow)
            {
                high += Vmas.TaskSize - DefaultMapWindow;
            }
        }

        if (length > high - MmapMinAddress)
        {
            ThrowHelper.ThrowInvalidOperation($"No free range of {ThrowHelper.Hex(length)} bytes (-ENOMEM).");
        }

        // __get_unmapped_area aligns for THP only without a hint.
        VirtualAddress low = VirtualAddress.FromRaw(MmapMinAddress);
        VirtualAddress? found = hint is null
            ? Vmas.FindFreeRangeForAnonymous(length, low, VirtualAddress.FromRaw(high))
            : Vmas.FindFreeRange(length, low, VirtualAddress.FromRaw(high));
        return found ?? ThrowHelper.ThrowInvalidOperation<VirtualAddress>($"No free range of {ThrowHelper.Hex(length)} bytes (-ENOMEM).");
    }

    // x86's hint test: the first VMA ending above addr (find_vma) must start, less its guard gap, at or after addr + length.
    private bool FitsBelowNextVma(ulong addr, ulong length)
    {
        IReadOnlyList<Vma> next = Vmas.FindIntersecting(VirtualAddress.FromRaw(addr), VirtualAddress.FromRaw(Vmas.TaskSize));
        if (next.Count == 0)
        {
            return true;
        }

        Vma vma = next[0];
        ulong start = vma.Start.Value;
        ulong gapStart = (vma.Flags & VmaFlags.GrowsDown) != 0 && start > Vmas.StackGuardGap ? start - Vmas.StackGuardGap : start;
        return vma.Start.Value >= addr && addr + length <= gapStart;
    }

    // MAP_FIXED / MAP_FIXED_NOREPLACE: the address is checked, and what is mapped there is unmapped or refused.
    private VirtualAddress PrepareFixed(ulong length, VirtualAddress? address, MapFlags mapFlags)
    {
        if (address is not VirtualAddress fixedAddress)
        {
            ThrowHelper.ThrowArgument(nameof(address), $"{mapFlags} needs an address (-EINVAL).");
            return default;
        }

        ulong addr = fixedAddress.Value;
        if ((addr & (PageSize4K - 1)) != 0)
        {
            ThrowHelper.ThrowArgument(nameof(address), $"A fixed mapping starts on a 4 KiB boundary; {fixedAddress} does not (-EINVAL).");
        }

        if (addr < MmapMinAddress)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(address), fixedAddress.ToString(), $"A fixed mapping at {fixedAddress} lies below mmap_min_addr {ThrowHelper.Hex(MmapMinAddress)} (-EPERM).");
        }

        if (length > Vmas.TaskSize || addr > Vmas.TaskSize - length)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(address), fixedAddress.ToString(), $"A fixed mapping of {ThrowHelper.Hex(length)} bytes at {fixedAddress} reaches above the task size {ThrowHelper.Hex(Vmas.TaskSize)} (-ENOMEM).");
        }

        IReadOnlyList<Vma> overlapping = Vmas.FindIntersecting(fixedAddress, fixedAddress.Add(length));
        if (overlapping.Count > 0)
        {
            if ((mapFlags & MapFlags.FixedNoReplace) != 0)
            {
                ThrowHelper.ThrowArgument(nameof(address), $"MAP_FIXED_NOREPLACE: {ThrowHelper.Hex(length)} bytes at {fixedAddress} overlap the mapping {overlapping[0].Start}..{overlapping[0].End} (-EEXIST).");
            }

            // mmap_region unmaps the range first (do_vmi_munmap), page tables included.
            Vmas.Remove(fixedAddress, fixedAddress.Add(length));
            ZapRange(addr, addr + length);
            FreePgTablesAfterUnmap(addr, addr + length);
        }

        return fixedAddress;
    }

    /// <summary>
    /// Unmaps <c>[start, start + length)</c> like <c>munmap</c>: the VMAs are removed (split where they straddle the
    /// range), every PTE and PMD in the range is cleared and the folios' references are put. A PMD-mapped THP only
    /// partly inside the range is split first (<see cref="SplitHugePmd"/>); a THP left partly mapped goes on the
    /// deferred-split queue (<c>thp_deferred_split_page</c>). Then the page tables that no remaining VMA shares are freed
    /// (<c>free_pgtables</c> with the previous VMA's end as floor and the next VMA's start as ceiling).
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="start"/> is not page-aligned, <paramref name="length"/> is zero or not a
    /// multiple of 4 KiB, or the range ends above <see cref="VmaList.TaskSize"/>.</exception>
    public void Unmap(VirtualAddress start, ulong length)
    {
        using LockScope locks = EnterWrite(andNode: true);
        ThrowIfDisposed();
        ulong end = CheckRange(start, length);
        Vmas.Remove(start, VirtualAddress.FromRaw(end));
        ZapRange(start.Value, end);
        FreePgTablesAfterUnmap(start.Value, end);
    }

    /// <summary>
    /// Splits the PMD leaf mapping <paramref name="address"/> into a page table of 512 PTEs, like Linux's
    /// <c>__split_huge_pmd_locked</c>: the deposited table is filled with PTEs mapping subpages 0 to 511 in order with
    /// the PMD's rights and attributes (A and D copied, PAT moved from bit 12 to bit 7), the folio gains 511 references
    /// and 512 PTE mappings and loses its PMD mapping, and <c>thp_split_pmd</c> is counted. A huge zero page PMD becomes
    /// 512 read-only PTEs of the 4 KiB zero page (<c>__split_huge_zero_page_pmd</c>). The PDE is cleared before the
    /// table is installed (break-before-make; Linux's <c>pmdp_invalidate</c> flushes the TLB in between).
    /// </summary>
    /// <returns><see langword="false"/> when no PMD leaf maps <paramref name="address"/>.</returns>
    public bool SplitHugePmd(VirtualAddress address)
    {
        using LockScope locks = EnterWrite(andNode: true);
        ThrowIfDisposed();
        return SplitHugePmdLocked(address);
    }

    // SplitHugePmd for a caller holding the node lock (the page-table lock), as rmap walks split other spaces' PMDs.
    private bool SplitHugePmdLocked(VirtualAddress address)
    {
        ulong chunk = address.Value & ~(HugeSize - 1);
        if (!TryFindPde(chunk, out PhysicalAddress slot))
        {
            return false;
        }

        ulong pde = Read(slot);
        if (!IsHugeLeaf(pde))
        {
            return false;
        }

        SplitLocked(chunk, slot, pde);
        return true;
    }

    /// <summary>
    /// Changes the rights of <c>[start, start + length)</c> like <c>mprotect</c>: the VMAs are changed with
    /// <see cref="VmaList.Modify"/> (split and re-merged), and R/W and XD of every present PTE and PMD in the range are
    /// rewritten (<c>change_protection</c>). A PMD leaf that straddles the range's edge is split first
    /// (<c>change_pmd_range</c> → <c>__split_huge_pmd</c>), and stays split when the rights are changed back. R/W is set
    /// when the VMA is writable and the entry maps an anon-exclusive page (<c>can_change_pte_writable</c>; a page shared
    /// after <see cref="Fork"/> or a zero page stays read-only); <see cref="Protection.None"/> makes the entries <c>PROT_NONE</c>.
    /// </summary>
    /// <exception cref="ArgumentException">The range is not page-aligned or is empty, or <paramref name="protection"/> is not defined.</exception>
    /// <exception cref="InvalidOperationException">Part of the range is not mapped (Linux: <c>-ENOMEM</c>); nothing is changed.</exception>
    public void Protect(VirtualAddress start, ulong length, Protection protection)
    {
        using LockScope locks = EnterWrite(andNode: true);
        ThrowIfDisposed();
        ulong end = CheckRange(start, length);
        CheckProtection(protection);
        Vmas.Modify(start, VirtualAddress.FromRaw(end), v => v with { Protection = protection });
        ForEachMapping(
            start.Value,
            end,
            onWholeHugeLeaf: (_, pdeSlot, pde) => Write(pdeSlot, Reprotect(pde, protection, IsHugeZero(pde) || !Node.FolioOf((pde & PageTableEntry.AddressMask2M) >> 12).IsAnonExclusive(0))),
            onPte: (slot, pte) => Write(slot, Reprotect(pte, protection, FrameOf(pte) == ZeroPage.HeadFrame || !IsExclusivePte(pte))));
    }

    /// <summary>
    /// Clears every PTE and PMD of <c>[start, end)</c> and puts the folios' references, as Linux's
    /// <c>unmap_page_range</c> does for munmap and <c>MADV_DONTNEED</c>: a PMD leaf wholly inside is zapped with its
    /// deposited table (<c>zap_huge_pmd</c>), one only partly inside is split first (<c>zap_pmd_range</c>), and a THP
    /// left partly mapped goes on the deferred-split queue (<see cref="ReleasePte"/>). Swap PTEs are cleared and their
    /// slots released (<c>zap_nonpresent_ptes</c>, <see cref="ZapSwapPtes"/>). The VMAs are not touched.
    /// </summary>
    private void ZapRange(ulong start, ulong end)
    {
        ZapSwapPtes(start, end);
        ForEachMapping(
            start,
            end,
            onWholeHugeLeaf: (chunk, pdeSlot, pde) => ZapHugePmd(chunk, pdeSlot, pde),
            onPte: (slot, pte) =>
            {
                Write(slot, 0);
                ReleasePte(pte);
            });
    }

    /// <summary>
    /// Visits the mappings of <c>[start, end)</c> for a range operation, as Linux's page-range walks do for munmap and
    /// mprotect: a PMD leaf wholly inside the range goes to <paramref name="onWholeHugeLeaf"/> (chunk, PDE slot,
    /// PDE); one only partly inside is split first (<c>__split_huge_pmd</c>); then every mapped PTE in the range goes
    /// to <paramref name="onPte"/> (slot, PTE).
    /// </summary>
    private void ForEachMapping(ulong start, ulong end, Action<ulong, PhysicalAddress, ulong> onWholeHugeLeaf, Action<PhysicalAddress, ulong> onPte)
    {
        for (ulong chunk = start & ~(HugeSize - 1); chunk < end; chunk += HugeSize)
        {
            ulong from = Math.Max(start, chunk);
            ulong to = Math.Min(end, chunk + HugeSize);
            if (!TryFindPde(chunk, out PhysicalAddress pdeSlot))
            {
                continue;
            }

            ulong pde = Read(pdeSlot);
            if (IsHugeLeaf(pde))
            {
                if (from == chunk && to == chunk + HugeSize)
                {
                    onWholeHugeLeaf(chunk, pdeSlot, pde);
                    continue;
                }

                SplitLocked(chunk, pdeSlot, pde);
                pde = Read(pdeSlot);
            }

            if ((pde & P) == 0)
            {
                continue;
            }

            PhysicalAddress table = PhysicalAddress.FromMaskedBits(pde & PageTableEntry.AddressMask4K);
            for (ulong va = from; va < to; va += PageSize4K)
            {
                PhysicalAddress slot = PteSlot(table, va);
                ulong pte = Read(slot);
                if (IsMapped(pte))
                {
                    onPte(slot, pte);
                }
            }
        }
    }

    /// <summary>
    /// Makes one user-mode access, handling page faults as Linux's anonymous fault path does, and returns the
    /// translation. The walk is <see cref="PageWalker"/>'s, with its A/D updates.
    /// </summary>
    /// <remarks>
    /// <para>
    /// On a page fault: no VMA, or rights the VMA forbids (x86 <c>access_error</c>: a write needs
    /// <see cref="Protection.Write"/>, a fetch <see cref="Protection.Execute"/>, a read any right) → <see cref="AccessStatus.Segfault"/>,
    /// nothing changed and no <c>pgfault</c> counted. Otherwise <c>pgfault</c> is counted and:
    /// </para>
    /// <list type="bullet">
    /// <item>an empty PMD whose aligned 2 MiB lies inside a VMA that may use THP (enabled <c>always</c> without
    /// <see cref="VmaFlags.NoHugePage"/>, or <c>madvise</c> with <see cref="VmaFlags.HugePage"/>) gets, on a read with
    /// <see cref="ThpSettings.UseZeroPage"/>, the huge zero page, and otherwise a new order-9 folio
    /// (<c>thp_fault_alloc</c>); when no order-9 block is free, <c>thp_fault_fallback</c> is counted and the fault falls
    /// back to 4 KiB pages;</item>
    /// <item>a missing PTE gets, on a read, the 4 KiB zero page (Linux uses it whatever <c>use_zero_page</c> says: that knob
    /// governs the huge zero page only), and on a write a new order-0 folio;</item>
    /// <item>a write to the zero page gets a new private page (<c>wp_page_copy</c>); a write to the huge zero page first
    /// splits the PMD into 512 zero-page PTEs and then copies the one page written. That is Linux up to v6.13
    /// (<c>do_huge_pmd_wp_page</c> falls back after <c>__split_huge_pmd</c>); v6.14 added <c>do_huge_zero_wp_pmd</c>, which
    /// first tries to map a whole new THP — not modelled.</item>
    /// <item>a write to a read-only PTE of an anonymous page (shared after <see cref="Fork"/>, or made read-only by
    /// <see cref="Protect"/>) reuses the page when it is anon-exclusive, or order-0 with a reference count of 1
    /// (<c>wp_can_reuse_anon_folio</c>; it becomes exclusive); otherwise it gets a private copy
    /// (<see cref="FaultAction.CopiedPage"/>) and the old page loses a mapping and a reference. A page of a large folio
    /// that is not exclusive is always copied (Linux before v6.16).</item>
    /// <item>a write to a read-only PMD of a THP reuses it when the head is anon-exclusive or the reference count is 1
    /// (<c>do_huge_pmd_wp_page</c>); otherwise the PMD is split and the fault falls back to the 4 KiB copy above.</item>
    /// </list>
    /// </remarks>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="kind"/> is not defined.</exception>
    public AccessResult Access(VirtualAddress address, AccessKind kind)
    {
        ThrowIfDisposed();
        if ((uint)kind > (uint)AccessKind.Fetch)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(kind), kind, "An access is Read, Write or Fetch.");
        }

        using LockScope mmap = EnterRead();
        return AccessLocked(address, kind);
    }

    // Access with the address space's lock held by the caller (read or write mode): Access itself and Pin. The walk is
    // lock-free, as the MMU's (A/D by compare-exchange); a fault takes the node lock (Linux's page-table lock) and
    // walks again under it before handling anything, because another thread may have handled the same fault meanwhile
    // (the pte_same / pmd_none re-checks of do_anonymous_page and friends).
    private AccessResult AccessLocked(VirtualAddress address, AccessKind kind)
    {
        WalkResult walk = PageWalker.Translate(Cpu, _memory, address, kind, Privilege.User);
        if (walk.IsTranslated)
        {
            return new AccessResult(AccessStatus.Translated, walk.PhysicalAddress, walk.PageSize, FaultAction.None);
        }

        Vma? vma = walk.Status == WalkStatus.PageFault ? Vmas.Find(address) : null;
        if (vma is null || !Allows(vma.Protection, kind))
        {
            return new AccessResult(AccessStatus.Segfault, default, PageSize.Size4K, FaultAction.None);
        }

        Counters.Count(VmEvent.PgFault);
        using LockScope ptl = EnterNode();
        FaultAction action = FaultAction.None;
        for (int attempt = 0; ; attempt++)
        {
            walk = PageWalker.Translate(Cpu, _memory, address, kind, Privilege.User);
            if (walk.IsTranslated)
            {
                return new AccessResult(AccessStatus.Translated, walk.PhysicalAddress, walk.PageSize, action);
            }

            if (walk.Status != WalkStatus.PageFault)
            {
                return new AccessResult(AccessStatus.Segfault, default, PageSize.Size4K, action);
            }

            if (attempt == 2)
            {
                ThrowHelper.ThrowInvalidOperation($"The fault at {address} ({kind}) was handled twice and still faults: {walk}.");
            }

            if (attempt > 0)
            {
                Counters.Count(VmEvent.PgFault);
            }

            FaultAction? done = HandleFault(vma, address, kind);
            if (done is not FaultAction handled)
            {
                return new AccessResult(AccessStatus.OutOfMemory, default, PageSize.Size4K, action);
            }

            if (action == FaultAction.None)
            {
                action = handled;
            }
        }
    }

    private static bool Allows(Protection protection, AccessKind kind) => kind switch
    {
        AccessKind.Write => (protection & Protection.Write) != 0,
        AccessKind.Fetch => (protection & Protection.Execute) != 0,
        _ => protection != Protection.None,
    };

    private static void CheckProtection(Protection protection)
    {
        if ((protection & ~(Protection.Read | Protection.Write | Protection.Execute)) != 0)
        {
            ThrowHelper.ThrowArgument(nameof(protection), $"Protection {protection} is not a combination of Read, Write and Execute.");
        }
    }

    private static bool IsMapped(ulong entry) => (entry & (P | ProtNone)) != 0;

    private static bool IsHugeLeaf(ulong pde) => IsMapped(pde) && (pde & PS) != 0;

    private static ulong FrameOf(ulong pte) => (pte & PageTableEntry.AddressMask4K) >> 12;

    private static PhysicalAddress PteSlot(PhysicalAddress table, ulong va) => table.Add(((va >> 12) & 0x1FF) * 8);

    private static ulong LeafRights(Protection protection, bool writable)
    {
        ulong bits = P | US | A;
        if (writable && (protection & Protection.Write) != 0)
        {
            bits |= RW | D;
        }

        if ((protection & Protection.Execute) == 0)
        {
            bits |= XD;
        }

        return bits;
    }

    private static ulong Reprotect(ulong entry, Protection protection, bool zeroPage)
    {
        entry &= ~(P | RW | ProtNone | XD);
        if (protection == Protection.None)
        {
            return entry | ProtNone;
        }

        entry |= P;
        if ((protection & Protection.Write) != 0 && !zeroPage)
        {
            entry |= RW;
        }

        if ((protection & Protection.Execute) == 0)
        {
            entry |= XD;
        }

        return entry;
    }

    private ulong CheckRange(VirtualAddress start, ulong length)
    {
        if ((start.Value & (PageSize4K - 1)) != 0)
        {
            ThrowHelper.ThrowArgument(nameof(start), $"Start {start} is not a multiple of 4 KiB.");
        }

        if (length == 0 || (length & (PageSize4K - 1)) != 0 || length > Vmas.TaskSize || start.Value > Vmas.TaskSize - length)
        {
            ThrowHelper.ThrowArgument(nameof(length), $"Length {ThrowHelper.Hex(length)} from {start} is not a non-zero multiple of 4 KiB ending at or below {ThrowHelper.Hex(Vmas.TaskSize)}.");
        }

        return start.Value + length;
    }

    private bool ThpAllowed(Vma vma)
    {
        if ((vma.Flags & VmaFlags.Anonymous) == 0 || (vma.Flags & VmaFlags.NoHugePage) != 0)
        {
            return false;
        }

        return Settings.Enabled switch
        {
            ThpEnabled.Always => true,
            ThpEnabled.Madvise => (vma.Flags & VmaFlags.HugePage) != 0,
            _ => false,
        };
    }

    private bool IsHugeZero(ulong pde) =>
        _hugeZeroPage is Folio huge && ((pde & PageTableEntry.AddressMask2M) >> 12) == huge.HeadFrame;

    // Returns null when memory ran out (VM_FAULT_OOM).
    private FaultAction? HandleFault(Vma vma, VirtualAddress address, AccessKind kind)
    {
        bool write = kind == AccessKind.Write;
        ulong chunk = address.Value & ~(HugeSize - 1);
        if (!TryFindPde(chunk, out PhysicalAddress pdeSlot, allocate: true))
        {
            return null;
        }

        bool fellBack = false;
        ulong pde = Read(pdeSlot);
        if (pde != 0 && !SwapEntry.PmdPresent(pde))
        {
            return MigrationEntryWait(pde, PagingLevel.Pd);
        }

        if (pde == 0 && ThpAllowed(vma) && vma.ContainsHugePageAround(address))
        {
            FaultAction? huge = HugeAnonymousFault(vma, chunk, pdeSlot, write, out bool fallback);
            if (!fallback)
            {
                return huge;
            }

            fellBack = true;
        }

        if (IsHugeLeaf(pde))
        {
            if (!write || (pde & RW) != 0)
            {
                return FaultAction.None;
            }

            if (!IsHugeZero(pde) && CanReuseHugePmd(pde))
            {
                // do_huge_pmd_wp_page reusing an exclusive THP.
                Write(pdeSlot, pde | RW | D | A);
                return FaultAction.None;
            }

            // The huge zero page, or a THP shared after fork: split and fall back to a 4 KiB copy.

            SplitLocked(chunk, pdeSlot, pde);
            pde = Read(pdeSlot);
        }

        if (pde == 0)
        {
            if (!Node.TryAllocateFrame(out PhysicalAddress newTable))
            {
                return null;
            }

            pde = newTable.Value | TableEntryFlags;
            Write(pdeSlot, pde);
        }

        PhysicalAddress slot = PteSlot(PhysicalAddress.FromMaskedBits(pde & PageTableEntry.AddressMask4K), address.Value);
        ulong pte = Read(slot);
        if (IsMigrationPte(pte))
        {
            return MigrationEntryWait(pte, PagingLevel.Pt);
        }

        if (!IsMapped(pte) && pte != 0)
        {
            return SwapInFault(vma, slot, pte, write);
        }

        if (!IsMapped(pte))
        {
            if (!write)
            {
                Write(slot, ZeroPage.Address.Value | LeafRights(vma.Protection, writable: false));
                return fellBack ? FaultAction.FellBackToSmallPage : FaultAction.MappedZeroPage;
            }

            if (!Node.TryAllocateFolio(0, out Folio folio))
            {
                return null;
            }

            folio.AddPteMapping(0);
            folio.SetAnonExclusive(0, true);
            Write(slot, folio.Address.Value | LeafRights(vma.Protection, writable: true));
            return fellBack ? FaultAction.FellBackToSmallPage : FaultAction.MappedPage;
        }

        if (write && (pte & RW) == 0)
        {
            if (FrameOf(pte) != ZeroPage.HeadFrame)
            {
                // do_wp_page: reuse an exclusive anonymous page, or copy a shared one.
                return WriteProtectFault(vma, slot, pte);
            }

            // wp_page_copy: a new zeroed page (the zero page's contents), then clear-and-flush and install.
            if (!Node.TryAllocateFolio(0, out Folio copy))
            {
                return null;
            }

            copy.AddPteMapping(0);
            copy.SetAnonExclusive(0, true);
            Write(slot, 0);
            Write(slot, copy.Address.Value | LeafRights(vma.Protection, writable: true));
            return FaultAction.CopiedZeroPage;
        }

        return FaultAction.None;
    }

    // do_huge_pmd_anonymous_page. Returns null for VM_FAULT_OOM; sets fallback for VM_FAULT_FALLBACK.
    private FaultAction? HugeAnonymousFault(Vma vma, ulong chunk, PhysicalAddress pdeSlot, bool write, out bool fallback)
    {
        fallback = false;
        ulong xd = (vma.Protection & Protection.Execute) == 0 ? XD : 0;
        if (!write && Settings.UseZeroPage)
        {
            if (!Node.TryAllocateFrame(out PhysicalAddress deposit))
            {
                return null;
            }

            if (_hugeZeroPage is null)
            {
                // get_huge_zero_page allocates with GFP_TRANSHUGE: it may compact whatever defrag says.
                if (!TryAllocateHuge(mayCompact: true, anon: false, out Folio zero))
                {
                    Node.FreeFrame(deposit);
                    Counters.Count(VmEvent.ThpZeroPageAllocFailed);
                    Counters.Count(VmEvent.ThpFaultFallback);
                    fallback = true;
                    return FaultAction.None;
                }

                _hugeZeroPage = zero;
                Counters.Count(VmEvent.ThpZeroPageAlloc);
            }

            _deposited[chunk] = deposit;
            Write(pdeSlot, _hugeZeroPage.Value.Address.Value | P | US | A | PS | xd);
            return FaultAction.MappedHugeZeroPage;
        }

        if (!TryAllocateHuge(FaultMayCompact(vma), anon: true, out Folio folio))
        {
            Counters.Count(VmEvent.ThpFaultFallback);
            fallback = true;
            return FaultAction.None;
        }

        if (!Node.TryAllocateFrame(out PhysicalAddress table))
        {
            folio.Put();
            return null;
        }

        Counters.Count(VmEvent.ThpFaultAlloc);
        folio.AddPmdMapping();
        folio.SetAnonExclusive(0, true);
        _deposited[chunk] = table;
        ulong rw = (vma.Protection & Protection.Write) != 0 ? RW : 0;
        Write(pdeSlot, folio.Address.Value | P | US | A | D | PS | rw | xd);
        return FaultAction.MappedHugePage;
    }

    private void SplitLocked(ulong chunk, PhysicalAddress pdeSlot, ulong pde)
    {
        // Break-before-make (pmdp_invalidate): the PMD leaf goes first, atomically, so the PTEs get any A bit a walker set.
        pde = Exchange(pdeSlot, 0);
        Counters.Count(VmEvent.ThpSplitPmd);
        PhysicalAddress table = _deposited[chunk];
        _deposited.Remove(chunk);
        ulong head = (pde & PageTableEntry.AddressMask2M) >> 12;
        bool zero = IsHugeZero(pde);
        ulong attributes = pde & (P | RW | US | PWT | PCD | A | D | ProtNone | XD | PageTableEntry.LeafAvailableMask);
        if ((pde & PatLarge) != 0)
        {
            attributes |= PatPte;
        }

        if (zero)
        {
            attributes &= ~(RW | D);
        }

        // The deposited table is detached (no walker reaches it until the PDE below), so it is filled in one span.
        Span<ulong> entries = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(_memory.GetWritableFrame(table.FrameNumber));
        for (int i = 0; i < 512; i++)
        {
            ulong frame = zero ? ZeroPage.HeadFrame : head + (ulong)i;
            entries[i] = (frame << 12) | attributes;
        }

        Write(pdeSlot, table.Value | TableEntryFlags);
        if (zero)
        {
            return;
        }

        Folio folio = Node.FolioOf(head);
        folio.ConvertPmdMappingToPtes(exclusive: folio.IsAnonExclusive(0));
    }

    private void ZapHugePmd(ulong chunk, PhysicalAddress pdeSlot, ulong pde)
    {
        Write(pdeSlot, 0);
        Node.FreeFrame(_deposited[chunk]);
        _deposited.Remove(chunk);
        if (IsHugeZero(pde))
        {
            return;
        }

        Folio folio = Node.FolioOf((pde & PageTableEntry.AddressMask2M) >> 12);
        folio.RemovePmdMapping();
        if (folio.EntireMapCount == 0 && folio.MapCount > 0 && PteMappedPages(folio) < folio.PageCount)
        {
            // __folio_remove_rmap (PMD level): the last PMD mapping went while PTEs elsewhere map some pages, not all.
            QueuePartiallyMapped(folio);
        }

        folio.Put();
    }

    private void ReleasePte(ulong pte)
    {
        ulong frame = FrameOf(pte);
        if (frame == ZeroPage.HeadFrame)
        {
            return;
        }

        Folio folio = Node.FolioOf(frame);
        int index = (int)(frame - folio.HeadFrame);
        folio.RemovePteMapping(index);
        if (folio.IsLarge && folio.PageMapCount(index) == 0 && folio.MapCount > 0 && folio.EntireMapCount == 0)
        {
            // __folio_remove_rmap: the page's last mapping went and the folio is still mapped, but not wholly.
            QueuePartiallyMapped(folio);
        }

        folio.Put();
    }

    // The physical address of the PDE for va; allocates missing upper tables when asked. False when a table is
    // missing (and not to be allocated) or cannot be allocated.
    private bool TryFindPde(ulong va, out PhysicalAddress slot, bool allocate = false)
    {
        PhysicalAddress table = Root;
        for (int level = (int)_mode; level > (int)PagingLevel.Pd; level--)
        {
            PhysicalAddress entrySlot = table.Add(((va >> (12 + (9 * (level - 1)))) & 0x1FF) * 8);
            ulong entry = Read(entrySlot);
            if ((entry & P) == 0)
            {
                if (!allocate || !Node.TryAllocateFrame(out PhysicalAddress next))
                {
                    slot = default;
                    return false;
                }

                entry = next.Value | TableEntryFlags;
                Write(entrySlot, entry);
            }

            table = PhysicalAddress.FromMaskedBits(entry & PageTableEntry.AddressMask4K);
        }

        slot = table.Add(((va >> 21) & 0x1FF) * 8);
        return true;
    }

    private ulong Read(PhysicalAddress address) => ((IPhysicalMemory)_memory).ReadUInt64(address);

    private void Write(PhysicalAddress address, ulong value) => _memory.WriteUInt64(address, value);
}
