using System;
using ThpCore.Paging;

namespace ThpCore.Mm;

/// <summary>How an <see cref="AddressSpace.Access"/> ended.</summary>
public enum AccessStatus : byte
{
    /// <summary>The access translated (after a handled fault, if one was needed).</summary>
    Translated = 0,

    /// <summary>
    /// The access is not allowed: no VMA covers the address, the VMA's rights forbid the access, or the address is not
    /// canonical. Linux sends <c>SIGSEGV</c>; nothing was changed.
    /// </summary>
    Segfault = 1,

    /// <summary>The fault handler could not allocate a page or a page table (Linux: <c>VM_FAULT_OOM</c>).</summary>
    OutOfMemory = 2,
}

/// <summary>What the fault handler did for an access.</summary>
public enum FaultAction : byte
{
    /// <summary>No fault, or a fault that needed no new page (for example making an exclusive page writable again).</summary>
    None = 0,

    /// <summary>A new zeroed 4 KiB page was mapped by a PTE (<c>do_anonymous_page</c>).</summary>
    MappedPage = 1,

    /// <summary>A new zeroed order-9 folio was mapped by a PMD (<c>do_huge_pmd_anonymous_page</c>).</summary>
    MappedHugePage = 2,

    /// <summary>The shared 4 KiB zero page was mapped read-only by a PTE.</summary>
    MappedZeroPage = 3,

    /// <summary>The huge zero page was mapped read-only by a PMD.</summary>
    MappedHugeZeroPage = 4,

    /// <summary>A write to a zero-page mapping got a new private 4 KiB page (<c>wp_page_copy</c>).</summary>
    CopiedZeroPage = 5,

    /// <summary>A THP could not be allocated (<c>thp_fault_fallback</c>); a 4 KiB page or the 4 KiB zero page was mapped instead.</summary>
    FellBackToSmallPage = 6,

    /// <summary>
    /// A write to a page shared after <see cref="AddressSpace.Fork"/> got a private copy of it (<c>wp_page_copy</c>):
    /// copy-on-write.
    /// </summary>
    CopiedPage = 7,

    /// <summary>
    /// A PTE holding a swap entry was refaulted (<c>do_swap_page</c>): the page was mapped from the folio still in the
    /// swap cache, or read back from the swap device into a new order-0 page (<c>pswpin</c>).
    /// </summary>
    SwapIn = 8,
}

/// <summary>The outcome of one user-mode access through <see cref="AddressSpace.Access"/>.</summary>
/// <param name="Status">How the access ended.</param>
/// <param name="PhysicalAddress">The translated address when <see cref="Status"/> is <see cref="AccessStatus.Translated"/>; otherwise zero.</param>
/// <param name="PageSize">The size of the page that translated it; <see cref="PageSize.Size4K"/> when not translated.</param>
/// <param name="Fault">What the fault handler did.</param>
public readonly record struct AccessResult(AccessStatus Status, PhysicalAddress PhysicalAddress, PageSize PageSize, FaultAction Fault)
{
    /// <summary>Whether the access translated.</summary>
    public bool IsTranslated => Status == AccessStatus.Translated;
}
