using System;
using System.Collections.Generic;
using System.Linq;
using ThpCore.Paging;
using Xunit;

namespace ThpCore.Tests.Paging;

/// <summary>
/// The access-rights matrix of Intel SDM Vol. 3A §4.6 against an independent oracle (<see cref="RightsOracle"/>):
/// privilege × access × page U/S × R/W × XD × CR0.WP × SMEP × SMAP × RFLAGS.AC × EFER.NXE × CR4.PKE × PKRU
/// (AD, WD of the leaf's key), for 4 KiB, 2 MiB and 1 GiB leaves.
/// </summary>
public sealed class RightsMatrixTests
{
    private const ulong Va4K = 0x0000_4000_1234_5000UL;
    private const ulong Va2M = 0x0000_4000_4060_0000UL;
    private const ulong Va1G = 0x0000_4001_8000_0000UL;
    private const ulong Frame4K = 0x0000_0007_6543_2000UL;
    private const ulong Frame2M = 0x0000_0001_2340_0000UL;
    private const ulong Frame1G = 0x0000_0003_C000_0000UL;

    private static readonly Privilege[] s_privileges = { Privilege.User, Privilege.Supervisor, Privilege.ImplicitSupervisor };
    private static readonly AccessKind[] s_accesses = { AccessKind.Read, AccessKind.Write, AccessKind.Fetch };
    private static readonly bool[] s_bools = { false, true };

    [Fact]
    public void Every_row_of_the_rights_cross_product_matches_the_SDM_oracle()
    {
        var tables = new TestTables();
        var leaves = new (PageSize Size, ulong Va, ulong Frame, ulong Offset, ulong LeafAddress)[]
        {
            (PageSize.Size4K, Va4K, Frame4K, 0xABC, tables.Map(Va4K, PageSize.Size4K, Frame4K, TestTables.P)),
            (PageSize.Size2M, Va2M, Frame2M, 0x1F_3ABC, tables.Map(Va2M, PageSize.Size2M, Frame2M, TestTables.P)),
            (PageSize.Size1G, Va1G, Frame1G, 0x3ABC_DEF0, tables.Map(Va1G, PageSize.Size1G, Frame1G, TestTables.P)),
        };

        var mismatches = new List<string>();
        int rows = 0, allowed = 0, protection = 0, keyFaults = 0, reserved = 0;

        foreach (var leaf in leaves)
        {
            foreach (RightsCase c in CrossProduct())
            {
                int key = rows % 16;
                RightsCase row = c with { Key = key, Pkru = SpreadPkru(c.Pkru, key) };
                rows++;

                ulong raw = leaf.Frame | TestTables.P
                    | (row.WritablePage ? TestTables.RW : 0)
                    | (row.UserPage ? TestTables.US : 0)
                    | (row.ExecuteDisable ? TestTables.XD : 0)
                    | ((ulong)key << 59)
                    | (leaf.Size == PageSize.Size4K ? 0 : TestTables.PS);
                tables.Write(leaf.LeafAddress, raw);

                CpuState cpu = CpuFor(tables, row);
                WalkResult result = PageWalker.Translate(cpu, tables.Memory, VirtualAddress.Create(leaf.Va + leaf.Offset), row.Access, row.Privilege);
                PageFaultErrorCode? expected = RightsOracle.Expected(row);

                string? problem = Compare(result, expected, TestTables.LeafLevel(leaf.Size), leaf.Frame + leaf.Offset);
                if (problem is not null)
                {
                    mismatches.Add($"{leaf.Size.ShortName()} {row}: {problem}");
                }

                if (expected is null)
                {
                    allowed++;
                }
                else if ((expected & PageFaultErrorCode.ReservedBit) != 0)
                {
                    reserved++;
                }
                else if ((expected & PageFaultErrorCode.ProtectionKey) != 0)
                {
                    keyFaults++;
                }
                else
                {
                    protection++;
                }
            }
        }

        Assert.True(
            mismatches.Count == 0,
            $"{mismatches.Count} of {rows} rows disagree with the SDM oracle:\n" + string.Join('\n', mismatches.Take(60)));

        // 3 privileges × 3 accesses × 2^9 flag combinations × 4 (AD, WD) = 18,432 rows per leaf size.
        Assert.Equal(3 * 18_432, rows);

        // The oracle is not vacuous: every kind of outcome occurs.
        Assert.True(allowed > 0 && protection > 0 && keyFaults > 0 && reserved > 0, $"allowed {allowed}, protection {protection}, PK {keyFaults}, RSVD {reserved}");
    }

    [Theory]
    [InlineData(false, false, -1)] // WP = 0: a supervisor-mode read-only page is writable by the supervisor
    [InlineData(false, true, -1)] // WP = 0, SMAP = 0: so is a user-mode read-only page
    [InlineData(true, false, 0x3)] // WP = 1: P | W
    [InlineData(true, true, 0x3)]
    public void A_supervisor_write_to_a_read_only_page_succeeds_when_WP_is_0(bool wp, bool userPage, int expected)
    {
        var c = Case(Privilege.Supervisor, AccessKind.Write, userPage: userPage, writable: false) with { Wp = wp };
        AssertCase(c, expected);
    }

    [Theory]
    [InlineData(Privilege.Supervisor, AccessKind.Read, true, -1)] // explicit read with AC = 1: allowed
    [InlineData(Privilege.ImplicitSupervisor, AccessKind.Read, true, 0x1)] // implicit read: AC does not help; U/S = 0 in the code
    [InlineData(Privilege.Supervisor, AccessKind.Read, false, 0x1)]
    [InlineData(Privilege.ImplicitSupervisor, AccessKind.Read, false, 0x1)]
    [InlineData(Privilege.Supervisor, AccessKind.Write, true, -1)]
    [InlineData(Privilege.ImplicitSupervisor, AccessKind.Write, true, 0x3)]
    public void Smap_with_AC_1_lets_an_explicit_access_through_but_not_an_implicit_one(Privilege privilege, AccessKind access, bool ac, int expected)
    {
        var c = Case(privilege, access, userPage: true, writable: true) with { Smap = true, Ac = ac };
        AssertCase(c, expected);
    }

    [Theory]
    [InlineData(Privilege.Supervisor, true, true, 0x11)] // P | I/D
    [InlineData(Privilege.Supervisor, false, true, 0x11)] // I/D because of SMEP even with NXE = 0
    [InlineData(Privilege.ImplicitSupervisor, false, true, 0x11)]
    [InlineData(Privilege.Supervisor, true, false, -1)] // SMEP = 0: the supervisor may execute user code
    public void A_smep_fetch_fault_reports_I_D(Privilege privilege, bool nxe, bool smep, int expected)
    {
        var c = Case(privilege, AccessKind.Fetch, userPage: true, writable: true) with { Nxe = nxe, Smep = smep };
        AssertCase(c, expected);
    }

    [Theory]
    [InlineData(Privilege.Supervisor, true, 0x23)] // P | W | PK
    [InlineData(Privilege.Supervisor, false, -1)] // WP = 0: WD does not apply to supervisor writes
    [InlineData(Privilege.ImplicitSupervisor, true, 0x23)]
    [InlineData(Privilege.ImplicitSupervisor, false, -1)]
    [InlineData(Privilege.User, false, 0x27)] // user writes honour WD whatever WP says: P | W | U | PK
    [InlineData(Privilege.User, true, 0x27)]
    public void Pk_write_disable_blocks_a_supervisor_write_only_when_WP_is_1(Privilege privilege, bool wp, int expected)
    {
        const int key = 9;
        var c = Case(privilege, AccessKind.Write, userPage: true, writable: true) with { Wp = wp, Pke = true, Key = key, Pkru = 2u << (2 * key) };
        AssertCase(c, expected);
    }

    [Theory]
    [InlineData(Privilege.User, AccessKind.Fetch, -1)] // AD = WD = 1, yet fetches are never checked against PKRU
    [InlineData(Privilege.Supervisor, AccessKind.Fetch, -1)]
    [InlineData(Privilege.User, AccessKind.Read, 0x25)] // P | U | PK
    [InlineData(Privilege.Supervisor, AccessKind.Read, 0x21)] // AD stops supervisor reads of user-mode addresses too
    public void A_fetch_never_faults_on_protection_keys(Privilege privilege, AccessKind access, int expected)
    {
        const int key = 15;
        var c = Case(privilege, access, userPage: true, writable: true) with { Pke = true, Key = key, Pkru = 3u << (2 * key) };
        AssertCase(c, expected);
    }

    [Fact]
    public void Protection_keys_do_not_apply_to_supervisor_mode_addresses()
    {
        // A user access to a supervisor page faults (P | U) but PKRU, even with AD = 1, adds no PK: keys belong to user-mode addresses.
        var c = Case(Privilege.User, AccessKind.Read, userPage: false, writable: true) with { Pke = true, Key = 0, Pkru = 3 };
        AssertCase(c, 0x5);

        // And a supervisor access to a supervisor page with AD = 1 for its key succeeds.
        AssertCase(c with { Privilege = Privilege.Supervisor }, -1);
    }

    [Theory]
    [InlineData(false, false, 0x5)] // P | U: no I/D without NXE or SMEP
    [InlineData(true, false, 0x15)] // P | U | I/D
    [InlineData(false, true, 0x15)]
    [InlineData(true, true, 0x15)]
    public void The_I_D_bit_is_set_only_when_NXE_or_SMEP_is_on(bool nxe, bool smep, int expected)
    {
        var c = Case(Privilege.User, AccessKind.Fetch, userPage: false, writable: true) with { Nxe = nxe, Smep = smep };
        AssertCase(c, expected);
    }

    [Theory]
    [InlineData(Privilege.User, 0x15)] // P | U | I/D
    [InlineData(Privilege.Supervisor, 0x11)]
    public void Execute_disable_blocks_fetches_only_with_NXE(Privilege privilege, int expected)
    {
        var c = Case(privilege, AccessKind.Fetch, userPage: true, writable: true) with { ExecuteDisable = true, Nxe = true };
        AssertCase(c, expected);

        // With NXE = 0 the same bit is reserved: RSVD | P (| U), and no I/D.
        AssertCase(c with { Nxe = false }, 0x9 | (privilege == Privilege.User ? 0x4 : 0));
    }

    private static RightsCase Case(Privilege privilege, AccessKind access, bool userPage, bool writable) =>
        new(privilege, access, userPage, writable, ExecuteDisable: false, Key: 0, Nxe: true, Wp: true, Smep: false, Smap: false, Ac: false, Pke: false, Pkru: 0);

    /// <summary>Checks the oracle against the hand-written SDM answer, then the walker against both.</summary>
    private static void AssertCase(RightsCase c, int expected)
    {
        PageFaultErrorCode? want = expected < 0 ? null : (PageFaultErrorCode)expected;
        Assert.Equal(want, RightsOracle.Expected(c));

        var tables = new TestTables();
        ulong flags = TestTables.P
            | (c.WritablePage ? TestTables.RW : 0)
            | (c.UserPage ? TestTables.US : 0)
            | (c.ExecuteDisable ? TestTables.XD : 0)
            | ((ulong)c.Key << 59);
        tables.Map(Va4K, PageSize.Size4K, Frame4K, flags);
        WalkResult result = PageWalker.Translate(CpuFor(tables, c), tables.Memory, VirtualAddress.Create(Va4K + 0x10), c.Access, c.Privilege);
        string? problem = Compare(result, want, PagingLevel.Pt, Frame4K + 0x10);
        Assert.True(problem is null, $"{c}: {problem}");
    }

    private static CpuState CpuFor(TestTables tables, in RightsCase c) => tables.Cpu(
        (c.Smep ? Cr4Flags.Smep : 0) | (c.Smap ? Cr4Flags.Smap : 0) | (c.Pke ? Cr4Flags.Pke : 0),
        nxe: c.Nxe,
        writeProtect: c.Wp,
        alignmentCheck: c.Ac,
        pkru: c.Pkru);

    private static string? Compare(WalkResult result, PageFaultErrorCode? expected, PagingLevel leafLevel, ulong expectedPhysical)
    {
        if (expected is null)
        {
            if (result.Status != WalkStatus.Translated)
            {
                return $"expected success, walker says {result}";
            }

            return result.PhysicalAddress.Value == expectedPhysical ? null : $"expected 0x{expectedPhysical:x}, walker says {result}";
        }

        if (result.Status != WalkStatus.PageFault)
        {
            return $"expected #PF 0x{(uint)expected.Value:x} ({WalkResult.DescribeErrorCode(expected.Value)}), walker says {result}";
        }

        if (result.ErrorCode != expected.Value)
        {
            return $"expected #PF 0x{(uint)expected.Value:x} ({WalkResult.DescribeErrorCode(expected.Value)}), walker says 0x{(uint)result.ErrorCode:x} ({WalkResult.DescribeErrorCode(result.ErrorCode)})";
        }

        return result.FaultLevel == leafLevel ? null : $"fault reported at {result.FaultLevel}, expected {leafLevel}";
    }

    /// <summary>
    /// Puts the row's (AD, WD) pair (bits 1:0 of <paramref name="pair"/>) at the leaf's key and the opposite pair
    /// at every other key, so a walker that reads the wrong key gets a different answer.
    /// </summary>
    private static uint SpreadPkru(uint pair, int key)
    {
        uint pkru = 0;
        for (int k = 0; k < 16; k++)
        {
            uint bits = k == key ? pair & 3 : ~pair & 3;
            pkru |= bits << (2 * k);
        }

        return pkru;
    }

    /// <summary>Every combination; <see cref="RightsCase.Pkru"/> carries the (AD, WD) pair in bits 1:0 until spread.</summary>
    private static IEnumerable<RightsCase> CrossProduct()
    {
        foreach (Privilege privilege in s_privileges)
        foreach (AccessKind access in s_accesses)
        foreach (bool userPage in s_bools)
        foreach (bool writable in s_bools)
        foreach (bool xd in s_bools)
        foreach (bool wp in s_bools)
        foreach (bool smep in s_bools)
        foreach (bool smap in s_bools)
        foreach (bool ac in s_bools)
        foreach (bool nxe in s_bools)
        foreach (bool pke in s_bools)
        for (uint adWd = 0; adWd < 4; adWd++)
        {
            yield return new RightsCase(privilege, access, userPage, writable, xd, 0, nxe, wp, smep, smap, ac, pke, adWd);
        }
    }
}
