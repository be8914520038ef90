using System;
using System.Collections.Generic;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;
using ThpCore.Tests.Mm;
using Xunit;

namespace ThpCore.Tests.Collapse;

/// <summary>Shared set-up for the collapse tests: the selftest's page pattern, PMD state, the books.</summary>
internal static class CollapseFixture
{
    public const ulong K4 = 4096;
    public const ulong M2 = 2UL << 20;
    public const Protection Rw = Protection.Read | Protection.Write;

    // The khugepaged selftest's BASE_ADDR: 1 GiB, PMD-aligned.
    public static readonly VirtualAddress BaseAddr = VirtualAddress.FromRaw(1UL << 30);

    public static AddressSpace NewSpace(ThpSettings settings, ulong memory = 64UL << 20, SwapDevice? swap = null)
    {
        var space = new AddressSpace(new MemoryNode(memory), settings);
        space.AttachSwap(swap ?? new SwapDevice(0, 4096));
        return space;
    }

    public static VirtualAddress MapAtBase(AddressSpace space, ulong length, Protection protection = Rw) =>
        space.Map(length, protection, VmaFlags.Anonymous, BaseAddr, MapFlags.Fixed);

    // fill_memory: the first int of each page gets (page index + 0xdead0000), written through a user write access.
    public static void Fill(AddressSpace space, VirtualAddress start, int firstPage, int endPage)
    {
        for (int i = firstPage; i < endPage; i++)
        {
            AccessResult write = space.Access(start.Add((ulong)i * K4), AccessKind.Write);
            Assert.Equal(AccessStatus.Translated, write.Status);
            BitConverter.TryWriteBytes(space.Node.Memory.GetWritableFrame(write.PhysicalAddress.FrameNumber), (uint)i + 0xdead0000u);
        }
    }

    // validate_memory: filled pages read their pattern, the others zero.
    public static void Validate(AddressSpace space, VirtualAddress start, int filledEnd, int endPage)
    {
        for (int i = 0; i < endPage; i++)
        {
            AccessResult read = space.Access(start.Add((ulong)i * K4), AccessKind.Read);
            Assert.Equal(AccessStatus.Translated, read.Status);
            uint seen = BitConverter.ToUInt32(space.Node.Memory.ReadFrame(read.PhysicalAddress.FrameNumber)[..4]);
            Assert.True((i < filledEnd ? (uint)i + 0xdead0000u : 0u) == seen, $"page {i} reads {seen:x}");
        }
    }

    public static bool IsHuge(AddressSpace space, VirtualAddress va) => AddressSpaceTests.Pde(space, va.Value) is { IsPresent: true, IsLeaf: true };

    public static int CountHuge(AddressSpace space, VirtualAddress start, int hpages)
    {
        int n = 0;
        for (int i = 0; i < hpages; i++)
        {
            n += IsHuge(space, start.Add((ulong)i * M2)) ? 1 : 0;
        }

        return n;
    }

    public static Folio FolioAt(AddressSpace space, VirtualAddress va)
    {
        PageTableEntry pde = AddressSpaceTests.Pde(space, va.Value);
        PhysicalAddress address = pde.IsLeaf ? pde.Address : AddressSpaceTests.Pte(space, va.Value).Address;
        return space.Node.FolioOf(address.FrameNumber);
    }

    public static void AssertBooks(params AddressSpace[] spaces) => AssertBooks(spaces, []);

    public static void AssertBooks(AddressSpace[] spaces, IReadOnlyList<PinHandle> pins)
    {
        string? problem = MmBooks.Check(new List<AddressSpace>(spaces), pins, spaces[0].Swap);
        Assert.True(problem is null, problem);
    }

    // A PMD-mapped THP made PTE-mapped by an mprotect split and re-merge (the mm issue's first origin).
    public static VirtualAddress PteMappedThp(AddressSpace space)
    {
        VirtualAddress start = MapAtBase(space, M2);
        Assert.Equal(FaultAction.MappedHugePage, space.Access(start, AccessKind.Write).Fault);
        Fill(space, start, 0, 512);
        space.Protect(start.Add(K4), K4, Protection.Read);
        space.Protect(start.Add(K4), K4, Rw);
        Assert.False(IsHuge(space, start));
        return start;
    }
}
