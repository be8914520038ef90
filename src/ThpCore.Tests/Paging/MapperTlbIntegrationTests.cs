using ThpCore.Paging;
using Xunit;

namespace ThpCore.Tests.Paging;

public sealed class MapperTlbIntegrationTests
{
    private const PageTableFlags UserData = PageTableFlags.Present | PageTableFlags.Writable | PageTableFlags.User;

    private static (SparsePhysicalMemory Memory, PageTableMapper Mapper, CpuState Cpu, Tlb Tlb) Setup()
    {
        var memory = new SparsePhysicalMemory(1UL << 32);
        var frames = new SimpleFrameAllocator(PhysicalAddress.Create(0x10_0000), PhysicalAddress.Create(0x40_0000));
        var mapper = new PageTableMapper(memory, frames, PagingMode.FourLevel);
        return (memory, mapper, CpuState.Create(mapper.Root.Value), new Tlb());
    }

    [Fact]
    public void A_flushed_remap_token_makes_the_TLB_serve_the_new_frame()
    {
        var (memory, mapper, cpu, tlb) = Setup();
        var page = VirtualAddress.Create(0x7f00_0000_3000);
        mapper.Map(page, PhysicalAddress.Create(0x1000_0000), PageSize.Size4K, UserData).Ignore();
        Assert.Equal(0x1000_0010UL, tlb.Translate(cpu, memory, page.Add(0x10), AccessKind.Read, Privilege.User).PhysicalAddress.Value);

        mapper.Unmap(page).Flush.Flush(tlb, cpu);
        mapper.Map(page, PhysicalAddress.Create(0x2000_0000), PageSize.Size4K, UserData).Flush(tlb, cpu);

        Assert.Empty(mapper.PendingInvalidations);
        Assert.Equal(0x2000_0010UL, tlb.Translate(cpu, memory, page.Add(0x10), AccessKind.Read, Privilege.User).PhysicalAddress.Value);
    }

    [Fact]
    public void An_ignored_remap_token_leaves_the_stale_frame_in_the_TLB_and_the_mapper_says_nothing_is_pending()
    {
        var (memory, mapper, cpu, tlb) = Setup();
        var page = VirtualAddress.Create(0x7f00_0000_3000);
        mapper.Map(page, PhysicalAddress.Create(0x1000_0000), PageSize.Size4K, UserData).Ignore();
        tlb.Translate(cpu, memory, page, AccessKind.Read, Privilege.User);

        TlbFlush unmap = mapper.Unmap(page).Flush;
        TlbFlush map = mapper.Map(page, PhysicalAddress.Create(0x2000_0000), PageSize.Size4K, UserData);
        Assert.Equal([page], mapper.PendingInvalidations);

        // Software forgot the INVLPG: the TLB still translates to the old frame, as real TLBs may.
        Assert.Equal(0x1000_0000UL, tlb.Translate(cpu, memory, page, AccessKind.Read, Privilege.User).PhysicalAddress.Value);
        Assert.Equal(0x2000_0000UL, PageWalker.Translate(cpu, memory, page, AccessKind.Read, Privilege.User).PhysicalAddress.Value);

        unmap.Ignore();
        map.Ignore();
        Assert.Empty(mapper.PendingInvalidations);
    }

    [Fact]
    public void Replacing_an_emptied_page_table_by_a_2M_page_without_flushing_the_4K_unmaps_leaves_both_sizes_cached()
    {
        var (memory, mapper, cpu, tlb) = Setup();
        var huge = VirtualAddress.Create(0x7f00_0020_0000);
        var small = huge.Add(0x5000);
        mapper.Map(small, PhysicalAddress.Create(0x3000_5000), PageSize.Size4K, UserData).Ignore();
        tlb.Translate(cpu, memory, small, AccessKind.Read, Privilege.User);

        mapper.Unmap(small).Flush.Ignore();                 // forgot the INVLPG of the 4K page
        mapper.Map(huge, PhysicalAddress.Create(0x4000_0000), PageSize.Size2M, UserData).Flush(tlb, cpu);
        tlb.Translate(cpu, memory, huge, AccessKind.Read, Privilege.User);

        // One INVLPG of the 2M page does not reach a 4K entry of another 4K page in its range (SDM §4.10.4.1 invalidates
        // only the page containing the address): both sizes now translate 0x...205000, to different frames.
        Assert.True(tlb.HasConflictingSizes(cpu, small));
        Assert.True((tlb.FindSizeConflicts(cpu, small) & TlbSizeConflict.FrameDiffers) != 0);

        tlb.Invlpg(cpu, small);
        Assert.False(tlb.HasConflictingSizes(cpu, small));
        Assert.Equal(0x4000_5000UL, tlb.Translate(cpu, memory, small, AccessKind.Read, Privilege.User).PhysicalAddress.Value);
    }
}
