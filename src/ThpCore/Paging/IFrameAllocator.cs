namespace ThpCore.Paging;

/// <summary>
/// A source of 4 KiB physical frames for paging structures (the x86_64 crate's <c>FrameAllocator</c> and
/// <c>FrameDeallocator</c> in one interface).
/// </summary>
/// <remarks>
/// An implementation promises that every frame it hands out is 4 KiB-aligned, backed by the physical memory
/// the tables live in, and not in use for anything else until it is freed. It need not zero frames:
/// <see cref="PageTableMapper"/> clears each table frame itself.
/// </remarks>
public interface IFrameAllocator
{
    /// <summary>Takes one unused 4 KiB frame.</summary>
    /// <param name="frame">The frame's first byte, 4 KiB-aligned; <see cref="PhysicalAddress.Zero"/> on failure.</param>
    /// <returns><see langword="false"/> if no frame is left.</returns>
    bool TryAllocateFrame(out PhysicalAddress frame);

    /// <summary>Gives back a frame this allocator handed out; the caller promises nothing still refers to it.</summary>
    /// <param name="frame">The frame's first byte, as returned by <see cref="TryAllocateFrame"/>.</param>
    void FreeFrame(PhysicalAddress frame);
}
