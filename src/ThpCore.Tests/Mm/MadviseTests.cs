using System;
using System.Collections.Generic;
using System.Linq;
using ThpCore.Diagnostics;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;
using Xunit;

namespace ThpCore.Tests.Mm;

public sealed class MadviseTests
{
    private const ulong K4 = 4096;
    private const ulong M2 = 2UL << 20;
    private const Protection Rw = Protection.Read | Protection.Write;

    private static readonly ThpSettings s_always = new() { Enabled = ThpEnabled.Always };
    private static readonly ThpSettings s_madvise = new() { Enabled = ThpEnabled.Madvise };

    private static PageTableEntry Pte(AddressSpace space, ulong va) => AddressSpaceTests.Pte(space, va);

    private static PageTableEntry Pde(AddressSpace space, ulong va) => AddressSpaceTests.Pde(space, va);

    // A 4 MiB mapping whose first 2 MiB is one PMD-mapped THP, and that THP's folio.
    private static (AddressSpace Space, VirtualAddress Start, Folio Folio) MappedThp(ThpSettings settings, VmaFlags flags = VmaFlags.Anonymous)
    {
        AddressSpace space = AddressSpaceTests.Create(settings);
        VirtualAddress start = space.Map(2 * M2, Rw, flags);
        Assert.Equal(FaultAction.MappedHugePage, space.Access(start, AccessKind.Write).Fault);
        Folio folio = space.Node.FolioOf(Pde(space, start.Value).Address.FrameNumber);
        Assert.Equal(Folio.PmdOrder, folio.Order);
        return (space, start, folio);
    }

    [Fact]
    public void The_advice_values_are_linux_madv_numbers()
    {
        Assert.Equal(4, (int)Advice.DontNeed);
        Assert.Equal(14, (int)Advice.HugePage);
        Assert.Equal(15, (int)Advice.NoHugePage);
    }

    [Fact]
    public void Nohugepage_then_hugepage_on_4_KiB_of_a_thp_splits_the_vmas_and_the_pmd_and_re_merges_the_vmas_leaving_the_thp_pte_mapped()
    {
        (AddressSpace space, VirtualAddress start, Folio folio) = MappedThp(s_madvise, VmaFlags.Anonymous | VmaFlags.HugePage);
        VirtualAddress page = start.Add(3 * K4);

        space.Advise(page, K4, Advice.NoHugePage);

        Assert.Equal(3, space.Vmas.Count);
        Assert.Equal(VmaFlags.Anonymous | VmaFlags.NoHugePage, space.Vmas.Find(page)!.Flags);
        Assert.Equal(VmaFlags.Anonymous | VmaFlags.HugePage, space.Vmas.Find(start)!.Flags);
        Assert.Equal(VmaFlags.Anonymous | VmaFlags.HugePage, space.Vmas.Find(page.Add(K4))!.Flags);
        Assert.False(Pde(space, start.Value).IsLeaf);
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpSplitPmd));

        space.Advise(page, K4, Advice.HugePage);

        Vma vma = Assert.Single(space.Vmas.All);
        Assert.Equal(start, vma.Start);
        Assert.Equal(start.Add(2 * M2), vma.End);
        Assert.Equal(VmaFlags.Anonymous | VmaFlags.HugePage, vma.Flags);
        AddressSpaceTests.AssertPteMappedInOrder(space, start, folio);
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpSplitPmd));
        Assert.Equal(0, space.Counters.Get(VmEvent.ThpDeferredSplitPage));
    }

    [Fact]
    public void Nohugepage_on_a_whole_aligned_2_MiB_changes_no_page_table()
    {
        (AddressSpace space, VirtualAddress start, Folio folio) = MappedThp(s_always);
        ulong pde = Pde(space, start.Value).Raw;

        space.Advise(start, M2, Advice.NoHugePage);

        Assert.Equal(2, space.Vmas.Count);
        Assert.Equal(pde, Pde(space, start.Value).Raw);
        Assert.Equal(1, folio.EntireMapCount);
        Assert.Equal(0, space.Counters.Get(VmEvent.ThpSplitPmd));

        // Advice that changes no flag creates no boundary and so splits nothing either.
        space.Advise(start.Add(K4), K4, Advice.NoHugePage);
        Assert.Equal(2, space.Vmas.Count);
        Assert.Equal(pde, Pde(space, start.Value).Raw);

        // The second 2 MiB still may use THP.
        Assert.Equal(FaultAction.MappedHugePage, space.Access(start.Add(M2), AccessKind.Write).Fault);
    }

    [Fact]
    public void Hugepage_under_enabled_madvise_makes_later_faults_huge()
    {
        AddressSpace space = AddressSpaceTests.Create(s_madvise);
        VirtualAddress start = space.Map(4 * M2, Rw);
        Assert.Equal(FaultAction.MappedPage, space.Access(start, AccessKind.Write).Fault);

        space.Advise(start.Add(M2), 3 * M2, Advice.HugePage);

        Assert.Equal(2, space.Vmas.Count);
        Assert.Equal(FaultAction.MappedHugePage, space.Access(start.Add(M2), AccessKind.Write).Fault);
        Assert.True(Pde(space, start.Value + M2).IsLeaf);
        Assert.Equal(FaultAction.MappedPage, space.Access(start.Add(K4), AccessKind.Write).Fault);

        space.Advise(start.Add(2 * M2), M2, Advice.NoHugePage);
        Assert.Equal(FaultAction.MappedPage, space.Access(start.Add(2 * M2), AccessKind.Write).Fault);
        Assert.Equal(FaultAction.MappedHugePage, space.Access(start.Add(3 * M2), AccessKind.Write).Fault);
    }

    [Fact]
    public void Dontneed_of_a_few_pages_inside_a_thp_leaves_it_pte_mapped_with_holes_and_queued_for_deferred_split()
    {
        (AddressSpace space, VirtualAddress start, Folio folio) = MappedThp(s_always);

        space.Advise(start.Add(5 * K4), 3 * K4, Advice.DontNeed);

        Assert.Single(space.Vmas.All);
        Assert.False(Pde(space, start.Value).IsLeaf);
        for (int i = 0; i < 512; i++)
        {
            PageTableEntry pte = Pte(space, start.Value + ((ulong)i * K4));
            if (i is >= 5 and < 8)
            {
                Assert.Equal(0UL, pte.Raw);
                Assert.Equal(0, folio.PageMapCount(i));
            }
            else
            {
                Assert.True(pte.IsPresent && pte.IsWritable);
                Assert.Equal(folio.Address.Add((ulong)i * K4), pte.Address);
                Assert.Equal(1, folio.PageMapCount(i));
            }
        }

        Assert.Equal(509, folio.RefCount);
        Assert.Equal(509, folio.MapCount);
        Assert.Equal(0, folio.EntireMapCount);
        Assert.True(folio.IsOnDeferredSplitQueue && folio.IsPartiallyMapped);
        Assert.Contains(folio, space.Node.DeferredSplitQueue);
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpSplitPmd));
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpDeferredSplitPage));

        // A second hole in the same, already queued folio is not counted again.
        space.Advise(start.Add(100 * K4), K4, Advice.DontNeed);
        Assert.Equal(508, folio.MapCount);
        Assert.Equal(1, space.Counters.Get(VmEvent.ThpDeferredSplitPage));

        // A read of a hole faults in the zero page; a write then copies it.
        AccessResult read = space.Access(start.Add(6 * K4), AccessKind.Read);
        Assert.Equal(FaultAction.MappedZeroPage, read.Fault);
        Assert.Equal(space.ZeroPage.Address, Pte(space, start.Value + (6 * K4)).Address);
        Assert.False(Pte(space, start.Value + (6 * K4)).IsWritable);
        Assert.Equal(FaultAction.CopiedZeroPage, space.Access(start.Add(6 * K4), AccessKind.Write).Fault);
        Assert.Equal(508, folio.RefCount);
    }

    [Fact]
    public void Dontneed_of_a_whole_2_MiB_frees_the_thp_and_its_deposited_table()
    {
        (AddressSpace space, VirtualAddress start, Folio folio) = MappedThp(s_always);
        ulong free = space.Node.Buddy.FreeFrames;

        space.Advise(start, M2, Advice.DontNeed);

        Assert.Single(space.Vmas.All);
        Assert.Equal(0UL, Pde(space, start.Value).Raw);
        Assert.Equal(free + 512 + 1, space.Node.Buddy.FreeFrames);
        Assert.Equal(0, space.Node.DeferredSplitCount);
        Assert.Equal(0, space.Counters.Get(VmEvent.ThpSplitPmd));

        // The emptied PMD faults again like a new one: a read maps the huge zero page.
        Assert.Equal(FaultAction.MappedHugeZeroPage, space.Access(start, AccessKind.Read).Fault);
    }

    [Fact]
    public void Dontneed_of_a_whole_pte_mapped_thp_frees_it()
    {
        (AddressSpace space, VirtualAddress start, Folio _) = MappedThp(s_always);
        space.Advise(start.Add(K4), K4, Advice.DontNeed);
        ulong free = space.Node.Buddy.FreeFrames;

        space.Advise(start, M2, Advice.DontNeed);

        Assert.Equal(free + 512, space.Node.Buddy.FreeFrames);
        Assert.Equal(0, space.Node.DeferredSplitCount);
        Assert.True(Pde(space, start.Value).IsPresent);
        Assert.Equal(FaultAction.MappedZeroPage, space.Access(start, AccessKind.Read).Fault);
    }

    [Fact]
    public void Dontneed_of_a_range_not_wholly_mapped_throws_and_changes_nothing()
    {
        (AddressSpace space, VirtualAddress start, Folio folio) = MappedThp(s_always);
        ulong pde = Pde(space, start.Value).Raw;
        ulong free = space.Node.Buddy.FreeFrames;
        List<Vma> vmas = space.Vmas.All.ToList();

        Assert.Throws<InvalidOperationException>(() => space.Advise(start.Add(M2 + K4), 2 * M2, Advice.DontNeed));
        Assert.Throws<InvalidOperationException>(() => space.Advise(start.Add(4 * M2), K4, Advice.DontNeed));
        Assert.Throws<InvalidOperationException>(() => space.Advise(start.Add(4 * M2), K4, Advice.NoHugePage));

        Assert.Equal(pde, Pde(space, start.Value).Raw);
        Assert.Equal(free, space.Node.Buddy.FreeFrames);
        Assert.Equal(vmas, space.Vmas.All);
        Assert.Equal(1, folio.RefCount);
        Assert.Equal(0, space.Counters.Get(VmEvent.ThpSplitPmd));
    }

    [Fact]
    public void Dontneed_of_a_locked_vma_throws_and_changes_nothing()
    {
        AddressSpace space = AddressSpaceTests.Create(s_always);
        VirtualAddress start = VirtualAddress.FromRaw(0x4000_0000);
        space.Vmas.Insert(new Vma(start, start.Add(M2), Rw, VmaFlags.Anonymous | VmaFlags.Locked, start.Value >> 12));
        space.Access(start, AccessKind.Write);
        ulong pde = Pde(space, start.Value).Raw;

        Assert.Throws<InvalidOperationException>(() => space.Advise(start, K4, Advice.DontNeed));
        Assert.Equal(pde, Pde(space, start.Value).Raw);
    }

    [Fact]
    public void Bad_arguments_are_rejected()
    {
        (AddressSpace space, VirtualAddress start, Folio _) = MappedThp(s_always);
        Assert.Throws<ArgumentOutOfRangeException>(() => space.Advise(start, K4, (Advice)9));
        Assert.Throws<ArgumentException>(() => space.Advise(start.Add(1), K4, Advice.DontNeed));
        Assert.Throws<ArgumentException>(() => space.Advise(start, 0, Advice.HugePage));
        Assert.Throws<ArgumentException>(() => space.Advise(start, 100, Advice.NoHugePage));
    }
}
