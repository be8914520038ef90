using System;
using ThpCore.Collapse;
using ThpCore.Mm;
using ThpCore.Paging;
using Xunit;
using static ThpCore.Tests.Collapse.CollapseFixture;

namespace ThpCore.Tests.Collapse;

/// <summary><c>MADV_COLLAPSE</c>: the region walk, which results continue, and the errno (<c>madvise_collapse_errno</c>).</summary>
public sealed class MadviseCollapseTests
{
    private static readonly ThpSettings s_never = new() { Enabled = ThpEnabled.Never };

    [Theory]
    [InlineData(CollapseStatus.AllocHugePageFail, -12)]
    [InlineData(CollapseStatus.CgroupChargeFail, -16)]
    [InlineData(CollapseStatus.ExceedNonePte, -16)]
    [InlineData(CollapseStatus.PageCount, -11)]
    [InlineData(CollapseStatus.PageLock, -11)]
    [InlineData(CollapseStatus.PageLru, -11)]
    [InlineData(CollapseStatus.DelPageLru, -11)]
    [InlineData(CollapseStatus.PageFilled, -11)]
    [InlineData(CollapseStatus.PmdNull, -22)]
    [InlineData(CollapseStatus.PmdNone, -22)]
    [InlineData(CollapseStatus.PageRo, -22)]
    [InlineData(CollapseStatus.VmaCheck, -22)]
    [InlineData(CollapseStatus.Fail, -22)]
    public void Errno_is_madvise_collapse_errno(CollapseStatus status, int errno) => Assert.Equal(errno, Collapser.Errno(status));

    [Fact]
    public void A_pinned_region_does_not_stop_the_others_and_the_call_says_EAGAIN()
    {
        AddressSpace space = NewSpace(s_never);
        VirtualAddress start = MapAtBase(space, 3 * M2);
        Fill(space, start, 0, 3 * 512);
        using PinHandle pin = space.Pin(start.Add(M2 + (5 * K4)), K4, write: false);

        MadviseCollapseResult result = Collapser.MadviseCollapse(space, start, 3 * M2);

        Assert.Equal(-11, result.Errno);
        Assert.Equal([CollapseStatus.Succeed, CollapseStatus.PageCount, CollapseStatus.Succeed], Array.ConvertAll([.. result.Regions], r => r.Status));
        Assert.Equal(2, CountHuge(space, start, 3));
        Assert.False(IsHuge(space, start.Add(M2)));
        AssertBooks([space], [pin]);
        Validate(space, start, 3 * 512, 3 * 512);
    }

    [Fact]
    public void An_empty_PMD_is_not_recoverable_and_stops_the_walk_with_EINVAL()
    {
        AddressSpace space = NewSpace(s_never);
        VirtualAddress start = MapAtBase(space, 2 * M2);
        Fill(space, start, 512, 1024);

        MadviseCollapseResult result = Collapser.MadviseCollapse(space, start, 2 * M2);

        Assert.Equal(-22, result.Errno);
        Assert.Equal(CollapseStatus.PmdNone, Assert.Single(result.Regions).Status);
        Assert.False(IsHuge(space, start.Add(M2)));
    }

    [Fact]
    public void A_hole_between_VMAs_gives_ENOMEM_after_collapsing_both_and_Advise_throws_with_it()
    {
        AddressSpace space = NewSpace(s_never);
        VirtualAddress start = MapAtBase(space, M2);
        space.Map(M2, Rw, VmaFlags.Anonymous, start.Add(2 * M2), MapFlags.Fixed);
        Fill(space, start, 0, 512);
        Fill(space, start.Add(2 * M2), 0, 512);

        MadviseCollapseResult result = Collapser.MadviseCollapse(space, start, 3 * M2);
        Assert.Equal(-12, result.Errno);
        Assert.Equal(2, result.Regions.Count);
        Assert.True(IsHuge(space, start) && IsHuge(space, start.Add(2 * M2)));

        InvalidOperationException thrown = Assert.Throws<InvalidOperationException>(() => space.Advise(start, 3 * M2, Advice.Collapse));
        Assert.Contains("-ENOMEM", thrown.Message, StringComparison.Ordinal);
        space.Advise(start, M2, Advice.Collapse);
        AssertBooks(space);
    }

    [Fact]
    public void A_range_without_a_whole_region_returns_0_or_EINVAL_by_Linux_unsigned_arithmetic()
    {
        AddressSpace space = NewSpace(s_never);
        VirtualAddress start = MapAtBase(space, 2 * M2);
        Fill(space, start, 0, 1024);

        // [1 MiB, 3 MiB): hstart = hend = 2 MiB, no region, 0 == 0.
        MadviseCollapseResult across = Collapser.MadviseCollapse(space, start.Add(M2 / 2), M2);
        Assert.Equal(0, across.Errno);
        Assert.Empty(across.Regions);

        // [4 KiB, 12 KiB): hstart = 2 MiB > hend = 0, (hend - hstart) >> 21 is huge: the last failure, SCAN_FAIL, is EINVAL.
        MadviseCollapseResult inside = Collapser.MadviseCollapse(space, start.Add(K4), 2 * K4);
        Assert.Equal(-22, inside.Errno);
        Assert.Equal(0, CountHuge(space, start, 2));
    }

    [Fact]
    public void Misuse_throws_argument_exceptions()
    {
        AddressSpace space = NewSpace(s_never);
        VirtualAddress start = MapAtBase(space, M2);
        Assert.Throws<ArgumentException>(() => Collapser.MadviseCollapse(space, start.Add(1), M2));
        Assert.Throws<ArgumentException>(() => Collapser.MadviseCollapse(space, start, 0));
        Assert.Throws<ArgumentException>(() => space.Advise(start, 5, Advice.Collapse));
    }
}
