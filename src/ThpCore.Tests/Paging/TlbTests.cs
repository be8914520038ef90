using System;
using ThpCore.Paging;
using Xunit;
using static ThpCore.Tests.Paging.TestTables;

namespace ThpCore.Tests.Paging;

public sealed class TlbTests
{
    private const ulong Page = 0x7F00_0020_1000;
    private const ulong FrameA = 0x4000_1000;
    private const ulong FrameB = 0x5555_5000;

    /// <summary>The shared test tables over the 64 MiB of memory the TLB tests have always used (tables from 1 MiB).</summary>
    internal static TestTables NewTables() => new(memorySize: 64UL << 20);

    [Fact]
    public void Hits_misses_and_walks_are_counted()
    {
        var t = NewTables();
        t.Map(Page, PageSize.Size4K, FrameA, P | RW | US);
        var tlb = new Tlb();
        CpuState cpu = t.Cpu(Cr4Flags.Pge);

        WalkResult first = tlb.Translate(cpu, t.Memory, Va(Page + 0x10), AccessKind.Read, Privilege.User, out TlbOutcome o1);
        WalkResult second = tlb.Translate(cpu, t.Memory, Va(Page + 0x20), AccessKind.Read, Privilege.User, out TlbOutcome o2);

        Assert.Equal(TlbOutcome.Miss, o1);
        Assert.Equal(TlbOutcome.Hit, o2);
        Assert.Equal(FrameA + 0x10, first.PhysicalAddress.Value);
        Assert.Equal(FrameA + 0x20, second.PhysicalAddress.Value);
        Assert.Equal((1L, 1L, 1L), (tlb.Hits, tlb.Misses, tlb.Walks));
        Assert.Equal(1, tlb.Count);

        tlb.ResetStatistics();
        Assert.Equal((0L, 0L, 0L), (tlb.Hits, tlb.Misses, tlb.Walks));
    }

    [Fact]
    public void A_hit_returns_the_cached_frame_after_the_table_changed()
    {
        var t = NewTables();
        ulong pte = t.Map(Page, PageSize.Size4K, FrameA, P | RW | US);
        var tlb = new Tlb();
        CpuState cpu = t.Cpu(Cr4Flags.Pge);
        tlb.Translate(cpu, t.Memory, Va(Page), AccessKind.Read, Privilege.User);

        t.Write(pte, FrameB | RW | US | P);
        WalkResult stale = tlb.Translate(cpu, t.Memory, Va(Page + 8), AccessKind.Read, Privilege.User);
        Assert.Equal(FrameA + 8, stale.PhysicalAddress.Value);

        t.Write(pte, 0);
        Assert.Equal(FrameA + 8, tlb.Translate(cpu, t.Memory, Va(Page + 8), AccessKind.Read, Privilege.User).PhysicalAddress.Value);
    }

    [Fact]
    public void After_INVLPG_the_translation_is_fresh()
    {
        var t = NewTables();
        ulong pte = t.Map(Page, PageSize.Size4K, FrameA, P | RW | US);
        var tlb = new Tlb();
        CpuState cpu = t.Cpu(Cr4Flags.Pge);
        tlb.Translate(cpu, t.Memory, Va(Page), AccessKind.Read, Privilege.User);

        t.Write(pte, FrameB | RW | US | P);
        tlb.Invlpg(cpu, Va(Page + 0xFFF));

        Assert.Equal(FrameB, tlb.Translate(cpu, t.Memory, Va(Page), AccessKind.Read, Privilege.User).PhysicalAddress.Value);
        Assert.Equal(2L, tlb.Misses);
    }

    [Fact]
    public void A_hit_reads_no_memory_at_all()
    {
        var t = NewTables();
        t.Map(Page, PageSize.Size4K, FrameA, P | RW | US);
        var tlb = new Tlb();
        CpuState cpu = t.Cpu(Cr4Flags.Pge);
        tlb.Translate(cpu, t.Memory, Va(Page), AccessKind.Read, Privilege.User);

        var empty = new SparsePhysicalMemory(1UL << 20);
        WalkResult hit = tlb.Translate(cpu, empty, Va(Page), AccessKind.Read, Privilege.User);

        Assert.True(hit.IsTranslated);
        Assert.Equal(FrameA, hit.PhysicalAddress.Value);
        Assert.Equal(0, empty.MaterializedFrames);
    }

    [Fact]
    public void A_hit_rechecks_the_cached_rights_against_the_current_cpu_state()
    {
        var t = NewTables();
        t.Map(Page, PageSize.Size4K, FrameA, P | RW | US);
        var tlb = new Tlb();
        CpuState cpu = t.Cpu(Cr4Flags.Pge);
        tlb.Translate(cpu, t.Memory, Va(Page), AccessKind.Read, Privilege.Supervisor);

        WalkResult smap = tlb.Translate(t.Cpu(Cr4Flags.Pge | Cr4Flags.Smap), t.Memory, Va(Page), AccessKind.Read, Privilege.Supervisor, out TlbOutcome outcome);

        Assert.Equal(TlbOutcome.Hit, outcome);
        Assert.Equal(WalkStatus.PageFault, smap.Status);
        Assert.Equal(PageFaultErrorCode.Present, smap.ErrorCode);
        Assert.Equal(PagingLevel.Pt, smap.FaultLevel);
        Assert.Equal(0L, tlb.Walks - tlb.Misses);
    }

    [Fact]
    public void A_protection_fault_from_a_stale_entry_happens_once_and_drops_the_entry()
    {
        var t = NewTables();
        ulong pte = t.Map(Page, PageSize.Size4K, FrameA, P | US);
        var tlb = new Tlb();
        CpuState cpu = t.Cpu(Cr4Flags.Pge);
        tlb.Translate(cpu, t.Memory, Va(Page), AccessKind.Read, Privilege.User);

        // R/W 0 -> 1 without invalidation: the first write may fault (SDM 4.10.4.3), the next one walks.
        t.Write(pte, FrameA | RW | US | P | A);
        WalkResult spurious = tlb.Translate(cpu, t.Memory, Va(Page), AccessKind.Write, Privilege.User, out TlbOutcome o1);
        Assert.Equal(TlbOutcome.Hit, o1);
        Assert.Equal(PageFaultErrorCode.Present | PageFaultErrorCode.Write | PageFaultErrorCode.User, spurious.ErrorCode);
        Assert.Equal(0, tlb.Count);

        WalkResult retry = tlb.Translate(cpu, t.Memory, Va(Page), AccessKind.Write, Privilege.User, out TlbOutcome o2);
        Assert.Equal(TlbOutcome.Miss, o2);
        Assert.True(retry.IsTranslated);
    }

    [Fact]
    public void With_RewalkOnProtectionFault_a_stale_read_only_entry_is_walked_again_instead_of_faulting()
    {
        var t = NewTables();
        ulong pte = t.Map(Page, PageSize.Size4K, FrameA, P | US);
        var tlb = new Tlb(new TlbOptions { RewalkOnProtectionFault = true });
        CpuState cpu = t.Cpu(Cr4Flags.Pge);
        tlb.Translate(cpu, t.Memory, Va(Page), AccessKind.Read, Privilege.User);

        t.Write(pte, FrameA | RW | US | P | A);
        WalkResult write = tlb.Translate(cpu, t.Memory, Va(Page), AccessKind.Write, Privilege.User, out TlbOutcome outcome);

        Assert.Equal(TlbOutcome.ProtectionRewalk, outcome);
        Assert.True(write.IsTranslated);
        Assert.True(tlb.TryLookup(cpu, Va(Page), out TlbEntry entry) && entry.IsWritable && entry.IsDirty);
        Assert.Equal((1L, 1L, 2L), (tlb.Hits, tlb.Misses, tlb.Walks));
    }

    [Fact]
    public void A_faulting_walk_caches_nothing()
    {
        var t = NewTables();
        t.Map(Page, PageSize.Size4K, FrameA, P | RW); // supervisor page
        var tlb = new Tlb();
        CpuState cpu = t.Cpu(Cr4Flags.Pge);

        Assert.Equal(WalkStatus.PageFault, tlb.Translate(cpu, t.Memory, Va(Page + 0x1000), AccessKind.Read, Privilege.Supervisor).Status);
        Assert.Equal(WalkStatus.PageFault, tlb.Translate(cpu, t.Memory, Va(Page), AccessKind.Read, Privilege.User).Status);
        Assert.Equal(0, tlb.Count);
        Assert.Equal((0L, 2L, 2L), (tlb.Hits, tlb.Misses, tlb.Walks));
    }

    [Fact]
    public void A_write_hit_on_a_clean_entry_walks_again_and_sets_D()
    {
        var t = NewTables();
        ulong pte = t.Map(Page, PageSize.Size4K, FrameA, P | RW | US);
        var tlb = new Tlb();
        CpuState cpu = t.Cpu(Cr4Flags.Pge);

        tlb.Translate(cpu, t.Memory, Va(Page), AccessKind.Read, Privilege.User);
        Assert.Equal(A, t.Read(pte) & (A | D));
        Assert.True(tlb.TryLookup(cpu, Va(Page), out TlbEntry clean) && !clean.IsDirty);

        WalkResult write = tlb.Translate(cpu, t.Memory, Va(Page), AccessKind.Write, Privilege.User, out TlbOutcome o1);
        Assert.Equal(TlbOutcome.DirtyRewalk, o1);
        Assert.True(write.IsTranslated);
        Assert.Equal(A | D, t.Read(pte) & (A | D));
        Assert.True(tlb.TryLookup(cpu, Va(Page), out TlbEntry dirty) && dirty.IsDirty);

        tlb.Translate(cpu, t.Memory, Va(Page), AccessKind.Write, Privilege.User, out TlbOutcome o2);
        Assert.Equal(TlbOutcome.Hit, o2);
        Assert.Equal((2L, 1L, 2L), (tlb.Hits, tlb.Misses, tlb.Walks));
        Assert.Equal(1, tlb.Count);
    }

    [Fact]
    public void D_cleared_in_memory_without_invalidation_is_not_set_again_by_a_dirty_entry()
    {
        var t = NewTables();
        ulong pte = t.Map(Page, PageSize.Size4K, FrameA, P | RW | US);
        var tlb = new Tlb();
        CpuState cpu = t.Cpu(Cr4Flags.Pge);
        tlb.Translate(cpu, t.Memory, Va(Page), AccessKind.Write, Privilege.User);
        Assert.NotEqual(0UL, t.Read(pte) & D);

        t.Write(pte, t.Read(pte) & ~D);
        tlb.Translate(cpu, t.Memory, Va(Page), AccessKind.Write, Privilege.User);
        Assert.Equal(0UL, t.Read(pte) & D); // SDM 4.10.4.3: the update is lost until INVLPG

        tlb.Invlpg(cpu, Va(Page));
        tlb.Translate(cpu, t.Memory, Va(Page), AccessKind.Write, Privilege.User);
        Assert.NotEqual(0UL, t.Read(pte) & D);
    }

    [Fact]
    public void Globals_survive_LoadCr3_but_not_FlushAll_or_INVPCID_type_2()
    {
        var t = NewTables();
        t.Map(Page, PageSize.Size4K, FrameA, P | RW | G);
        t.Map(Page + 0x1000, PageSize.Size4K, FrameB, P | RW);
        var tlb = new Tlb();
        CpuState cpu = t.Cpu(Cr4Flags.Pge);

        void Fill()
        {
            tlb.Translate(cpu, t.Memory, Va(Page), AccessKind.Read, Privilege.Supervisor);
            tlb.Translate(cpu, t.Memory, Va(Page + 0x1000), AccessKind.Read, Privilege.Supervisor);
        }

        Fill();
        Assert.True(tlb.TryLookup(cpu, Va(Page), out TlbEntry global) && global.IsGlobal);
        tlb.LoadCr3(cpu);
        Assert.True(tlb.TryLookup(cpu, Va(Page), out _));
        Assert.False(tlb.TryLookup(cpu, Va(Page + 0x1000), out _));

        tlb.FlushAll();
        Assert.Equal(0, tlb.Count);

        Fill();
        tlb.Invpcid(InvpcidType.AllContexts, 0, default);
        Assert.Equal(1, tlb.Count);
        tlb.Invpcid(InvpcidType.AllContextsIncludingGlobal, 0, default);
        Assert.Equal(0, tlb.Count);
    }

    [Fact]
    public void G_makes_no_global_entry_while_CR4_PGE_is_clear()
    {
        var t = NewTables();
        t.Map(Page, PageSize.Size4K, FrameA, P | RW | G);
        var tlb = new Tlb();
        CpuState cpu = CpuState.Create(t.Root, Cr4Flags.Pae);

        tlb.Translate(cpu, t.Memory, Va(Page), AccessKind.Read, Privilege.Supervisor);
        Assert.True(tlb.TryLookup(cpu, Va(Page), out TlbEntry entry) && !entry.IsGlobal);
        tlb.LoadCr3(cpu);
        Assert.Equal(0, tlb.Count);
    }

    [Fact]
    public void PCIDs_isolate_address_spaces_and_noFlush_keeps_the_old_translations()
    {
        var t = NewTables();
        ulong root2 = t.NewTable();
        t.Map(Page, PageSize.Size4K, FrameA, P | RW | US);
        t.Map(Page, PageSize.Size4K, FrameB, P | RW | US, root: root2);
        var tlb = new Tlb();
        CpuState one = t.Cpu(Cr4Flags.Pge | Cr4Flags.Pcide, pcid: 1);
        CpuState two = t.Cpu(Cr4Flags.Pge | Cr4Flags.Pcide, pcid: 2, root: root2);

        Assert.Equal(FrameA, tlb.Translate(one, t.Memory, Va(Page), AccessKind.Read, Privilege.User).PhysicalAddress.Value);
        tlb.LoadCr3(two);
        Assert.Equal(FrameB, tlb.Translate(two, t.Memory, Va(Page), AccessKind.Read, Privilege.User).PhysicalAddress.Value);
        Assert.Equal(2L, tlb.Misses);

        // Back to PCID 1 without flushing: its entry is still there and hits.
        tlb.LoadCr3(one, noFlush: true);
        Assert.Equal(FrameA, tlb.Translate(one, t.Memory, Va(Page), AccessKind.Read, Privilege.User, out TlbOutcome back).PhysicalAddress.Value);
        Assert.Equal(TlbOutcome.Hit, back);

        // With the flush, PCID 1 loses its entries; PCID 2 keeps its own.
        tlb.LoadCr3(one);
        Assert.False(tlb.TryLookup(one, Va(Page), out _));
        Assert.True(tlb.TryLookup(two, Va(Page), out TlbEntry kept) && kept.Pcid == 2);
        Assert.Equal(1, tlb.Count);
    }

    [Fact]
    public void Without_PCIDs_LoadCr3_flushes_every_non_global_entry_and_refuses_the_no_flush_hint()
    {
        var t = NewTables();
        t.Map(Page, PageSize.Size4K, FrameA, P | RW | US);
        var tlb = new Tlb();
        CpuState cpu = t.Cpu(Cr4Flags.Pge);
        tlb.Translate(cpu, t.Memory, Va(Page), AccessKind.Read, Privilege.User);

        ArgumentException e = Assert.Throws<ArgumentException>(() => tlb.LoadCr3(cpu, noFlush: true));
        Assert.Contains("PCIDE", e.Message, StringComparison.Ordinal);
        Assert.Equal(1, tlb.Count);

        tlb.LoadCr3(cpu);
        Assert.Equal(0, tlb.Count);
    }

    [Fact]
    public void INVLPG_removes_every_size_of_the_current_PCID_and_globals_of_any_PCID()
    {
        var t = NewTables();
        ulong root2 = t.NewTable();
        const ulong Big = 0x4000_0000; // 1 GiB-aligned
        t.Map(Big, PageSize.Size2M, 0x8000_0000, P | RW);
        t.Map(Page, PageSize.Size4K, FrameA, P | RW | G, root: root2);
        t.Map(Page + 0x1000, PageSize.Size4K, FrameB, P | RW, root: root2);
        t.Map(Page + 0x1000, PageSize.Size4K, FrameA, P | RW);
        var tlb = new Tlb();
        CpuState one = t.Cpu(Cr4Flags.Pge | Cr4Flags.Pcide, pcid: 1);
        CpuState two = t.Cpu(Cr4Flags.Pge | Cr4Flags.Pcide, pcid: 2, root: root2);

        tlb.Translate(two, t.Memory, Va(Page), AccessKind.Read, Privilege.Supervisor); // global, made under PCID 2
        tlb.Translate(two, t.Memory, Va(Page + 0x1000), AccessKind.Read, Privilege.Supervisor); // PCID 2
        tlb.Translate(one, t.Memory, Va(Page + 0x1000), AccessKind.Read, Privilege.Supervisor); // PCID 1
        tlb.Translate(one, t.Memory, Va(Big + 0x12_3456), AccessKind.Read, Privilege.Supervisor); // 2M, PCID 1
        Assert.Equal(4, tlb.Count);

        tlb.Invlpg(one, Va(Big + 0x1F_F000));
        Assert.False(tlb.TryLookup(one, Va(Big), out _));

        tlb.Invlpg(one, Va(Page));
        Assert.False(tlb.TryLookup(two, Va(Page), out _)); // global of PCID 2 gone

        tlb.Invlpg(one, Va(Page + 0x1000));
        Assert.False(tlb.TryLookup(one, Va(Page + 0x1000), out _));
        Assert.True(tlb.TryLookup(two, Va(Page + 0x1000), out TlbEntry other) && other.Pcid == 2);
        Assert.Equal(1, tlb.Count);
    }

    [Fact]
    public void INVPCID_individual_address_and_single_context_spare_globals_and_other_PCIDs()
    {
        var t = NewTables();
        t.Map(Page, PageSize.Size4K, FrameA, P | RW | G);
        t.Map(Page + 0x1000, PageSize.Size4K, FrameB, P | RW);
        var tlb = new Tlb();
        CpuState one = t.Cpu(Cr4Flags.Pge | Cr4Flags.Pcide, pcid: 1);
        CpuState two = t.Cpu(Cr4Flags.Pge | Cr4Flags.Pcide, pcid: 2);
        tlb.Translate(one, t.Memory, Va(Page), AccessKind.Read, Privilege.Supervisor);
        tlb.Translate(one, t.Memory, Va(Page + 0x1000), AccessKind.Read, Privilege.Supervisor);
        tlb.Translate(two, t.Memory, Va(Page + 0x1000), AccessKind.Read, Privilege.Supervisor);
        Assert.Equal(3, tlb.Count);

        tlb.Invpcid(InvpcidType.IndividualAddress, 1, Va(Page));
        Assert.Equal(3, tlb.Count); // the global one survives type 0

        tlb.Invpcid(InvpcidType.IndividualAddress, 1, Va(Page + 0x1000));
        Assert.False(tlb.TryLookup(one, Va(Page + 0x1000), out _));
        Assert.True(tlb.TryLookup(two, Va(Page + 0x1000), out _));

        tlb.Invpcid(InvpcidType.SingleContext, 2, default);
        Assert.False(tlb.TryLookup(two, Va(Page + 0x1000), out _));
        Assert.True(tlb.TryLookup(two, Va(Page), out TlbEntry global) && global.IsGlobal);
    }

    [Theory]
    [InlineData(SizeConflictPreference.PreferSmaller, FrameA + 8, PageSize.Size4K)]
    [InlineData(SizeConflictPreference.PreferLarger, 0x8000_1008UL, PageSize.Size2M)]
    public void Coexisting_2M_and_4K_entries_answer_by_the_documented_preference_and_are_reported(SizeConflictPreference preference, ulong expectedPhysical, PageSize expectedSize)
    {
        var t = NewTables();
        const ulong Range = 0x7F00_0020_0000; // 2 MiB-aligned
        t.Map(Range + 0x1000, PageSize.Size4K, FrameA, P | RW | US);
        ulong pde = t.EntryAddress(Range, PagingLevel.Pd);
        var tlb = new Tlb(new TlbOptions { SizeConflictPreference = preference });
        CpuState cpu = t.Cpu(Cr4Flags.Pge);
        tlb.Translate(cpu, t.Memory, Va(Range + 0x1000), AccessKind.Read, Privilege.User);

        // Remap the range by a 2 MiB page with another frame, without invalidation, and touch another 4 KiB of it.
        t.Write(pde, 0x8000_0000 | P | RW | US | PS);
        Assert.Equal(0x8000_5000UL, tlb.Translate(cpu, t.Memory, Va(Range + 0x5000), AccessKind.Read, Privilege.User).PhysicalAddress.Value);

        WalkResult both = tlb.Translate(cpu, t.Memory, Va(Range + 0x1008), AccessKind.Read, Privilege.User);
        Assert.Equal(expectedPhysical, both.PhysicalAddress.Value);
        Assert.Equal(expectedSize, both.PageSize);

        var all = tlb.LookupAll(cpu, Va(Range + 0x1008));
        Assert.Equal(2, all.Count);
        Assert.Equal(both.PageSize, all[0].PageSize);
        var one = new TlbEntry[1];
        Assert.Equal(2, tlb.LookupAll(cpu, Va(Range + 0x1008), one));
        Assert.Equal(all[0], one[0]);
        TlbSizeConflict conflict = tlb.FindSizeConflicts(cpu, Va(Range + 0x1008));
        Assert.Equal(TlbSizeConflict.SizesCoexist | TlbSizeConflict.FrameDiffers, conflict);
        Assert.True(tlb.HasConflictingSizes(cpu, Va(Range + 0x1008)));
        Assert.Equal(TlbSizeConflict.None, tlb.FindSizeConflicts(cpu, Va(Range + 0x5000)));

        // One INVLPG of the 2 MiB page does not remove the 4 KiB entry of another page in the range.
        tlb.Invlpg(cpu, Va(Range + 0x5000));
        Assert.True(tlb.TryLookup(cpu, Va(Range + 0x1000), out TlbEntry small) && small.PageSize == PageSize.Size4K);
        tlb.Invlpg(cpu, Va(Range + 0x1000));
        Assert.Equal(0, tlb.Count);
    }

    [Fact]
    public void An_identity_preserving_size_change_coexists_harmlessly_under_the_Intel_rule_but_not_under_erratum_383()
    {
        var t = NewTables();
        const ulong Range = 0x40_0000;
        ulong pde = t.EnsureEntry(Range, PagingLevel.Pd);
        for (ulong i = 0; i < 512; i++)
        {
            t.Map(Range + (i << 12), PageSize.Size4K, 0x20_0000 + (i << 12), P | RW | US | A | D);
        }

        var intel = new Tlb(new TlbOptions { TrackSizeConflicts = true });
        var amd = new Tlb(new TlbOptions { TrackSizeConflicts = true, SizeConflictRule = SizeConflictRule.AmdErratum383 });
        CpuState cpu = t.Cpu(Cr4Flags.Pge);
        foreach (Tlb tlb in new[] { intel, amd })
        {
            tlb.Translate(cpu, t.Memory, Va(Range + 0x3000), AccessKind.Write, Privilege.User);
        }

        t.Write(pde, 0x20_0000 | P | RW | US | A | D | PS); // same frames, rights and attributes
        foreach (Tlb tlb in new[] { intel, amd })
        {
            tlb.Translate(cpu, t.Memory, Va(Range + 0x9000), AccessKind.Write, Privilege.User);
            Assert.Equal(TlbSizeConflict.SizesCoexist, tlb.FindSizeConflicts(cpu, Va(Range + 0x3000)));
            tlb.Translate(cpu, t.Memory, Va(Range + 0x3000), AccessKind.Read, Privilege.User);
        }

        Assert.False(intel.HasConflictingSizes(cpu, Va(Range + 0x3000)));
        Assert.True(amd.HasConflictingSizes(cpu, Va(Range + 0x3000)));
        Assert.Equal(0L, intel.SizeConflictHits);
        Assert.Equal(1L, amd.SizeConflictHits);
    }

    [Fact]
    public void Size_conflicts_in_rights_and_attributes_are_told_apart()
    {
        var t = NewTables();
        const ulong Range = 0x40_0000;
        ulong pde = t.EnsureEntry(Range, PagingLevel.Pd);
        t.Map(Range, PageSize.Size4K, 0x20_0000, P | RW | US);
        var tlb = new Tlb();
        CpuState cpu = t.Cpu(Cr4Flags.Pge);
        tlb.Translate(cpu, t.Memory, Va(Range), AccessKind.Read, Privilege.User);

        t.Write(pde, 0x20_0000 | P | US | PCD | PS); // same frame, read-only, uncached
        tlb.Translate(cpu, t.Memory, Va(Range + 0x1000), AccessKind.Read, Privilege.User);

        Assert.Equal(
            TlbSizeConflict.SizesCoexist | TlbSizeConflict.RightsDiffer | TlbSizeConflict.AttributesDiffer,
            tlb.FindSizeConflicts(cpu, Va(Range + 0x10)));
    }

    [Fact]
    public void One_GiB_pages_are_cached_in_their_own_array()
    {
        var t = NewTables();
        const ulong Big = 0x80_0000_0000;
        t.Map(Big, PageSize.Size1G, 0x1_4000_0000, P | RW | US | XD);
        var tlb = new Tlb();
        CpuState cpu = t.Cpu(Cr4Flags.Pge);

        tlb.Translate(cpu, t.Memory, Va(Big + 0x1234_5678), AccessKind.Read, Privilege.User);
        WalkResult hit = tlb.Translate(cpu, t.Memory, Va(Big + 0x3FFF_FFF8), AccessKind.Read, Privilege.User, out TlbOutcome outcome);
        WalkResult fetch = tlb.Translate(cpu, t.Memory, Va(Big), AccessKind.Fetch, Privilege.User);

        Assert.Equal(TlbOutcome.Hit, outcome);
        Assert.Equal(0x1_7FFF_FFF8UL, hit.PhysicalAddress.Value);
        Assert.Equal(PageSize.Size1G, hit.PageSize);
        Assert.Equal(PageFaultErrorCode.Present | PageFaultErrorCode.User | PageFaultErrorCode.InstructionFetch, fetch.ErrorCode);
        Assert.Equal(PagingLevel.Pdpt, fetch.FaultLevel);
    }

    [Fact]
    public void A_full_set_evicts_round_robin_and_a_direct_mapped_TLB_thrashes()
    {
        var t = NewTables();
        for (ulong i = 0; i < 3; i++)
        {
            t.Map(Page + (i << 13), PageSize.Size4K, FrameA + (i << 12), P | RW); // page numbers two apart: all in one set of a 2-set TLB
        }

        var tlb = new Tlb(new TlbOptions { Entries4K = 4, Associativity4K = 2 });
        CpuState cpu = t.Cpu(Cr4Flags.Pge);
        for (ulong i = 0; i < 3; i++)
        {
            tlb.Translate(cpu, t.Memory, Va(Page + (i << 13)), AccessKind.Read, Privilege.Supervisor);
        }

        Assert.False(tlb.TryLookup(cpu, Va(Page), out _));
        Assert.True(tlb.TryLookup(cpu, Va(Page + 0x2000), out _));
        Assert.True(tlb.TryLookup(cpu, Va(Page + 0x4000), out _));

        var direct = new Tlb(new TlbOptions { Entries4K = 1, Associativity4K = 1 });
        for (int round = 0; round < 3; round++)
        {
            direct.Translate(cpu, t.Memory, Va(Page), AccessKind.Read, Privilege.Supervisor);
            direct.Translate(cpu, t.Memory, Va(Page + 0x2000), AccessKind.Read, Privilege.Supervisor);
        }

        Assert.Equal((0L, 6L), (direct.Hits, direct.Misses));
    }

    [Fact]
    public void A_non_canonical_address_is_a_general_protection_fault_and_is_not_counted()
    {
        var tlb = new Tlb();
        var t = NewTables();
        WalkResult r = tlb.Translate(t.Cpu(Cr4Flags.Pge), t.Memory, VirtualAddress.FromRaw(0x0000_8000_0000_0000), AccessKind.Read, Privilege.User, out TlbOutcome outcome);

        Assert.Equal(WalkStatus.GeneralProtection, r.Status);
        Assert.Equal(TlbOutcome.NonCanonical, outcome);
        Assert.Equal((0L, 0L, 0L), (tlb.Hits, tlb.Misses, tlb.Walks));
    }

    [Fact]
    public void Hits_allocate_nothing()
    {
        var t = NewTables();
        t.Map(Page, PageSize.Size4K, FrameA, P | RW | US);
        t.Map(0x4000_0000, PageSize.Size2M, 0x8000_0000, P | RW | US | D);
        var tlb = new Tlb();
        CpuState cpu = t.Cpu(Cr4Flags.Pge);
        tlb.Translate(cpu, t.Memory, Va(Page), AccessKind.Write, Privilege.User);
        tlb.Translate(cpu, t.Memory, Va(0x4000_0000), AccessKind.Write, Privilege.User);

        ulong sum = 0;
        long allocated = Allocations.SteadyState(() =>
        {
            for (int i = 0; i < 10_000; i++)
            {
                sum += tlb.Translate(cpu, t.Memory, Va(Page + ((ulong)i & 0xFF8)), AccessKind.Write, Privilege.User).PhysicalAddress.Value;
                sum += tlb.Translate(cpu, t.Memory, Va(0x4000_0000 + ((ulong)i << 3)), AccessKind.Read, Privilege.User).PhysicalAddress.Value;
            }
        });

        Assert.NotEqual(0UL, sum);
        Assert.Equal(0L, allocated);
        Assert.Equal(4 * 20_000L, tlb.Hits);
    }

    [Fact]
    public void Misuse_is_refused_with_clear_argument_exceptions()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new TlbOptions { Entries4K = 0 });
        Assert.Throws<ArgumentOutOfRangeException>(() => new TlbOptions { Associativity2M = -1 });
        Assert.Throws<ArgumentOutOfRangeException>(() => new TlbOptions { Entries1G = TlbOptions.MaxEntries + 1 });
        Assert.Throws<ArgumentOutOfRangeException>(() => new TlbOptions { SizeConflictPreference = (SizeConflictPreference)7 });
        Assert.Throws<ArgumentOutOfRangeException>(() => new TlbOptions { SizeConflictRule = (SizeConflictRule)2 });
        Assert.Throws<ArgumentOutOfRangeException>(() => new TlbOptions { AccessedOnFault = (AccessedOnFaultPolicy)9 });

        ArgumentException notSets = Assert.Throws<ArgumentException>(() => new Tlb(new TlbOptions { Entries4K = 10, Associativity4K = 4 }));
        Assert.Contains("multiple", notSets.Message, StringComparison.Ordinal);
        ArgumentException notPow2 = Assert.Throws<ArgumentException>(() => new Tlb(new TlbOptions { Entries2M = 12, Associativity2M = 4 }));
        Assert.Contains("power of two", notPow2.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => new Tlb(new TlbOptions { Entries1G = 2, Associativity1G = 4 }));
        Assert.Throws<ArgumentNullException>(() => new Tlb(null!));

        var tlb = new Tlb();
        var t = NewTables();
        Assert.Throws<ArgumentOutOfRangeException>(() => tlb.Invpcid((InvpcidType)4, 0, default));
        Assert.Throws<ArgumentOutOfRangeException>(() => tlb.Invpcid(InvpcidType.SingleContext, 4096, default));
        Assert.Throws<ArgumentOutOfRangeException>(() => tlb.Invpcid(InvpcidType.SingleContext, -1, default));
        Assert.Throws<ArgumentOutOfRangeException>(() => tlb.FlushNonGlobal(5000));
        Assert.Throws<ArgumentOutOfRangeException>(() => tlb.Translate(t.Cpu(Cr4Flags.Pge), t.Memory, Va(Page), (AccessKind)3, Privilege.User));
        Assert.Throws<ArgumentOutOfRangeException>(() => tlb.Translate(t.Cpu(Cr4Flags.Pge), t.Memory, Va(Page), AccessKind.Read, (Privilege)3));
        Assert.Throws<ArgumentNullException>(() => tlb.Invlpg(null!, Va(Page)));
        Assert.Throws<ArgumentNullException>(() => tlb.Translate(t.Cpu(Cr4Flags.Pge), null!, Va(Page), AccessKind.Read, Privilege.User));
    }

    [Fact]
    public void An_entry_describes_what_it_caches()
    {
        var t = NewTables();
        t.Map(Page, PageSize.Size4K, FrameA, P | RW | US | G | PCD | XD | (5UL << 59));
        var tlb = new Tlb();
        CpuState cpu = t.Cpu(Cr4Flags.Pge | Cr4Flags.Pcide, pcid: 7);
        tlb.Translate(cpu, t.Memory, Va(Page + 0x123), AccessKind.Write, Privilege.User);

        Assert.True(tlb.TryLookup(cpu, Va(Page), out TlbEntry e));
        Assert.Equal(PageSize.Size4K, e.PageSize);
        Assert.Equal(Page, e.VirtualBase.Value);
        Assert.Equal(Page >> 12, e.PageNumber);
        Assert.Equal(FrameA, e.PhysicalBase.Value);
        Assert.Equal(EffectiveRights.Writable | EffectiveRights.User | EffectiveRights.ExecuteDisable, e.Rights);
        Assert.Equal(5, e.ProtectionKey);
        Assert.True(e.IsDirty && e.IsGlobal && e.Leaf.IsCacheDisabled);
        Assert.Equal(7, e.Pcid);
        Assert.Equal(FrameA + 0x456, e.Translate(Va(Page + 0x456)).Value);
        Assert.Throws<ArgumentException>(() => e.Translate(Va(Page + 0x1000)));
        Assert.Contains("global", e.ToString(), StringComparison.Ordinal);
        Assert.Single(tlb.GetEntries());
    }
}
