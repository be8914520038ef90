using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;

namespace ThpCore.Tests.Mm;

/// <summary>
/// Property: random map, access, unmap, madvise, mremap, pin and fork sequences over a family of address spaces keep
/// the page tables tight (every table's span overlaps a VMA: <c>free_pgtables</c> left nothing behind) and the books
/// straight, and disposing every space and pin handle, in a random order, returns the node to exactly its free-frame
/// count before the first space was made, with an empty deferred-split queue.
/// </summary>
public sealed class TeardownProperties
{
    private const ulong K4 = 4096;
    private const ulong M2 = 2UL << 20;
    private static readonly ulong[] s_lengths = { K4, 3 * K4, M2, 2 * M2, M2 + (5 * K4), 4 * M2 };

    public enum OpKind
    {
        Map,
        Read,
        Write,
        Unmap,
        DontNeed,
        Move,
        Pin,
        Unpin,
        Fork,
        Dispose,
    }

    public sealed record Op(OpKind Kind, int Space, int Vma, int Page, int Pages, int Attribute)
    {
        public override string ToString() =>
            string.Create(CultureInfo.InvariantCulture, $"{Kind}(space {Space}, vma {Vma}, page {Page}, pages {Pages}, attr {Attribute})");
    }

    public sealed record Scenario(ThpEnabled Enabled, bool UseZeroPage, PagingMode Mode, Op[] Ops, int Seed)
    {
        public override string ToString() => $"{Enabled} zero={UseZeroPage} {Mode} seed={Seed}: {string.Join(", ", Ops.Select(o => o.ToString()))}";
    }

    private static readonly Gen<Op> s_opGen =
        from kind in Gen.Elements(
            OpKind.Map, OpKind.Map, OpKind.Read, OpKind.Write, OpKind.Write, OpKind.Write, OpKind.Unmap, OpKind.Unmap,
            OpKind.DontNeed, OpKind.Move, OpKind.Pin, OpKind.Unpin, OpKind.Fork, OpKind.Dispose)
        from space in Gen.Choose(0, 3)
        from vma in Gen.Choose(0, 7)
        from page in Gen.Choose(0, 2100)
        from pages in Gen.Elements(1, 2, 7, 512, 600, 1024)
        from attribute in Gen.Choose(0, 5)
        select new Op(kind, space, vma, page, pages, attribute);

    private static readonly Gen<Scenario> s_scenarioGen =
        from enabled in Gen.Elements(ThpEnabled.Always, ThpEnabled.Always, ThpEnabled.Never)
        from zero in Gen.Elements(true, false)
        from mode in Gen.Elements(PagingMode.FourLevel, PagingMode.FourLevel, PagingMode.FiveLevel)
        from n in Gen.Choose(1, 30)
        from ops in s_opGen.ArrayOf(n)
        from seed in Gen.Choose(0, 1000)
        select new Scenario(enabled, zero, mode, ops, seed);

    [Property(MaxTest = 80)]
    public Property Random_sequences_keep_tables_tight_and_disposing_everything_returns_every_frame() =>
        Prop.ForAll(Arb.From(s_scenarioGen), scenario =>
        {
            string? problem = Run(scenario);
            return problem is null ? true.ToProperty() : false.ToProperty().Label(problem);
        });

    private static string? Run(Scenario scenario)
    {
        var node = new MemoryNode(32UL << 20);
        ulong initial = node.Buddy.FreeFrames;
        var settings = new ThpSettings { Enabled = scenario.Enabled, UseZeroPage = scenario.UseZeroPage };
        var spaces = new List<AddressSpace> { new(node, settings, mode: scenario.Mode) };
        var pins = new List<PinHandle>();
        for (int step = 0; step < scenario.Ops.Length; step++)
        {
            Op op = scenario.Ops[step];
            List<AddressSpace> live = spaces.Where(s => !s.IsDisposed).ToList();
            if (live.Count == 0)
            {
                break;
            }

            Apply(live[op.Space % live.Count], op, spaces, pins);
            live = spaces.Where(s => !s.IsDisposed).ToList();
            string? problem = live.Count == 0 ? null
                : CheckTight(live) ?? (pins.Count == 0 ? AddressSpaceProperties.CheckBooks(live) : null);
            if (problem is not null)
            {
                return $"after step {step} {op}: {problem}";
            }
        }

        // Tear everything down in a random order, pins interleaved with the spaces.
        var random = new Random(scenario.Seed);
        var teardown = spaces.Select(s => (Action)s.Dispose).Concat(pins.Select(p => (Action)p.Dispose)).OrderBy(_ => random.Next()).ToList();
        foreach (Action dispose in teardown)
        {
            dispose();
        }

        if (node.Buddy.FreeFrames != initial)
        {
            return $"after teardown {node.Buddy.FreeFrames} free frames, {initial} before the first address space";
        }

        return node.DeferredSplitCount != 0 ? $"{node.DeferredSplitCount} folios left on the deferred-split queue" : null;
    }

    private static void Apply(AddressSpace space, Op op, List<AddressSpace> spaces, List<PinHandle> pins)
    {
        IReadOnlyList<Vma> vmas = space.Vmas.All;
        switch (op.Kind)
        {
            // Fork copies pinned pages eagerly (a pinned THP whole): keep clear of running out part-way.
            case OpKind.Fork when spaces.Count < 6 && space.Node.Buddy.FreeFrames > 512 + ((ulong)pins.Count * 1024):
                spaces.Add(space.Fork());
                return;
            case OpKind.Dispose:
                space.Dispose();
                return;
            case OpKind.Unpin when pins.Count > 0:
                pins[op.Page % pins.Count].Dispose();
                pins.RemoveAt(op.Page % pins.Count);
                return;
            case OpKind.Map:
            case OpKind.Fork:
            case OpKind.Unpin:
            case OpKind.Read or OpKind.Write or OpKind.Unmap or OpKind.DontNeed or OpKind.Move or OpKind.Pin when vmas.Count == 0:
                VmaFlags flags = VmaFlags.Anonymous | (op.Attribute == 1 ? VmaFlags.NoHugePage : VmaFlags.None);
                space.Map(s_lengths[op.Page % s_lengths.Length], Protection.Read | Protection.Write, flags);
                return;
        }

        Vma vma = vmas[op.Vma % vmas.Count];
        VirtualAddress page = vma.Start.Add(((ulong)op.Page % vma.PageCount) * K4);
        ulong length = Math.Min((ulong)op.Pages, (vma.End.Value - page.Value) / K4) * K4;
        switch (op.Kind)
        {
            case OpKind.Read:
            case OpKind.Write:
                space.Access(page, op.Kind == OpKind.Write ? AccessKind.Write : AccessKind.Read);
                break;
            case OpKind.Unmap:
                space.Unmap(page, length);
                break;
            case OpKind.DontNeed:
                space.Advise(page, length, Advice.DontNeed);
                break;
            case OpKind.Move when space.Node.Buddy.FreeFrames > 64 && vmas[^1].End.Value + (6 * M2) + length < space.MmapBase:
                // Above the highest VMA, at an offset that may or may not keep 2 MiB alignment.
                space.Remap(page, length, length, RemapFlags.MayMove | RemapFlags.Fixed, VirtualAddress.FromRaw(vmas[^1].End.Value + ((ulong)op.Attribute * M2) + ((ulong)(op.Vma % 2) * K4)));
                break;
            case OpKind.Pin when space.Node.Buddy.FreeFrames > 64:
                pins.Add(space.Pin(page, Math.Min(length, 4 * K4), write: op.Attribute % 2 == 0));
                break;
        }
    }

    // free_pgtables leaves no table whose span no VMA overlaps (a table a neighbour shares stays, and only those).
    private static string? CheckTight(IEnumerable<AddressSpace> spaces)
    {
        foreach (AddressSpace space in spaces)
        {
            string? problem = CheckTable(space, space.Root.Value, (int)space.Cpu.PagingMode, 0);
            if (problem is not null)
            {
                return problem;
            }
        }

        return null;
    }

    private static string? CheckTable(AddressSpace space, ulong table, int level, ulong baseVa)
    {
        int entryShift = 12 + (9 * (level - 1));
        for (ulong i = 0; i < 512; i++)
        {
            ulong raw = ((IPhysicalMemory)space.Node.Memory).ReadUInt64(PhysicalAddress.Create(table + (i * 8)));
            if ((raw & 1) == 0 || level == 1 || (level == 2 && (raw & 0x80) != 0))
            {
                continue;
            }

            ulong va = baseVa + (i << entryShift);
            ulong end = va + (1UL << entryShift);
            if (space.Vmas.FindIntersecting(VirtualAddress.FromRaw(va), VirtualAddress.FromRaw(Math.Min(end, space.Vmas.TaskSize))).Count == 0)
            {
                return $"a level-{level - 1} table for [{va:x}, {end:x}) is left though no VMA overlaps it";
            }

            string? below = CheckTable(space, raw & PageTableEntry.AddressMask4K, level - 1, va);
            if (below is not null)
            {
                return below;
            }
        }

        return null;
    }
}
