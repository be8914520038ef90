using System;
using System.Collections.Generic;
using System.Linq;
using ThpCore.Collapse;
using ThpCore.Diagnostics;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;
using ThpCore.Tests.Mm;
using Xunit;
using static ThpCore.Tests.Mm.MmFixtures;

namespace ThpCore.Tests.Collapse;

public sealed class InPlaceCollapseTests
{
    private static AddressSpace NewSpace() => new(new MemoryNode(64UL << 20), Always);

    // A THP faulted by a write, each page's first 8 bytes set to its index + 1 (a page of zeros would not tell).
    private static (VirtualAddress Start, Folio Folio) MapThp(AddressSpace space)
    {
        VirtualAddress start = space.Map(M2, Rw);
        AccessResult fault = space.Access(start, AccessKind.Write);
        Assert.Equal(FaultAction.MappedHugePage, fault.Fault);
        Folio folio = space.Node.FolioOf(fault.PhysicalAddress.FrameNumber);
        for (int i = 0; i < 512; i++)
        {
            BitConverter.TryWriteBytes(folio.GetWritablePage(i), (ulong)i + 1);
        }

        return (start, folio);
    }

    // The mprotect origin: protect one page read-only and back; the VMAs re-merge, the THP stays PTE-mapped.
    private static (VirtualAddress Start, Folio Folio) PteMappedThp(AddressSpace space)
    {
        (VirtualAddress start, Folio folio) = MapThp(space);
        space.Protect(start.Add(K4), K4, Protection.Read);
        space.Protect(start.Add(K4), K4, Rw);
        Vma vma = space.Vmas.Find(start)!;
        Assert.True(vma.Start.Value <= start.Value && vma.End.Value >= start.Value + M2); // re-merged
        AddressSpaceTests.AssertPteMappedInOrder(space, start, folio);
        return (start, folio);
    }

    private static void AssertBytes(AddressSpace space, VirtualAddress start, int from = 0, int to = 512)
    {
        for (int i = from; i < to; i++)
        {
            AccessResult read = space.Access(start.Add((ulong)i * K4), AccessKind.Read);
            Assert.True(read.IsTranslated);
            Assert.Equal((ulong)i + 1, BitConverter.ToUInt64(space.Node.Memory.ReadFrame(read.PhysicalAddress.FrameNumber)[..8]));
        }
    }

    // The PMD leaf and the folio after a collapse: one PMD mapping holding one reference, the rest as given.
    private static void AssertCollapsed(AddressSpace space, VirtualAddress start, Folio folio, bool writable, int otherMappings = 0, int pins = 0, int cacheReferences = 0, int otherPmds = 0)
    {
        PageTableEntry pde = AddressSpaceTests.Pde(space, start.Value);
        Assert.True(pde.IsPresent && pde.IsLeaf && pde.IsUser && pde.IsExecuteDisable);
        Assert.Equal(folio.Address, pde.Address);
        Assert.Equal(writable, pde.IsWritable);
        Assert.Equal(1 + otherPmds, folio.EntireMapCount);
        Assert.Equal(1 + otherMappings, folio.MapCount);
        Assert.Equal(1 + otherMappings + pins + cacheReferences, folio.RefCount);
        Assert.Equal(pins, folio.PinCount);
        Assert.Equal(writable, folio.IsAnonExclusive(0));
        Assert.All(Enumerable.Range(1, 511), i => Assert.False(folio.IsAnonExclusive(i)));
        Assert.False(folio.IsOnDeferredSplitQueue);
        Assert.False(folio.IsPartiallyMapped);
    }

    private static CollapseResult CollapseAndCheckFrames(AddressSpace space, VirtualAddress start, InPlaceCollapseOptions? options = null)
    {
        ulong free = space.Node.Buddy.FreeFrames;
        long collapsed = space.Counters.Get(VmEvent.ThpCollapseInPlace);
        CollapseResult result = Collapser.TryCollapseInPlace(space, start.Add(0x1_2345), options);
        Assert.Equal(CollapseStatus.Succeed, result.Status);
        Assert.Equal(CollapsePath.InPlace, result.Path);
        Assert.Equal(start, result.Address);
        Assert.True(result.IsPmdMapped);
        Assert.Equal(collapsed + 1, space.Counters.Get(VmEvent.ThpCollapseInPlace));

        // No frame freed or taken: the page table became the PMD's deposited table.
        Assert.Equal(free, space.Node.Buddy.FreeFrames);
        return result;
    }

    [Fact]
    public void The_mprotect_origin_collapses_in_place_to_a_writable_exclusive_PMD()
    {
        AddressSpace space = NewSpace();
        (VirtualAddress start, Folio folio) = PteMappedThp(space);
        CollapseResult result = CollapseAndCheckFrames(space, start);
        Assert.Equal(folio.Address, result.Folio);
        Assert.Equal(new TlbRangeInvalidation(start, M2), result.Invalidation);
        AssertCollapsed(space, start, folio, writable: true);
        Assert.True(AddressSpaceTests.Pde(space, start.Value).IsDirty);
        Assert.True(folio.IsDirty);
        Assert.Null(MmBooks.Check([space], [], null));
        AssertBytes(space, start);
        Assert.Equal(PageSize.Size2M, space.Access(start.Add(77 * K4), AccessKind.Write).PageSize);

        // The deposited table makes a later split free of allocation, and the range can be collapsed again.
        ulong free = space.Node.Buddy.FreeFrames;
        Assert.True(space.SplitHugePmd(start));
        Assert.Equal(free, space.Node.Buddy.FreeFrames);
        AddressSpaceTests.AssertPteMappedInOrder(space, start, folio);

        // Queued as partially mapped (the model's operations never leave a wholly PTE-mapped folio queued, a host
        // may): the collapse takes it off the queue and clears the mark (folio_unqueue_deferred_split).
        folio.QueueForDeferredSplit(partiallyMapped: true);
        Assert.Equal(1, space.Node.DeferredSplitCount);
        CollapseAndCheckFrames(space, start);
        Assert.False(folio.IsOnDeferredSplitQueue || folio.IsPartiallyMapped);
        Assert.Equal(0, space.Node.DeferredSplitCount);
        space.Dispose();
    }

    [Fact]
    public void The_madvise_origin_collapses_in_place()
    {
        AddressSpace space = NewSpace();
        (VirtualAddress start, Folio folio) = MapThp(space);
        space.Advise(start.Add(8 * K4), 4 * K4, Advice.NoHugePage);
        space.Advise(start, M2, Advice.HugePage);
        AssertOriginCollapses(space, start, folio);
    }

    [Fact]
    public void The_mremap_origin_collapses_in_place()
    {
        AddressSpace space = NewSpace();
        (VirtualAddress start, Folio folio) = MapThp(space);
        VirtualAddress spare = space.Map(4 * K4, Rw);
        VirtualAddress away = space.Remap(start.Add(16 * K4), 4 * K4, 4 * K4, RemapFlags.MayMove | RemapFlags.Fixed, spare);
        Assert.Equal(3, space.Vmas.All.Count);
        space.Remap(away, 4 * K4, 4 * K4, RemapFlags.MayMove | RemapFlags.Fixed, start.Add(16 * K4));
        AssertOriginCollapses(space, start, folio);
    }

    [Fact]
    public void The_mlock_origin_collapses_in_place()
    {
        AddressSpace space = NewSpace();
        (VirtualAddress start, Folio folio) = MapThp(space);
        space.Lock(start.Add(K4), K4);
        space.Unlock(start.Add(K4), K4);
        AssertOriginCollapses(space, start, folio);
    }

    // An origin left one VMA and the THP PTE-mapped in order; it collapses to a writable exclusive PMD, books and bytes intact.
    private static void AssertOriginCollapses(AddressSpace space, VirtualAddress start, Folio folio)
    {
        Assert.Single(space.Vmas.All);
        AddressSpaceTests.AssertPteMappedInOrder(space, start, folio);
        CollapseAndCheckFrames(space, start);
        AssertCollapsed(space, start, folio, writable: true);
        Assert.Null(MmBooks.Check([space], [], null));
        AssertBytes(space, start);
    }

    [Fact]
    public void The_swap_cache_origin_collapses_in_place_once_every_page_is_refaulted()
    {
        AddressSpace space = NewSpace();
        var device = new SwapDevice(1, 4 * SwapDevice.ClusterSize);
        space.AttachSwap(device);
        (VirtualAddress start, Folio folio) = MapThp(space);
        Assert.True(space.SwapOut(start, keepInSwapCache: true).IsSwappedOut);
        Assert.True(folio.IsSwapCache);
        Assert.Equal(512, folio.RefCount); // the swap cache holds one reference per page, no pin

        // Refault every page; reads leave the PTEs clean, a write dirties one. A half-refaulted folio has holes.
        for (int i = 0; i < 512; i++)
        {
            Assert.Equal(FaultAction.SwapIn, space.Access(start.Add((ulong)i * K4), i == 3 ? AccessKind.Write : AccessKind.Read).Fault);
            if (i == 255)
            {
                Assert.Equal(CollapseStatus.InPlaceSwapPte, Collapser.TryCollapseInPlace(space, start).Status);
            }
        }

        // Every swap PTE was exclusive, so every page is exclusive and writable again; the last refault freed the slots
        // and took the folio out of the swap cache (folio_free_swap).
        Assert.False(folio.IsSwapCache);
        Assert.Equal(512, folio.RefCount);
        Assert.True(AddressSpaceTests.Pte(space, start.Value + (3 * K4)).IsDirty);
        Assert.False(AddressSpaceTests.Pte(space, start.Value + (4 * K4)).IsDirty);
        CollapseAndCheckFrames(space, start);
        AssertCollapsed(space, start, folio, writable: true);
        Assert.True(AddressSpaceTests.Pde(space, start.Value).IsDirty); // D is the OR over the PTEs
        Assert.Null(MmBooks.Check([space], [], device));
        AssertBytes(space, start);
    }

    [Fact]
    public void A_folio_still_in_the_swap_cache_collapses_in_place_read_only_after_fork_kept_its_slots()
    {
        AddressSpace parent = NewSpace();
        var device = new SwapDevice(1, 4 * SwapDevice.ClusterSize);
        parent.AttachSwap(device);
        (VirtualAddress start, Folio folio) = MapThp(parent);
        Assert.True(parent.SwapOut(start, keepInSwapCache: true).IsSwappedOut);
        AddressSpace child = parent.Fork(); // the child's swap PTEs keep the slots, so the folio stays cached
        for (int i = 0; i < 512; i++)
        {
            parent.Access(start.Add((ulong)i * K4), AccessKind.Read);
        }

        Assert.True(folio.IsSwapCache);
        Assert.False(folio.IsAnonExclusive(0));
        CollapseAndCheckFrames(parent, start);
        AssertCollapsed(parent, start, folio, writable: false, cacheReferences: 512);
        Assert.Null(MmBooks.Check([parent, child], [], device));
        AssertBytes(parent, start);
        AssertBytes(child, start);
    }

    [Fact]
    public void A_pinned_folio_collapses_in_place_and_keeps_its_pins()
    {
        AddressSpace space = NewSpace();
        (VirtualAddress start, Folio folio) = PteMappedThp(space);
        PinHandle pins = space.Pin(start, M2, write: true);
        Assert.Equal(512, folio.PinCount);
        CollapseAndCheckFrames(space, start);
        AssertCollapsed(space, start, folio, writable: true, pins: 512);
        Assert.Null(MmBooks.Check([space], [pins], null));
        Assert.Equal(folio.Address.Add(5 * K4), pins.Pages[5]); // the pinned frames did not move
        pins.Dispose();
        Assert.Equal(1, folio.RefCount);
        Assert.Null(MmBooks.Check([space], [], null));
    }

    [Fact]
    public void Collapse_after_fork_maps_a_read_only_shared_PMD_and_writes_never_cross()
    {
        AddressSpace parent = NewSpace();
        (VirtualAddress start, Folio folio) = PteMappedThp(parent);
        AddressSpace child = parent.Fork();
        Assert.All(Enumerable.Range(0, 512), i => Assert.False(folio.IsAnonExclusive(i)));
        CollapseAndCheckFrames(parent, start);
        AssertCollapsed(parent, start, folio, writable: false, otherMappings: 512);
        CollapseAndCheckFrames(child, start);
        AssertCollapsed(child, start, folio, writable: false, otherMappings: 1, otherPmds: 1);
        Assert.True(AddressSpaceTests.Pde(parent, start.Value).IsAccessed);
        Assert.False(AddressSpaceTests.Pde(child, start.Value).IsAccessed); // fork made every child PTE old; A is the OR
        Assert.Null(MmBooks.Check([parent, child], [], null));

        WriteMarks(parent, start, 0xFF);
        AssertBytes(child, start);
        WriteMarks(child, start, 0xEE, step: 7);
        AssertMarks(parent, start, 0xFF);
        Assert.Null(MmBooks.Check([parent, child], [], null));
    }

    [Fact]
    public void Collapse_before_fork_clears_tail_exclusivity_so_parent_writes_never_reach_the_child()
    {
        AddressSpace parent = NewSpace();
        (VirtualAddress start, Folio folio) = PteMappedThp(parent);
        CollapseAndCheckFrames(parent, start);
        AddressSpace child = parent.Fork();
        Assert.Equal(2, folio.EntireMapCount);

        // cow.c "collapse before fork": the parent writes over the whole THP; the child keeps the old data.
        WriteMarks(parent, start, 0xFF);
        AssertBytes(child, start);
        Assert.Null(MmBooks.Check([parent, child], [], null));
    }

    private static void WriteMarks(AddressSpace space, VirtualAddress start, byte mark, int step = 1)
    {
        for (int i = 0; i < 512; i += step)
        {
            AccessResult write = space.Access(start.Add((ulong)i * K4), AccessKind.Write);
            Assert.True(write.IsTranslated);
            space.Node.Memory.GetWritableFrame(write.PhysicalAddress.FrameNumber)[..8].Fill(mark);
        }
    }

    private static void AssertMarks(AddressSpace space, VirtualAddress start, byte mark)
    {
        for (int i = 0; i < 512; i++)
        {
            AccessResult read = space.Access(start.Add((ulong)i * K4), AccessKind.Read);
            Assert.Equal(mark, space.Node.Memory.ReadFrame(read.PhysicalAddress.FrameNumber)[0]);
        }
    }

    // Mixed exclusivity, built for real: the THP is swapped out with its pages exclusive and kept in the swap cache; the
    // first half is refaulted (exclusive again) and pinned; fork copies the pinned exclusive pages for the child
    // (copy_present_page) and makes the remaining swap PTEs shared; the parent refaults the second half, which now
    // comes back shared and read-only.
    private static (AddressSpace Parent, AddressSpace Child, VirtualAddress Start, Folio Folio, PinHandle Pins, SwapDevice Device) HalfExclusive()
    {
        AddressSpace parent = NewSpace();
        var device = new SwapDevice(1, 4 * SwapDevice.ClusterSize);
        parent.AttachSwap(device);
        (VirtualAddress start, Folio folio) = MapThp(parent);
        Assert.True(parent.SwapOut(start, keepInSwapCache: true).IsSwappedOut);
        for (int i = 0; i < 256; i++)
        {
            parent.Access(start.Add((ulong)i * K4), AccessKind.Read);
        }

        PinHandle pins = parent.Pin(start, 256 * K4, write: true);
        AddressSpace child = parent.Fork();
        for (int i = 256; i < 512; i++)
        {
            parent.Access(start.Add((ulong)i * K4), AccessKind.Read);
        }

        Assert.True(folio.IsAnonExclusive(0) && !folio.IsAnonExclusive(511));
        return (parent, child, start, folio, pins, device);
    }

    [Fact]
    public void Mixed_protections_refuse()
    {
        (AddressSpace parent, AddressSpace child, VirtualAddress start, _, PinHandle pins, SwapDevice device) = HalfExclusive();
        AssertRefused(parent, start, CollapseStatus.InPlaceMixedAttributes);
        Assert.Null(MmBooks.Check([parent, child], [pins], device));
    }

    [Fact]
    public void Mixed_exclusivity_refuses_even_with_equal_protections()
    {
        (AddressSpace parent, AddressSpace child, VirtualAddress start, _, PinHandle pins, SwapDevice device) = HalfExclusive();
        parent.Protect(start, M2, Protection.Read);
        AssertRefused(parent, start, CollapseStatus.InPlaceMixedExclusive);
        Assert.Null(MmBooks.Check([parent, child], [pins], device));
    }

    // Captures the range's PDE, PTEs, the folios' counts and the free frames, and checks a refusal changed none of it.
    private static void AssertRefused(AddressSpace space, VirtualAddress address, CollapseStatus expected)
    {
        ulong chunk = address.Value & ~(M2 - 1);
        string before = Describe(space, chunk);
        long failed = space.Counters.Get(VmEvent.ThpCollapseInPlaceFailed);
        CollapseResult result = Collapser.TryCollapseInPlace(space, address);
        Assert.Equal(expected, result.Status);
        Assert.Equal(CollapsePath.None, result.Path);
        Assert.Equal(PhysicalAddress.Zero, result.Folio);
        Assert.True(result.Invalidation.IsNone);
        Assert.Equal(before, Describe(space, chunk));
        Assert.Equal(expected == CollapseStatus.PmdMapped ? failed : failed + 1, space.Counters.Get(VmEvent.ThpCollapseInPlaceFailed));
    }

    private static string Describe(AddressSpace space, ulong chunk)
    {
        var text = new System.Text.StringBuilder();
        text.Append(space.Node.Buddy.FreeFrames).Append(' ').Append(AddressSpaceTests.Entry(space, chunk, PagingLevel.Pd)).Append('\n');
        for (ulong i = 0; i < 512; i++)
        {
            ulong? pte = AddressSpaceTests.Entry(space, chunk + (i * K4), PagingLevel.Pt);
            text.Append(pte).Append(' ');
            if (pte is ulong raw && (raw & 1) != 0 && space.Node.TryGetFolio(PhysicalAddress.FromMaskedBits(raw & PageTableEntry.AddressMask4K), out Folio folio))
            {
                int index = (int)(((raw & PageTableEntry.AddressMask4K) >> 12) - folio.HeadFrame);
                text.Append($"{folio} r{folio.RefCount} m{folio.MapCount} e{folio.EntireMapCount} p{folio.PinCount} x{folio.IsAnonExclusive(index)} q{folio.IsOnDeferredSplitQueue}\n");
            }
        }

        return text.ToString();
    }

    private static void WritePteRaw(AddressSpace space, VirtualAddress start, int index, Func<ulong, ulong> change)
    {
        ulong table = AddressSpaceTests.Entry(space, start.Value, PagingLevel.Pd)!.Value & PageTableEntry.AddressMask4K;
        var slot = PhysicalAddress.Create(table + ((ulong)index * 8));
        space.Node.Memory.WriteUInt64(slot, change(((IPhysicalMemory)space.Node.Memory).ReadUInt64(slot)));
    }

    [Fact]
    public void Refusals_of_the_VMA_and_PMD_checks_change_nothing()
    {
        AddressSpace space = NewSpace();
        AssertRefused(space, VirtualAddress.FromRaw(0x1000_0000), CollapseStatus.VmaNull);

        VirtualAddress untouched = space.Map(M2, Rw);
        AssertRefused(space, untouched, CollapseStatus.PmdNull); // no table below the root yet

        VirtualAddress small = space.Map(16 * K4, Rw);
        space.Access(small, AccessKind.Write);
        AssertRefused(space, small, CollapseStatus.AddressRange);

        VirtualAddress two = space.Map(2 * M2, Rw);
        space.Access(two.Add(M2), AccessKind.Write);
        AssertRefused(space, two, CollapseStatus.PmdNone);
        AssertRefused(space, two.Add(M2), CollapseStatus.PmdMapped);

        (VirtualAddress start, _) = PteMappedThp(space);
        space.Advise(start, M2, Advice.NoHugePage);
        AssertRefused(space, start, CollapseStatus.VmaCheck);
        Assert.Null(MmBooks.Check([space], [], null));
    }

    [Fact]
    public void Holes_swap_entries_and_PROT_NONE_refuse()
    {
        AddressSpace space = NewSpace();
        space.AttachSwap(new SwapDevice(1, 4 * SwapDevice.ClusterSize));
        (VirtualAddress start, _) = PteMappedThp(space);
        space.Advise(start.Add(5 * K4), K4, Advice.DontNeed);
        AssertRefused(space, start, CollapseStatus.InPlaceHole);
        space.Access(start.Add(5 * K4), AccessKind.Read); // the zero page now fills the hole
        Assert.Equal(space.ZeroPage.Address, AddressSpaceTests.Pte(space, start.Value + (5 * K4)).Address);
        AssertRefused(space, start, CollapseStatus.InPlaceHole);

        (VirtualAddress swapped, _) = PteMappedThp(space);
        Assert.True(space.SwapOut(swapped).IsSwappedOut);
        AssertRefused(space, swapped, CollapseStatus.InPlaceSwapPte);

        (VirtualAddress none, _) = PteMappedThp(space);
        space.Protect(none, M2, Protection.None);
        AssertRefused(space, none, CollapseStatus.PteNonPresent);
        Assert.Null(MmBooks.Check([space], [], space.Swap));
    }

    [Fact]
    public void Mixed_folios_refuse_a_COW_copy_in_the_run_and_small_pages()
    {
        AddressSpace space = NewSpace();
        (VirtualAddress start, _) = PteMappedThp(space);
        space.Advise(start.Add(5 * K4), K4, Advice.DontNeed);
        space.Access(start.Add(5 * K4), AccessKind.Write); // an order-0 page at slot 5
        AssertRefused(space, start, CollapseStatus.InPlaceMixedFolios);

        AddressSpace small = new(new MemoryNode(64UL << 20), Never);
        VirtualAddress pages = small.Map(M2, Rw);
        for (ulong i = 0; i < 512; i++)
        {
            small.Access(pages.Add(i * K4), AccessKind.Write);
        }

        AssertRefused(small, pages, CollapseStatus.InPlaceMixedFolios);
    }

    // Subpages at the wrong slots cannot arise from mremap in one VMA (anonymous VMAs merge only when their page
    // offsets line up, so pages moved out of order leave several VMAs: AddressRange); a host editing the table can.
    [Fact]
    public void Subpages_out_of_order_refuse()
    {
        AddressSpace space = NewSpace();
        (VirtualAddress start, Folio folio) = PteMappedThp(space);
        WritePteRaw(space, start, 1, pte => (pte & ~PageTableEntry.AddressMask4K) | folio.Address.Add(2 * K4).Value);
        WritePteRaw(space, start, 2, pte => (pte & ~PageTableEntry.AddressMask4K) | folio.Address.Add(K4).Value);
        AssertRefused(space, start, CollapseStatus.InPlaceOutOfOrder);
        Assert.Null(MmBooks.Check([space], [], null));
    }

    // Both states break Linux's invariants (a PageAnonExclusive page is mapped by one process only; a shared page is
    // never mapped writable), so only a host editing folios or tables builds them; the engine still refuses them.
    [Fact]
    public void Exclusive_pages_mapped_elsewhere_and_writable_shared_pages_refuse()
    {
        AddressSpace parent = NewSpace();
        (VirtualAddress start, Folio folio) = PteMappedThp(parent);
        AddressSpace child = parent.Fork();
        for (int i = 0; i < 512; i++)
        {
            folio.SetAnonExclusive(i, true);
        }

        AssertRefused(parent, start, CollapseStatus.InPlaceSharedWithOthers);
        for (int i = 0; i < 512; i++)
        {
            folio.SetAnonExclusive(i, false);
            WritePteRaw(parent, start, i, pte => pte | 2);
        }

        AssertRefused(parent, start, CollapseStatus.InPlaceWritableShared);
        Assert.Null(MmBooks.Check([parent, child], [], null));
    }

    [Fact]
    public void Misuse_throws()
    {
        AddressSpace space = NewSpace();
        Assert.Throws<ArgumentNullException>(() => Collapser.TryCollapseInPlace(null!, default));
        Assert.Throws<ArgumentOutOfRangeException>(() => Collapser.TryCollapseInPlace(space, default, new InPlaceCollapseOptions { Order = (PromotionOrder)7 }));
        space.Dispose();
        Assert.Throws<ObjectDisposedException>(() => Collapser.TryCollapseInPlace(space, default));
    }

    // A TLB big enough to hold all 512 translations (512 sets of 4 ways), filled by reads through the PTEs.
    private static Tlb FilledTlb(AddressSpace space, VirtualAddress start, SizeConflictRule rule = SizeConflictRule.IntelSdm)
    {
        var tlb = new Tlb(new TlbOptions { Entries4K = 2048, Associativity4K = 4, SizeConflictRule = rule });
        for (ulong i = 0; i < 512; i++)
        {
            Assert.Equal(PageSize.Size4K, tlb.Translate(space.Cpu, space.Node.Memory, start.Add(i * K4), AccessKind.Read, Privilege.User).PageSize);
        }

        return tlb;
    }

    // Every address of the range: no 4 KiB entry left, and a translation now gives the PMD's 2 MiB mapping.
    private static void AssertOnlyTheHugeTranslation(Tlb tlb, AddressSpace space, VirtualAddress start, Folio folio)
    {
        for (ulong i = 0; i < 512; i++)
        {
            VirtualAddress va = start.Add((i * K4) + 8);
            Assert.DoesNotContain(tlb.LookupAll(space.Cpu, va), e => e.PageSize == PageSize.Size4K);
            WalkResult walk = tlb.Translate(space.Cpu, space.Node.Memory, va, AccessKind.Read, Privilege.User);
            Assert.Equal(PageSize.Size2M, walk.PageSize);
            Assert.Equal(folio.Address.Add((i * K4) + 8), walk.PhysicalAddress);
            Assert.False(tlb.HasConflictingSizes(space.Cpu, va));
        }
    }

    [Theory]
    [InlineData(PromotionOrder.BreakBeforeMake)]
    [InlineData(PromotionOrder.SingleWrite)]
    public void With_a_TLB_given_the_collapse_invalidates_it_and_no_4K_translation_survives(PromotionOrder order)
    {
        AddressSpace space = NewSpace();
        (VirtualAddress start, Folio folio) = PteMappedThp(space);
        Tlb tlb = FilledTlb(space, start, SizeConflictRule.AmdErratum383);
        CollapseResult result = CollapseAndCheckFrames(space, start, new InPlaceCollapseOptions { Order = order, Tlb = tlb });
        Assert.True(result.Invalidation.IsNone);
        AssertOnlyTheHugeTranslation(tlb, space, start, folio);
    }

    [Theory]
    [InlineData(PromotionOrder.BreakBeforeMake)]
    [InlineData(PromotionOrder.SingleWrite)]
    public void The_returned_invalidation_removes_the_stale_4K_entries_that_otherwise_coexist_with_the_2M_one(PromotionOrder order)
    {
        AddressSpace space = NewSpace();
        (VirtualAddress start, Folio folio) = PteMappedThp(space);
        Tlb tlb = FilledTlb(space, start, SizeConflictRule.AmdErratum383);
        CollapseResult result = CollapseAndCheckFrames(space, start, new InPlaceCollapseOptions { Order = order });

        // Not yet applied: one INVLPG (enough for a 2 MiB leaf) lets the walk cache the 2 MiB entry, next to 511 stale
        // 4 KiB ones. They agree in frame and rights (fine by the SDM), but two sizes coexist (AMD erratum 383).
        tlb.Invlpg(space.Cpu, start);
        Assert.Equal(PageSize.Size2M, tlb.Translate(space.Cpu, space.Node.Memory, start, AccessKind.Read, Privilege.User).PageSize);
        VirtualAddress other = start.Add(9 * K4);
        Assert.Equal(PageSize.Size4K, tlb.Translate(space.Cpu, space.Node.Memory, other, AccessKind.Read, Privilege.User).PageSize);
        Assert.Equal(TlbSizeConflict.SizesCoexist, tlb.FindSizeConflicts(space.Cpu, other));
        Assert.True(tlb.HasConflictingSizes(space.Cpu, other));

        result.Invalidation.ApplyTo(tlb, space.Cpu);
        AssertOnlyTheHugeTranslation(tlb, space, start, folio);
    }

    [Fact]
    public void Skipping_the_invalidation_lets_a_later_PMD_change_leave_writable_stale_4K_entries()
    {
        AddressSpace space = NewSpace();
        (VirtualAddress start, _) = PteMappedThp(space);
        Tlb tlb = FilledTlb(space, start);
        Collapser.TryCollapseInPlace(space, start, new InPlaceCollapseOptions { Order = PromotionOrder.SingleWrite });

        // mprotect of the whole PMD to read-only; a 2 MiB leaf is invalidated with one INVLPG of its address.
        space.Protect(start, M2, Protection.Read);
        tlb.Invlpg(space.Cpu, start);
        VirtualAddress va = start.Add(3 * K4);
        Assert.Equal(WalkStatus.PageFault, PageWalker.Translate(space.Cpu, space.Node.Memory, va, AccessKind.Write, Privilege.User).Status);
        WalkResult stale = tlb.Translate(space.Cpu, space.Node.Memory, va, AccessKind.Write, Privilege.User);
        Assert.True(stale.IsTranslated); // the stale writable 4 KiB entry still lets the write through
        Assert.Equal(PageSize.Size4K, stale.PageSize);
    }
}
