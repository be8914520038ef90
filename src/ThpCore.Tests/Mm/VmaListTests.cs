using System;
using System.Collections.Generic;
using System.Linq;
using ThpCore.Mm;
using ThpCore.Paging;
using Xunit;

namespace ThpCore.Tests.Mm;

public sealed class VmaListTests
{
    private const ulong K4 = 4096;
    private const ulong M2 = 2UL << 20;
    private const Protection Rw = Protection.Read | Protection.Write;

    private static VirtualAddress A(ulong value) => VirtualAddress.Create(value);

    private static Vma Anon(ulong start, ulong end, Protection protection = Rw, VmaFlags flags = VmaFlags.None, long anon = 0) =>
        new(A(start), A(end), protection, flags | VmaFlags.Anonymous, start >> 12, anon);

    [Fact]
    public void A_vma_reports_its_length_page_count_and_containment()
    {
        Vma vma = Anon(0x20_0000, 0x60_0000);
        Assert.Equal(0x40_0000UL, vma.Length);
        Assert.Equal(1024UL, vma.PageCount);
        Assert.True(vma.IsHugePageAligned);
        Assert.True(vma.Contains(A(0x20_0000)));
        Assert.False(vma.Contains(A(0x60_0000)));
        Assert.True(vma.ContainsHugePageAround(A(0x5f_f000)));
        Assert.False(Anon(0x20_1000, 0x60_0000).ContainsHugePageAround(A(0x20_1000)));
        Assert.Equal((0x20_0000UL >> 12) + 2, vma.PageOffsetOf(A(0x20_2fff)));
    }

    [Fact]
    public void A_vma_rejects_unaligned_inverted_and_non_user_ranges_with_the_values_in_the_message()
    {
        ArgumentException unaligned = Assert.ThrowsAny<ArgumentException>(() => Anon(0x1001, 0x3000));
        Assert.Contains("0x1001", unaligned.Message, StringComparison.Ordinal);
        ArgumentException inverted = Assert.ThrowsAny<ArgumentException>(() => Anon(0x3000, 0x3000));
        Assert.Contains("0x3000", inverted.Message, StringComparison.Ordinal);
        ArgumentException kernel = Assert.ThrowsAny<ArgumentException>(
            () => new Vma(VirtualAddress.FromRaw(0xffff_8000_0000_0000), VirtualAddress.FromRaw(0xffff_8000_0000_1000), Rw, VmaFlags.None, 0));
        Assert.Contains("0xffff800000000000", kernel.Message, StringComparison.Ordinal);
        Assert.ThrowsAny<ArgumentException>(() => Anon(0x1000, 0x2000) with { Flags = VmaFlags.HugePage | VmaFlags.NoHugePage });
        Assert.ThrowsAny<ArgumentException>(() => Anon(0x1000, 0x2000) with { PageOffset = ulong.MaxValue });
        Assert.ThrowsAny<ArgumentException>(() => Anon(0x1000, 0x2000) with { AnonVmaId = -1 });
    }

    [Fact]
    public void Insert_merges_an_adjacent_compatible_vma_on_both_sides()
    {
        var list = new VmaList();
        list.Insert(Anon(0x10000, 0x20000));
        list.Insert(Anon(0x30000, 0x40000, anon: 7));
        Vma merged = list.Insert(Anon(0x20000, 0x30000));
        Assert.Equal(Anon(0x10000, 0x40000, anon: 7), merged);
        Assert.Single(list.All);
    }

    [Fact]
    public void Insert_does_not_merge_with_different_rights_flags_page_offsets_or_anon_vmas()
    {
        var list = new VmaList();
        list.Insert(Anon(0x10000, 0x20000, Protection.Read));
        list.Insert(Anon(0x20000, 0x30000) with { PageOffset = 0 });
        list.Insert(Anon(0x30000, 0x40000, flags: VmaFlags.Locked, anon: 3));
        list.Insert(Anon(0x40000, 0x50000, flags: VmaFlags.Locked, anon: 1));
        list.Insert(Anon(0x50000, 0x60000, flags: VmaFlags.Locked, anon: 2));
        Assert.Equal(5, list.Count);
    }

    [Fact]
    public void Insert_merges_only_to_the_left_when_the_neighbours_have_different_anon_vmas()
    {
        var list = new VmaList();
        list.Insert(Anon(0x10000, 0x20000, anon: 1));
        list.Insert(Anon(0x30000, 0x40000, anon: 2));
        Vma merged = list.Insert(Anon(0x20000, 0x30000));
        Assert.Equal(Anon(0x10000, 0x30000, anon: 1), merged);
        Assert.Equal(2, list.Count);
    }

    [Fact]
    public void Insert_rejects_an_overlapping_vma_and_leaves_the_list_unchanged()
    {
        var list = new VmaList();
        list.Insert(Anon(0x10000, 0x20000));
        ArgumentException error = Assert.ThrowsAny<ArgumentException>(() => list.Insert(Anon(0x1f000, 0x30000, Protection.Read)));
        Assert.Contains("0x1f000", error.Message, StringComparison.Ordinal);
        Assert.Equal(new[] { Anon(0x10000, 0x20000) }, list.All);
    }

    [Fact]
    public void Insert_rejects_a_vma_above_the_task_size()
    {
        var list = new VmaList(PagingMode.FourLevel);
        Assert.Equal((1UL << 47) - K4, list.TaskSize);
        Assert.ThrowsAny<ArgumentException>(() => list.Insert(Anon((1UL << 47) - K4, 1UL << 47)));
        Assert.Equal((1UL << 56) - K4, new VmaList(PagingMode.FiveLevel).TaskSize);
    }

    [Fact]
    public void Find_and_FindIntersecting_return_the_vmas_at_and_across_addresses()
    {
        var list = new VmaList();
        list.Insert(Anon(0x10000, 0x20000));
        list.Insert(Anon(0x30000, 0x40000, Protection.Read));
        Assert.Null(list.Find(A(0xffff)));
        Assert.Equal(0x10000UL, list.Find(A(0x1ffff))!.Start.Value);
        Assert.Null(list.Find(A(0x20000)));
        Assert.Equal(2, list.FindIntersecting(A(0x1f000), A(0x31000)).Count);
        Assert.Empty(list.FindIntersecting(A(0x20000), A(0x30000)));
        Assert.Single(list.FindIntersecting(A(0), A(0x10001)));
    }

    [Fact]
    public void Mprotect_of_one_page_in_the_middle_splits_into_three_and_mprotect_back_merges_into_one()
    {
        var list = new VmaList();
        Vma original = list.Insert(Anon(0x40_0000, 0x80_0000, anon: 3));

        IReadOnlyList<Vma> changed = list.Modify(A(0x50_0000), A(0x50_1000), v => v with { Protection = Protection.Read });
        Assert.Equal(new[] { Anon(0x50_0000, 0x50_1000, Protection.Read, anon: 3) }, changed);
        Assert.Equal(
            new[] { Anon(0x40_0000, 0x50_0000, anon: 3), Anon(0x50_0000, 0x50_1000, Protection.Read, anon: 3), Anon(0x50_1000, 0x80_0000, anon: 3) },
            list.All);
        Assert.Equal(list.All[0].PageOffset + list.All[0].PageCount, list.All[1].PageOffset);
        Assert.Equal(list.All[1].PageOffset + list.All[1].PageCount, list.All[2].PageOffset);

        IReadOnlyList<Vma> back = list.Modify(A(0x50_0000), A(0x50_1000), v => v with { Protection = Rw });
        Assert.Equal(new[] { original }, back);
        Assert.Equal(new[] { original }, list.All);
    }

    [Fact]
    public void Madvise_hugepage_on_a_sub_range_splits_and_restoring_the_flags_merges_again()
    {
        var list = new VmaList();
        Vma original = list.Insert(Anon(0x40_0000, 0xc0_0000));

        list.Modify(A(0x60_0000), A(0xa0_0000), v => v with { Flags = (v.Flags & ~VmaFlags.NoHugePage) | VmaFlags.HugePage });
        Assert.Equal(3, list.Count);
        Assert.Equal(VmaFlags.Anonymous | VmaFlags.HugePage, list.Find(A(0x60_0000))!.Flags);

        list.Modify(A(0x40_0000), A(0xc0_0000), v => v with { Flags = (v.Flags & ~VmaFlags.HugePage) | VmaFlags.NoHugePage });
        Assert.Equal(new[] { original with { Flags = VmaFlags.Anonymous | VmaFlags.NoHugePage } }, list.All);

        list.Modify(A(0x40_0000), A(0xc0_0000), v => v with { Flags = v.Flags & ~VmaFlags.NoHugePage });
        Assert.Equal(new[] { original }, list.All);
    }

    [Fact]
    public void Modify_of_two_vmas_that_become_equal_merges_them_and_their_neighbours()
    {
        var list = new VmaList();
        list.Insert(Anon(0x10000, 0x20000));
        list.Insert(Anon(0x20000, 0x30000, Protection.Read));
        list.Insert(Anon(0x30000, 0x40000, Protection.None));
        list.Insert(Anon(0x40000, 0x50000));
        IReadOnlyList<Vma> result = list.Modify(A(0x20000), A(0x40000), v => v with { Protection = Rw });
        Assert.Equal(new[] { Anon(0x10000, 0x50000) }, result);
        Assert.Single(list.All);
    }

    [Fact]
    public void Modify_of_a_range_with_a_hole_throws_and_changes_nothing()
    {
        var list = new VmaList();
        list.Insert(Anon(0x10000, 0x20000));
        list.Insert(Anon(0x30000, 0x40000));
        Vma[] before = list.All.ToArray();
        InvalidOperationException error = Assert.Throws<InvalidOperationException>(
            () => list.Modify(A(0x18000), A(0x38000), v => v with { Protection = Protection.Read }));
        Assert.Contains("0x20000", error.Message, StringComparison.Ordinal);
        Assert.Equal(before, list.All);
        Assert.Throws<InvalidOperationException>(() => list.Modify(A(0x8000), A(0x11000), v => v));
    }

    [Fact]
    public void Modify_rejects_a_change_that_moves_the_range_and_changes_nothing()
    {
        var list = new VmaList();
        list.Insert(Anon(0x10000, 0x20000));
        Assert.ThrowsAny<ArgumentException>(() => list.Modify(A(0x10000), A(0x20000), v => Anon(0x10000, 0x11000)));
        Assert.Equal(new[] { Anon(0x10000, 0x20000) }, list.All);
    }

    [Fact]
    public void Munmap_of_the_middle_leaves_two_vmas_with_consistent_page_offsets()
    {
        var list = new VmaList();
        list.Insert(Anon(0x10000, 0x20000, anon: 4));
        IReadOnlyList<Vma> removed = list.Remove(A(0x14000), A(0x18000));
        Assert.Equal(new[] { Anon(0x14000, 0x18000, anon: 4) }, removed);
        Assert.Equal(new[] { Anon(0x10000, 0x14000, anon: 4), Anon(0x18000, 0x20000, anon: 4) }, list.All);
    }

    [Fact]
    public void Remove_across_holes_and_several_vmas_returns_the_removed_parts_in_order()
    {
        var list = new VmaList();
        list.Insert(Anon(0x10000, 0x20000));
        list.Insert(Anon(0x30000, 0x40000, Protection.Read));
        list.Insert(Anon(0x50000, 0x60000));
        IReadOnlyList<Vma> removed = list.Remove(A(0x1c000), A(0x54000));
        Assert.Equal(new[] { Anon(0x1c000, 0x20000), Anon(0x30000, 0x40000, Protection.Read), Anon(0x50000, 0x54000) }, removed);
        Assert.Equal(new[] { Anon(0x10000, 0x1c000), Anon(0x54000, 0x60000) }, list.All);
        Assert.Empty(list.Remove(A(0x20000), A(0x50000)));
        Assert.ThrowsAny<ArgumentException>(() => list.Remove(A(0x20000), A(0x20000)));
        Assert.ThrowsAny<ArgumentException>(() => list.Remove(A(0x20001), A(0x30000)));
    }

    [Fact]
    public void A_range_moved_away_and_back_merges_with_its_old_neighbours()
    {
        var list = new VmaList();
        Vma original = list.Insert(Anon(0x40_0000, 0x80_0000, anon: 9));

        // mremap of the middle 1 MiB to 0x1000_0000: the moved VMA keeps its page offset and anon_vma.
        Vma moving = list.Remove(A(0x50_0000), A(0x60_0000)).Single();
        Vma away = list.Insert(new Vma(A(0x1000_0000), A(0x1010_0000), moving.Protection, moving.Flags, moving.PageOffset, moving.AnonVmaId));
        Assert.Equal(3, list.Count);
        Assert.Equal(0x50_0000UL >> 12, away.PageOffset);

        // And back again.
        Vma returning = list.Remove(away.Start, away.End).Single();
        Vma merged = list.Insert(new Vma(A(0x50_0000), A(0x60_0000), returning.Protection, returning.Flags, returning.PageOffset, returning.AnonVmaId));
        Assert.Equal(original, merged);
        Assert.Equal(new[] { original }, list.All);
    }

    [Fact]
    public void A_new_mapping_with_a_fresh_page_offset_does_not_merge_into_a_moved_vmas_gap()
    {
        var list = new VmaList();
        list.Insert(Anon(0x40_0000, 0x80_0000));
        list.Insert(Anon(0x1000_0000, 0x1010_0000) with { PageOffset = 0x50_0000 >> 12 });
        Vma moved = list.Remove(A(0x1000_0000), A(0x1010_0000)).Single();
        list.Insert(new Vma(A(0x80_0000), A(0x90_0000), moved.Protection, moved.Flags, moved.PageOffset));
        Assert.Equal(2, list.Count);
    }

    [Fact]
    public void Split_keeps_the_page_offset_chain_and_rejects_addresses_not_strictly_inside()
    {
        var list = new VmaList();
        list.Insert(Anon(0x10000, 0x20000, anon: 5));
        (Vma low, Vma high) = list.Split(A(0x13000));
        Assert.Equal(Anon(0x10000, 0x13000, anon: 5), low);
        Assert.Equal(Anon(0x13000, 0x20000, anon: 5), high);
        Assert.Equal(low.PageOffset + low.PageCount, high.PageOffset);
        Assert.True(low.CanMergeWith(high));
        Assert.Equal(2, list.Count);
        Assert.ThrowsAny<ArgumentException>(() => list.Split(A(0x13000)));
        Assert.ThrowsAny<ArgumentException>(() => list.Split(A(0x14800)));
        Assert.ThrowsAny<ArgumentException>(() => list.Split(A(0x30000)));

        list.Modify(A(0x10000), A(0x20000), v => v);
        Assert.Single(list.All);
    }

    [Fact]
    public void FindFreeRange_searches_top_down_and_honours_alignment_like_linux()
    {
        var list = new VmaList();
        VirtualAddress low = A(0x1_0000);
        VirtualAddress high = A(0x7f00_0000_0000);
        Assert.Equal(A(0x7f00_0000_0000 - 0x3000), list.FindFreeRange(0x3000, low, high));

        list.Insert(Anon(0x7eff_ffe0_0000, 0x7f00_0000_0000));
        Assert.Equal(A(0x7eff_ffe0_0000 - 0x3000), list.FindFreeRange(0x3000, low, high));
        Assert.Equal(A(0x7eff_ffc0_0000), list.FindFreeRange(M2, low, high, M2));

        // A gap that fits the length but not length + alignment - 4 KiB is passed over, as unmapped_area_topdown does.
        var tight = new VmaList();
        tight.Insert(Anon(0x40_0000, 0x60_0000));
        tight.Insert(Anon(0x80_0000, 0xa0_0000));
        Assert.Equal(A(0x20_0000), tight.FindFreeRange(M2, A(0), A(0xa0_0000), M2));
        Assert.Equal(A(0x60_0000), tight.FindFreeRange(M2, A(0), A(0xa0_0000)));
        Assert.Null(tight.FindFreeRange(M2, A(0x50_0000), A(0xa0_0000), M2));
    }

    [Fact]
    public void FindFreeRange_keeps_the_stack_guard_gap_below_a_grows_down_vma()
    {
        var list = new VmaList();
        list.Insert(Anon(0x7fff_f000_0000, 0x7fff_f010_0000, flags: VmaFlags.GrowsDown));
        Assert.Equal(A(0x7fff_f000_0000 - VmaList.DefaultStackGuardGap - K4), list.FindFreeRange(K4, A(0x1_0000), A(0x7fff_f000_0000)));
    }

    [Fact]
    public void FindFreeRange_returns_null_when_nothing_fits_and_rejects_bad_arguments()
    {
        var list = new VmaList();
        list.Insert(Anon(0x10000, 0x20000));
        Assert.Null(list.FindFreeRange(0x1000, A(0x10000), A(0x20000)));
        Assert.ThrowsAny<ArgumentException>(() => list.FindFreeRange(0, A(0x10000), A(0x20000)));
        Assert.ThrowsAny<ArgumentException>(() => list.FindFreeRange(0x1800, A(0x10000), A(0x20000)));
        Assert.ThrowsAny<ArgumentException>(() => list.FindFreeRange(0x1000, A(0x10000), A(0x20000), 0x3000));
        Assert.ThrowsAny<ArgumentException>(() => list.FindFreeRange(0x1000, A(0x20000), A(0x10000)));
    }

    [Theory]
    [InlineData(2UL << 20)]
    [InlineData(4UL << 20)]
    [InlineData(64UL << 20)]
    public void FindFreeRangeForAnonymous_aligns_multiples_of_2_MiB_to_2_MiB(ulong length)
    {
        var list = new VmaList();
        list.Insert(Anon(0x7f00_0012_3000, 0x7f00_0100_0000));
        VirtualAddress? address = list.FindFreeRangeForAnonymous(length, A(0x1_0000), A(0x7f00_0100_0000));
        Assert.NotNull(address);
        Assert.Equal(0UL, address.Value.Value % M2);
        Assert.True(address.Value.Value + length <= 0x7f00_0012_3000UL);
        Assert.Empty(list.FindIntersecting(address.Value, address.Value.Add(length)));
    }

    [Fact]
    public void FindFreeRangeForAnonymous_rounds_up_inside_the_padded_area_or_takes_its_top_when_already_aligned()
    {
        // Padded search lands on 0x7f00_0012_3000 - 4 MiB = 0x7eff_ffd2_3000, not aligned: rounded up to 0x7eff_ffe0_0000.
        var unaligned = new VmaList();
        unaligned.Insert(Anon(0x7f00_0012_3000, 0x7f00_0100_0000));
        Assert.Equal(A(0x7eff_ffe0_0000), unaligned.FindFreeRangeForAnonymous(M2, A(0x1_0000), A(0x7f00_0100_0000)));

        // Padded search lands on an aligned address: the mapping goes 2 MiB above it, touching the VMA above.
        var aligned = new VmaList();
        aligned.Insert(Anon(0x7f00_0040_0000, 0x7f00_0100_0000));
        Assert.Equal(A(0x7f00_0020_0000), aligned.FindFreeRangeForAnonymous(M2, A(0x1_0000), A(0x7f00_0100_0000)));
    }

    [Theory]
    [InlineData(4096UL)]
    [InlineData(3UL << 20)]
    [InlineData((2UL << 20) + 4096)]
    public void FindFreeRangeForAnonymous_gives_other_lengths_plain_page_alignment(ulong length)
    {
        var list = new VmaList();
        list.Insert(Anon(0x7f00_0012_3000, 0x7f00_0100_0000));
        Assert.Equal(A(0x7f00_0012_3000 - length), list.FindFreeRangeForAnonymous(length, A(0x1_0000), A(0x7f00_0100_0000)));
    }

    [Fact]
    public void FindFreeRangeForAnonymous_falls_back_to_an_unaligned_range_when_the_padded_search_fails()
    {
        var list = new VmaList();
        list.Insert(Anon(0x10_0000, 0x10_1000));
        list.Insert(Anon(0x30_1000, 0x40_0000));
        Assert.Equal(A(0x10_1000), list.FindFreeRangeForAnonymous(M2, A(0x10_0000), A(0x40_0000)));
    }
}
