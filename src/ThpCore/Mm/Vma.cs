using System;
using System.Globalization;
using ThpCore.Internal;
using ThpCore.Paging;

namespace ThpCore.Mm;

/// <summary>
/// A virtual memory area: one contiguous, page-aligned range of user addresses <c>[Start, End)</c> with uniform rights
/// and flags (Linux's <c>struct vm_area_struct</c>). Immutable; a <see cref="VmaList"/> replaces VMAs as it splits and
/// merges them.
/// </summary>
/// <remarks>
/// <para>
/// <see cref="Start"/> and <see cref="End"/> are set only by the constructor, which checks them; the other properties
/// can be changed with a <see langword="with"/> expression (for example <c>vma with { Protection = Protection.Read }</c>)
/// and are checked by their <see langword="init"/> accessors.
/// </para>
/// <para>
/// <see cref="PageOffset"/> is <c>vm_pgoff</c>. For an anonymous private VMA Linux sets it to <c>Start &gt;&gt; 12</c>
/// when the VMA is created (<c>do_mmap</c>), keeps it when the range is split (the high part gets the low part's offset
/// plus the low part's page count, <c>__split_vma</c>) and when it is moved (<c>mremap</c>'s <c>copy_vma</c>), so a range
/// that is moved away and back can merge with its old neighbours again.
/// </para>
/// </remarks>
public sealed record Vma
{
    /// <summary>
    /// One above the highest user address any VMA may cover: <c>2^56</c>, the top of the lower canonical half with
    /// 5-level paging. A <see cref="VmaList"/> applies the tighter limit of its paging mode (see <see cref="VmaList.TaskSize"/>).
    /// </summary>
    public const ulong AddressLimit = 1UL << 56;

    private const ulong PageMask = 4095;
    private const ulong HugePageMask = (2UL << 20) - 1;

    private readonly Protection _protection;
    private readonly VmaFlags _flags;
    private readonly ulong _pageOffset;
    private readonly long _anonVmaId;

    /// <summary>Creates a VMA covering <c>[start, end)</c>.</summary>
    /// <param name="start">The first address; a multiple of 4 KiB.</param>
    /// <param name="end">One past the last address; a multiple of 4 KiB, above <paramref name="start"/>, at most <see cref="AddressLimit"/>.</param>
    /// <param name="protection">The access rights.</param>
    /// <param name="flags">The flags; not both <see cref="VmaFlags.HugePage"/> and <see cref="VmaFlags.NoHugePage"/>.</param>
    /// <param name="pageOffset"><c>vm_pgoff</c>; <c>pageOffset + PageCount</c> must not overflow.</param>
    /// <param name="anonVmaId">The identity of the VMA's <c>anon_vma</c>, or 0 while it has none (never faulted).</param>
    /// <exception cref="ArgumentException">An address is not page-aligned or not a user address, <paramref name="start"/> is not below
    /// <paramref name="end"/>, or another argument is out of range.</exception>
    public Vma(VirtualAddress start, VirtualAddress end, Protection protection, VmaFlags flags, ulong pageOffset, long anonVmaId = 0)
    {
        CheckRange(start, end);
        Start = start;
        End = end;
        Protection = protection;
        Flags = flags;
        PageOffset = pageOffset;
        AnonVmaId = anonVmaId;
    }

    /// <summary>The first address of the VMA (<c>vm_start</c>).</summary>
    public VirtualAddress Start { get; }

    /// <summary>One past the last address of the VMA (<c>vm_end</c>, exclusive).</summary>
    public VirtualAddress End { get; }

    /// <summary>The access rights (<c>VM_READ</c>/<c>VM_WRITE</c>/<c>VM_EXEC</c>).</summary>
    /// <exception cref="ArgumentOutOfRangeException">The value has bits other than those of <see cref="Mm.Protection"/>.</exception>
    public Protection Protection
    {
        get => _protection;
        init
        {
            if ((value & ~(Protection.Read | Protection.Write | Protection.Execute)) != 0)
            {
                ThrowHelper.ThrowArgumentOutOfRange(nameof(Protection), value, $"Protection 0x{(byte)value:x} has bits other than Read (1), Write (2) and Execute (4).");
            }

            _protection = value;
        }
    }

    /// <summary>The flags (<c>vm_flags</c> other than the rights).</summary>
    /// <exception cref="ArgumentException">The value has undefined bits, or both <see cref="VmaFlags.HugePage"/> and <see cref="VmaFlags.NoHugePage"/>.</exception>
    public VmaFlags Flags
    {
        get => _flags;
        init
        {
            const VmaFlags all = VmaFlags.Anonymous | VmaFlags.Shared | VmaFlags.HugePage | VmaFlags.NoHugePage | VmaFlags.Locked | VmaFlags.GrowsDown;
            if ((value & ~all) != 0)
            {
                ThrowHelper.ThrowArgumentOutOfRange(nameof(Flags), value, $"VMA flags 0x{(uint)value:x} have undefined bits (defined: 0x{(uint)all:x}).");
            }

            if ((value & (VmaFlags.HugePage | VmaFlags.NoHugePage)) == (VmaFlags.HugePage | VmaFlags.NoHugePage))
            {
                ThrowHelper.ThrowArgument(nameof(Flags), $"VMA flags {value} have both HugePage and NoHugePage; MADV_HUGEPAGE and MADV_NOHUGEPAGE each clear the other.");
            }

            _flags = value;
        }
    }

    /// <summary>
    /// <c>vm_pgoff</c>: the page offset of <see cref="Start"/>. For anonymous VMAs, <c>Start &gt;&gt; 12</c> at creation,
    /// kept across splits (shifted) and moves.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><c>value + PageCount</c> overflows (Linux: <c>-EOVERFLOW</c> in <c>do_mmap</c>).</exception>
    public ulong PageOffset
    {
        get => _pageOffset;
        init
        {
            if (value + PageCount < value)
            {
                ThrowHelper.ThrowArgumentOutOfRange(nameof(PageOffset), value, $"Page offset {ThrowHelper.Hex(value)} plus {PageCount} pages overflows.");
            }

            _pageOffset = value;
        }
    }

    /// <summary>
    /// The identity of the VMA's <c>anon_vma</c> (the reverse-map root of its anonymous pages), or 0 while it has none.
    /// Linux gives a VMA an <c>anon_vma</c> on its first anonymous fault (<c>anon_vma_prepare</c>); splitting copies it to both parts.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is negative.</exception>
    public long AnonVmaId
    {
        get => _anonVmaId;
        init
        {
            if (value < 0)
            {
                ThrowHelper.ThrowArgumentOutOfRange(nameof(AnonVmaId), value, $"anon_vma id {value} is negative; 0 means none.");
            }

            _anonVmaId = value;
        }
    }

    /// <summary>The size in bytes, <c>End - Start</c>.</summary>
    public ulong Length => End.Value - Start.Value;

    /// <summary>The number of 4 KiB pages (<c>vma_pages</c>).</summary>
    public ulong PageCount => Length >> 12;

    /// <summary>Whether both <see cref="Start"/> and <see cref="End"/> are multiples of 2 MiB, so the VMA is tiled by PMD-sized pages.</summary>
    public bool IsHugePageAligned => ((Start.Value | End.Value) & HugePageMask) == 0;

    /// <summary>Whether <paramref name="address"/> lies in <c>[Start, End)</c>.</summary>
    public bool Contains(VirtualAddress address) => address >= Start && address < End;

    /// <summary>
    /// Whether the naturally aligned 2 MiB window around <paramref name="address"/> lies wholly inside the VMA, so that
    /// it could be mapped by one PMD (the check of <c>do_huge_pmd_anonymous_page</c> and <c>thp_vma_suitable_order</c>).
    /// </summary>
    public bool ContainsHugePageAround(VirtualAddress address)
    {
        ulong window = address.Value & ~HugePageMask;
        return window >= Start.Value && window + HugePageMask < End.Value;
    }

    /// <summary>The page offset of the page containing <paramref name="address"/>: <c>PageOffset + (address - Start) / 4096</c> (<c>linear_page_index</c>).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="address"/> is outside the VMA.</exception>
    public ulong PageOffsetOf(VirtualAddress address)
    {
        if (!Contains(address))
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(address), address, $"Address {address} is outside the VMA {this}.");
        }

        return PageOffset + ((address.Value - Start.Value) >> 12);
    }

    /// <summary>
    /// Whether <paramref name="next"/> can be merged onto the end of this VMA, by the rules of Linux's <c>vma_merge</c>
    /// family (<c>mm/vma.c</c>: <c>can_vma_merge_after</c>/<c>can_vma_merge_before</c>, <c>is_mergeable_vma</c>,
    /// <c>is_mergeable_anon_vma</c>): the two are adjacent (<c>End == next.Start</c>), have equal <see cref="Protection"/>
    /// and <see cref="Flags"/>, their page offsets run on (<c>PageOffset + PageCount == next.PageOffset</c>), and their
    /// <c>anon_vma</c>s are compatible: equal, or one of them 0.
    /// </summary>
    /// <remarks>
    /// Linux lets a VMA without an <c>anon_vma</c> merge with one that has one (the merged VMA takes it). Before commit
    /// 879bca0a2c4f (2025) <c>is_mergeable_anon_vma</c> allowed that only when the VMA's <c>anon_vma_chain</c> had one entry
    /// (<c>list_is_singular</c>: not a child of a fork); since then it refuses only a VMA that is a fork
    /// child (<c>vma_had_uncowed_parents</c>, later <c>vma_is_fork_child</c>). The model has no fork yet, so one id of 0
    /// is always compatible. File, mempolicy, userfaultfd and <c>anon_vma_name</c> equality are not modelled.
    /// </remarks>
    public bool CanMergeWith(Vma next)
    {
        ArgumentNullException.ThrowIfNull(next);
        return End == next.Start
            && Protection == next.Protection
            && Flags == next.Flags
            && (AnonVmaId == next.AnonVmaId || AnonVmaId == 0 || next.AnonVmaId == 0)
            && PageOffset + PageCount == next.PageOffset;
    }

    /// <summary><c>[0x1000, 0x3000) rw- Anonymous pgoff=0x1 anon=0</c>.</summary>
    public override string ToString()
    {
        string rights = string.Create(3, Protection, static (span, p) =>
        {
            span[0] = (p & Protection.Read) != 0 ? 'r' : '-';
            span[1] = (p & Protection.Write) != 0 ? 'w' : '-';
            span[2] = (p & Protection.Execute) != 0 ? 'x' : '-';
        });
        return string.Create(CultureInfo.InvariantCulture, $"[{Start}, {End}) {rights} {Flags} pgoff={ThrowHelper.Hex(PageOffset)} anon={AnonVmaId}");
    }

    /// <summary>A VMA over <c>[start, end)</c> with this VMA's attributes and the page offset <c>[start, end)</c> has within it.</summary>
    internal Vma Slice(VirtualAddress start, VirtualAddress end) =>
        new(start, end, Protection, Flags, PageOffset + ((start.Value - Start.Value) >> 12), AnonVmaId);

    /// <summary>This VMA extended over <paramref name="next"/>, keeping this page offset and the non-zero anon_vma id.</summary>
    internal Vma MergeWith(Vma next) =>
        new(Start, next.End, Protection, Flags, PageOffset, AnonVmaId != 0 ? AnonVmaId : next.AnonVmaId);

    internal static void CheckRange(VirtualAddress start, VirtualAddress end)
    {
        if ((start.Value & PageMask) != 0)
        {
            ThrowHelper.ThrowArgument(nameof(start), $"Start {start} is not a multiple of 4 KiB.");
        }

        if ((end.Value & PageMask) != 0)
        {
            ThrowHelper.ThrowArgument(nameof(end), $"End {end} is not a multiple of 4 KiB.");
        }

        if (start >= end)
        {
            ThrowHelper.ThrowArgument(nameof(end), $"Start {start} is not below end {end}.");
        }

        if (end.Value > AddressLimit)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(end), end, $"Range [{start}, {end}) is not within user space [0x0, {ThrowHelper.Hex(AddressLimit)}): its addresses are non-canonical or kernel addresses.");
        }
    }
}
