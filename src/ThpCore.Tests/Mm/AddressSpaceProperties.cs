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
/// Property: random sequences of map, access, protect, unmap, madvise and fork on a small node keep the folio and frame
/// books straight: after every step each folio reachable from the page tables of any of the address spaces (a parent
/// and up to two fork children) has exactly one reference per mapping
/// (so RefCount ≥ MapCount + pins), each frame is exactly one of free, page table (reachable or deposited), data
/// (a mapped folio or a zero page) or reserved, every PMD leaf lies inside one VMA, and every byte written reads back
/// (zero after <see cref="Advice.DontNeed"/>) in the space that wrote it, and in a child the parent's bytes at fork.
/// </summary>
public sealed class AddressSpaceProperties
{
    private const ulong K4 = 4096;
    private const ulong M2 = 2UL << 20;
    private const ulong ByteOffset = 8;

    private static readonly Advice[] s_advice = { Advice.DontNeed, Advice.DontNeed, Advice.HugePage, Advice.NoHugePage };

    public enum OpKind
    {
        Map,
        Read,
        Write,
        Protect,
        Unmap,
        Advise,
        Fork,
    }

    public sealed record Op(OpKind Kind, int Vma, int Page, int Pages, int Attribute, int Space)
    {
        public override string ToString() =>
            string.Create(CultureInfo.InvariantCulture, $"{Kind}(space {Space}, vma {Vma}, page {Page}, pages {Pages}, attr {Attribute})");
    }

    public sealed record Scenario(ThpEnabled Enabled, bool UseZeroPage, Op[] Ops)
    {
        public override string ToString() => $"{Enabled} zero={UseZeroPage}: {string.Join(", ", Ops.Select(o => o.ToString()))}";
    }

    private static readonly Gen<Op> s_opGen =
        from kind in Gen.Elements(OpKind.Map, OpKind.Read, OpKind.Write, OpKind.Write, OpKind.Write, OpKind.Protect, OpKind.Unmap, OpKind.Advise, OpKind.Fork)
        from vma in Gen.Choose(0, 7)
        from page in Gen.Choose(0, 1100)
        from pages in Gen.Elements(1, 1, 2, 7, 512, 600)
        from attribute in Gen.Choose(0, 5)
        from space in Gen.Choose(0, 2)
        select new Op(kind, vma, page, pages, attribute, space);

    private static readonly Gen<Scenario> s_scenarioGen =
        from enabled in Gen.Elements(ThpEnabled.Always, ThpEnabled.Always, ThpEnabled.Madvise, ThpEnabled.Never)
        from zero in Gen.Elements(true, false)
        from n in Gen.Choose(1, 30)
        from ops in s_opGen.ArrayOf(n)
        select new Scenario(enabled, zero, ops);

    [Property(MaxTest = 150)]
    public Property Random_map_access_protect_unmap_madvise_fork_sequences_keep_folios_frames_and_bytes_consistent() =>
        Prop.ForAll(Arb.From(s_scenarioGen), scenario =>
        {
            string? problem = Run(scenario);
            return problem is null ? true.ToProperty() : false.ToProperty().Label(problem);
        });

    private static string? Run(Scenario scenario)
    {
        var first = new AddressSpace(new MemoryNode(24UL << 20), new ThpSettings { Enabled = scenario.Enabled, UseZeroPage = scenario.UseZeroPage });
        var spaces = new List<(AddressSpace Space, Dictionary<ulong, byte> Written)> { (first, new Dictionary<ulong, byte>()) };
        byte next = 1;
        for (int step = 0; step < scenario.Ops.Length; step++)
        {
            Op op = scenario.Ops[step];
            (AddressSpace space, Dictionary<ulong, byte> written) = spaces[op.Space % spaces.Count];
            IReadOnlyList<Vma> vmas = space.Vmas.All;
            if (op.Kind == OpKind.Fork)
            {
                // Fork only allocates page tables here (nothing is pinned); keep clear of running out part-way.
                if (spaces.Count < 3 && space.Node.Buddy.FreeFrames > 64)
                {
                    spaces.Add((space.Fork(), new Dictionary<ulong, byte>(written)));
                }
            }
            else if (op.Kind == OpKind.Map || vmas.Count == 0)
            {
                VmaFlags flags = VmaFlags.Anonymous | (op.Attribute == 1 ? VmaFlags.HugePage : op.Attribute == 2 ? VmaFlags.NoHugePage : VmaFlags.None);
                space.Map(MmFixtures.PropertyLength(op.Page), MmFixtures.PropertyProtection(op.Attribute), flags);
            }
            else
            {
                Vma vma = vmas[op.Vma % vmas.Count];
                ulong page = vma.Start.Value + (((ulong)op.Page % vma.PageCount) * K4);
                ulong pages = Math.Min((ulong)op.Pages, (vma.End.Value - page) / K4);
                switch (op.Kind)
                {
                    case OpKind.Read:
                    case OpKind.Write:
                    {
                        bool write = op.Kind == OpKind.Write;
                        AccessResult result = space.Access(VirtualAddress.FromRaw(page + ByteOffset), write ? AccessKind.Write : AccessKind.Read);
                        bool allowed = write ? (vma.Protection & Protection.Write) != 0 : vma.Protection != Protection.None;
                        if (result.Status != (allowed ? AccessStatus.Translated : AccessStatus.Segfault))
                        {
                            return $"step {step} {op}: {result} for {vma}";
                        }

                        if (!allowed)
                        {
                            break;
                        }

                        byte seen = space.Node.Memory.ReadFrame(result.PhysicalAddress.FrameNumber)[(int)result.PhysicalAddress.PageOffset(PageSize.Size4K)];
                        byte expected = written.TryGetValue(page, out byte value) ? value : (byte)0;
                        if (seen != expected)
                        {
                            return $"step {step} {op}: read {seen}, expected {expected}";
                        }

                        if (write)
                        {
                            space.Node.Memory.GetWritableFrame(result.PhysicalAddress.FrameNumber)[(int)result.PhysicalAddress.PageOffset(PageSize.Size4K)] = next;
                            written[page] = next;
                            next = (byte)((next % 250) + 1);
                        }

                        break;
                    }

                    case OpKind.Protect:
                        space.Protect(VirtualAddress.FromRaw(page), pages * K4, MmFixtures.PropertyProtection(op.Attribute));
                        break;
                    case OpKind.Unmap:
                    case OpKind.Advise when s_advice[op.Attribute % s_advice.Length] == Advice.DontNeed:
                        if (op.Kind == OpKind.Unmap)
                        {
                            space.Unmap(VirtualAddress.FromRaw(page), pages * K4);
                        }
                        else
                        {
                            space.Advise(VirtualAddress.FromRaw(page), pages * K4, Advice.DontNeed);
                        }

                        for (ulong p = 0; p < pages; p++)
                        {
                            written.Remove(page + (p * K4));
                        }

                        break;
                    case OpKind.Advise:
                        space.Advise(VirtualAddress.FromRaw(page), pages * K4, s_advice[op.Attribute % s_advice.Length]);
                        break;
                }
            }

            string? broken = CheckBooks(spaces.Select(s => s.Space).ToList());
            if (broken is not null)
            {
                return $"after step {step} {op}: {broken}";
            }
        }

        return null;
    }

    // The node's books (MmBooks.Check, no pins or swap), and two rules that hold without swap and migration: every PMD
    // leaf lies inside one VMA, and a THP mapped partly by PTEs and by no PMD is on the deferred-split queue.
    internal static string? CheckBooks(List<AddressSpace> spaces) =>
        MmBooks.Check(spaces, [], device: null) ?? CheckLeavesAndQueue(spaces);

    private static string? CheckLeavesAndQueue(List<AddressSpace> spaces)
    {
        MemoryNode node = spaces[0].Node;
        var mapped = new Dictionary<ulong, int>();
        string? problem = null;
        foreach (AddressSpace space in spaces)
        {
            foreach (Vma vma in space.Vmas.All)
            {
                for (ulong chunk = vma.Start.Value & ~(M2 - 1); chunk < vma.End.Value; chunk += M2)
                {
                    ulong pde = AddressSpaceTests.Entry(space, chunk, PagingLevel.Pd) ?? 0;
                    if ((pde & 0x81) == 0x81)
                    {
                        if (chunk < vma.Start.Value || chunk + M2 > vma.End.Value)
                        {
                            problem ??= $"the PMD leaf at {chunk:x} is not inside one VMA ({vma})";
                        }

                        continue;
                    }

                    if ((pde & 1) == 0)
                    {
                        continue;
                    }

                    ulong table = pde & PageTableEntry.AddressMask4K;
                    for (ulong va = Math.Max(chunk, vma.Start.Value); va < Math.Min(chunk + M2, vma.End.Value); va += K4)
                    {
                        ulong pte = ((IPhysicalMemory)node.Memory).ReadUInt64(PhysicalAddress.Create(table + (((va >> 12) & 0x1FF) * 8)));
                        if ((pte & 1) != 0
                            && node.TryGetFolio(PhysicalAddress.FromFrameNumber((pte & PageTableEntry.AddressMask4K) >> 12), out Folio folio)
                            && folio.IsLarge && folio.IsAnon)
                        {
                            mapped[folio.HeadFrame] = mapped.GetValueOrDefault(folio.HeadFrame) + 1;
                        }
                    }
                }
            }
        }

        foreach (ulong head in mapped.Keys)
        {
            Folio folio = node.FolioOf(head);
            if (folio.MapCount < 512 && folio.EntireMapCount == 0 && !folio.IsOnDeferredSplitQueue)
            {
                return $"{folio} is partly mapped ({folio.MapCount}) but not queued for deferred split";
            }
        }

        return problem;
    }

}
