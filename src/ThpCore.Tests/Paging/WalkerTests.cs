using System;
using ThpCore.Paging;
using Xunit;

namespace ThpCore.Tests.Paging;

/// <summary>
/// PageWalker: translation of 4 KiB / 2 MiB / 1 GiB pages in 4-level and 5-level paging, rights combined
/// across levels, page-fault error codes for not-present and reserved-bit faults (Intel SDM Vol. 3A §4.5–§4.7),
/// canonical #GP, physical-memory errors and the walk trace.
/// </summary>
public sealed class WalkerTests
{
    private const ulong Va = 0x0000_7F12_3456_7000UL;
    private const ulong Frame = 0x0000_0012_3456_7000UL;

    private const ulong P = TestTables.P;
    private const ulong RW = TestTables.RW;
    private const ulong US = TestTables.US;
    private const ulong XD = TestTables.XD;
    private const ulong PS = TestTables.PS;

    private static (TestTables Tables, ulong Leaf) Mapped4K(ulong leafFlags = P | RW | US, PagingMode mode = PagingMode.FourLevel)
    {
        var tables = new TestTables(mode);
        ulong leaf = tables.Map(Va, PageSize.Size4K, Frame, leafFlags);
        return (tables, leaf);
    }

    private static WalkResult Walk(TestTables tables, CpuState cpu, ulong va, AccessKind access = AccessKind.Read, Privilege privilege = Privilege.User) =>
        PageWalker.Translate(cpu, tables.Memory, VirtualAddress.FromRaw(va), access, privilege);

    private static void AssertFault(WalkResult result, PagingLevel level, int errorCode)
    {
        Assert.Equal(WalkStatus.PageFault, result.Status);
        Assert.Equal(level, result.FaultLevel);
        Assert.True(
            (PageFaultErrorCode)errorCode == result.ErrorCode,
            $"expected error code 0x{errorCode:x} ({WalkResult.DescribeErrorCode((PageFaultErrorCode)errorCode)}), got {result}");
    }

    // ---------------------------------------------------------------- translation

    [Fact]
    public void A_4K_page_translates_to_its_frame_plus_the_offset()
    {
        var (tables, _) = Mapped4K();
        WalkResult result = Walk(tables, tables.Cpu(), Va + 0xFFF);
        Assert.Equal(WalkStatus.Translated, result.Status);
        Assert.Equal(Frame + 0xFFF, result.PhysicalAddress.Value);
        Assert.Equal(PageSize.Size4K, result.PageSize);
        Assert.Equal(PagingLevel.Pt, result.Level);
        Assert.True(result.IsWritable && result.IsUser && !result.IsExecuteDisable);
    }

    [Theory]
    [InlineData(0x0UL)]
    [InlineData(0x1234UL)]
    [InlineData(0x1F_FFFFUL)]
    public void A_2M_leaf_translates_with_a_21_bit_offset_and_its_PAT_bit_is_not_an_address_bit(ulong offset)
    {
        const ulong va = 0x0000_0040_0060_0000UL; // 2 MiB aligned
        const ulong frame = 0x0000_3FFF_FFE0_0000UL; // highest 2 MiB frame below MAXPHYADDR 46
        var tables = new TestTables();
        tables.Map(va, PageSize.Size2M, frame, P | RW | (1UL << 12)); // bit 12 = PAT in a 2 MiB leaf

        WalkResult result = Walk(tables, tables.Cpu(), va + offset, AccessKind.Read, Privilege.Supervisor);
        Assert.Equal(WalkStatus.Translated, result.Status);
        Assert.Equal(frame + offset, result.PhysicalAddress.Value);
        Assert.Equal(PageSize.Size2M, result.PageSize);
        Assert.Equal(PagingLevel.Pd, result.Level);
    }

    [Theory]
    [InlineData(0x0UL)]
    [InlineData(0x1000UL)] // bit 12 of the offset is an offset bit, not PAT
    [InlineData(0x2ABC_DEF0UL)]
    [InlineData(0x3FFF_FFFFUL)]
    public void A_1G_leaf_translates_with_a_30_bit_offset(ulong offset)
    {
        const ulong va = 0xFFFF_8040_C000_0000UL; // 1 GiB aligned, upper half
        const ulong frame = 0x0000_2AC0_0000_0000UL;
        var tables = new TestTables();
        tables.Map(va, PageSize.Size1G, frame, P | RW | (1UL << 12));

        WalkResult result = Walk(tables, tables.Cpu(), va + offset, AccessKind.Write, Privilege.Supervisor);
        Assert.Equal(WalkStatus.Translated, result.Status);
        Assert.Equal(frame + offset, result.PhysicalAddress.Value);
        Assert.Equal(PageSize.Size1G, result.PageSize);
        Assert.Equal(PagingLevel.Pdpt, result.Level);
    }

    [Fact]
    public void A_5_level_walk_starts_at_the_PML5_table_in_CR3()
    {
        const ulong va = 0x00AB_CDEF_1234_5000UL; // bits 56:48 select PML5 entry 0xAB; not canonical in 48 bits
        var tables = new TestTables(PagingMode.FiveLevel);
        tables.Map(va, PageSize.Size4K, Frame, P | RW | US);
        var trace = new WalkTrace();

        WalkResult result = PageWalker.Translate(tables.Cpu(), tables.Memory, VirtualAddress.Create(va + 0x321, PagingMode.FiveLevel), AccessKind.Read, Privilege.User, default, trace);

        Assert.Equal(WalkStatus.Translated, result.Status);
        Assert.Equal(Frame + 0x321, result.PhysicalAddress.Value);
        Assert.Equal(5, trace.Steps.Count);
        Assert.Equal(PagingLevel.Pml5, trace.Steps[0].Level);
        Assert.Equal(0xAB, trace.Steps[0].Index);
        Assert.Equal(tables.Root + (0xAB * 8), trace.Steps[0].EntryAddress.Value);
    }

    [Fact]
    public void A_5_level_walk_translates_upper_half_addresses_and_large_pages()
    {
        const ulong va = 0xFF12_3456_4000_0000UL; // bit 56 = 1 and bits 63:57 = 1: canonical in 57 bits
        var tables = new TestTables(PagingMode.FiveLevel);
        tables.Map(va, PageSize.Size1G, 0x4000_0000, P | RW);
        tables.Map(va + 0x4000_0000, PageSize.Size2M, 0x20_0000, P | RW);

        WalkResult big = Walk(tables, tables.Cpu(), va + 0x1234_5678, AccessKind.Read, Privilege.Supervisor);
        WalkResult medium = Walk(tables, tables.Cpu(), va + 0x4000_0000 + 0x1_2345, AccessKind.Read, Privilege.Supervisor);

        Assert.Equal(0x4000_0000UL + 0x1234_5678, big.PhysicalAddress.Value);
        Assert.Equal(PageSize.Size1G, big.PageSize);
        Assert.Equal(0x20_0000UL + 0x1_2345, medium.PhysicalAddress.Value);
        Assert.Equal(PageSize.Size2M, medium.PageSize);
    }

    // ---------------------------------------------------------------- rights combined across levels

    [Theory]
    [InlineData(PagingLevel.Pml4)]
    [InlineData(PagingLevel.Pdpt)]
    [InlineData(PagingLevel.Pd)]
    [InlineData(PagingLevel.Pt)]
    public void Clearing_R_W_at_one_level_makes_the_page_read_only(PagingLevel level)
    {
        var (tables, _) = Mapped4K();
        tables.Clear(Va, level, RW);

        AssertFault(Walk(tables, tables.Cpu(), Va, AccessKind.Write, Privilege.User), PagingLevel.Pt, 0x7); // P | W | U
        AssertFault(Walk(tables, tables.Cpu(), Va, AccessKind.Write, Privilege.Supervisor), PagingLevel.Pt, 0x3); // P | W

        WalkResult read = Walk(tables, tables.Cpu(), Va, AccessKind.Read, Privilege.User);
        Assert.Equal(WalkStatus.Translated, read.Status);
        Assert.False(read.IsWritable);

        // A protection fault reports the combined rights too.
        Assert.Equal(EffectiveRights.User, Walk(tables, tables.Cpu(), Va, AccessKind.Write, Privilege.User).Rights);

        // CR0.WP = 0: the supervisor still writes.
        Assert.Equal(WalkStatus.Translated, Walk(tables, tables.Cpu(writeProtect: false), Va, AccessKind.Write, Privilege.Supervisor).Status);
    }

    [Theory]
    [InlineData(PagingLevel.Pml4)]
    [InlineData(PagingLevel.Pdpt)]
    [InlineData(PagingLevel.Pd)]
    [InlineData(PagingLevel.Pt)]
    public void Clearing_U_S_at_one_level_makes_a_supervisor_mode_address(PagingLevel level)
    {
        var (tables, _) = Mapped4K();
        tables.Clear(Va, level, US);

        AssertFault(Walk(tables, tables.Cpu(), Va, AccessKind.Read, Privilege.User), PagingLevel.Pt, 0x5); // P | U

        // Supervisor-mode address: SMAP and SMEP do not apply.
        WalkResult read = Walk(tables, tables.Cpu(Cr4Flags.Smap | Cr4Flags.Smep), Va, AccessKind.Read, Privilege.Supervisor);
        Assert.Equal(WalkStatus.Translated, read.Status);
        Assert.False(read.IsUser);
        Assert.Equal(WalkStatus.Translated, Walk(tables, tables.Cpu(Cr4Flags.Smap | Cr4Flags.Smep), Va, AccessKind.Fetch, Privilege.Supervisor).Status);
    }

    [Theory]
    [InlineData(PagingLevel.Pml4)]
    [InlineData(PagingLevel.Pdpt)]
    [InlineData(PagingLevel.Pd)]
    [InlineData(PagingLevel.Pt)]
    public void XD_at_one_level_blocks_fetches(PagingLevel level)
    {
        var (tables, _) = Mapped4K();
        tables.Or(Va, level, XD);

        AssertFault(Walk(tables, tables.Cpu(), Va, AccessKind.Fetch, Privilege.User), PagingLevel.Pt, 0x15); // P | U | I/D
        AssertFault(Walk(tables, tables.Cpu(), Va, AccessKind.Fetch, Privilege.Supervisor), PagingLevel.Pt, 0x11); // P | I/D

        WalkResult read = Walk(tables, tables.Cpu(), Va, AccessKind.Write, Privilege.User);
        Assert.Equal(WalkStatus.Translated, read.Status);
        Assert.True(read.IsExecuteDisable);
    }

    [Fact]
    public void Rights_of_a_1G_leaf_combine_with_its_PML4E()
    {
        const ulong va = 0x0000_0080_4000_0000UL;
        var tables = new TestTables();
        tables.Map(va, PageSize.Size1G, 0x4000_0000, P | RW | US, upperFlags: P | US | XD); // PML4E read-only and execute-disable

        AssertFault(Walk(tables, tables.Cpu(), va, AccessKind.Write, Privilege.User), PagingLevel.Pdpt, 0x7);
        AssertFault(Walk(tables, tables.Cpu(), va, AccessKind.Fetch, Privilege.User), PagingLevel.Pdpt, 0x15);
        WalkResult read = Walk(tables, tables.Cpu(), va, AccessKind.Read, Privilege.User);
        Assert.Equal(WalkStatus.Translated, read.Status);
        Assert.Equal(EffectiveRights.User | EffectiveRights.ExecuteDisable, read.Rights);
    }

    // ---------------------------------------------------------------- not present

    [Theory]
    [InlineData(PagingMode.FourLevel, PagingLevel.Pml4)]
    [InlineData(PagingMode.FourLevel, PagingLevel.Pdpt)]
    [InlineData(PagingMode.FourLevel, PagingLevel.Pd)]
    [InlineData(PagingMode.FourLevel, PagingLevel.Pt)]
    [InlineData(PagingMode.FiveLevel, PagingLevel.Pml5)]
    [InlineData(PagingMode.FiveLevel, PagingLevel.Pml4)]
    [InlineData(PagingMode.FiveLevel, PagingLevel.Pt)]
    public void A_not_present_entry_faults_with_P_0_at_its_level(PagingMode mode, PagingLevel level)
    {
        var (tables, _) = Mapped4K(mode: mode);

        // Every bit but P set: all of them are ignored in a not-present entry, reserved ones included.
        const ulong garbage = ~P;
        tables.Set(Va, level, garbage);

        AssertFault(Walk(tables, tables.Cpu(), Va, AccessKind.Read, Privilege.User), level, 0x4); // U
        AssertFault(Walk(tables, tables.Cpu(), Va, AccessKind.Write, Privilege.Supervisor), level, 0x2); // W
        AssertFault(Walk(tables, tables.Cpu(), Va, AccessKind.Read, Privilege.ImplicitSupervisor), level, 0x0);
        AssertFault(Walk(tables, tables.Cpu(), Va, AccessKind.Fetch, Privilege.User), level, 0x14); // U | I/D (NXE = 1)
        AssertFault(Walk(tables, tables.Cpu(nxe: false), Va, AccessKind.Fetch, Privilege.User), level, 0x4); // no I/D without NXE or SMEP
        AssertFault(Walk(tables, tables.Cpu(Cr4Flags.Smep, nxe: false), Va, AccessKind.Fetch, Privilege.Supervisor), level, 0x10);

        WalkResult result = Walk(tables, tables.Cpu(), Va);
        Assert.Equal(garbage, result.Entry.Raw);
        Assert.Equal(level, result.Entry.Level);
    }

    [Fact]
    public void An_unmapped_address_in_an_empty_hierarchy_faults_at_the_root()
    {
        var tables = new TestTables();
        AssertFault(Walk(tables, tables.Cpu(), 0x1000, AccessKind.Write, Privilege.User), PagingLevel.Pml4, 0x6);

        var five = new TestTables(PagingMode.FiveLevel);
        AssertFault(Walk(five, five.Cpu(), 0x1000, AccessKind.Write, Privilege.User), PagingLevel.Pml5, 0x6);
    }

    // ---------------------------------------------------------------- reserved bits

    [Theory]
    [InlineData(PagingMode.FourLevel, PagingLevel.Pml4)]
    [InlineData(PagingMode.FourLevel, PagingLevel.Pdpt)]
    [InlineData(PagingMode.FourLevel, PagingLevel.Pd)]
    [InlineData(PagingMode.FourLevel, PagingLevel.Pt)]
    [InlineData(PagingMode.FiveLevel, PagingLevel.Pml5)]
    [InlineData(PagingMode.FiveLevel, PagingLevel.Pdpt)]
    public void A_bit_above_MAXPHYADDR_is_a_reserved_bit_fault_at_its_level(PagingMode mode, PagingLevel level)
    {
        var (tables, _) = Mapped4K(mode: mode);
        tables.Or(Va, level, 1UL << 51); // MAXPHYADDR is 46

        AssertFault(Walk(tables, tables.Cpu(), Va, AccessKind.Read, Privilege.Supervisor), level, 0x9); // P | RSVD
        AssertFault(Walk(tables, tables.Cpu(), Va, AccessKind.Write, Privilege.User), level, 0xF); // P | W | U | RSVD
        AssertFault(Walk(tables, tables.Cpu(), Va, AccessKind.Fetch, Privilege.User), level, 0x1D); // P | U | RSVD | I/D
        AssertFault(Walk(tables, tables.Cpu(nxe: false), Va, AccessKind.Fetch, Privilege.Supervisor), level, 0x9);
    }

    [Theory]
    [InlineData(46, 45, false)] // an address bit below MAXPHYADDR
    [InlineData(40, 45, true)] // the same bit above a smaller MAXPHYADDR
    [InlineData(40, 40, true)]
    [InlineData(40, 39, false)]
    [InlineData(52, 51, false)]
    public void The_reserved_address_bits_follow_MAXPHYADDR(int maxPhysicalAddressBits, int bit, bool reserved)
    {
        var (tables, leaf) = Mapped4K();
        tables.Write(leaf, tables.Read(leaf) | (1UL << bit));
        CpuState cpu = tables.Cpu(features: new CpuFeatures { MaxPhysicalAddressBits = maxPhysicalAddressBits });

        WalkResult result = Walk(tables, cpu, Va + 8);
        if (reserved)
        {
            AssertFault(result, PagingLevel.Pt, 0xD); // P | U | RSVD
        }
        else
        {
            Assert.Equal(Frame + (1UL << bit) + 8, result.PhysicalAddress.Value);
        }
    }

    [Theory]
    [InlineData(PageSize.Size2M, 50)]
    [InlineData(PageSize.Size2M, 46)]
    [InlineData(PageSize.Size1G, 51)]
    [InlineData(PageSize.Size1G, 47)]
    public void A_frame_bit_above_MAXPHYADDR_in_a_large_leaf_is_reserved(PageSize size, int bit)
    {
        const ulong va = 0x0000_0040_4000_0000UL;
        var tables = new TestTables();
        tables.Map(va, size, 0x4000_0000 | (1UL << bit), P | RW | US);
        AssertFault(Walk(tables, tables.Cpu(), va, AccessKind.Read, Privilege.User), TestTables.LeafLevel(size), 0xD);
    }

    [Fact]
    public void Checks_are_top_down_so_a_reserved_bit_above_hides_a_not_present_entry_below()
    {
        var (tables, _) = Mapped4K();
        tables.Set(Va, PagingLevel.Pd, 0); // not present below ...
        tables.Or(Va, PagingLevel.Pdpt, 1UL << 50); // ... a PDPTE with a reserved bit
        AssertFault(Walk(tables, tables.Cpu(), Va, AccessKind.Write, Privilege.User), PagingLevel.Pdpt, 0xF);

        // And a not-present entry above hides a reserved bit below.
        var (other, _) = Mapped4K();
        other.Or(Va, PagingLevel.Pt, 1UL << 50);
        other.Clear(Va, PagingLevel.Pd, P);
        AssertFault(Walk(other, other.Cpu(), Va, AccessKind.Write, Privilege.User), PagingLevel.Pd, 0x6);
    }

    [Theory]
    [InlineData(13)]
    [InlineData(16)]
    [InlineData(20)]
    public void Low_address_bits_of_a_2M_leaf_are_reserved(int bit)
    {
        const ulong va = 0x0000_0040_0060_0000UL;
        var tables = new TestTables();
        tables.Map(va, PageSize.Size2M, 0x20_0000 | (1UL << bit), P | RW | US);
        AssertFault(Walk(tables, tables.Cpu(), va + 0x10, AccessKind.Read, Privilege.User), PagingLevel.Pd, 0xD);
    }

    [Theory]
    [InlineData(13)]
    [InlineData(20)]
    [InlineData(21)]
    [InlineData(29)]
    public void Low_address_bits_of_a_1G_leaf_are_reserved(int bit)
    {
        const ulong va = 0x0000_0040_4000_0000UL;
        var tables = new TestTables();
        tables.Map(va, PageSize.Size1G, 0x4000_0000 | (1UL << bit), P | RW | US);
        AssertFault(Walk(tables, tables.Cpu(), va + 0x10, AccessKind.Write, Privilege.Supervisor), PagingLevel.Pdpt, 0xB); // P | W | RSVD
    }

    [Theory]
    [InlineData(PagingMode.FourLevel, PagingLevel.Pml4)]
    [InlineData(PagingMode.FiveLevel, PagingLevel.Pml5)]
    [InlineData(PagingMode.FiveLevel, PagingLevel.Pml4)]
    public void PS_in_a_PML4E_or_PML5E_is_reserved(PagingMode mode, PagingLevel level)
    {
        var (tables, _) = Mapped4K(mode: mode);
        tables.Or(Va, level, PS);
        AssertFault(Walk(tables, tables.Cpu(), Va, AccessKind.Read, Privilege.User), level, 0xD);
    }

    [Fact]
    public void PS_in_a_PDPTE_is_reserved_on_a_CPU_without_1G_pages()
    {
        const ulong va = 0x0000_0040_4000_0000UL;
        var tables = new TestTables();
        tables.Map(va, PageSize.Size1G, 0x4000_0000, P | RW | US);

        var no1G = new CpuFeatures { Supports1GPages = false };
        AssertFault(Walk(tables, tables.Cpu(features: no1G), va, AccessKind.Read, Privilege.User), PagingLevel.Pdpt, 0xD);
        Assert.Equal(PageSize.Size1G, Walk(tables, tables.Cpu(), va, AccessKind.Read, Privilege.User).PageSize);
    }

    [Theory]
    [InlineData(PagingMode.FourLevel, PagingLevel.Pml4)]
    [InlineData(PagingMode.FourLevel, PagingLevel.Pdpt)]
    [InlineData(PagingMode.FourLevel, PagingLevel.Pd)]
    [InlineData(PagingMode.FourLevel, PagingLevel.Pt)]
    [InlineData(PagingMode.FiveLevel, PagingLevel.Pml5)]
    public void XD_with_NXE_0_is_a_reserved_bit_for_every_access(PagingMode mode, PagingLevel level)
    {
        var (tables, _) = Mapped4K(mode: mode);
        tables.Or(Va, level, XD);

        AssertFault(Walk(tables, tables.Cpu(nxe: false), Va, AccessKind.Read, Privilege.User), level, 0xD); // P | U | RSVD
        AssertFault(Walk(tables, tables.Cpu(nxe: false), Va, AccessKind.Write, Privilege.Supervisor), level, 0xB);
        AssertFault(Walk(tables, tables.Cpu(nxe: false), Va, AccessKind.Fetch, Privilege.User), level, 0xD); // no I/D: NXE = SMEP = 0
        Assert.Equal(WalkStatus.Translated, Walk(tables, tables.Cpu(nxe: true), Va, AccessKind.Read, Privilege.User).Status);
    }

    [Fact]
    public void Ignored_bits_are_not_reserved()
    {
        var (tables, _) = Mapped4K();
        const ulong tableIgnored = 0x7FF0_0000_0000_0E40UL; // 62:52, 11:9 and bit 6 of a non-leaf entry
        const ulong leafIgnored = 0x7FF0_0000_0000_0E00UL; // 62:52 (59:62 are the key, ignored with PKE = 0) and 11:9
        tables.Or(Va, PagingLevel.Pml4, tableIgnored | TestTables.G); // bit 8 of a PML4E is ignored on Intel
        tables.Or(Va, PagingLevel.Pdpt, tableIgnored | TestTables.G);
        tables.Or(Va, PagingLevel.Pd, tableIgnored);
        tables.Or(Va, PagingLevel.Pt, leafIgnored | TestTables.G | PS); // bit 7 of a PTE is PAT

        WalkResult result = Walk(tables, tables.Cpu(), Va + 0x44, AccessKind.Write, Privilege.User);
        Assert.Equal(WalkStatus.Translated, result.Status);
        Assert.Equal(Frame + 0x44, result.PhysicalAddress.Value);
    }

    [Fact]
    public void Bit_8_of_a_PML4E_is_reserved_on_AMD()
    {
        var (tables, _) = Mapped4K();
        tables.Or(Va, PagingLevel.Pml4, TestTables.G);
        var amd = new CpuFeatures { Vendor = CpuVendor.Amd };
        AssertFault(Walk(tables, tables.Cpu(features: amd), Va, AccessKind.Read, Privilege.User), PagingLevel.Pml4, 0xD);
        Assert.Equal(WalkStatus.Translated, Walk(tables, tables.Cpu(), Va).Status);
    }

    [Fact]
    public void A_reserved_bit_is_reported_as_a_fault_and_never_thrown()
    {
        var (tables, _) = Mapped4K();
        for (int bit = 46; bit <= 51; bit++)
        {
            tables.Or(Va, PagingLevel.Pt, 1UL << bit);
        }

        foreach (AccessKind access in new[] { AccessKind.Read, AccessKind.Write, AccessKind.Fetch })
        {
            foreach (Privilege privilege in new[] { Privilege.User, Privilege.Supervisor, Privilege.ImplicitSupervisor })
            {
                WalkResult result = Walk(tables, tables.Cpu(), Va, access, privilege);
                Assert.Equal(WalkStatus.PageFault, result.Status);
                Assert.Equal(PageFaultErrorCode.Present | PageFaultErrorCode.ReservedBit, result.ErrorCode & (PageFaultErrorCode.Present | PageFaultErrorCode.ReservedBit | PageFaultErrorCode.ProtectionKey));
            }
        }
    }

    // ---------------------------------------------------------------- canonical addresses

    [Theory]
    [InlineData(PagingMode.FourLevel, 0x0000_8000_0000_0000UL)] // canonical in 57 bits, not in 48
    [InlineData(PagingMode.FourLevel, 0x00AB_CDEF_1234_5000UL)]
    [InlineData(PagingMode.FourLevel, 0xFFFF_7FFF_FFFF_F000UL)]
    [InlineData(PagingMode.FiveLevel, 0x0100_0000_0000_0000UL)]
    [InlineData(PagingMode.FiveLevel, 0xFEFF_FFFF_FFFF_F000UL)]
    [InlineData(PagingMode.FiveLevel, 0x8000_0000_0000_0000UL)]
    public void A_non_canonical_address_is_a_general_protection_fault_that_touches_no_memory(PagingMode mode, ulong va)
    {
        var tables = new TestTables(mode);
        tables.Map(va & 0x00FF_FFFF_FFFF_F000UL, PageSize.Size4K, Frame, P | RW | US); // the same indices, mapped
        var memory = new RecordingMemory(tables.Memory);

        foreach (AccessKind access in new[] { AccessKind.Read, AccessKind.Write, AccessKind.Fetch })
        {
            WalkResult result = PageWalker.Translate(tables.Cpu(), memory, VirtualAddress.FromRaw(va), access, Privilege.User, new WalkOptions { AccessedOnFault = AccessedOnFaultPolicy.UpperLevelsAsWalked }, null);
            Assert.Equal(WalkStatus.GeneralProtection, result.Status);
            Assert.Equal(PageFaultErrorCode.None, result.ErrorCode);
            Assert.Throws<InvalidOperationException>(() => result.PhysicalAddress);
        }

        Assert.Equal(0, memory.Reads + memory.Writes + memory.CompareExchanges);
    }

    [Fact]
    public void An_address_canonical_only_in_57_bits_walks_in_5_level_mode()
    {
        const ulong va = 0x0000_8000_0000_0000UL;
        var tables = new TestTables(PagingMode.FiveLevel);
        tables.Map(va, PageSize.Size4K, Frame, P | RW | US);
        Assert.Equal(Frame, Walk(tables, tables.Cpu(), va).PhysicalAddress.Value);
    }

    // ---------------------------------------------------------------- physical memory errors

    [Fact]
    public void A_table_pointer_outside_memory_is_a_physical_memory_error_that_names_the_entry()
    {
        var (tables, _) = Mapped4K();
        const ulong outside = 0x8000_0000UL; // memory is 1 GiB
        tables.Set(Va, PagingLevel.Pd, outside | P | RW | US);
        ulong[] before = tables.Snapshot();

        WalkResult result = Walk(tables, tables.Cpu(), Va, AccessKind.Write);
        Assert.Equal(WalkStatus.PhysicalMemoryError, result.Status);
        Assert.Equal(PagingLevel.Pt, result.Level);
        Assert.Equal(outside + ((ulong)TestTables.Index(Va, PagingLevel.Pt) * 8), result.MissingEntryAddress.Value);
        Assert.Throws<InvalidOperationException>(() => result.PhysicalAddress);
        Assert.Equal(before, tables.Snapshot());
    }

    [Fact]
    public void A_root_table_outside_memory_is_a_physical_memory_error_at_the_root_level()
    {
        var tables = new TestTables();
        CpuState cpu = tables.Cpu().WithCr3(0x1_0000_0000UL);
        WalkResult result = Walk(tables, cpu, Va);
        Assert.Equal(WalkStatus.PhysicalMemoryError, result.Status);
        Assert.Equal(PagingLevel.Pml4, result.Level);
        Assert.Equal(0x1_0000_0000UL + ((ulong)TestTables.Index(Va, PagingLevel.Pml4) * 8), result.MissingEntryAddress.Value);
    }

    // ---------------------------------------------------------------- trace

    [Fact]
    public void The_trace_records_each_level_entry_address_index_and_value()
    {
        var (tables, _) = Mapped4K();
        var trace = new WalkTrace();
        var expected = new (PagingLevel Level, ulong Address, ulong Value)[4];
        int i = 0;
        for (PagingLevel level = PagingLevel.Pml4; level >= PagingLevel.Pt; level--)
        {
            ulong address = tables.EntryAddress(Va, level);
            expected[i++] = (level, address, tables.Read(address));
        }

        WalkResult result = PageWalker.Translate(tables.Cpu(), tables.Memory, VirtualAddress.Create(Va), AccessKind.Write, Privilege.User, default, trace);
        Assert.Equal(WalkStatus.Translated, result.Status);

        Assert.Equal(4, trace.Steps.Count);
        for (i = 0; i < 4; i++)
        {
            WalkStep step = trace.Steps[i];
            Assert.Equal(expected[i].Level, step.Level);
            Assert.Equal(TestTables.Index(Va, expected[i].Level), step.Index);
            Assert.Equal(expected[i].Address, step.EntryAddress.Value);
            Assert.Equal(expected[i].Value, step.Entry.Raw);
            Assert.Equal(expected[i].Level, step.Entry.Level);
        }

        // The writes are the A/D updates: A everywhere, D in the leaf.
        Assert.Equal(4, trace.Writes.Count);
        for (i = 0; i < 4; i++)
        {
            ulong want = expected[i].Value | TestTables.A | (i == 3 ? TestTables.D : 0);
            Assert.Equal(expected[i].Address, trace.Writes[i].Address.Value);
            Assert.Equal(expected[i].Value, trace.Writes[i].Before);
            Assert.Equal(want, trace.Writes[i].After);
        }

        Assert.Equal(0, trace.Restarts);

        // Reused for a faulting walk: cleared first, and the faulting entry is the last step.
        tables.Clear(Va, PagingLevel.Pd, P);
        PageWalker.Translate(tables.Cpu(), tables.Memory, VirtualAddress.Create(Va), AccessKind.Read, Privilege.User, default, trace);
        Assert.Equal(3, trace.Steps.Count);
        Assert.Equal(PagingLevel.Pd, trace.Steps[2].Level);
        Assert.False(trace.Steps[2].Entry.IsPresent);
        Assert.Empty(trace.Writes);
    }

    [Fact]
    public void The_trace_of_a_large_page_walk_stops_at_the_leaf()
    {
        const ulong va = 0x0000_0040_4000_0000UL;
        var tables = new TestTables();
        tables.Map(va, PageSize.Size1G, 0x4000_0000, P | RW | US);
        var trace = new WalkTrace();
        PageWalker.Translate(tables.Cpu(), tables.Memory, VirtualAddress.Create(va), AccessKind.Read, Privilege.User, default, trace);
        Assert.Equal(new[] { PagingLevel.Pml4, PagingLevel.Pdpt }, new[] { trace.Steps[0].Level, trace.Steps[1].Level });
        Assert.Equal(2, trace.Steps.Count);
    }

    // ---------------------------------------------------------------- arguments

    [Fact]
    public void Undefined_arguments_are_refused()
    {
        var (tables, _) = Mapped4K();
        Assert.Throws<ArgumentOutOfRangeException>(() => Walk(tables, tables.Cpu(), Va, (AccessKind)3));
        Assert.Throws<ArgumentOutOfRangeException>(() => Walk(tables, tables.Cpu(), Va, AccessKind.Read, (Privilege)3));
        Assert.Throws<ArgumentNullException>(() => PageWalker.Translate(null!, tables.Memory, VirtualAddress.Create(Va), AccessKind.Read, Privilege.User));
        Assert.Throws<ArgumentNullException>(() => PageWalker.Translate(tables.Cpu(), null!, VirtualAddress.Create(Va), AccessKind.Read, Privilege.User));
    }
}
