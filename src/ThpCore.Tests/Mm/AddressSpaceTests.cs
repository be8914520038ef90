using System;
using System.Collections.Generic;
using System.Linq;
using ThpCore.Diagnostics;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;
using Xunit;

namespace ThpCore.Tests.Mm;

public sealed class AddressSpaceTests
{
    private const ulong K4 = 4096;
    private const ulong M2 = 2UL << 20;
    private const ulong NodeSize = 64UL << 20;
    private const Protection Rw = Protection.Read | Protection.Write;

    private static readonly ThpSettings s_always = new() { Enabled = ThpEnabled.Always };
    private static readonly ThpSettings s_never = new() { Enabled = ThpEnabled.Never };
    private static readonly ThpSettings s_madvise = new() { Enabled = ThpEnabled.Madvise };

    internal static AddressSpace Create(ThpSettings settings, ulong size = NodeSize) => new(new MemoryNode(size), settings);

    /// <summary>The raw entry at <paramref name="level"/> for <paramref name="va"/>, or null when a table above it is missing.</summary>
    internal static ulong? Entry(AddressSpace space, ulong va, PagingLevel level)
    {
        ulong table = space.Root.Value;
        for (int l = (int)space.Cpu.PagingMode; ; l--)
        {
            ulong raw = ((IPhysicalMemory)space.Node.Memory).ReadUInt64(PhysicalAddress.Create(table + (((va >> (12 + (9 * (l - 1)))) & 0x1FF) * 8)));
            if (l == (int)level)
            {
                return raw;
            }

            if ((raw & 1) == 0)
            {
                return null;
            }

            table = raw & PageTableEntry.AddressMask4K;
        }
    }

    internal static PageTableEntry Pte(AddressSpace space, ulong va) => new(PagingLevel.Pt, Entry(space, va, PagingLevel.Pt) ?? 0);

    internal static PageTableEntry Pde(AddressSpace space, ulong va) => new(PagingLevel.Pd, Entry(space, va, PagingLevel.Pd) ?? 0);

    /// <summary>
    /// The seed thread's "PTE-mapped THP": a page table (no PMD leaf) of 512 present, writable, user, dirty,
    /// accessed, no-execute PTEs mapping subpages 0..511 of <paramref name="folio"/> in order, each mapped once and
    /// anon-exclusive, the folio holding exactly those 512 references and mappings and off the deferred-split queue.
    /// </summary>
    internal static void AssertPteMappedInOrder(AddressSpace space, VirtualAddress start, Folio folio)
    {
        PageTableEntry pde = Pde(space, start.Value);
        Assert.True(pde.IsPresent);
        Assert.False(pde.IsLeaf);
        for (int i = 0; i < 512; i++)
        {
            PageTableEntry pte = Pte(space, start.Value + ((ulong)i * K4));
            Assert.True(pte.IsPresent && pte.IsWritable && pte.IsUser && pte.IsDirty && pte.IsAccessed && pte.IsExecuteDisable);
            Assert.Equal(folio.Address.Add((ulong)i * K4), pte.Address);
            Assert.Equal(1, folio.PageMapCount(i));
            Assert.True(folio.IsAnonExclusive(i));
        }

        Assert.Equal(512, folio.RefCount);
        Assert.Equal(512, folio.MapCount);
        Assert.Equal(0, folio.EntireMapCount);
        Assert.False(folio.IsOnDeferredSplitQueue);
    }

    [Fact]
    public void A_read_fault_on_a_small_mapping_maps_the_zero_page_read_only()
    {
        AddressSpace space = Create(s_always);
        VirtualAddress start = space.Map(8 * K4, Rw);
        Assert.True(start.Value < space.MmapBase && start.Value >= AddressSpace.MmapMinAddress);

        AccessResult result = space.Access(start.Add(K4 + 12), AccessKind.Read);

        Assert.Equal(AccessStatus.Translated, result.Status);
        Assert.Equal(FaultAction.MappedZeroPage, result.Fault);
        Assert.Equal(PageSize.Size4K, result.PageSize);
        Assert.Equal(space.ZeroPage.Address.Add(12), result.PhysicalAddress);
        PageTableEntry pte = Pte(space, start.Value + K4);
        Assert.True(pte.IsPresent && pte.IsUser && pte.IsAccessed && pte.IsExecuteDisable);
        Assert.False(pte.IsWritable);
        Assert.False(pte.IsDirty);
        Assert.Equal(1, space.ZeroPage.RefCount);
        Assert.Equal(0, space.ZeroPage.MapCount);
        Assert.Equal(1, space.Counters.Get(VmEvent.PgFault));
        Assert.Equal(0UL, Pte(space, start.Value).Raw);
    }

    [Fact]
    public void A_write_fault_allocates_a_page_whose_bytes_read_back_through_the_walk()
    {
        AddressSpace space = Create(s_never);
        VirtualAddress start = space.Map(4 * M2, Rw);
        VirtualAddress address = start.Add((3 * K4) + 100);

        AccessResult write = space.Access(address, AccessKind.Write);

        Assert.Equal(FaultAction.MappedPage, write.Fault);
        Assert.Equal(PageSize.Size4K, write.PageSize);
        Folio folio = space.Node.FolioOf(write.PhysicalAddress.FrameNumber);
        Assert.Equal(0, folio.Order);
        Assert.True(folio.IsAnon);
        Assert.Equal(1, folio.RefCount);
        Assert.Equal(1, folio.MapCount);
        Assert.True(folio.IsAnonExclusive(0));
        PageTableEntry pte = Pte(space, address.Value);
        Assert.True(pte.IsWritable && pte.IsDirty && pte.IsAccessed);
        Assert.Equal(folio.Address, pte.Address);

        folio.GetWritablePage(0)[100] = 0xAB;
        AccessResult read = space.Access(address, AccessKind.Read);
        Assert.Equal(FaultAction.None, read.Fault);
        Assert.Equal(write.PhysicalAddress, read.PhysicalAddress);
        Assert.Equal(0xAB, space.Node.Memory.ReadFrame(read.PhysicalAddress.FrameNumber)[(int)read.PhysicalAddress.PageOffset(PageSize.Size4K)]);
        Assert.Equal(1, space.Counters.Get(VmEvent.PgFault));
    }

    [Fact]
    public void A_write_fault_under_always_maps_a_huge_page_by_pmd()
    {
        AddressSpace space = Create(s_always);
        VirtualAddress start = space.Map(4 * M2, Rw);
        Assert.True(start.IsAligned(PageSize.Size2M));

        AccessResult result = space.Access(start.Add(M2 + 0x1234), AccessKind.Write);

        Assert.Equal(FaultAction.MappedHugePage, result.Fault);
        Assert.Equal(PageSize.Size2M, result.PageSize);
        PageTableEntry pde = Pde(space, start.Value + M2);
        Assert.True(pde.IsLeaf && pde.IsWritable && pde.IsDirty && pde.IsAccessed && pde.IsUser && pde.IsExecuteDisable);
        Folio folio = space.Node.FolioOf(pde.Address.FrameNumber);
        Assert.Equal(Folio.PmdOrder, folio.Order);
        Assert.Equal(pde.Address.Add(0x1234), result.PhysicalAddress);
        Assert.Equal(1, folio.RefCount);
        Assert.Equal(1, folio.EntireMapCount);
        Assert.Equal(1, folio.MapCount);
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpFaultAlloc));
        Assert.Equal(0, space.Counters.Get(VmEvent.ThpFaultFallback));
    }

    [Fact]
    public void Never_and_madvise_without_the_flag_map_small_pages_and_madvise_with_it_maps_a_huge_page()
    {
        foreach ((ThpSettings settings, VmaFlags flags, PageSize expected) in new[]
        {
            (s_never, VmaFlags.Anonymous | VmaFlags.HugePage, PageSize.Size4K),
            (s_madvise, VmaFlags.Anonymous, PageSize.Size4K),
            (s_madvise, VmaFlags.Anonymous | VmaFlags.HugePage, PageSize.Size2M),
            (s_always, VmaFlags.Anonymous | VmaFlags.NoHugePage, PageSize.Size4K),
        })
        {
            AddressSpace space = Create(settings);
            VirtualAddress start = space.Map(2 * M2, Rw, flags);
            AccessResult result = space.Access(start, AccessKind.Write);
            Assert.Equal(expected, result.PageSize);
            Assert.Equal(expected == PageSize.Size2M ? FaultAction.MappedHugePage : FaultAction.MappedPage, result.Fault);
            Assert.Equal(expected == PageSize.Size2M, Pde(space, start.Value).IsLeaf);
            Assert.Equal(expected == PageSize.Size2M ? 1 : 0, space.Counters.Get(VmEvent.ThpFaultAlloc));
        }
    }

    [Fact]
    public void A_range_whose_huge_window_leaves_the_vma_gets_small_pages()
    {
        AddressSpace space = Create(s_always);
        VirtualAddress start = space.Map(M2 + K4, Rw);
        AccessResult result = space.Access(start, AccessKind.Write);
        Assert.Equal(PageSize.Size4K, result.PageSize);
        Assert.Equal(0, space.Counters.Get(VmEvent.ThpFaultAlloc));
    }

    [Fact]
    public void A_fault_falls_back_to_a_small_page_when_no_order_9_block_is_free()
    {
        AddressSpace space = Create(s_always, 16UL << 20);
        MemoryNode node = space.Node;
        var held = new List<Folio>();
        while (node.TryAllocateFolio(0, out Folio folio))
        {
            held.Add(folio);
        }

        for (int i = 0; i < held.Count; i += 2)
        {
            held[i].Put();
        }

        Assert.Equal(0, node.Buddy.FreeBlocks(9) + node.Buddy.FreeBlocks(10));
        VirtualAddress start = space.Map(2 * M2, Rw);

        AccessResult result = space.Access(start.Add(K4), AccessKind.Write);

        Assert.Equal(AccessStatus.Translated, result.Status);
        Assert.Equal(FaultAction.FellBackToSmallPage, result.Fault);
        Assert.Equal(PageSize.Size4K, result.PageSize);
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpFaultFallback));
        Assert.Equal(0, space.Counters.Get(VmEvent.ThpFaultAlloc));
        Assert.False(Pde(space, start.Value).IsLeaf);
        Assert.Equal(0, node.FolioOf(result.PhysicalAddress.FrameNumber).Order);
    }

    [Fact]
    public void A_read_fault_maps_the_huge_zero_page_and_a_write_then_splits_it_and_copies_one_page()
    {
        AddressSpace space = Create(s_always);
        VirtualAddress start = space.Map(2 * M2, Rw);

        AccessResult read = space.Access(start.Add(0x5000), AccessKind.Read);

        Assert.Equal(FaultAction.MappedHugeZeroPage, read.Fault);
        Assert.Equal(PageSize.Size2M, read.PageSize);
        Folio huge = Assert.NotNull(space.HugeZeroPage);
        Assert.Equal(huge.Address.Add(0x5000), read.PhysicalAddress);
        PageTableEntry pde = Pde(space, start.Value);
        Assert.True(pde.IsLeaf && !pde.IsWritable && !pde.IsDirty);
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpZeroPageAlloc));
        Assert.Equal(0, huge.MapCount);

        AccessResult write = space.Access(start.Add(0x5000), AccessKind.Write);

        Assert.Equal(FaultAction.CopiedZeroPage, write.Fault);
        Assert.Equal(PageSize.Size4K, write.PageSize);
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpSplitPmd));
        Assert.False(Pde(space, start.Value).IsLeaf);
        for (int i = 0; i < 512; i++)
        {
            PageTableEntry pte = Pte(space, start.Value + ((ulong)i * K4));
            if (i == 5)
            {
                Assert.True(pte.IsWritable && pte.IsDirty);
                Assert.Equal(write.PhysicalAddress.AlignDown(PageSize.Size4K), pte.Address);
            }
            else
            {
                Assert.True(pte.IsPresent && !pte.IsWritable);
                Assert.Equal(space.ZeroPage.Address, pte.Address);
            }
        }

        Assert.Equal(1, space.Node.FolioOf(write.PhysicalAddress.FrameNumber).RefCount);
    }

    [Fact]
    public void Accesses_outside_vmas_or_against_the_vma_rights_segfault_and_change_nothing()
    {
        AddressSpace space = Create(s_always);
        VirtualAddress start = space.Map(4 * K4, Protection.Read);
        ulong free = space.Node.Buddy.FreeFrames;

        Assert.Equal(AccessStatus.Segfault, space.Access(start.Add(4 * K4), AccessKind.Read).Status);
        Assert.Equal(AccessStatus.Segfault, space.Access(start, AccessKind.Write).Status);
        Assert.Equal(AccessStatus.Segfault, space.Access(start, AccessKind.Fetch).Status);
        Assert.Equal(AccessStatus.Segfault, space.Access(VirtualAddress.FromRaw(0x0000_8000_0000_0000), AccessKind.Read).Status);

        Assert.Equal(free, space.Node.Buddy.FreeFrames);
        Assert.Equal(0, space.Counters.Get(VmEvent.PgFault));
        Assert.Null(Entry(space, start.Value, PagingLevel.Pd));

        Assert.Equal(FaultAction.MappedZeroPage, space.Access(start, AccessKind.Read).Fault);
        Assert.Equal(AccessStatus.Segfault, space.Access(start, AccessKind.Write).Status);
        Assert.False(Pte(space, start.Value).IsWritable);
    }

    [Fact]
    public void Unmap_clears_the_entries_and_returns_the_folios_to_the_buddy_allocator()
    {
        AddressSpace space = Create(s_always);
        VirtualAddress small = space.Map(4 * K4, Rw);
        VirtualAddress large = space.Map(2 * M2, Rw);
        ulong free = space.Node.Buddy.FreeFrames;
        space.Access(small, AccessKind.Write);
        space.Access(small.Add(K4), AccessKind.Write);
        space.Access(small.Add(2 * K4), AccessKind.Read);
        space.Access(large, AccessKind.Write);
        space.Unmap(small, 4 * K4);
        space.Unmap(large, 2 * M2);

        Assert.Empty(space.Vmas.All);
        Assert.Equal(0UL, Pte(space, small.Value).Raw);
        Assert.Equal(0UL, Pte(space, small.Value + (2 * K4)).Raw);
        Assert.Equal(0UL, Pde(space, large.Value).Raw);
        // No VMA is left, so free_pgtables frees every table below the root; the THP's deposited table goes with it.
        Assert.Equal(free, space.Node.Buddy.FreeFrames);
        Assert.Equal(0UL, AddressSpaceTests.Entry(space, small.Value, PagingLevel.Pml4));
        Assert.Equal(1, space.ZeroPage.RefCount);
    }

    [Fact]
    public void A_partial_unmap_of_a_huge_page_splits_the_pmd_and_queues_the_folio_for_deferred_split()
    {
        AddressSpace space = Create(s_always);
        VirtualAddress start = space.Map(2 * M2, Rw);
        space.Access(start, AccessKind.Write);
        Folio folio = space.Node.FolioOf(Pde(space, start.Value).Address.FrameNumber);

        space.Unmap(start.Add(K4), K4);

        Assert.Equal(1, space.Counters.Get(VmEvent.ThpSplitPmd));
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpDeferredSplitPage));
        Assert.False(Pde(space, start.Value).IsLeaf);
        Assert.Equal(0UL, Pte(space, start.Value + K4).Raw);
        Assert.Equal(folio.Address, Pte(space, start.Value).Address);
        Assert.Equal(511, folio.RefCount);
        Assert.Equal(511, folio.MapCount);
        Assert.Equal(0, folio.EntireMapCount);
        Assert.Equal(-1 + 1, folio.PageMapCount(1));
        Assert.True(folio.IsOnDeferredSplitQueue && folio.IsPartiallyMapped);
        Assert.Contains(folio, space.Node.DeferredSplitQueue);
        Assert.Equal(2, space.Vmas.Count);

        ulong free = space.Node.Buddy.FreeFrames;
        space.Unmap(start, 2 * M2);
        Assert.Equal(0, space.Node.DeferredSplitCount);
        // The folio, and the page table, directory and PDPT that no VMA needs any more.
        Assert.Equal(free + 512 + 3, space.Node.Buddy.FreeFrames);
    }

    [Fact]
    public void Mprotect_of_one_page_of_a_huge_page_leaves_it_pte_mapped_after_protecting_it_back()
    {
        AddressSpace space = Create(s_always);
        VirtualAddress start = space.Map(2 * M2, Rw);
        space.Access(start, AccessKind.Write);
        Folio folio = space.Node.FolioOf(Pde(space, start.Value).Address.FrameNumber);

        space.Protect(start.Add(3 * K4), K4, Protection.Read);

        Assert.Equal(3, space.Vmas.Count);
        Assert.False(Pte(space, start.Value + (3 * K4)).IsWritable);
        Assert.True(Pte(space, start.Value + (4 * K4)).IsWritable);
        Assert.Equal(AccessStatus.Segfault, space.Access(start.Add(3 * K4), AccessKind.Write).Status);

        space.Protect(start.Add(3 * K4), K4, Rw);

        Vma vma = Assert.Single(space.Vmas.All);
        Assert.Equal(start, vma.Start);
        Assert.Equal(Rw, vma.Protection);
        AssertPteMappedInOrder(space, start, folio);
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpSplitPmd));
        Assert.Equal(PageSize.Size4K, space.Access(start.Add(3 * K4), AccessKind.Write).PageSize);
    }

    [Fact]
    public void Split_huge_pmd_moves_pat_and_keeps_the_rights()
    {
        AddressSpace space = Create(s_always);
        VirtualAddress start = space.Map(2 * M2, Protection.Read | Protection.Write | Protection.Execute);
        space.Access(start, AccessKind.Write);
        PhysicalAddress slot = PhysicalAddress.Create((Entry(space, start.Value, PagingLevel.Pdpt)!.Value & PageTableEntry.AddressMask4K) + (((start.Value >> 21) & 0x1FF) * 8));
        ulong pde = ((IPhysicalMemory)space.Node.Memory).ReadUInt64(slot);
        space.Node.Memory.WriteUInt64(slot, pde | (1UL << 12));

        Assert.True(space.SplitHugePmd(start));
        Assert.False(space.SplitHugePmd(start));

        PageTableEntry pte = Pte(space, start.Value + (7 * K4));
        Assert.True(pte.Pat && pte.IsWritable && pte.IsDirty && !pte.IsExecuteDisable);
        Assert.Equal((pde & PageTableEntry.AddressMask2M) + (7 * K4), pte.Address.Value);
    }

    [Fact]
    public void Bad_lengths_are_rejected()
    {
        AddressSpace space = Create(s_always);
        Assert.Throws<ArgumentException>(() => space.Map(0, Rw));
        Assert.Throws<ArgumentException>(() => space.Map(100, Rw));
        Assert.Throws<ArgumentException>(() => space.Map(K4, Rw, VmaFlags.Anonymous | VmaFlags.Shared));
        Assert.Throws<InvalidOperationException>(() => space.Map(1UL << 47, Rw));
        Assert.Throws<ArgumentException>(() => space.Unmap(VirtualAddress.FromRaw(0x1001), K4));
        Assert.Throws<InvalidOperationException>(() => space.Protect(VirtualAddress.FromRaw(0x10000), K4, Protection.Read));
    }
}
