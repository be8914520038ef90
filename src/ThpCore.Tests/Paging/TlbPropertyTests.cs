using System;
using System.Collections.Generic;
using System.Linq;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using ThpCore.Paging;
using static ThpCore.Tests.Paging.TestTables;

namespace ThpCore.Tests.Paging;

public sealed class TlbPropertyTests
{
    // Two 2 MiB ranges of one page directory; in each, eight 4 KiB pages are touched.
    private const ulong Region = 0x7F00_4000_0000;
    private const int Ranges = 2;
    private const int PagesPerRange = 8;

    private static readonly Gen<ulong> LeafFlags =
        from present in Gen.Frequency((6, Gen.Constant(P)), (1, Gen.Constant(0UL)))
        from bits in Gen.SubListOf(new[] { RW, US, PWT, PCD, A, D, G, XD })
        from key in Gen.Choose(0, 3)
        select present | bits.Aggregate(0UL, (x, y) => x | y) | ((ulong)key << 59);

    private static readonly Gen<ulong> PteValue =
        from frame in Gen.Choose(0, 15)
        from pat in Gen.Elements(0UL, 1UL << 7)
        from flags in LeafFlags
        select 0x100_0000UL + ((ulong)frame << 12) | pat | flags;

    private static readonly Gen<ulong> LargePdeValue =
        from frame in Gen.Choose(0, 7)
        from pat in Gen.Elements(0UL, 1UL << 12)
        from flags in LeafFlags
        select 0x4000_0000UL + ((ulong)frame << 21) | pat | flags | PS;

    private static readonly Gen<ulong> TablePdeFlags =
        from present in Gen.Frequency((8, Gen.Constant(P)), (1, Gen.Constant(0UL)))
        from bits in Gen.SubListOf(new[] { RW, US, XD, A })
        select present | bits.Aggregate(0UL, (x, y) => x | y);

    private static readonly Gen<Op> AccessOp =
        from range in Gen.Choose(0, Ranges - 1)
        from page in Gen.Choose(0, PagesPerRange - 1)
        from offset in Gen.Choose(0, 511)
        from kind in Gen.Elements(AccessKind.Read, AccessKind.Write, AccessKind.Fetch)
        from who in Gen.Elements(Privilege.Supervisor, Privilege.User, Privilege.ImplicitSupervisor)
        from cpu in Gen.Choose(0, CpuVariants - 1)
        select (Op)new Access(range, page, offset * 8, kind, who, cpu);

    private static readonly Gen<Op> ChangeOp = Gen.Frequency(
        (6, from range in Gen.Choose(0, Ranges - 1)
            from page in Gen.Choose(0, PagesPerRange - 1)
            from value in PteValue
            select (Op)new SetPte(range, page, value)),
        (1, from range in Gen.Choose(0, Ranges - 1)
            from value in LargePdeValue
            select (Op)new SetPde(range, value)),
        (1, from range in Gen.Choose(0, Ranges - 1)
            from flags in TablePdeFlags
            select (Op)new SetPde(range, flags | TablePointerMarker)),
        (1, Gen.Constant((Op)new FlushAll())),
        (1, Gen.Constant((Op)new LoadCr3())));

    private static readonly Gen<Op[]> Program =
        from ops in Gen.ListOf(Gen.Frequency((3, AccessOp), (1, ChangeOp)))
        select ops.ToArray();

    // A SetPde value with this bit (an ignored bit of a non-leaf PDE) means "point back at the range's page table".
    private const ulong TablePointerMarker = 1UL << 52;
    private const int CpuVariants = 7;

    /// <summary>
    /// (1) Coherence: when every change to the tables is followed by the invalidation that covers it, a
    /// translation through the TLB equals a fresh walk of the tables (status, physical address, size, rights,
    /// error code and fault level), whichever CPU state the access is made under.
    /// </summary>
    [Property(MaxTest = 150)]
    public Property With_matching_invalidation_the_TLB_always_agrees_with_a_fresh_walk() =>
        Prop.ForAll(Program.ToArbitrary(), ops =>
        {
            var world = new World(Options(ops.Length));
            foreach (Op op in ops)
            {
                switch (op)
                {
                    case Access access:
                        VirtualAddress va = World.Address(access.Range, access.Page, access.Offset);
                        CpuState cpu = world.Cpus[access.Cpu];
                        WalkResult expected = PageWalker.Translate(cpu, world.Tables.Memory, va, access.Kind, access.Who, new WalkOptions { Probe = true }, null);
                        WalkResult actual = world.Tlb.Translate(cpu, world.Tables.Memory, va, access.Kind, access.Who);
                        if (!Same(expected, actual))
                        {
                            return false.Label($"{op}: walk says {expected}, TLB says {actual}");
                        }

                        break;
                    case SetPte pte:
                        world.Tables.Write(world.PteAddress(pte.Range, pte.Page), pte.Value);
                        world.Tlb.Invlpg(world.Cpus[0], World.Address(pte.Range, pte.Page, 0));
                        break;
                    case SetPde pde:
                        world.SetPde(pde.Range, pde.Value);
                        for (int page = 0; page < 512; page++)
                        {
                            world.Tlb.Invlpg(world.Cpus[0], World.Address(pde.Range, page, 0));
                        }

                        break;
                    case FlushAll:
                        world.Tlb.FlushAll();
                        break;
                    case LoadCr3:
                        world.Tlb.LoadCr3(world.Cpus[0]);
                        break;
                }
            }

            return true.ToProperty();
        });

    /// <summary>
    /// (2) Staleness: after a cached mapping is changed in memory (other frame, other flags, even not present)
    /// and nothing is invalidated, the TLB keeps translating to the old frame; after INVLPG it agrees with a walk.
    /// </summary>
    [Property(MaxTest = 200)]
    public Property Without_invalidation_the_TLB_returns_the_stale_frame() =>
        Prop.ForAll(StaleCases.ToArbitrary(), c =>
        {
            var tables = TlbTests.NewTables();
            var tlb = new Tlb();
            CpuState cpu = tables.Cpu(Cr4Flags.Pge);
            ulong va = c.Large ? Region + ((ulong)c.Page << 21) : Region + ((ulong)c.Page << 12);
            ulong oldFrame = c.Large ? 0x8000_0000UL : 0x200_0000UL; // outside the generated frames
            ulong entry = tables.Map(va, c.Large ? PageSize.Size2M : PageSize.Size4K, oldFrame, P | RW | US);
            tlb.Translate(cpu, tables.Memory, VirtualAddress.Create(va), AccessKind.Write, Privilege.Supervisor);

            tables.Write(entry, c.NewValue);
            VirtualAddress probe = VirtualAddress.Create(va + (ulong)c.Offset);
            WalkResult stale = tlb.Translate(cpu, tables.Memory, probe, c.Second, Privilege.Supervisor, out TlbOutcome outcome);
            bool wasStale = outcome == TlbOutcome.Hit && stale.IsTranslated && stale.PhysicalAddress.Value == oldFrame + (ulong)c.Offset;

            tlb.Invlpg(cpu, probe);
            WalkResult expected = PageWalker.Translate(cpu, tables.Memory, probe, c.Second, Privilege.Supervisor, new WalkOptions { Probe = true }, null);
            WalkResult fresh = tlb.Translate(cpu, tables.Memory, probe, c.Second, Privilege.Supervisor);

            return wasStale.Label($"stale: {stale} ({outcome})")
                .And(Same(expected, fresh).Label($"after INVLPG: walk {expected}, TLB {fresh}"))
                .Classify((c.NewValue & P) == 0, "new entry not present");
        });

    private static readonly Gen<StaleCase> StaleCases =
        from large in Gen.Elements(false, true)
        from page in Gen.Choose(0, 7)
        from newValue in large ? LargePdeValue : PteValue
        from second in Gen.Elements(AccessKind.Read, AccessKind.Write, AccessKind.Fetch)
        from offset in Gen.Choose(0, 4095)
        select new StaleCase(large, page, newValue, second, offset & ~7);

    private static TlbOptions Options(int seed) => (seed % 3) switch
    {
        // Small and direct-mapped shapes too, so that evictions happen; both size preferences.
        0 => TlbOptions.Default,
        1 => new TlbOptions { Entries4K = 4, Associativity4K = 1, Entries2M = 1, Associativity2M = 1, SizeConflictPreference = SizeConflictPreference.PreferLarger },
        _ => new TlbOptions { Entries4K = 8, Associativity4K = 2, RewalkOnProtectionFault = true },
    };

    private static bool Same(WalkResult expected, WalkResult actual) =>
        expected.Status == actual.Status && expected.Status switch
        {
            WalkStatus.Translated => expected.PhysicalAddress == actual.PhysicalAddress
                && expected.PageSize == actual.PageSize
                && expected.Rights == actual.Rights,
            WalkStatus.PageFault => expected.ErrorCode == actual.ErrorCode && expected.FaultLevel == actual.FaultLevel,
            _ => true,
        };

    private abstract record Op;

    private sealed record Access(int Range, int Page, int Offset, AccessKind Kind, Privilege Who, int Cpu) : Op;

    private sealed record SetPte(int Range, int Page, ulong Value) : Op
    {
        public override string ToString() => $"SetPte({Range}, {Page}, 0x{Value:x})";
    }

    private sealed record SetPde(int Range, ulong Value) : Op
    {
        public override string ToString() => $"SetPde({Range}, 0x{Value:x})";
    }

    private sealed record FlushAll : Op;

    private sealed record LoadCr3 : Op;

    private sealed record StaleCase(bool Large, int Page, ulong NewValue, AccessKind Second, int Offset)
    {
        public override string ToString() => $"StaleCase(large={Large}, page={Page}, new=0x{NewValue:x}, {Second}, +0x{Offset:x})";
    }

    private sealed class World
    {
        private readonly ulong[] _pageTables = new ulong[Ranges];
        private readonly ulong[] _pdes = new ulong[Ranges];

        public World(TlbOptions options)
        {
            Tlb = new Tlb(options);
            for (int r = 0; r < Ranges; r++)
            {
                for (int p = 0; p < PagesPerRange; p++)
                {
                    Tables.Map(Address(r, p, 0).Value, PageSize.Size4K, 0x100_0000UL + ((ulong)((r * PagesPerRange) + p) << 12), P | RW | US);
                }

                _pdes[r] = Tables.EntryAddress(Address(r, 0, 0).Value, PagingLevel.Pd);
                _pageTables[r] = Tables.Read(_pdes[r]) & PageTableEntry.AddressMask4K;
            }

            CpuState baseline = Tables.Cpu(Cr4Flags.Pge);
            Cpus = new[]
            {
                baseline,
                baseline.WithWriteProtect(false),
                Tables.Cpu(Cr4Flags.Pge | Cr4Flags.Smap),
                Tables.Cpu(Cr4Flags.Pge | Cr4Flags.Smap).WithAlignmentCheck(true),
                Tables.Cpu(Cr4Flags.Pge | Cr4Flags.Smep),
                Tables.Cpu(Cr4Flags.Pge | Cr4Flags.Pke).WithPkru(0b1100),     // key 1: access disabled
                Tables.Cpu(Cr4Flags.Pge | Cr4Flags.Pke).WithPkru(0b10_0000),  // key 2: write disabled
            };
        }

        public TestTables Tables { get; } = TlbTests.NewTables();

        public Tlb Tlb { get; }

        public IReadOnlyList<CpuState> Cpus { get; }

        public static VirtualAddress Address(int range, int page, int offset) =>
            VirtualAddress.Create(Region + ((ulong)range << 21) + ((ulong)page << 12) + (ulong)offset);

        public ulong PteAddress(int range, int page) => _pageTables[range] + ((ulong)page * 8);

        public void SetPde(int range, ulong value)
        {
            ulong raw = (value & TablePointerMarker) != 0
                ? _pageTables[range] | (value & ~TablePointerMarker)
                : value;
            Tables.Write(_pdes[range], raw);
        }
    }
}
