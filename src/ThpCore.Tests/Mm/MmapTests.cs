using System;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;
using Xunit;
using static ThpCore.Tests.Mm.MmFixtures;

namespace ThpCore.Tests.Mm;

/// <summary><see cref="AddressSpace.Map"/> placement: hints, MAP_FIXED and MAP_FIXED_NOREPLACE as x86-64 Linux v6.12.</summary>
public sealed class MmapTests
{
    // 0x7fff_ffff_f000 (TASK_SIZE and DEFAULT_MAP_WINDOW with 4-level paging) − 128 MiB.
    private const ulong ExpectedMmapBase = 0x7FFF_F7FF_F000;

    private static AddressSpace NewSpace(PagingMode mode = PagingMode.FourLevel) =>
        new(new MemoryNode(16UL << 20), new ThpSettings { Enabled = ThpEnabled.Always }, mode: mode);

    [Theory]
    [InlineData(PagingMode.FourLevel)]
    [InlineData(PagingMode.FiveLevel)]
    public void Without_a_hint_mappings_go_below_the_47_bit_window_in_both_paging_modes(PagingMode mode)
    {
        AddressSpace space = NewSpace(mode);
        Assert.Equal(ExpectedMmapBase, space.MmapBase);

        VirtualAddress small = space.Map(3 * K4, Rw);
        Assert.Equal(ExpectedMmapBase - (3 * K4), small.Value);

        // A multiple of 2 MiB is THP-aligned (thp_get_unmapped_area).
        VirtualAddress huge = space.Map(M2, Rw);
        Assert.Equal(0UL, huge.Value % M2);
        Assert.True(huge.Value + M2 <= small.Value);
    }

    [Fact]
    public void A_free_hint_is_used_as_given_rounded_down_and_not_THP_aligned()
    {
        AddressSpace space = NewSpace();
        Assert.Equal(0x1000_0000UL, space.Map(M2, Rw, address: VirtualAddress.FromRaw(0x1000_0000)).Value);
        Assert.Equal(0x2000_1000UL, space.Map(M2, Rw, address: VirtualAddress.FromRaw(0x2000_1234)).Value);
        Assert.Single(space.Vmas.FindIntersecting(VirtualAddress.FromRaw(0x2000_1000), VirtualAddress.FromRaw(0x2020_1000)));
    }

    [Fact]
    public void A_hint_below_mmap_min_addr_is_raised_to_it()
    {
        AddressSpace space = NewSpace();
        Assert.Equal(AddressSpace.MmapMinAddress, space.Map(K4, Rw, address: VirtualAddress.FromRaw(0x10)).Value);
    }

    [Fact]
    public void A_hint_that_overlaps_a_mapping_falls_back_to_the_search_without_THP_alignment()
    {
        AddressSpace space = NewSpace();
        VirtualAddress first = space.Map(4 * M2, Rw, address: VirtualAddress.FromRaw(0x4000_0000));

        // Inside the first mapping, and just below it but running into it: both searched for instead.
        VirtualAddress inside = space.Map(M2, Rw, address: first.Add(K4));
        VirtualAddress runningInto = space.Map(M2, Rw, address: VirtualAddress.FromRaw(first.Value - K4));
        Assert.NotEqual(first.Add(K4), inside);
        Assert.NotEqual(first.Value - K4, runningInto.Value);

        // The search for a hinted 2 MiB is not THP-aligned: top-down from MmapBase, which is not 2 MiB-aligned.
        Assert.Equal(ExpectedMmapBase - M2, inside.Value);
        Assert.Equal(ExpectedMmapBase - (2 * M2), runningInto.Value);

        // Just below it and ending at its start: used.
        Assert.Equal(first.Value - M2, space.Map(M2, Rw, address: VirtualAddress.FromRaw(first.Value - M2)).Value);
    }

    [Fact]
    public void With_5_level_paging_a_hint_above_the_47_bit_window_opens_the_56_bit_space()
    {
        AddressSpace space = NewSpace(PagingMode.FiveLevel);
        VirtualAddress high = space.Map(M2, Rw, address: VirtualAddress.FromRaw(1UL << 50));
        Assert.Equal(1UL << 50, high.Value);
        Assert.True(space.Access(high.Add(8), AccessKind.Write).IsTranslated);

        // A hint straddling the window is not valid (mmap_address_hint_valid) and not above it: searched below the base.
        VirtualAddress straddling = space.Map(M2, Rw, address: VirtualAddress.FromRaw((1UL << 47) - K4));
        Assert.Equal(ExpectedMmapBase - M2, straddling.Value);

        // A hint above the window that is taken: the search runs up to the base raised by the space above the window.
        VirtualAddress raised = space.Map(M2, Rw, address: high.Add(K4));
        Assert.Equal(space.MmapBase + (space.Vmas.TaskSize - ((1UL << 47) - K4)) - M2, raised.Value);

        // With 4-level paging, the same hint is past the task size and is searched for below the base.
        AddressSpace four = NewSpace();
        Assert.Equal(ExpectedMmapBase - M2, four.Map(M2, Rw, address: VirtualAddress.FromRaw(1UL << 50)).Value);
    }

    [Fact]
    public void MAP_FIXED_replaces_what_is_there_and_frees_its_pages_and_tables()
    {
        AddressSpace space = NewSpace();
        VirtualAddress start = space.Map(4 * M2, Rw, address: VirtualAddress.FromRaw(0x4000_0000));
        ulong before = space.Node.Buddy.FreeFrames;
        for (ulong i = 0; i < 4; i++)
        {
            AccessResult w = space.Access(start.Add((i * M2) + 8), AccessKind.Write);
            space.Node.Memory.WriteUInt64(w.PhysicalAddress, 0xAB);
        }

        VirtualAddress over = space.Map(M2 + K4, Protection.Read, address: start.Add(M2), mapFlags: MapFlags.Fixed);

        Assert.Equal(start.Add(M2), over);
        Assert.Equal(3, space.Vmas.All.Count);
        Assert.Equal(Protection.Read, space.Vmas.Find(start.Add(M2))!.Protection);

        // The replaced THP is gone (a read maps zero), the others keep their bytes.
        AccessResult read = space.Access(start.Add(M2 + 8), AccessKind.Read);
        Assert.Equal(0UL, ((IPhysicalMemory)space.Node.Memory).ReadUInt64(read.PhysicalAddress));
        Assert.Equal(0xABUL, ((IPhysicalMemory)space.Node.Memory).ReadUInt64(space.Access(start.Add(8), AccessKind.Read).PhysicalAddress));
        Assert.Equal(0xABUL, ((IPhysicalMemory)space.Node.Memory).ReadUInt64(space.Access(start.Add((3 * M2) + 8), AccessKind.Read).PhysicalAddress));
        Assert.Null(AddressSpaceProperties.CheckBooks([space]));
        Assert.True(space.Node.Buddy.FreeFrames < before);
    }

    [Fact]
    public void MAP_FIXED_NOREPLACE_over_a_mapping_is_refused_with_EEXIST_and_changes_nothing()
    {
        AddressSpace space = NewSpace();
        VirtualAddress start = space.Map(M2, Rw, address: VirtualAddress.FromRaw(0x4000_0000));

        ArgumentException error = Assert.Throws<ArgumentException>(() => space.Map(K4, Rw, address: start.Add(M2 - K4), mapFlags: MapFlags.FixedNoReplace));
        Assert.Contains("EEXIST", error.Message, StringComparison.Ordinal);
        Assert.Single(space.Vmas.All);
        Assert.Equal(Rw, space.Vmas.All[0].Protection);

        // Right after it: free, mapped exactly there, and merged with it.
        Assert.Equal(start.Add(M2), space.Map(K4, Rw, address: start.Add(M2), mapFlags: MapFlags.FixedNoReplace));
        Assert.Single(space.Vmas.All);
    }

    [Fact]
    public void Fixed_misuse_is_refused_with_the_errno_in_the_message()
    {
        AddressSpace space = NewSpace();
        Assert.Contains("EINVAL", Assert.Throws<ArgumentException>(() => space.Map(K4, Rw, mapFlags: MapFlags.Fixed)).Message, StringComparison.Ordinal);
        Assert.Contains("EINVAL", Assert.Throws<ArgumentException>(() => space.Map(K4, Rw, address: VirtualAddress.FromRaw(0x4000_0010), mapFlags: MapFlags.Fixed)).Message, StringComparison.Ordinal);
        Assert.Contains("EPERM", Assert.Throws<ArgumentOutOfRangeException>(() => space.Map(K4, Rw, address: VirtualAddress.FromRaw(0), mapFlags: MapFlags.FixedNoReplace)).Message, StringComparison.Ordinal);
        Assert.Contains("ENOMEM", Assert.Throws<ArgumentOutOfRangeException>(() => space.Map(2 * K4, Rw, address: VirtualAddress.FromRaw(space.Vmas.TaskSize - K4), mapFlags: MapFlags.Fixed)).Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => space.Map(K4, Rw, mapFlags: (MapFlags)0x20));
        Assert.Empty(space.Vmas.All);
    }
}
