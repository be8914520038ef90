using System;
using System.Collections.Generic;
using System.Linq;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using ThpCore.Paging;
using Xunit;

namespace ThpCore.Tests.Paging;

public sealed class PageTableMapperTests
{
    private const ulong MemorySize = 64UL << 20;
    private const ulong TablesStart = 1UL << 20;

    private const PageTableFlags P = PageTableFlags.Present;
    private const PageTableFlags W = PageTableFlags.Writable;
    private const PageTableFlags U = PageTableFlags.User;

    public static TheoryData<PagingMode, PageSize, ulong> RoundTripCases()
    {
        var data = new TheoryData<PagingMode, PageSize, ulong>();
        foreach (PageSize size in new[] { PageSize.Size4K, PageSize.Size2M, PageSize.Size1G })
        {
            data.Add(PagingMode.FourLevel, size, 0x0000_7F12_C000_0000UL);
            data.Add(PagingMode.FourLevel, size, 0xFFFF_8000_4000_0000UL);
            data.Add(PagingMode.FiveLevel, size, 0x00AB_7F12_C000_0000UL);
            data.Add(PagingMode.FiveLevel, size, 0xFF12_3456_4000_0000UL);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(RoundTripCases))]
    public void Map_then_translate_gives_the_frame_plus_offset_for_every_size_in_both_modes(PagingMode mode, PageSize size, ulong region)
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, _) = NewMapper(mode);
        var page = VirtualAddress.Create(region + (3 * size.Bytes()), mode);
        var frame = PhysicalAddress.Create(0x12_0000_0000UL + (5 * size.Bytes()));

        mapper.Map(page, frame, size, P | W | U).Ignore();

        CpuState cpu = Cpu(mapper);
        ulong offset = size.Bytes() - 8;
        var trace = new WalkTrace();
        WalkResult result = PageWalker.Translate(cpu, memory, page.Add(offset), AccessKind.Write, Privilege.User, new WalkOptions { Probe = true }, trace);

        Assert.True(result.IsTranslated, result.ToString());
        Assert.Equal(frame.Add(offset), result.PhysicalAddress);
        Assert.Equal(size, result.PageSize);
        Assert.True(result.IsWritable && result.IsUser);
        Assert.Equal((int)mode - (int)size, trace.Steps.Count);
        Assert.Equal(mode.RootLevel(), trace.Steps[0].Level);

        Assert.True(mapper.TryGetLeaf(page.Add(offset), out PageTableEntry leaf, out PhysicalAddress at));
        Assert.Equal(size, leaf.LeafSize);
        Assert.Equal(frame, leaf.Address);
        Assert.Equal(trace.Steps[^1].EntryAddress, at);
    }

    [Fact]
    public void A_new_mapper_allocates_one_zeroed_root_and_maps_nothing()
    {
        var memory = new SparsePhysicalMemory(MemorySize);
        var allocator = new SimpleFrameAllocator(PhysicalAddress.Create(TablesStart), PhysicalAddress.Create(MemorySize));
        memory.GetWritableFrame(TablesStart >> 12).Fill(0xFF);

        var mapper = new PageTableMapper(memory, allocator, PagingMode.FiveLevel);

        Assert.Equal(PhysicalAddress.Create(TablesStart), mapper.Root);
        Assert.Equal(PagingMode.FiveLevel, mapper.Mode);
        Assert.Equal(1, allocator.AllocatedCount);
        Assert.True(memory.ReadFrame(TablesStart >> 12).IndexOfAnyExcept((byte)0) < 0);
        Assert.False(mapper.TryGetLeaf(VirtualAddress.Create(0x1000, PagingMode.FiveLevel), out PageTableEntry stop, out _));
        Assert.Equal(PagingLevel.Pml5, stop.Level);
        Assert.True(stop.IsEmpty);
        Assert.Empty(mapper.PendingInvalidations);
    }

    [Fact]
    public void New_tables_are_zeroed_even_when_their_frames_held_garbage()
    {
        var memory = new SparsePhysicalMemory(MemorySize);
        for (ulong frame = TablesStart >> 12; frame < (TablesStart >> 12) + 8; frame++)
        {
            memory.GetWritableFrame(frame).Fill(0xA5);
        }

        var allocator = new SimpleFrameAllocator(PhysicalAddress.Create(TablesStart), PhysicalAddress.Create(MemorySize));
        var mapper = new PageTableMapper(memory, allocator, PagingMode.FourLevel);
        mapper.Map(VirtualAddress.Create(0x40_0000), PhysicalAddress.Create(0x9000), PageSize.Size4K, P).Ignore();

        Assert.Equal(4, allocator.AllocatedCount);
        for (ulong frame = TablesStart >> 12; frame < (TablesStart >> 12) + 4; frame++)
        {
            ulong[] words = MemoryWords(memory, frame);
            Assert.Single(words, w => w != 0);
        }

        Assert.True(PageWalker.Translate(Cpu(mapper), memory, VirtualAddress.Create(0x40_0123), AccessKind.Read, Privilege.Supervisor).IsTranslated);
        Assert.False(mapper.TryGetLeaf(VirtualAddress.Create(0x40_1000), out _, out _));
    }

    [Fact]
    public void Intermediate_entries_get_present_and_the_leafs_write_and_user_rights_but_never_xd_or_caching_bits()
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, _) = NewMapper(PagingMode.FiveLevel);
        var page = VirtualAddress.Create(0x0012_3456_7890_0000, PagingMode.FiveLevel);
        PageTableFlags leafFlags = P | W | U | PageTableFlags.ExecuteDisable | PageTableFlags.WriteThrough
            | PageTableFlags.CacheDisable | PageTableFlags.Global | PageTableFlags.Accessed | PageTableFlags.Dirty;

        mapper.Map(page, PhysicalAddress.Create(0x7000), PageSize.Size4K, leafFlags).Ignore();

        IReadOnlyList<WalkStep> steps = Walk(mapper, memory, page);
        Assert.Equal(5, steps.Count);
        foreach (WalkStep step in steps.Take(4))
        {
            Assert.Equal(P | W | U, step.Entry.Flags);
            Assert.Equal(0UL, step.Entry.Raw & ~PageTableEntry.AddressMask4K & ~(ulong)(P | W | U));
        }

        Assert.Equal(leafFlags, steps[4].Entry.Flags);
    }

    [Fact]
    public void Existing_intermediate_entries_are_widened_but_never_narrowed()
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, _) = NewMapper(PagingMode.FourLevel);
        var readOnly = VirtualAddress.Create(0x20_0000);
        var writable = VirtualAddress.Create(0x20_1000);
        var userOnly = VirtualAddress.Create(0x20_2000);

        mapper.Map(readOnly, PhysicalAddress.Create(0x1_0000), PageSize.Size4K, P).Ignore();
        Assert.All(Walk(mapper, memory, readOnly).Take(3), s => Assert.Equal(P, s.Entry.Flags));

        mapper.Map(writable, PhysicalAddress.Create(0x1_1000), PageSize.Size4K, P | W).Ignore();
        Assert.All(Walk(mapper, memory, readOnly).Take(3), s => Assert.Equal(P | W, s.Entry.Flags));

        mapper.Map(userOnly, PhysicalAddress.Create(0x1_2000), PageSize.Size4K, P | U).Ignore();
        Assert.All(Walk(mapper, memory, readOnly).Take(3), s => Assert.Equal(P | W | U, s.Entry.Flags));

        WalkResult read = PageWalker.Translate(Cpu(mapper), memory, readOnly, AccessKind.Read, Privilege.Supervisor);
        Assert.False(read.IsWritable);
        Assert.False(read.IsUser);
    }

    [Fact]
    public void Mapping_a_4K_page_inside_an_existing_2M_page_is_refused_naming_both_sizes()
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, SimpleFrameAllocator allocator) = NewMapper(PagingMode.FourLevel);
        mapper.Map(VirtualAddress.Create(0x4000_0000), PhysicalAddress.Create(0x20_0000), PageSize.Size2M, P).Ignore();
        byte[] before = Snapshot(memory, allocator);

        var ex = Assert.Throws<InvalidOperationException>(
            () => mapper.Map(VirtualAddress.Create(0x4010_3000), PhysicalAddress.Create(0x5000), PageSize.Size4K, P));

        Assert.Contains("0x40103000", ex.Message, StringComparison.Ordinal);
        Assert.Contains("4K", ex.Message, StringComparison.Ordinal);
        Assert.Contains("2M page at 0x40000000", ex.Message, StringComparison.Ordinal);
        Assert.Equal(before, Snapshot(memory, allocator));
        Assert.Empty(mapper.PendingInvalidations);
    }

    [Fact]
    public void Mapping_a_2M_page_where_a_page_table_has_entries_is_refused_naming_both_sizes()
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, SimpleFrameAllocator allocator) = NewMapper(PagingMode.FourLevel);
        mapper.Map(VirtualAddress.Create(0x4010_3000), PhysicalAddress.Create(0x5000), PageSize.Size4K, P).Ignore();
        byte[] before = Snapshot(memory, allocator);

        var ex = Assert.Throws<InvalidOperationException>(
            () => mapper.Map(VirtualAddress.Create(0x4000_0000), PhysicalAddress.Create(0x20_0000), PageSize.Size2M, P));

        Assert.Contains("0x40000000", ex.Message, StringComparison.Ordinal);
        Assert.Contains("2M", ex.Message, StringComparison.Ordinal);
        Assert.Contains("4K", ex.Message, StringComparison.Ordinal);
        Assert.Equal(before, Snapshot(memory, allocator));
    }

    [Fact]
    public void Mapping_across_1G_and_2M_pages_is_refused_in_both_directions()
    {
        (PageTableMapper mapper, _, _) = NewMapper(PagingMode.FiveLevel);
        var gig = VirtualAddress.Create(0x40_0000_0000, PagingMode.FiveLevel);
        mapper.Map(gig, PhysicalAddress.Create(0x4000_0000), PageSize.Size1G, P).Ignore();

        var inside = Assert.Throws<InvalidOperationException>(
            () => mapper.Map(gig.Add(0x60_0000), PhysicalAddress.Create(0x20_0000), PageSize.Size2M, P));
        Assert.Contains("2M", inside.Message, StringComparison.Ordinal);
        Assert.Contains("1G page at 0x4000000000", inside.Message, StringComparison.Ordinal);

        var other = VirtualAddress.Create(0x80_0000_0000, PagingMode.FiveLevel);
        mapper.Map(other.Add(0x20_0000), PhysicalAddress.Create(0x20_0000), PageSize.Size2M, P).Ignore();
        var over = Assert.Throws<InvalidOperationException>(
            () => mapper.Map(other, PhysicalAddress.Create(0x8000_0000), PageSize.Size1G, P));
        Assert.Contains("1G", over.Message, StringComparison.Ordinal);
        Assert.Contains("2M page", over.Message, StringComparison.Ordinal);
        Assert.Contains("0x8000000000", over.Message, StringComparison.Ordinal);

        var third = VirtualAddress.Create(0xC0_0000_0000, PagingMode.FiveLevel);
        mapper.Map(third.Add(0x3000), PhysicalAddress.Create(0x3000), PageSize.Size4K, P).Ignore();
        var overSmall = Assert.Throws<InvalidOperationException>(
            () => mapper.Map(third, PhysicalAddress.Create(0xC000_0000), PageSize.Size1G, P));
        Assert.Contains("4K pages", overSmall.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(PageSize.Size4K)]
    [InlineData(PageSize.Size2M)]
    [InlineData(PageSize.Size1G)]
    public void Mapping_over_a_present_leaf_of_the_same_size_is_refused_as_already_mapped(PageSize size)
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, SimpleFrameAllocator allocator) = NewMapper(PagingMode.FourLevel);
        var page = VirtualAddress.Create(5 * PageSize.Size1G.Bytes());
        mapper.Map(page, PhysicalAddress.Create(size.Bytes()), size, P).Ignore();
        byte[] before = Snapshot(memory, allocator);

        var ex = Assert.Throws<InvalidOperationException>(
            () => mapper.Map(page, PhysicalAddress.Create(2 * size.Bytes()), size, P | W));

        Assert.Contains("already mapped", ex.Message, StringComparison.Ordinal);
        Assert.Contains(page.ToString(), ex.Message, StringComparison.Ordinal);
        Assert.Equal(before, Snapshot(memory, allocator));
        Assert.Empty(mapper.PendingInvalidations);
    }

    [Fact]
    public void An_empty_page_table_is_replaced_by_a_2M_leaf_and_its_frame_freed_once_the_flush_is_done()
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, SimpleFrameAllocator allocator) = NewMapper(PagingMode.FourLevel);
        var small = VirtualAddress.Create(0x60_5000);
        mapper.Map(small, PhysicalAddress.Create(0x5000), PageSize.Size4K, P).Ignore();
        PhysicalAddress pageTable = Walk(mapper, memory, small)[2].Entry.Address;
        mapper.Unmap(small).Flush.Ignore();
        Assert.Equal(4, allocator.AllocatedCount);

        TlbFlush flush = mapper.Map(VirtualAddress.Create(0x60_0000), PhysicalAddress.Create(0x20_0000), PageSize.Size2M, P);

        WalkResult result = PageWalker.Translate(Cpu(mapper), memory, small, AccessKind.Read, Privilege.Supervisor);
        Assert.Equal(PageSize.Size2M, result.PageSize);
        Assert.Equal(PhysicalAddress.Create(0x20_5000), result.PhysicalAddress);

        // A paging-structure cache may still point at the old page table: its frame must not be reused yet.
        Assert.True(allocator.IsAllocated(pageTable));
        mapper.Map(VirtualAddress.Create(0x80_1000), PhysicalAddress.Create(0x1000), PageSize.Size4K, P).Ignore();
        Assert.NotEqual(pageTable, Walk(mapper, memory, VirtualAddress.Create(0x80_1000))[2].Entry.Address);

        flush.Flush(new Tlb(), Cpu(mapper));
        Assert.False(allocator.IsAllocated(pageTable));
        Assert.Equal(4, allocator.AllocatedCount);
        flush.Flush(new Tlb(), Cpu(mapper));
        flush.Ignore();
        Assert.Equal(4, allocator.AllocatedCount);
    }

    [Fact]
    public void A_replaced_table_is_kept_until_the_latest_change_to_its_page_is_settled()
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, SimpleFrameAllocator allocator) = NewMapper(PagingMode.FiveLevel);
        var page = VirtualAddress.Create(0x20_0000, PagingMode.FiveLevel);
        mapper.Map(page, PhysicalAddress.Create(0x1000), PageSize.Size4K, P).Ignore();
        PhysicalAddress pageTable = Walk(mapper, memory, page)[3].Entry.Address;
        mapper.Unmap(page).Flush.Ignore();

        TlbFlush replace = mapper.Map(page, PhysicalAddress.Create(0x20_0000), PageSize.Size2M, P);
        TlbFlush update = mapper.UpdateFlags(page, P | W);
        replace.Ignore();
        Assert.True(allocator.IsAllocated(pageTable));
        Assert.Equal(new[] { page }, mapper.PendingInvalidations);

        update.Ignore();
        Assert.False(allocator.IsAllocated(pageTable));
        Assert.Empty(mapper.PendingInvalidations);
    }

    [Fact]
    public void An_empty_page_directory_is_replaced_by_a_1G_leaf_but_one_holding_empty_page_tables_is_not()
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, SimpleFrameAllocator allocator) = NewMapper(PagingMode.FourLevel);
        var gig = VirtualAddress.Create(0x1_4000_0000);
        mapper.Map(gig.Add(0x20_0000), PhysicalAddress.Create(0x20_0000), PageSize.Size2M, P).Ignore();
        PhysicalAddress directory = Walk(mapper, memory, gig.Add(0x20_0000))[1].Entry.Address;
        mapper.Unmap(gig.Add(0x20_0000)).Flush.Ignore();

        TlbFlush replace = mapper.Map(gig, PhysicalAddress.Create(0x4000_0000), PageSize.Size1G, P);
        Assert.True(allocator.IsAllocated(directory));
        replace.Ignore();
        Assert.False(allocator.IsAllocated(directory));
        Assert.Equal(2, allocator.AllocatedCount);

        var next = VirtualAddress.Create(0x1_8000_0000);
        mapper.Map(next.Add(0x1000), PhysicalAddress.Create(0x1000), PageSize.Size4K, P).Ignore();
        mapper.Unmap(next.Add(0x1000)).Flush.Ignore();
        var ex = Assert.Throws<InvalidOperationException>(() => mapper.Map(next, PhysicalAddress.Create(0x8000_0000), PageSize.Size1G, P));
        Assert.Contains("not empty", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_not_present_entry_holding_software_bits_is_never_overwritten()
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, _) = NewMapper(PagingMode.FourLevel);
        var page = VirtualAddress.Create(0x7000_1000);
        mapper.Map(page, PhysicalAddress.Create(0x1000), PageSize.Size4K, P).Ignore();
        Assert.True(mapper.TryGetLeaf(page, out _, out PhysicalAddress pte));
        memory.WriteUInt64(pte, 0x0000_0012_3456_7000); // e.g. a swap entry: P = 0

        var ex = Assert.Throws<InvalidOperationException>(() => mapper.Map(page, PhysicalAddress.Create(0x2000), PageSize.Size4K, P));
        Assert.Contains("not present but not empty", ex.Message, StringComparison.Ordinal);
        Assert.Throws<InvalidOperationException>(() => mapper.Unmap(page));
        Assert.Equal(0x0000_0012_3456_7000UL, ((IPhysicalMemory)memory).ReadUInt64(pte));
    }

    [Theory]
    [InlineData(PagingMode.FourLevel, PageSize.Size4K)]
    [InlineData(PagingMode.FourLevel, PageSize.Size2M)]
    [InlineData(PagingMode.FiveLevel, PageSize.Size1G)]
    public void Unmap_returns_frame_and_size_and_clears_the_leaf(PagingMode mode, PageSize size)
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, SimpleFrameAllocator allocator) = NewMapper(mode);
        var page = VirtualAddress.Create(0xFFFF_FFFF_C000_0000UL, mode);
        var frame = PhysicalAddress.Create(7 * size.Bytes());
        mapper.Map(page, frame, size, P | W, pat: true, protectionKey: 3).Ignore();
        Assert.True(mapper.TryGetLeaf(page, out _, out PhysicalAddress entry));
        int tables = allocator.AllocatedCount;

        (PhysicalAddress unmappedFrame, PageSize unmappedSize, TlbFlush flush) = mapper.Unmap(page);

        Assert.Equal(frame, unmappedFrame);
        Assert.Equal(size, unmappedSize);
        Assert.Equal(page, flush.Page);
        Assert.Equal(size, flush.Size);
        Assert.Equal(0UL, ((IPhysicalMemory)memory).ReadUInt64(entry));
        Assert.Equal(tables, allocator.AllocatedCount);
        Assert.Equal(WalkStatus.PageFault, PageWalker.Translate(Cpu(mapper), memory, page, AccessKind.Read, Privilege.Supervisor).Status);
        flush.Ignore();

        var ex = Assert.Throws<InvalidOperationException>(() => mapper.Unmap(page));
        Assert.Contains("not mapped", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Unmap_of_an_unmapped_address_or_of_the_middle_of_a_page_is_refused()
    {
        (PageTableMapper mapper, _, _) = NewMapper(PagingMode.FourLevel);
        Assert.Throws<InvalidOperationException>(() => mapper.Unmap(VirtualAddress.Create(0x1000)));

        mapper.Map(VirtualAddress.Create(0x20_0000), PhysicalAddress.Create(0x40_0000), PageSize.Size2M, P).Ignore();
        var ex = Assert.Throws<ArgumentException>(() => mapper.Unmap(VirtualAddress.Create(0x20_1000)));
        Assert.Equal("page", ex.ParamName);
        Assert.Contains("0x201000", ex.Message, StringComparison.Ordinal);
        Assert.True(mapper.TryGetLeaf(VirtualAddress.Create(0x20_1000), out _, out _));
    }

    [Fact]
    public void UpdateFlags_rewrites_the_flags_and_keeps_frame_size_pat_key_and_software_bits()
    {
        (PageTableMapper mapper, SparsePhysicalMemory memory, _) = NewMapper(PagingMode.FourLevel);
        var page = VirtualAddress.Create(0x7F00_0020_0000);
        var frame = PhysicalAddress.Create(0x1234_0020_0000);
        mapper.Map(page, frame, PageSize.Size2M, P | PageTableFlags.Global, pat: true, protectionKey: 9).Ignore();
        Assert.True(mapper.TryGetLeaf(page, out PageTableEntry leaf, out PhysicalAddress at));
        memory.WriteUInt64(at, leaf.WithAvailableBits(0x0010_0000_0000_0600).Raw);

        TlbFlush flush = mapper.UpdateFlags(page, P | W | U | PageTableFlags.ExecuteDisable);

        Assert.Equal(page, flush.Page);
        Assert.Equal(PageSize.Size2M, flush.Size);
        Assert.True(mapper.TryGetLeaf(page, out PageTableEntry updated, out _));
        Assert.Equal(P | W | U | PageTableFlags.ExecuteDisable, updated.Flags);
        Assert.Equal(frame, updated.Address);
        Assert.Equal(PageSize.Size2M, updated.LeafSize);
        Assert.True(updated.Pat);
        Assert.Equal(9, updated.ProtectionKey);
        Assert.Equal(0x0010_0000_0000_0600UL, updated.AvailableBits);

        WalkResult write = PageWalker.Translate(Cpu(mapper), memory, page.Add(0x1234), AccessKind.Write, Privilege.User);
        Assert.True(write.IsTranslated, write.ToString());
        Assert.True(write.IsExecuteDisable);
        flush.Ignore();
    }

    [Fact]
    public void UpdateFlags_refuses_unmapped_pages_and_flags_without_present()
    {
        (PageTableMapper mapper, _, _) = NewMapper(PagingMode.FourLevel);
        var page = VirtualAddress.Create(0x5000);
        Assert.Throws<InvalidOperationException>(() => mapper.UpdateFlags(page, P));
        mapper.Map(page, PhysicalAddress.Create(0x5000), PageSize.Size4K, P).Ignore();
        Assert.Equal("flags", Assert.Throws<ArgumentException>(() => mapper.UpdateFlags(page, W)).ParamName);
        Assert.Empty(mapper.PendingInvalidations);
    }

    [Fact]
    public void Allocation_failure_leaves_memory_allocator_and_pending_list_untouched()
    {
        var memory = new SparsePhysicalMemory(MemorySize);
        var allocator = new SimpleFrameAllocator(PhysicalAddress.Create(TablesStart), PhysicalAddress.Create(TablesStart + 0x4000));
        var mapper = new PageTableMapper(memory, allocator, PagingMode.FourLevel);
        var first = VirtualAddress.Create(0x40_0000);
        mapper.Map(first, PhysicalAddress.Create(0x1000), PageSize.Size4K, P).Ignore();
        Assert.Equal(4, allocator.AllocatedCount);

        // Next to 'first' but in another 2 MiB region: needs one new page table, and would widen the
        // PML4E and PDPTE to W|U; the allocator has nothing left.
        byte[] before = Snapshot(memory, allocator);
        var second = VirtualAddress.Create(0x60_0000);
        Assert.False(mapper.TryMap(second, PhysicalAddress.Create(0x2000), PageSize.Size4K, P | W | U, out TlbFlush flush));
        Assert.Equal(default(TlbFlush).Page, flush.Page);
        Assert.Equal(before, Snapshot(memory, allocator));
        Assert.All(Walk(mapper, memory, first).Take(3), s => Assert.Equal(P, s.Entry.Flags));
        Assert.Empty(mapper.PendingInvalidations);

        var ex = Assert.Throws<InvalidOperationException>(() => mapper.Map(second, PhysicalAddress.Create(0x2000), PageSize.Size4K, P));
        Assert.Contains("allocator", ex.Message, StringComparison.Ordinal);
        Assert.Equal(before, Snapshot(memory, allocator));
    }

    [Fact]
    public void Frames_taken_before_the_allocator_ran_out_are_given_back()
    {
        var memory = new SparsePhysicalMemory(MemorySize);
        var allocator = new SimpleFrameAllocator(PhysicalAddress.Create(TablesStart), PhysicalAddress.Create(TablesStart + 0x3000));
        var mapper = new PageTableMapper(memory, allocator, PagingMode.FiveLevel);
        byte[] before = Snapshot(memory, allocator);

        Assert.False(mapper.TryMap(VirtualAddress.Create(0x1000, PagingMode.FiveLevel), PhysicalAddress.Create(0x1000), PageSize.Size4K, P, out _));

        Assert.Equal(1, allocator.AllocatedCount);
        Assert.False(allocator.IsAllocated(PhysicalAddress.Create(TablesStart + 0x1000)));
        Assert.False(allocator.IsAllocated(PhysicalAddress.Create(TablesStart + 0x2000)));
        Assert.Equal(before, Snapshot(memory, allocator));
        Assert.Throws<InvalidOperationException>(() => new PageTableMapper(memory, new SimpleFrameAllocator(PhysicalAddress.Zero, PhysicalAddress.Zero), PagingMode.FourLevel));
    }

    [Fact]
    public void Pending_invalidations_list_each_change_until_it_is_flushed_or_ignored()
    {
        (PageTableMapper mapper, _, _) = NewMapper(PagingMode.FourLevel);
        var tlb = new Tlb();
        var a = VirtualAddress.Create(0x20_0000);
        var b = VirtualAddress.Create(0x1000);

        TlbFlush mapA = mapper.Map(a, PhysicalAddress.Create(0x20_0000), PageSize.Size2M, P);
        TlbFlush mapB = mapper.Map(b, PhysicalAddress.Create(0x1000), PageSize.Size4K, P);
        Assert.Equal(new[] { b, a }, mapper.PendingInvalidations);
        Assert.Equal(PageSize.Size2M, mapA.Size);

        mapA.Flush(tlb, Cpu(mapper));
        Assert.Equal(new[] { b }, mapper.PendingInvalidations);
        mapA.Flush(tlb, Cpu(mapper));
        mapA.Ignore();
        Assert.Equal(new[] { b }, mapper.PendingInvalidations);

        mapB.Ignore();
        mapB.Ignore();
        Assert.Empty(mapper.PendingInvalidations);
    }

    [Fact]
    public void Ignoring_an_old_token_leaves_a_newer_change_pending_but_flushing_it_settles_both()
    {
        (PageTableMapper mapper, _, _) = NewMapper(PagingMode.FourLevel);
        var page = VirtualAddress.Create(0x3000);
        TlbFlush map = mapper.Map(page, PhysicalAddress.Create(0x3000), PageSize.Size4K, P);
        TlbFlush update = mapper.UpdateFlags(page, P | W);

        map.Ignore();
        Assert.Equal(new[] { page }, mapper.PendingInvalidations);
        update.Ignore();
        Assert.Empty(mapper.PendingInvalidations);

        TlbFlush unmap = mapper.Unmap(page).Flush;
        map.Flush(new Tlb(), Cpu(mapper));
        Assert.Empty(mapper.PendingInvalidations);
        unmap.Ignore();
        Assert.Empty(mapper.PendingInvalidations);
    }

    [Fact]
    public void The_default_token_does_nothing_and_flush_needs_a_tlb_and_a_cpu()
    {
        (PageTableMapper mapper, _, _) = NewMapper(PagingMode.FourLevel);
        TlbFlush map = mapper.Map(VirtualAddress.Create(0), PhysicalAddress.Zero, PageSize.Size4K, P);

        default(TlbFlush).Flush(new Tlb(), Cpu(mapper));
        default(TlbFlush).Ignore();
        Assert.Single(mapper.PendingInvalidations);
        Assert.Throws<ArgumentNullException>(() => map.Flush(null!, Cpu(mapper)));
        Assert.Throws<ArgumentNullException>(() => map.Flush(new Tlb(), null!));
        Assert.Single(mapper.PendingInvalidations);
    }

    [Fact]
    public void Misaligned_pages_and_frames_and_bad_flags_or_keys_are_argument_errors()
    {
        (PageTableMapper mapper, _, _) = NewMapper(PagingMode.FourLevel);
        var page2M = VirtualAddress.Create(0x20_0000);

        var badPage = Assert.Throws<ArgumentException>(() => mapper.Map(VirtualAddress.Create(0x20_1000), PhysicalAddress.Zero, PageSize.Size2M, P));
        Assert.Equal("page", badPage.ParamName);
        Assert.Contains("0x201000", badPage.Message, StringComparison.Ordinal);

        var badFrame = Assert.Throws<ArgumentException>(() => mapper.Map(page2M, PhysicalAddress.Create(0x30_0000), PageSize.Size2M, P));
        Assert.Equal("frame", badFrame.ParamName);
        Assert.Contains("0x300000", badFrame.Message, StringComparison.Ordinal);

        Assert.Equal("frame", Assert.Throws<ArgumentException>(() => mapper.Map(VirtualAddress.Create(0x4000_0000), PhysicalAddress.Create(0x20_0000), PageSize.Size1G, P)).ParamName);
        Assert.Equal("page", Assert.Throws<ArgumentException>(() => mapper.Map(VirtualAddress.Create(0x10), PhysicalAddress.Zero, PageSize.Size4K, P)).ParamName);
        Assert.Equal("flags", Assert.Throws<ArgumentException>(() => mapper.Map(page2M, PhysicalAddress.Zero, PageSize.Size2M, W | U)).ParamName);
        Assert.Equal("flags", Assert.Throws<ArgumentException>(() => mapper.Map(page2M, PhysicalAddress.Zero, PageSize.Size2M, P | (PageTableFlags)(1UL << 7))).ParamName);
        Assert.Equal("protectionKey", Assert.Throws<ArgumentOutOfRangeException>(() => mapper.Map(page2M, PhysicalAddress.Zero, PageSize.Size2M, P, protectionKey: 16)).ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => mapper.Map(page2M, PhysicalAddress.Zero, (PageSize)3, P));
        Assert.Empty(mapper.PendingInvalidations);
        Assert.False(mapper.TryGetLeaf(page2M, out _, out _));
    }

    [Fact]
    public void Non_canonical_addresses_are_out_of_range_for_the_mode()
    {
        (PageTableMapper four, _, _) = NewMapper(PagingMode.FourLevel);
        (PageTableMapper five, _, _) = NewMapper(PagingMode.FiveLevel);
        VirtualAddress bit47 = VirtualAddress.FromRaw(0x0000_8000_0000_0000);
        VirtualAddress bit56 = VirtualAddress.FromRaw(0x0100_0000_0000_0000);

        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => four.Map(bit47, PhysicalAddress.Zero, PageSize.Size4K, P));
        Assert.Equal("page", ex.ParamName);
        Assert.Contains("0x800000000000", ex.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentOutOfRangeException>(() => four.TryMap(bit47, PhysicalAddress.Zero, PageSize.Size4K, P, out _));
        Assert.Throws<ArgumentOutOfRangeException>(() => four.Unmap(bit47));
        Assert.Throws<ArgumentOutOfRangeException>(() => four.UpdateFlags(bit47, P));
        Assert.Throws<ArgumentOutOfRangeException>(() => four.TryGetLeaf(bit47, out _, out _));

        five.Map(bit47, PhysicalAddress.Zero, PageSize.Size4K, P).Ignore();
        Assert.Throws<ArgumentOutOfRangeException>(() => five.Map(bit56, PhysicalAddress.Zero, PageSize.Size4K, P));
    }

    [Fact]
    public void A_mapper_over_an_existing_root_sees_and_edits_the_same_tables()
    {
        (PageTableMapper first, SparsePhysicalMemory memory, SimpleFrameAllocator allocator) = NewMapper(PagingMode.FourLevel);
        var page = VirtualAddress.Create(0xFFFF_8880_0000_0000);
        first.Map(page, PhysicalAddress.Create(0x4000_0000), PageSize.Size1G, P | W).Ignore();

        var second = new PageTableMapper(memory, allocator, PagingMode.FourLevel, first.Root);
        Assert.Equal(first.Root, second.Root);
        Assert.True(second.TryGetLeaf(page.Add(0x1234_5678), out PageTableEntry leaf, out _));
        Assert.Equal(PageSize.Size1G, leaf.LeafSize);
        Assert.Equal(PageSize.Size1G, second.Unmap(page).Size);
        Assert.False(first.TryGetLeaf(page, out _, out _));
        Assert.Equal("existingRoot", Assert.Throws<ArgumentException>(() => new PageTableMapper(memory, allocator, PagingMode.FourLevel, PhysicalAddress.Create(0x1008))).ParamName);
        Assert.Throws<ArgumentNullException>(() => new PageTableMapper(null!, allocator, PagingMode.FourLevel));
        Assert.Throws<ArgumentNullException>(() => new PageTableMapper(memory, null!, PagingMode.FourLevel));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PageTableMapper(memory, allocator, (PagingMode)3));
    }

    [Property(Arbitrary = new[] { typeof(MapperArbitraries) }, MaxTest = 200)]
    public void Random_non_overlapping_mappings_translate_to_frame_plus_offset_with_their_size(MappingScenario scenario)
    {
        PagingMode mode = scenario.FiveLevel ? PagingMode.FiveLevel : PagingMode.FourLevel;
        (PageTableMapper mapper, SparsePhysicalMemory memory, SimpleFrameAllocator allocator) = NewMapper(mode);
        var accepted = new List<(VirtualAddress Page, PhysicalAddress Frame, PageSize Size, MappingSpec Spec)>();
        foreach (MappingSpec spec in scenario.Mappings)
        {
            VirtualAddress page = spec.Page(mode);
            PageSize size = spec.Size;
            ulong start = page.Value;
            ulong end = start + size.Bytes();
            if (accepted.Any(m => start < m.Page.Value + m.Size.Bytes() && m.Page.Value < end))
            {
                continue;
            }

            PhysicalAddress frame = spec.Frame;
            PageTableFlags flags = P | (spec.Writable ? W : 0) | (spec.User ? U : 0);
            mapper.Map(page, frame, size, flags).Ignore();
            accepted.Add((page, frame, size, spec));
        }

        Assert.NotEmpty(accepted);
        Assert.Empty(mapper.PendingInvalidations);
        CpuState cpu = Cpu(mapper);
        foreach ((VirtualAddress page, PhysicalAddress frame, PageSize size, MappingSpec spec) in accepted)
        {
            ulong offset = spec.OffsetSeed & size.OffsetMask();
            WalkResult result = PageWalker.Translate(cpu, memory, page.Add(offset), AccessKind.Read, Privilege.Supervisor);
            Assert.True(result.IsTranslated, result.ToString());
            Assert.Equal(frame.Add(offset), result.PhysicalAddress);
            Assert.Equal(size, result.PageSize);
            Assert.Equal(spec.Writable, result.IsWritable);
            Assert.Equal(spec.User, result.IsUser);
        }

        var tlb = new Tlb();
        foreach ((VirtualAddress page, PhysicalAddress frame, PageSize size, _) in accepted)
        {
            (PhysicalAddress unmappedFrame, PageSize unmappedSize, TlbFlush flush) = mapper.Unmap(page);
            Assert.Equal(frame, unmappedFrame);
            Assert.Equal(size, unmappedSize);
            flush.Flush(tlb, cpu);
            Assert.False(PageWalker.Translate(cpu, memory, page, AccessKind.Read, Privilege.Supervisor).IsTranslated);
        }

        Assert.Empty(mapper.PendingInvalidations);
        Assert.InRange(allocator.AllocatedCount, 1, 1 + (4 * accepted.Count));
    }

    private static (PageTableMapper Mapper, SparsePhysicalMemory Memory, SimpleFrameAllocator Allocator) NewMapper(PagingMode mode)
    {
        var memory = new SparsePhysicalMemory(MemorySize);
        var allocator = new SimpleFrameAllocator(PhysicalAddress.Create(TablesStart), PhysicalAddress.Create(MemorySize));
        return (new PageTableMapper(memory, allocator, mode), memory, allocator);
    }

    private static CpuState Cpu(PageTableMapper mapper) =>
        CpuState.Create(mapper.Root.Value, mapper.Mode == PagingMode.FiveLevel ? Cr4Flags.Pae | Cr4Flags.La57 : Cr4Flags.Pae);

    private static IReadOnlyList<WalkStep> Walk(PageTableMapper mapper, SparsePhysicalMemory memory, VirtualAddress address)
    {
        var trace = new WalkTrace();
        PageWalker.Translate(Cpu(mapper), memory, address, AccessKind.Read, Privilege.Supervisor, new WalkOptions { Probe = true }, trace);
        return trace.Steps;
    }

    private static ulong[] MemoryWords(SparsePhysicalMemory memory, ulong frame) => memory.ReadFrameWords(frame).ToArray();

    /// <summary>Every byte of the allocator's range plus the allocator's count: what "nothing changed" means.</summary>
    private static byte[] Snapshot(SparsePhysicalMemory memory, SimpleFrameAllocator allocator)
    {
        var bytes = new List<byte>();
        for (ulong frame = allocator.Start.FrameNumber; frame < allocator.Start.FrameNumber + 16 && frame < allocator.End.FrameNumber; frame++)
        {
            bytes.AddRange(memory.ReadFrame(frame).ToArray());
        }

        bytes.AddRange(BitConverter.GetBytes(allocator.AllocatedCount));
        return bytes.ToArray();
    }
}

/// <summary>One candidate mapping: a size, a place in a small window of address space, a frame and an offset.</summary>
public sealed record MappingSpec(int SizeIndex, int Region, int Gig, int Mid, int Low, long FrameNumber, ulong OffsetSeed, bool Writable, bool User)
{
    public PageSize Size => (PageSize)SizeIndex;

    public PhysicalAddress Frame => PhysicalAddress.FromFrameNumber((ulong)FrameNumber).AlignDown(Size);

    public VirtualAddress Page(PagingMode mode)
    {
        ulong region = (Region, mode) switch
        {
            (0, _) => 0,
            (1, PagingMode.FourLevel) => 0xFFFF_8000_0000_0000UL,
            (1, _) => 0xFF00_0000_0000_0000UL,
            (_, PagingMode.FourLevel) => 0x0000_7FFF_0000_0000UL,
            _ => 0x0080_0000_0000_0000UL,
        };

        ulong value = region + ((ulong)Gig << 30) + ((ulong)Mid << 21) + ((ulong)Low << 12);
        return VirtualAddress.Create(value, mode).AlignDown(Size);
    }

    public override string ToString() =>
        $"{Size.ShortName()} r{Region} g{Gig} m{Mid} l{Low} frame#{FrameNumber:x} off {OffsetSeed:x} {(Writable ? "W" : "R")}{(User ? "U" : "S")}";
}

/// <summary>A paging mode and a list of candidate mappings (overlapping ones are skipped by the property).</summary>
public sealed record MappingScenario(bool FiveLevel, MappingSpec[] Mappings)
{
    public override string ToString() => $"{(FiveLevel ? "5-level" : "4-level")}: {string.Join("; ", Mappings.Select(m => m.ToString()))}";
}

public static class MapperArbitraries
{
    public static Arbitrary<MappingScenario> Scenarios()
    {
        Gen<ulong> anyULong = Gen.Choose(0, int.MaxValue).Zip(Gen.Choose(0, int.MaxValue), (hi, lo) => ((ulong)hi << 33) ^ (ulong)lo ^ ((ulong)lo << 16));
        Gen<MappingSpec> spec =
            from sizeIndex in Gen.Frequency(new[] { (5, Gen.Constant(0)), (3, Gen.Constant(1)), (1, Gen.Constant(2)) })
            from region in Gen.Choose(0, 2)
            from gig in Gen.Choose(0, 3)
            from mid in Gen.Choose(0, 15)
            from low in Gen.Choose(0, 31)
            from frameHi in Gen.Choose(0, (1 << 14) - 1)
            from frameLo in Gen.Choose(0, (1 << 20) - 1)
            from offset in anyULong
            from writable in Gen.Elements(true, false)
            from user in Gen.Elements(true, false)
            select new MappingSpec(sizeIndex, region, gig, mid, low, ((long)frameHi << 20) | (long)frameLo, offset, writable, user);

        Gen<MappingScenario> scenario =
            from fiveLevel in Gen.Elements(true, false)
            from count in Gen.Choose(1, 24)
            from mappings in spec.ArrayOf(count)
            select new MappingScenario(fiveLevel, mappings);

        return scenario.ToArbitrary();
    }
}
