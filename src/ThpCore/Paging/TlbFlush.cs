using System;

namespace ThpCore.Paging;

/// <summary>
/// The TLB invalidation a <see cref="PageTableMapper"/> change calls for (the x86_64 crate's <c>MapperFlush</c>):
/// either <see cref="Flush"/> it, which executes INVLPG for <see cref="Page"/>, or <see cref="Ignore"/> it on
/// purpose (for example because the address space is not loaded, or a full flush follows).
/// </summary>
/// <remarks>
/// <para>
/// Rust marks its token <c>#[must_use]</c>; C# cannot force a caller to use a return value. So the mapper
/// records every token it hands out in <see cref="PageTableMapper.PendingInvalidations"/> until it is flushed
/// or ignored, and tests and diagnostics can assert that no invalidation was forgotten.
/// </para>
/// <para>
/// One INVLPG covers the whole page whatever its size: it invalidates the TLB entries for the page that
/// contains the address, 4 KiB, 2 MiB or 1 GiB, and all paging-structure-cache entries of the current PCID
/// (Intel SDM Vol. 3A §4.10.4.1). That last part is what makes a flush after replacing an empty page table by
/// a large page sufficient; the mapper frees the replaced table's frame only when the token is flushed or
/// ignored.
/// </para>
/// <para>
/// <see cref="Flush"/> and <see cref="Ignore"/> may be called more than once; the bookkeeping is idempotent.
/// <see cref="Flush"/> executes INVLPG after every change made so far, so it also settles later changes to the
/// same page; <see cref="Ignore"/> settles only its own change, so ignoring an old token leaves a newer change
/// to the same page pending. The <see langword="default"/> token (what a failed
/// <see cref="PageTableMapper.TryMap"/> returns) stands for no change: both methods do nothing.
/// </para>
/// </remarks>
public readonly struct TlbFlush
{
    private readonly PageTableMapper? _mapper;
    private readonly long _sequence;

    internal TlbFlush(PageTableMapper mapper, VirtualAddress page, PageSize size, long sequence)
    {
        _mapper = mapper;
        Page = page;
        Size = size;
        _sequence = sequence;
    }

    /// <summary>The first byte of the page whose translation changed.</summary>
    public VirtualAddress Page { get; }

    /// <summary>The size of the page whose translation changed.</summary>
    public PageSize Size { get; }

    /// <summary>Executes INVLPG for <see cref="Page"/> on <paramref name="tlb"/> and marks the invalidation done.</summary>
    /// <param name="tlb">The TLB of the processor that uses the mapper's tables.</param>
    /// <param name="cpu">That processor's state (INVLPG acts on the current PCID).</param>
    /// <exception cref="ArgumentNullException"><paramref name="tlb"/> or <paramref name="cpu"/> is null.</exception>
    public void Flush(Tlb tlb, CpuState cpu)
    {
        ArgumentNullException.ThrowIfNull(tlb);
        ArgumentNullException.ThrowIfNull(cpu);
        if (_mapper is null)
        {
            return;
        }

        tlb.Invlpg(cpu, Page);
        _mapper.CompleteInvalidation(Page, _sequence, flushed: true);
    }

    /// <summary>Marks the invalidation as deliberately skipped, without touching any TLB.</summary>
    public void Ignore() => _mapper?.CompleteInvalidation(Page, _sequence, flushed: false);

    /// <summary>E.g. <c>INVLPG 0x200000 (2M)</c>.</summary>
    public override string ToString() => _mapper is null ? "no invalidation" : $"INVLPG {Page} ({Size.ShortName()})";
}
