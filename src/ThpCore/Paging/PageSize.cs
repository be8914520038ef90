using System;

namespace ThpCore.Paging;

/// <summary>The sizes of page that 4-level and 5-level paging can map (Intel SDM Vol. 3A §4.5).</summary>
public enum PageSize : byte
{
    /// <summary>4 KiB, mapped by a PTE.</summary>
    Size4K = 0,

    /// <summary>2 MiB, mapped by a PDE with PS = 1 (Linux: a PMD mapping).</summary>
    Size2M = 1,

    /// <summary>1 GiB, mapped by a PDPTE with PS = 1 (Linux: a PUD mapping).</summary>
    Size1G = 2,
}

/// <summary>Arithmetic on <see cref="PageSize"/>.</summary>
public static class PageSizeExtensions
{
    /// <summary>log2 of the size in bytes: 12, 21 or 30.</summary>
    public static int Shift(this PageSize size) => 12 + (9 * (int)Validate(size));

    /// <summary>The size in bytes.</summary>
    public static ulong Bytes(this PageSize size) => 1UL << size.Shift();

    /// <summary>The mask of the offset bits within one page of this size (<c>Bytes - 1</c>).</summary>
    public static ulong OffsetMask(this PageSize size) => size.Bytes() - 1;

    /// <summary>The Linux folio order of one page of this size: 0, 9 or 18.</summary>
    public static int Order(this PageSize size) => 9 * (int)Validate(size);

    /// <summary>The paging level whose entry maps a page of this size.</summary>
    public static PagingLevel LeafLevel(this PageSize size) => (PagingLevel)((int)Validate(size) + 1);

    /// <summary>A short name: "4K", "2M" or "1G".</summary>
    public static string ShortName(this PageSize size) => Validate(size) switch
    {
        PageSize.Size4K => "4K",
        PageSize.Size2M => "2M",
        _ => "1G",
    };

    private static PageSize Validate(PageSize size)
    {
        if ((uint)size > (uint)PageSize.Size1G)
        {
            throw new ArgumentOutOfRangeException(nameof(size), size, "A page size is 4 KiB, 2 MiB or 1 GiB.");
        }

        return size;
    }
}
