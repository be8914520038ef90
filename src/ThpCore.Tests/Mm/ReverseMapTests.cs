using System;
using System.Collections.Generic;
using System.Linq;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;
using Xunit;

namespace ThpCore.Tests.Mm;

public sealed class ReverseMapTests
{
    internal const ulong K4 = 4096;
    internal const ulong M2 = 2UL << 20;
    internal const Protection Rw = Protection.Read | Protection.Write;

    internal static readonly ThpSettings Always = new() { Enabled = ThpEnabled.Always };
    internal static readonly ThpSettings Never = new() { Enabled = ThpEnabled.Never };

    internal static ulong Raw(AddressSpace space, ulong va, PagingLevel level) => AddressSpaceTests.Entry(space, va, level) ?? 0;

    internal static void Store(AddressSpace space, VirtualAddress va, ulong value)
    {
        AccessResult result = space.Access(va, AccessKind.Write);
        Assert.True(result.IsTranslated);
        space.Node.Memory.WriteUInt64(result.PhysicalAddress, value);
    }

    internal static ulong Load(AddressSpace space, VirtualAddress va)
    {
        AccessResult result = space.Access(va, AccessKind.Read);
        Assert.True(result.IsTranslated);
        return ((IPhysicalMemory)space.Node.Memory).ReadUInt64(result.PhysicalAddress);
    }

    // A 4 MiB mapping whose first 2 MiB is one PMD-mapped THP holding 0xA0 + i at the start of page i for i < 8.
    internal static (AddressSpace Space, VirtualAddress Start, Folio Folio) MappedThp()
    {
        AddressSpace space = AddressSpaceTests.Create(Always);
        VirtualAddress start = space.Map(2 * M2, Rw);
        for (ulong i = 0; i < 8; i++)
        {
            Store(space, start.Add(i * K4), 0xA0 + i);
        }

        Folio folio = space.Node.FolioOf(AddressSpaceTests.Pde(space, start.Value).Address.FrameNumber);
        Assert.Equal(Folio.PmdOrder, folio.Order);
        return (space, start, folio);
    }

    [Fact]
    public void After_fork_a_PMD_mapped_THP_is_found_at_the_PMD_level_in_parent_and_child_from_either_side()
    {
        (AddressSpace parent, VirtualAddress start, Folio folio) = MappedThp();
        AddressSpace child = parent.Fork();

        foreach (AddressSpace from in new[] { parent, child })
        {
            IReadOnlyList<FolioMapping> found = from.FindMappings(folio);
            Assert.Equal(
                new[] { new FolioMapping(parent, start, PagingLevel.Pd, 0), new FolioMapping(child, start, PagingLevel.Pd, 0) },
                found);
            Assert.Equal(folio.MapCount, found.Count);
        }
    }

    [Fact]
    public void After_fork_and_a_child_write_the_parent_keeps_its_PMD_and_the_child_maps_511_subpages_by_PTE()
    {
        (AddressSpace parent, VirtualAddress start, Folio folio) = MappedThp();
        AddressSpace child = parent.Fork();
        Store(child, start.Add(3 * K4), 0x77); // the child's PMD is split and page 3 copied

        IReadOnlyList<FolioMapping> found = parent.FindMappings(folio);

        Assert.Equal(512, found.Count);
        Assert.Equal(folio.MapCount, found.Count);
        Assert.Equal(new FolioMapping(parent, start, PagingLevel.Pd, 0), found[0]);
        List<FolioMapping> childPtes = found.Skip(1).ToList();
        Assert.All(childPtes, m => Assert.Same(child, m.Space));
        Assert.All(childPtes, m => Assert.Equal(PagingLevel.Pt, m.Level));
        Assert.Equal(Enumerable.Range(0, 512).Where(i => i != 3), childPtes.Select(m => m.PageIndex));
        Assert.All(childPtes, m => Assert.Equal(start.Value + ((ulong)m.PageIndex * K4), m.Address.Value));
    }

    [Fact]
    public void After_fork_an_order_0_page_is_found_at_the_same_address_in_both_and_a_child_copy_is_found_only_in_the_child()
    {
        AddressSpace parent = AddressSpaceTests.Create(Never);
        VirtualAddress start = parent.Map(4 * K4, Rw);
        Store(parent, start.Add(K4), 1);
        Folio page = parent.Node.FolioOf(AddressSpaceTests.Pte(parent, start.Value + K4).Address.FrameNumber);
        AddressSpace child = parent.Fork();

        Assert.Equal(new[] { new FolioMapping(parent, start.Add(K4), PagingLevel.Pt, 0), new FolioMapping(child, start.Add(K4), PagingLevel.Pt, 0) }, child.FindMappings(page));

        Store(child, start.Add(K4), 2);
        Folio copy = child.Node.FolioOf(AddressSpaceTests.Pte(child, start.Value + K4).Address.FrameNumber);
        Assert.Equal(new[] { new FolioMapping(parent, start.Add(K4), PagingLevel.Pt, 0) }, parent.FindMappings(page));
        Assert.Equal(new[] { new FolioMapping(child, start.Add(K4), PagingLevel.Pt, 0) }, parent.FindMappings(copy));
    }

    [Fact]
    public void After_a_PMD_split_the_THP_is_found_by_512_PTEs_in_order()
    {
        (AddressSpace space, VirtualAddress start, Folio folio) = MappedThp();
        Assert.True(space.SplitHugePmd(start));

        IReadOnlyList<FolioMapping> found = space.FindMappings(folio);

        Assert.Equal(512, found.Count);
        Assert.Equal(folio.MapCount, found.Count);
        for (int i = 0; i < 512; i++)
        {
            Assert.Equal(new FolioMapping(space, start.Add((ulong)i * K4), PagingLevel.Pt, i), found[i]);
        }
    }

    [Fact]
    public void After_mremap_of_one_page_the_moved_PTE_is_found_at_its_new_address_with_its_subpage_index()
    {
        (AddressSpace space, VirtualAddress start, Folio folio) = MappedThp();
        VirtualAddress away = VirtualAddress.FromRaw(0x4000_0000);

        Assert.Equal(away, space.Remap(start.Add(5 * K4), K4, K4, RemapFlags.MayMove | RemapFlags.Fixed, away));

        IReadOnlyList<FolioMapping> found = space.FindMappings(folio);
        Assert.Equal(512, found.Count);
        Assert.Equal(folio.MapCount, found.Count);
        Assert.Contains(new FolioMapping(space, away, PagingLevel.Pt, 5), found);
        Assert.DoesNotContain(found, m => m.Address == start.Add(5 * K4));
        Assert.Equal(Enumerable.Range(0, 512), found.Select(m => m.PageIndex).Order());
        Assert.Equal(0xA5UL, Load(space, away));
    }

    [Fact]
    public void Zero_pages_have_no_reverse_map()
    {
        AddressSpace space = AddressSpaceTests.Create(Always);
        VirtualAddress start = space.Map(2 * M2, Rw);
        space.Access(start, AccessKind.Read);
        space.Access(start.Add(M2 + K4), AccessKind.Read);
        Assert.NotNull(space.HugeZeroPage);

        Assert.Throws<ArgumentException>(() => space.FindMappings(space.ZeroPage));
        Assert.Throws<ArgumentException>(() => space.FindMappings(space.HugeZeroPage!.Value));
        Assert.Throws<ArgumentException>(() => space.FindMappings(AddressSpaceTests.Create(Always).ZeroPage));
    }
}
