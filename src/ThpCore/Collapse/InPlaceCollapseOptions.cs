using ThpCore.Paging;

namespace ThpCore.Collapse;

/// <summary>How an in-place collapse replaces the PDE that points at the page table by the PMD leaf.</summary>
public enum PromotionOrder : byte
{
    /// <summary>
    /// Linux's order (<c>pmdp_collapse_flush</c> in <c>collapse_huge_page</c> and <c>collapse_pte_mapped_thp</c>):
    /// clear the PDE, invalidate the 2 MiB range (TLB and paging-structure caches), then write the leaf. No TLB ever
    /// holds 4 KiB and 2 MiB translations of one address at once, which the SDM recommends for page-size changes
    /// (Vol. 3A §4.10.4.2) and AMD Family 10h needs (erratum 383). The default.
    /// </summary>
    BreakBeforeMake = 0,

    /// <summary>
    /// FreeBSD's <c>pmap_promote_pde</c>: the PDE is overwritten by the leaf in one write, with no invalidation in
    /// between; the range's invalidation is still due afterwards. The 512 old 4 KiB translations and the new 2 MiB one
    /// agree in frame, rights and attributes, so the SDM's rule is kept on Intel, but they may coexist in a TLB
    /// until invalidated (a machine check on AMD Family 10h, erratum 383), and any later change to the PMD must
    /// invalidate all 512 pages, not just one (FreeBSD marks such PDEs <c>PG_PROMOTED</c> for that).
    /// </summary>
    SingleWrite = 1,
}

/// <summary>Options of <see cref="Collapser.TryCollapseInPlace"/>.</summary>
public sealed record InPlaceCollapseOptions
{
    /// <summary>Break-before-make, no TLB: the invalidation is returned to the caller.</summary>
    public static InPlaceCollapseOptions Default { get; } = new();

    /// <summary>How the PDE is replaced; <see cref="PromotionOrder.BreakBeforeMake"/> unless set.</summary>
    public PromotionOrder Order { get; init; }

    /// <summary>
    /// A TLB to invalidate as part of the collapse: with break-before-make between clearing the PDE and writing the
    /// leaf, with a single write right after it. <see langword="null"/>: the invalidation is returned in
    /// <see cref="CollapseResult.Invalidation"/> for the caller to apply.
    /// </summary>
    public Tlb? Tlb { get; init; }

    /// <summary>The CPU state (PCID) under which <see cref="Tlb"/> is invalidated; the address space's <c>Cpu</c> when <see langword="null"/>.</summary>
    public CpuState? Cpu { get; init; }
}
