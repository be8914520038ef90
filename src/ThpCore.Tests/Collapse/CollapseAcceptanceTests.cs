using System;
using System.Collections.Generic;
using ThpCore.Collapse;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;
using ThpCore.Tests.Mm;
using Xunit;
using static ThpCore.Tests.Mm.MmFixtures;

namespace ThpCore.Tests.Collapse;

/// <summary>
/// The acceptance scenarios across both paths: each way a PTE-mapped THP arises, with a GUP pin held, collapses
/// in place and fails by copy with Linux's reason; and after a copy collapse the TLB, once the returned invalidation is
/// applied, serves no stale 4 KiB translation, while skipping it is observable.
/// </summary>
public sealed class CollapseAcceptanceTests
{
    public enum Origin
    {
        Mprotect,
        MadviseRoundTrip,
        MremapAwayAndBack,
        SwapCacheRefault,
        MlockRoundTrip,
    }

    // A PMD-mapped THP whose page i holds 0x1000 + i at offset 8, turned into a PTE-mapped THP the given way.
    private static (AddressSpace Space, VirtualAddress Start, Folio Folio) PteMappedThp(Origin origin)
    {
        var space = new AddressSpace(new MemoryNode(64UL << 20), Always);
        if (origin == Origin.SwapCacheRefault)
        {
            space.AttachSwap(new SwapDevice(0, 4 * SwapDevice.ClusterSize));
        }

        VirtualAddress start = space.Map(M2, Rw);
        Assert.Equal(PageSize.Size2M, space.Access(start, AccessKind.Write).PageSize);
        Folio folio = space.Node.FolioOf(Pde(space, start.Value).Address.FrameNumber);
        for (ulong i = 0; i < 512; i++)
        {
            space.Node.Memory.WriteUInt64(folio.Address.Add((i * K4) + 8), 0x1000 + i);
        }

        switch (origin)
        {
            case Origin.Mprotect:
                space.Protect(start.Add(K4), K4, Protection.Read);
                space.Protect(start.Add(K4), K4, Rw);
                break;
            case Origin.MadviseRoundTrip:
                space.Advise(start.Add(K4), K4, Advice.NoHugePage);
                space.Advise(start, M2, Advice.HugePage);
                break;
            case Origin.MremapAwayAndBack:
                VirtualAddress away = space.Map(K4, Rw);
                space.Unmap(away, K4);
                space.Remap(start.Add(K4), K4, K4, RemapFlags.MayMove | RemapFlags.Fixed, away);
                space.Remap(away, K4, K4, RemapFlags.MayMove | RemapFlags.Fixed, start.Add(K4));
                break;
            case Origin.SwapCacheRefault:
                Assert.True(space.SwapOut(start, keepInSwapCache: true).IsSwappedOut);
                for (ulong i = 0; i < 512; i++)
                {
                    Assert.True(space.Access(start.Add(i * K4), AccessKind.Write).IsTranslated);
                }

                break;
            case Origin.MlockRoundTrip:
                space.Lock(start.Add(K4), K4);
                space.Unlock(start.Add(K4), K4);
                break;
        }

        Assert.Single(space.Vmas.All);
        AddressSpaceTests.AssertPteMappedInOrder(space, start, folio);
        return (space, start, folio);
    }

    private static void AssertBytes(AddressSpace space, VirtualAddress start)
    {
        for (ulong i = 0; i < 512; i += 37)
        {
            AccessResult read = space.Access(start.Add((i * K4) + 8), AccessKind.Read);
            Assert.Equal(0x1000 + i, ((IPhysicalMemory)space.Node.Memory).ReadUInt64(read.PhysicalAddress));
        }
    }

    [Theory]
    [InlineData(Origin.Mprotect)]
    [InlineData(Origin.MadviseRoundTrip)]
    [InlineData(Origin.MremapAwayAndBack)]
    [InlineData(Origin.SwapCacheRefault)]
    [InlineData(Origin.MlockRoundTrip)]
    public void Each_origin_collapses_in_place(Origin origin)
    {
        (AddressSpace space, VirtualAddress start, Folio folio) = PteMappedThp(origin);
        ulong free = space.Node.Buddy.FreeFrames;

        CollapseResult result = Collapser.TryCollapseInPlace(space, start);

        Assert.Equal((CollapseStatus.Succeed, CollapsePath.InPlace, folio.Address), (result.Status, result.Path, result.Folio));
        Assert.Equal(free, space.Node.Buddy.FreeFrames);
        Assert.Equal(folio.Address, Pde(space, start.Value).Address);
        AssertBytes(space, start);
        Assert.Null(MmBooks.Check([space], [], space.Swap));
    }

    [Theory]
    [InlineData(Origin.Mprotect)]
    [InlineData(Origin.MadviseRoundTrip)]
    [InlineData(Origin.MremapAwayAndBack)]
    [InlineData(Origin.SwapCacheRefault)]
    [InlineData(Origin.MlockRoundTrip)]
    public void With_a_GUP_pin_held_each_origin_fails_by_copy_with_SCAN_PAGE_COUNT_and_succeeds_in_place(Origin origin)
    {
        (AddressSpace space, VirtualAddress start, Folio folio) = PteMappedThp(origin);
        using PinHandle pin = space.Pin(start.Add(200 * K4), K4, write: false);

        // Linux: is_refcount_suitable fails (refcount = mapcount + 1 pin), MADV_COLLAPSE returns EAGAIN.
        Assert.Equal(CollapseStatus.PageCount, Collapser.TryCollapseByCopy(space, start, CollapseContext.MadviseCollapse).Status);
        MadviseCollapseResult madvise = Collapser.MadviseCollapse(space, start, M2);
        Assert.Equal(-11, madvise.Errno); // -EAGAIN
        Assert.False(Pde(space, start.Value).IsLeaf);
        Assert.Equal(folio.Address.Add(200 * K4), Pte(space, start.Value + (200 * K4)).Address);

        CollapseResult result = Collapser.TryCollapseInPlace(space, start);

        Assert.Equal((CollapseStatus.Succeed, CollapsePath.InPlace), (result.Status, result.Path));
        Assert.Equal(1, folio.PinCount);
        Assert.Equal(folio.Address.Add(200 * K4), pin.Pages[0]); // the pinned frame did not move
        AssertBytes(space, start);
        Assert.Null(MmBooks.Check([space], [pin], space.Swap));
    }

    [Fact]
    public void After_a_copy_collapse_the_returned_invalidation_leaves_no_stale_4K_translation_and_skipping_it_is_observable()
    {
        (AddressSpace space, VirtualAddress start, Folio old) = PteMappedThp(Origin.Mprotect);
        var applied = new Tlb();
        var skipped = new Tlb();
        // A few 4 KiB translations cached (few enough that none is evicted from the model's sets).
        for (ulong i = 0; i < 8; i++)
        {
            foreach (Tlb tlb in new[] { applied, skipped })
            {
                Assert.True(tlb.Translate(space.Cpu, space.Node.Memory, start.Add(i * K4), AccessKind.Read, Privilege.User).IsTranslated);
                Assert.NotEmpty(tlb.LookupAll(space.Cpu, start.Add(i * K4)));
            }
        }

        CollapseResult result = Collapser.TryCollapseByCopy(space, start, CollapseContext.MadviseCollapse);
        Assert.Equal((CollapseStatus.Succeed, CollapsePath.Copy), (result.Status, result.Path));
        Assert.NotEqual(old.Address, result.Folio);
        Assert.Equal(new TlbRangeInvalidation(start, M2), result.Invalidation);

        result.Invalidation.ApplyTo(applied, space.Cpu);
        for (ulong i = 0; i < 512; i++)
        {
            Assert.Empty(applied.LookupAll(space.Cpu, start.Add(i * K4)));
        }

        for (ulong i = 0; i < 512; i++)
        {
            VirtualAddress va = start.Add((i * K4) + 8);
            WalkResult walk = applied.Translate(space.Cpu, space.Node.Memory, va, AccessKind.Read, Privilege.User);
            Assert.Equal((PageSize.Size2M, result.Folio.Add((i * K4) + 8)), (walk.PageSize, walk.PhysicalAddress));
        }

        // Without it the old 4 KiB entries still translate into the freed frames of the old folio.
        WalkResult stale = skipped.Translate(space.Cpu, space.Node.Memory, start.Add((5 * K4) + 8), AccessKind.Read, Privilege.User);
        Assert.Equal((PageSize.Size4K, old.Address.Add((5 * K4) + 8)), (stale.PageSize, stale.PhysicalAddress));
        AssertBytes(space, start);
    }
}
