using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using System.Text;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using ThpCore.Paging;

namespace ThpCore.Tests.Paging;

/// <summary>
/// Property: for random sets of non-overlapping 4 KiB / 2 MiB / 1 GiB mappings with random rights at every level,
/// random CPU state and random accesses, <see cref="PageWalker.Translate(CpuState, IPhysicalMemory, VirtualAddress, AccessKind, Privilege)"/>
/// agrees with a deliberately naive reference model: dictionaries from (level, address prefix) to the upper-level
/// entries the generator wrote and from (size, page number) to (frame, size, rights) of each page, with faults
/// computed by <see cref="RightsOracle"/>.
/// </summary>
public sealed class WalkerReferenceModelProperties
{
    private const int MaxPhysicalAddressBits = 46; // CpuFeatures.Default
    private static readonly int[] s_rootPool = { 0, 1, 256, 511 };
    private static readonly int[] s_pool = { 0, 1, 2, 511 };

    public sealed record MappingSpec(int[] Indices, PageSize Size, ulong Frame, bool Writable, bool User, bool ExecuteDisable, int Key, int UpperBits);

    public sealed record QuerySpec(int Kind, int Pick, ulong Offset, int[] Indices, AccessKind Access, Privilege Privilege);

    public sealed record CpuSpec(bool Wp, bool Smep, bool Smap, bool Ac, bool Nxe, bool Pke, uint Pkru);

    public sealed record Scenario(PagingMode Mode, CpuSpec Cpu, MappingSpec[] Mappings, QuerySpec[] Queries)
    {
        public override string ToString()
        {
            var text = new StringBuilder();
            text.Append(CultureInfo.InvariantCulture, $"{Mode} {Cpu}\n");
            foreach (MappingSpec m in Mappings)
            {
                text.Append(CultureInfo.InvariantCulture, $"  map [{string.Join(',', m.Indices)}] {m.Size.ShortName()} -> 0x{m.Frame:x} W={m.Writable} U={m.User} XD={m.ExecuteDisable} key={m.Key} upper=0x{m.UpperBits:x}\n");
            }

            return text.ToString();
        }
    }

    private static Gen<bool> Chance(int oneIn) => Gen.Choose(0, oneIn - 1).Select(n => n == 0);

    private static Gen<int[]> IndicesGen(int count, bool includeRoot) =>
        Gen.Elements(s_pool).ArrayOf(count).Zip(Gen.Elements(s_rootPool), (rest, root) =>
        {
            if (includeRoot)
            {
                rest[0] = root;
            }

            return rest;
        });

    private static Gen<MappingSpec> MappingGen(int levels) =>
        from size in Gen.Elements(PageSize.Size4K, PageSize.Size4K, PageSize.Size2M, PageSize.Size1G)
        from indices in IndicesGen(levels - (int)size, includeRoot: true)
        from frameNumber in Gen.Choose(0, int.MaxValue)
        from readOnly in Chance(3)
        from supervisor in Chance(3)
        from xd in Chance(3)
        from key in Gen.Choose(0, 15)
        from upperBits in Gen.Choose(0, int.MaxValue)
        select new MappingSpec(
            indices,
            size,
            ((ulong)frameNumber << (12 + (9 * (int)size))) & ((1UL << MaxPhysicalAddressBits) - 1),
            !readOnly,
            !supervisor,
            xd,
            key,
            upperBits);

    private static Gen<QuerySpec> QueryGen(int levels) =>
        from kind in Gen.Choose(0, 9)
        from pick in Gen.Choose(0, 1000)
        from offsetLow in Gen.Choose(0, int.MaxValue)
        from indices in IndicesGen(levels, includeRoot: true)
        from access in Gen.Elements(AccessKind.Read, AccessKind.Write, AccessKind.Fetch)
        from privilege in Gen.Elements(Privilege.User, Privilege.Supervisor, Privilege.ImplicitSupervisor)
        select new QuerySpec(kind, pick, (ulong)offsetLow, indices, access, privilege);

    private static Gen<CpuSpec> CpuGen =>
        from wp in Gen.Elements(false, true)
        from smep in Gen.Elements(false, true)
        from smap in Gen.Elements(false, true)
        from ac in Gen.Elements(false, true)
        from nxe in Gen.Frequency((1, Gen.Constant(false)), (3, Gen.Constant(true)))
        from pke in Gen.Elements(false, true)
        from pkruLow in Gen.Choose(0, int.MaxValue)
        from pkruHigh in Gen.Choose(0, 3)
        select new CpuSpec(wp, smep, smap, ac, nxe, pke, (uint)pkruLow | ((uint)pkruHigh << 30));

    private static Gen<Scenario> ScenarioGen =>
        from mode in Gen.Elements(PagingMode.FourLevel, PagingMode.FiveLevel)
        from cpu in CpuGen
        from count in Gen.Choose(1, 12)
        from mappings in MappingGen((int)mode).ArrayOf(count)
        from queries in QueryGen((int)mode).ArrayOf(40)
        select new Scenario(mode, cpu, mappings, queries);

    [Property(MaxTest = 200)]
    public Property Translate_agrees_with_a_naive_reference_model() =>
        Prop.ForAll(Arb.From(ScenarioGen), scenario =>
        {
            string? problem = Check(scenario);
            return problem is null ? true.ToProperty() : false.ToProperty().Label(problem);
        });

    // ------------------------------------------------------------------------------------------- the model

    private sealed record Page(ulong Frame, PageSize Size, bool Writable, bool User, bool ExecuteDisable, int Key);

    /// <summary>The naive model: what the generator decided to write, keyed by address prefix.</summary>
    private sealed class Model
    {
        public Model(PagingMode mode)
        {
            Mode = mode;
            AddressBits = mode == PagingMode.FiveLevel ? 57 : 48;
        }

        public PagingMode Mode { get; }

        public int AddressBits { get; }

        /// <summary>(level, linear address bits above that level's index shift) → the upper entry's flag bits.</summary>
        public Dictionary<(int Level, ulong Prefix), ulong> Upper { get; } = new();

        /// <summary>(page size, page number) → the page.</summary>
        public Dictionary<(PageSize Size, ulong Number), Page> Pages { get; } = new();

        public List<(ulong Start, ulong End)> Ranges { get; } = new();

        public ulong Masked(ulong va) => va & ((1UL << AddressBits) - 1);

        public static int Shift(int level) => 12 + (9 * (level - 1));
    }

    private readonly record struct Outcome(WalkStatus Status, ulong Physical, PageFaultErrorCode ErrorCode, int Level)
    {
        public override string ToString() => Status switch
        {
            WalkStatus.Translated => $"-> 0x{Physical:x}",
            WalkStatus.PageFault => $"#PF 0x{(uint)ErrorCode:x} ({WalkResult.DescribeErrorCode(ErrorCode)}) at level {Level}",
            _ => Status.ToString(),
        };
    }

    private static string? Check(Scenario scenario)
    {
        PagingMode mode = scenario.Mode;
        int levels = (int)mode;
        var tables = new TestTables(mode);
        var model = new Model(mode);
        var placed = new List<(ulong Va, MappingSpec Spec)>();

        foreach (MappingSpec spec in scenario.Mappings)
        {
            ulong va = AddressOf(mode, spec.Indices, levels);
            ulong size = TestTables.Bytes(spec.Size);
            ulong start = model.Masked(va);
            if (model.Ranges.Any(r => start < r.End && r.Start < start + size))
            {
                continue; // overlaps an earlier mapping: not generated
            }

            model.Ranges.Add((start, start + size));
            int leafLevel = (int)spec.Size + 1;

            // Upper entries: the first mapping to need one decides its rights (from its UpperBits), later ones share it.
            for (int level = levels; level > leafLevel; level--)
            {
                var key = (level, start >> Model.Shift(level));
                if (!model.Upper.ContainsKey(key))
                {
                    int bits = spec.UpperBits >> (6 * (level - 1));
                    ulong flags = TestTables.P
                        | ((bits & 7) == 0 ? 0 : TestTables.RW) // R/W clear one time in 8
                        | (((bits >> 3) & 7) == 0 ? 0 : TestTables.US) // U/S clear one time in 8
                        | (level == levels && ((spec.UpperBits >> 30) & 1) == 1 && (bits & 0x38) == 0x38 ? TestTables.XD : 0); // XD at the root, rarely
                    model.Upper[key] = flags;
                }
            }

            ulong leafFlags = TestTables.P
                | (spec.Writable ? TestTables.RW : 0)
                | (spec.User ? TestTables.US : 0)
                | (spec.ExecuteDisable ? TestTables.XD : 0)
                | ((ulong)spec.Key << 59);
            tables.Map(va, spec.Size, spec.Frame, leafFlags, level => model.Upper[((int)level, start >> Model.Shift((int)level))]);
            model.Pages[(spec.Size, start >> Model.Shift(leafLevel))] = new Page(spec.Frame, spec.Size, spec.Writable, spec.User, spec.ExecuteDisable, spec.Key);
            placed.Add((va, spec));
        }

        CpuSpec c = scenario.Cpu;
        CpuState cpu = tables.Cpu(
            (c.Smep ? Cr4Flags.Smep : 0) | (c.Smap ? Cr4Flags.Smap : 0) | (c.Pke ? Cr4Flags.Pke : 0),
            nxe: c.Nxe,
            writeProtect: c.Wp,
            alignmentCheck: c.Ac,
            pkru: c.Pkru);

        var probe = new WalkOptions { Probe = true };
        foreach (QuerySpec q in scenario.Queries)
        {
            ulong va = q.Kind switch
            {
                // Inside a mapping (most queries).
                <= 5 when placed.Count > 0 => placed[q.Pick % placed.Count].Va + (q.Offset % TestTables.Bytes(placed[q.Pick % placed.Count].Spec.Size)),
                // Non-canonical in both modes.
                9 => AddressOf(mode, q.Indices, levels) ^ (1UL << 60),
                // Anywhere built from the same index pools: mapped, unmapped, or under a missing table.
                _ => AddressOf(mode, q.Indices, levels) + (q.Offset & 0xFFF),
            };

            Outcome expected = Expect(model, c, va, q.Access, q.Privilege);
            Outcome probed = Observe(PageWalker.Translate(cpu, tables.Memory, VirtualAddress.FromRaw(va), q.Access, q.Privilege, probe, null));
            Outcome real = Observe(PageWalker.Translate(cpu, tables.Memory, VirtualAddress.FromRaw(va), q.Access, q.Privilege));
            if (probed != expected || real != expected)
            {
                return $"{q.Privilege} {q.Access} at 0x{va:x}: model says {expected}, walker says {probed} (probe) / {real}\n{scenario}";
            }
        }

        return null;
    }

    private static Outcome Observe(WalkResult r) => r.Status switch
    {
        WalkStatus.Translated => new Outcome(r.Status, r.PhysicalAddress.Value, PageFaultErrorCode.None, (int)r.Level),
        WalkStatus.PageFault => new Outcome(r.Status, 0, r.ErrorCode, (int)r.FaultLevel),
        _ => new Outcome(r.Status, 0, PageFaultErrorCode.None, 0),
    };

    /// <summary>What the model says an access does.</summary>
    private static Outcome Expect(Model model, CpuSpec c, ulong va, AccessKind access, Privilege privilege)
    {
        // Canonical: bits 63:N-1 all equal (N = 48 or 57), else #GP before any paging.
        int unused = 64 - model.AddressBits;
        if ((ulong)((long)(va << unused) >> unused) != va)
        {
            return new Outcome(WalkStatus.GeneralProtection, 0, PageFaultErrorCode.None, 0);
        }

        ulong masked = model.Masked(va);
        bool writable = true, user = true, xd = false;
        for (int level = (int)model.Mode; level >= 1; level--)
        {
            ulong prefix = masked >> Model.Shift(level);
            if (level <= 3 && model.Pages.TryGetValue(((PageSize)(level - 1), prefix), out Page? page))
            {
                // The leaf. XD with NXE = 0 is reserved; RightsOracle reports that as RSVD | P.
                var row = new RightsCase(
                    privilege,
                    access,
                    UserPage: user && page.User,
                    WritablePage: writable && page.Writable,
                    ExecuteDisable: xd || page.ExecuteDisable,
                    page.Key,
                    c.Nxe,
                    c.Wp,
                    c.Smep,
                    c.Smap,
                    c.Ac,
                    c.Pke,
                    c.Pkru);
                PageFaultErrorCode? fault = RightsOracle.Expected(row);
                return fault is null
                    ? new Outcome(WalkStatus.Translated, page.Frame + (va & (TestTables.Bytes(page.Size) - 1)), PageFaultErrorCode.None, level)
                    : new Outcome(WalkStatus.PageFault, 0, fault.Value, level);
            }

            if (!model.Upper.TryGetValue((level, prefix), out ulong flags))
            {
                // Nothing written there: a not-present entry, P = 0.
                return new Outcome(WalkStatus.PageFault, 0, RightsOracle.AccessBits(privilege, access, c.Nxe, c.Smep), level);
            }

            if ((flags & TestTables.XD) != 0 && !c.Nxe)
            {
                return new Outcome(WalkStatus.PageFault, 0, PageFaultErrorCode.Present | PageFaultErrorCode.ReservedBit | RightsOracle.AccessBits(privilege, access, c.Nxe, c.Smep), level);
            }

            writable &= (flags & TestTables.RW) != 0;
            user &= (flags & TestTables.US) != 0;
            xd |= (flags & TestTables.XD) != 0;
        }

        throw new InvalidOperationException("A walk always ends at a page or a missing entry.");
    }

    /// <summary>The canonical address with the given indices (root first); lower levels not given are 0.</summary>
    private static ulong AddressOf(PagingMode mode, int[] indices, int levels)
    {
        ulong va = 0;
        for (int i = 0; i < indices.Length; i++)
        {
            va |= (ulong)indices[i] << Model.Shift(levels - i);
        }

        int unused = 64 - (mode == PagingMode.FiveLevel ? 57 : 48);
        return (ulong)((long)(va << unused) >> unused);
    }
}
