using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;
using Xunit;

namespace ThpCore.Tests.Mm;

/// <summary>
/// <c>free_pgtables</c> after munmap and mremap: which tables go, which a neighbouring VMA keeps (Linux's
/// <c>free_pgd_range</c> floor and ceiling), counted in node frames.
/// </summary>
public sealed class PageTableFreeingTests
{
    internal const ulong K4 = 4096;
    internal const ulong M2 = 2UL << 20;
    internal const ulong G1 = 1UL << 30;
    internal const ulong G512 = 512 * G1;
    internal const Protection Rw = Protection.Read | Protection.Write;

    // 1 TiB: aligned to 512 GiB, so its tables are the first of their PML4 entry.
    internal const ulong B = 0x100_0000_0000;

    private static readonly ThpSettings s_never = new() { Enabled = ThpEnabled.Never };
    private static readonly ThpSettings s_always = new() { Enabled = ThpEnabled.Always, UseZeroPage = false };

    /// <summary>Maps <paramref name="length"/> bytes at <paramref name="address"/> (Map, then an mremap to a fixed place).</summary>
    internal static VirtualAddress Place(AddressSpace space, ulong address, ulong length, VmaFlags flags = VmaFlags.Anonymous)
    {
        VirtualAddress mapped = space.Map(length, Rw, flags);
        return mapped.Value == address ? mapped : space.Remap(mapped, length, length, RemapFlags.MayMove | RemapFlags.Fixed, VirtualAddress.FromRaw(address));
    }

    internal static void Write(AddressSpace space, ulong address) =>
        Assert.Equal(AccessStatus.Translated, space.Access(VirtualAddress.FromRaw(address), AccessKind.Write).Status);

    private static ulong? Entry(AddressSpace space, ulong va, PagingLevel level) => AddressSpaceTests.Entry(space, va, level);

    // Unmaps [address, +length) and checks the node's free frames and that the entry at `cleared` for address is now empty.
    private static void UnmapExpecting(AddressSpace space, ulong address, ulong length, ulong freeFrames, PagingLevel cleared)
    {
        space.Unmap(VirtualAddress.FromRaw(address), length);
        Assert.Equal(freeFrames, space.Node.Buddy.FreeFrames);
        Assert.Equal(0UL, Entry(space, address, cleared));
    }

    [Fact]
    public void Unmapping_a_whole_2_MiB_region_frees_its_page_table_directory_and_pdpt()
    {
        AddressSpace space = new(new MemoryNode(64UL << 20), s_never);
        Place(space, B, M2);
        ulong before = space.Node.Buddy.FreeFrames;
        Write(space, B);
        Write(space, B + (5 * K4));
        Write(space, B + M2 - K4);
        // Three pages, a page table, a page directory and a PDPT.
        Assert.Equal(before - 6, space.Node.Buddy.FreeFrames);

        UnmapExpecting(space, B, M2, before, PagingLevel.Pml4);
    }

    [Fact]
    public void Unmapping_a_whole_1_GiB_region_of_thps_frees_its_tables_but_the_pdpt_a_neighbour_needs()
    {
        AddressSpace space = new(new MemoryNode(64UL << 20), s_always);
        Place(space, B, G1);
        ulong neighbour = B + G1 + M2;
        Place(space, neighbour, K4, VmaFlags.Anonymous | VmaFlags.NoHugePage);
        ulong before = space.Node.Buddy.FreeFrames;
        Write(space, neighbour);
        Write(space, B);
        Write(space, B + (G1 / 2));
        Write(space, B + (4 * M2));

        // One THP left PTE-mapped (its deposited table installed) by an mprotect of one page and back.
        space.Protect(VirtualAddress.FromRaw(B + (4 * M2) + K4), K4, Protection.Read);
        space.Protect(VirtualAddress.FromRaw(B + (4 * M2) + K4), K4, Rw);
        Assert.False(AddressSpaceTests.Pde(space, B + (4 * M2)).IsLeaf);

        // Neighbour: page, page table, directory; shared PDPT; the region: a directory and three THPs with their tables.
        Assert.Equal(before - 4 - 1 - (3 * 513), space.Node.Buddy.FreeFrames);

        UnmapExpecting(space, B, G1, before - 4, PagingLevel.Pdpt);
        Assert.True(AddressSpaceTests.Pte(space, neighbour).IsPresent);

        UnmapExpecting(space, neighbour, K4, before, PagingLevel.Pml4);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void A_neighbour_in_the_same_2_MiB_keeps_the_shared_page_table_until_it_is_unmapped_too(bool lowFirst)
    {
        AddressSpace space = new(new MemoryNode(64UL << 20), s_never);
        ulong low = B;
        ulong high = B + (4 * K4);
        Place(space, low, 2 * K4);
        Place(space, high, 2 * K4);
        ulong before = space.Node.Buddy.FreeFrames;
        Write(space, low);
        Write(space, high);
        Assert.Equal(before - 5, space.Node.Buddy.FreeFrames);
        (ulong first, ulong second) = lowFirst ? (low, high) : (high, low);

        // The first unmap frees only its page: the other VMA's end (floor) or start (ceiling) lies in the same 2 MiB.
        space.Unmap(VirtualAddress.FromRaw(first), 2 * K4);

        Assert.Equal(before - 4, space.Node.Buddy.FreeFrames);
        Assert.Equal(0UL, AddressSpaceTests.Pte(space, first).Raw);
        Assert.True(AddressSpaceTests.Pte(space, second).IsPresent);

        space.Unmap(VirtualAddress.FromRaw(second), 2 * K4);

        Assert.Equal(before, space.Node.Buddy.FreeFrames);
        Assert.Equal(0UL, Entry(space, B, PagingLevel.Pml4));
    }

    [Fact]
    public void A_neighbour_in_the_next_2_MiB_keeps_the_directory_but_not_the_page_table()
    {
        AddressSpace space = new(new MemoryNode(64UL << 20), s_never);
        ulong low = B + M2 - (2 * K4);
        ulong high = B + M2;
        Place(space, low, 2 * K4, VmaFlags.Anonymous | VmaFlags.HugePage);
        Place(space, high, 2 * K4, VmaFlags.Anonymous | VmaFlags.NoHugePage);
        Assert.Equal(2, space.Vmas.Count);
        ulong before = space.Node.Buddy.FreeFrames;
        Write(space, low);
        Write(space, high);

        // The ceiling is the next VMA's start, B + 2 MiB: the low page table's span ends there, so it goes.
        // The ceiling is the next VMA's start, B + 2 MiB: the low page table's span ends there, so it goes.
        UnmapExpecting(space, low, 2 * K4, before - 4, PagingLevel.Pd);
        Assert.True(AddressSpaceTests.Pte(space, high).IsPresent);
    }

    [Fact]
    public void A_neighbour_in_the_same_1_GiB_keeps_the_directory_and_one_in_the_same_512_GiB_keeps_the_pdpt()
    {
        AddressSpace space = new(new MemoryNode(64UL << 20), s_never);
        ulong sameGiB = B + (G1 / 2);
        ulong nextGiB = B + G1;
        Place(space, B, K4);
        Place(space, sameGiB, K4);
        Place(space, nextGiB, K4);
        ulong before = space.Node.Buddy.FreeFrames;
        Write(space, B);
        Write(space, sameGiB);
        Write(space, nextGiB);
        // Pages 3, page tables 3, directories 2, PDPT 1.
        Assert.Equal(before - 9, space.Node.Buddy.FreeFrames);

        // Its page and page table; the directory spans B's VMA too.
        UnmapExpecting(space, sameGiB, K4, before - 7, PagingLevel.Pd);
        Assert.True(AddressSpaceTests.Pte(space, B).IsPresent);

        // Its page, page table and directory; the PDPT spans B's VMA too.
        UnmapExpecting(space, nextGiB, K4, before - 4, PagingLevel.Pdpt);
        UnmapExpecting(space, B, K4, before, PagingLevel.Pml4);
    }

    [Fact]
    public void With_5_level_paging_a_pml4_table_goes_with_its_last_vma_and_a_neighbour_in_its_256_TiB_keeps_it()
    {
        AddressSpace space = new(new MemoryNode(64UL << 20), s_never, mode: PagingMode.FiveLevel);
        ulong far = B + G512;
        Place(space, B, K4);
        Place(space, far, K4);
        ulong before = space.Node.Buddy.FreeFrames;
        Write(space, B);
        Write(space, far);
        // Pages 2, page tables 2, directories 2, PDPTs 2, one PML4 table.
        Assert.Equal(before - 9, space.Node.Buddy.FreeFrames);

        // Its page, page table, directory and PDPT; the PML4 table spans B's VMA too.
        UnmapExpecting(space, far, K4, before - 5, PagingLevel.Pml4);
        Assert.True(AddressSpaceTests.Pte(space, B).IsPresent);

        UnmapExpecting(space, B, K4, before, PagingLevel.Pml5);
    }

    [Fact]
    public void Unmapping_a_range_without_vmas_frees_nothing_and_madv_dontneed_frees_no_table()
    {
        AddressSpace space = new(new MemoryNode(64UL << 20), s_never);
        Place(space, B, 2 * K4);
        Write(space, B);
        Write(space, B + K4);
        ulong before = space.Node.Buddy.FreeFrames;

        space.Unmap(VirtualAddress.FromRaw(B + (4 * K4)), 8 * K4);
        Assert.Equal(before, space.Node.Buddy.FreeFrames);

        space.Advise(VirtualAddress.FromRaw(B), 2 * K4, Advice.DontNeed);

        // Both pages go; the page table stays (zap_page_range_single frees no table).
        Assert.Equal(before + 2, space.Node.Buddy.FreeFrames);
        Assert.True(AddressSpaceTests.Pde(space, B).IsPresent);
        Assert.Equal(0UL, AddressSpaceTests.Pte(space, B).Raw);
    }

    [Fact]
    public void Mremap_moving_a_whole_thp_away_frees_the_source_directory_and_pdpt()
    {
        AddressSpace space = new(new MemoryNode(64UL << 20), s_always);
        Place(space, B, M2);
        Write(space, B);
        Folio folio = space.Node.FolioOf(AddressSpaceTests.Pde(space, B).Address.FrameNumber);
        ulong before = space.Node.Buddy.FreeFrames;
        ulong target = B + G512;

        space.Remap(VirtualAddress.FromRaw(B), M2, M2, RemapFlags.MayMove | RemapFlags.Fixed, VirtualAddress.FromRaw(target));

        // A directory and PDPT at the destination, the source's two freed: the same count, other frames.
        Assert.Equal(before, space.Node.Buddy.FreeFrames);
        Assert.Equal(0UL, Entry(space, B, PagingLevel.Pml4));
        Assert.True(AddressSpaceTests.Pde(space, target).IsLeaf);
        Assert.Equal(folio.Address, AddressSpaceTests.Pde(space, target).Address);
    }

    [Fact]
    public void Mremap_moving_ptes_away_frees_the_source_tables_unless_the_rest_of_the_vma_shares_them()
    {
        AddressSpace space = new(new MemoryNode(64UL << 20), s_never);
        Place(space, B + K4, 4 * K4);
        for (ulong i = 1; i <= 4; i++)
        {
            Write(space, B + (i * K4));
        }

        ulong before = space.Node.Buddy.FreeFrames;
        ulong target = B + G512 + K4;

        // The upper half moves: the lower half keeps the source page table.
        space.Remap(VirtualAddress.FromRaw(B + (3 * K4)), 2 * K4, 2 * K4, RemapFlags.MayMove | RemapFlags.Fixed, VirtualAddress.FromRaw(target));

        Assert.Equal(before - 3, space.Node.Buddy.FreeFrames);
        Assert.True(AddressSpaceTests.Pte(space, B + K4).IsPresent);
        Assert.Equal(0UL, AddressSpaceTests.Pte(space, B + (3 * K4)).Raw);

        // Then the lower half: now nothing is left at the source.
        space.Remap(VirtualAddress.FromRaw(B + K4), 2 * K4, 2 * K4, RemapFlags.MayMove | RemapFlags.Fixed, VirtualAddress.FromRaw(target + (2 * K4)));

        Assert.Equal(before, space.Node.Buddy.FreeFrames);
        Assert.Equal(0UL, Entry(space, B, PagingLevel.Pml4));
        for (ulong i = 0; i < 4; i++)
        {
            Assert.True(AddressSpaceTests.Pte(space, target + (i * K4)).IsPresent);
        }
    }
}
