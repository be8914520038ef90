using System;
using ThpCore.Memory;
using Xunit;
using static ThpCore.Tests.Memory.FolioTests;

namespace ThpCore.Tests.Memory;

public sealed class FrameContentsTests
{
    [Fact]
    public void Bytes_written_to_a_page_read_back_from_the_page_and_from_physical_memory()
    {
        var node = new MemoryNode(8UL << 20);
        Folio folio = Allocate(node, 9);
        Span<byte> page = folio.GetWritablePage(300);
        page[0] = 0xAB;
        page[4095] = 0xCD;
        Assert.Equal(0xAB, folio.ReadPage(300)[0]);
        Assert.Equal(0xCD, folio.ReadPage(300)[4095]);
        Assert.Equal(0, folio.ReadPage(299)[0]);
        Assert.Equal(0xCD, node.Memory.ReadFrame(folio.HeadFrame + 300)[4095]);
        Assert.Equal(1, node.Memory.MaterializedFrames);
    }

    [Fact]
    public void A_never_written_folio_reads_zero_and_costs_no_host_memory()
    {
        var node = new MemoryNode(8UL << 20);
        Folio folio = Allocate(node, 9);
        ReadAll(folio); // warm up: JIT and first-call costs are not the folio's

        long materialized = node.Memory.MaterializedFrames;
        long before = GC.GetAllocatedBytesForCurrentThread();
        int nonZero = ReadAll(folio);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.Equal(0, nonZero);
        Assert.Equal(0, materialized);
        Assert.Equal(0, node.Memory.MaterializedFrames);
        Assert.True(allocated < 1024, $"reading an untouched 2 MiB folio allocated {allocated} bytes");
    }

    [Fact]
    public void Freeing_a_folio_drops_its_bytes_and_a_new_folio_on_the_same_frames_reads_zero()
    {
        var node = new MemoryNode(2UL << 20); // one 2 MiB block: the new folio must reuse the frames
        Folio folio = Allocate(node, 9);
        for (int i = 0; i < folio.PageCount; i += 16)
        {
            folio.GetWritablePage(i).Fill(0x5A);
        }

        Assert.Equal(32, node.Memory.MaterializedFrames);
        ulong head = folio.HeadFrame;
        Assert.True(folio.Put());
        Assert.Equal(0, node.Memory.MaterializedFrames);

        Folio again = Allocate(node, 9);
        Assert.Equal(head, again.HeadFrame);
        Assert.Equal(0, ReadAll(again));
        Assert.Equal(0, node.Memory.MaterializedFrames);
    }

    [Fact]
    public void Bytes_written_to_free_frames_do_not_show_through_a_new_folio()
    {
        var node = new MemoryNode(2UL << 20);
        for (ulong frame = 0; frame < 512; frame++)
        {
            node.Memory.GetWritableFrame(frame)[7] = 1;
        }

        Folio folio = Allocate(node, 9);
        Assert.Equal(0, ReadAll(folio));
        Assert.Equal(0, node.Memory.MaterializedFrames);
    }

    // Counts non-zero bytes across the folio's pages.
    private static int ReadAll(Folio folio)
    {
        int nonZero = 0;
        for (int i = 0; i < folio.PageCount; i++)
        {
            ReadOnlySpan<byte> page = folio.ReadPage(i);
            if (page.Length != 4096)
            {
                return -1;
            }

            int at = page.IndexOfAnyExcept((byte)0);
            nonZero += at < 0 ? 0 : 1;
        }

        return nonZero;
    }
}
