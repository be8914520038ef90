using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using ThpCore.Collapse;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;

namespace ThpCore.Tests.Mm;

/// <summary>
/// The issue's property over every operation of the Mm layer at once: random sequences of map, read, write, protect,
/// unmap, madvise (including FREE, PAGEOUT and COLD), mremap, fork, swap-out (with and without keeping the folio in
/// the swap cache), GUP pin and unpin, mlock and munlock, migration, compaction, every collapse path (in place, copy, re-form,
/// MADV_COLLAPSE) and teardown over a parent and up to two fork children
/// sharing one node and one swap device. After every step
/// <see cref="MmBooks.Check"/> must hold: every folio's reference count is at least its map count plus its pins (and is
/// exactly mappings + pin references + swap-cache references), every frame is exactly one of free, page table, or data
/// held by a mapping, a pin, the swap cache or a zero page, every in-use swap slot is referenced by exactly its count of
/// swap PTEs; and every byte written is read back (through a refault where it was swapped out) in the space that wrote
/// it.
/// </summary>
public sealed class AllOperationsProperties
{
    private const ulong K4 = 4096;
    private const ulong M2 = 2UL << 20;
    private const ulong ByteOffset = 8;

    private static readonly Advice[] s_advice = { Advice.DontNeed, Advice.HugePage, Advice.NoHugePage, Advice.Free, Advice.PageOut, Advice.Cold };

    public enum OpKind
    {
        Map,
        Read,
        Write,
        Protect,
        Unmap,
        Advise,
        Fork,
        Remap,
        SwapOut,
        Pin,
        Unpin,
        Migrate,
        Compact,
        Dispose,
        Mlock,
        Collapse,
    }

    public sealed record Op(OpKind Kind, int Vma, int Page, int Pages, int Attribute, int Space)
    {
        public override string ToString() =>
            string.Create(CultureInfo.InvariantCulture, $"{Kind}(space {Space}, vma {Vma}, page {Page}, pages {Pages}, attr {Attribute})");
    }

    public sealed record Scenario(ThpEnabled Enabled, Op[] Ops)
    {
        public override string ToString() => $"{Enabled}: {string.Join(", ", Ops.Select(o => o.ToString()))}";
    }

    private static readonly Gen<Op> s_opGen =
        from kind in Gen.Elements(
            OpKind.Map, OpKind.Read, OpKind.Write, OpKind.Write, OpKind.Write, OpKind.Protect, OpKind.Unmap, OpKind.Advise,
            OpKind.Fork, OpKind.Remap, OpKind.SwapOut, OpKind.SwapOut, OpKind.Pin, OpKind.Unpin, OpKind.Advise, OpKind.Migrate, OpKind.Migrate, OpKind.Compact, OpKind.Dispose, OpKind.Mlock, OpKind.Collapse, OpKind.Collapse)
        from vma in Gen.Choose(0, 7)
        from page in Gen.Choose(0, 1100)
        from pages in Gen.Elements(1, 1, 2, 7, 512, 600)
        from attribute in Gen.Choose(0, 5)
        from space in Gen.Choose(0, 2)
        select new Op(kind, vma, page, pages, attribute, space);

    private static readonly Gen<Scenario> s_scenarioGen =
        from enabled in Gen.Elements(ThpEnabled.Always, ThpEnabled.Always, ThpEnabled.Madvise, ThpEnabled.Never)
        from n in Gen.Choose(1, 40)
        from ops in s_opGen.ArrayOf(n)
        select new Scenario(enabled, ops);

    [Property(MaxTest = 120)]
    public Property Random_sequences_of_every_operation_keep_references_frames_slots_and_bytes_consistent() =>
        Prop.ForAll(Arb.From(s_scenarioGen), scenario =>
        {
            string? problem = new Runner(scenario).Run();
            return problem is null ? true.ToProperty() : false.ToProperty().Label(problem);
        });

    private sealed class World
    {
        public World(AddressSpace space, Dictionary<ulong, byte> written, HashSet<ulong> maybeZero)
        {
            Space = space;
            Written = written;
            MaybeZero = maybeZero;
        }

        // Pages given MADV_FREE and not written since: they read their old byte until reclaim discards them, then zero.
        public HashSet<ulong> MaybeZero { get; }

        public AddressSpace Space { get; }

        // Page address → the byte written at ByteOffset in it.
        public Dictionary<ulong, byte> Written { get; }
    }

    private sealed class Runner
    {
        private readonly Scenario _scenario;
        private readonly List<World> _worlds = new();
        private readonly List<PinHandle> _pins = new();
        private readonly SwapDevice _device = new(0, 4096);
        private byte _next = 1;

        public Runner(Scenario scenario) => _scenario = scenario;

        public string? Run()
        {
            var first = new AddressSpace(new MemoryNode(24UL << 20), new ThpSettings { Enabled = _scenario.Enabled });
            first.AttachSwap(_device);
            _worlds.Add(new World(first, new Dictionary<ulong, byte>(), new HashSet<ulong>()));
            try
            {
                for (int step = 0; step < _scenario.Ops.Length; step++)
                {
                    Op op = _scenario.Ops[step];
                    string? problem = Apply(op) ?? MmBooks.Check(_worlds.Select(w => w.Space).ToList(), _pins, _device);
                    if (problem is not null)
                    {
                        return $"step {step} {op}: {problem}";
                    }
                }

                // Every byte still written reads back, through refaults where it was swapped out.
                foreach (World world in _worlds)
                {
                    foreach (ulong page in world.Written.Keys.ToList())
                    {
                        string? problem = ReadBack(world, page);
                        if (problem is not null)
                        {
                            return $"at the end: {problem}";
                        }
                    }
                }

                return MmBooks.Check(_worlds.Select(w => w.Space).ToList(), _pins, _device);
            }
            finally
            {
                foreach (PinHandle pin in _pins)
                {
                    pin.Dispose();
                }
            }
        }

        private string? Apply(Op op)
        {
            World world = _worlds[op.Space % _worlds.Count];
            AddressSpace space = world.Space;
            IReadOnlyList<Vma> vmas = space.Vmas.All;
            if (op.Kind == OpKind.Fork)
            {
                // Fork allocates page tables and copies pinned pages; keep clear of running out part-way.
                if (_worlds.Count < 3 && space.Node.Buddy.FreeFrames > 2048)
                {
                    _worlds.Add(new World(space.Fork(), new Dictionary<ulong, byte>(world.Written), new HashSet<ulong>(world.MaybeZero)));
                }

                return null;
            }

            if (op.Kind == OpKind.Unpin)
            {
                if (_pins.Count > 0)
                {
                    PinHandle pin = _pins[op.Page % _pins.Count];
                    _pins.Remove(pin);
                    pin.Dispose();
                }

                return null;
            }

            if (op.Kind == OpKind.Dispose)
            {
                // Any member but the last: its mappings, tables and swap entries go; pins and the zero pages stay.
                if (_worlds.Count > 1)
                {
                    _worlds.Remove(world);
                    space.Dispose();
                }

                return null;
            }

            if (op.Kind == OpKind.Compact)
            {
                CompactionResult compacted = Compaction.Compact(space.Node, op.Attribute % 2 == 0 ? -1 : Folio.PmdOrder);
                return compacted.MigrationFailures > compacted.PagesMigrated + compacted.FreePagesIsolated ? $"{compacted}" : null;
            }

            if (op.Kind == OpKind.Map || vmas.Count == 0)
            {
                if (space.Node.Buddy.FreeFrames < 1024)
                {
                    return null;
                }

                VmaFlags flags = VmaFlags.Anonymous | (op.Attribute == 1 ? VmaFlags.HugePage : op.Attribute == 2 ? VmaFlags.NoHugePage : VmaFlags.None);
                space.Map(MmFixtures.PropertyLength(op.Page), MmFixtures.PropertyProtection(op.Attribute), flags);
                return null;
            }

            Vma vma = vmas[op.Vma % vmas.Count];
            ulong page = vma.Start.Value + (((ulong)op.Page % vma.PageCount) * K4);
            if (op.Kind is OpKind.SwapOut or OpKind.Migrate or OpKind.Pin && op.Attribute < 4 && world.Written.Count > 0)
            {
                // Mostly aim at a page that holds data: random pages of a VMA are rarely populated.
                page = world.Written.Keys.ElementAt(op.Page % world.Written.Count);
                vma = space.Vmas.Find(VirtualAddress.FromRaw(page)) ?? vma;
            }

            ulong pages = Math.Min((ulong)op.Pages, (vma.End.Value - page) / K4);
            switch (op.Kind)
            {
                case OpKind.Read:
                case OpKind.Write:
                    return Touch(world, vma, page, op.Kind == OpKind.Write);
                case OpKind.Protect:
                    space.Protect(VirtualAddress.FromRaw(page), pages * K4, MmFixtures.PropertyProtection(op.Attribute));
                    return null;
                case OpKind.Unmap:
                    space.Unmap(VirtualAddress.FromRaw(page), pages * K4);
                    Forget(world, page, pages * K4);
                    return null;
                case OpKind.Advise:
                    Advice advice = s_advice[op.Attribute % s_advice.Length];
                    if (advice is Advice.DontNeed or Advice.Free or Advice.Cold or Advice.PageOut
                        && space.Vmas.FindIntersecting(VirtualAddress.FromRaw(page), VirtualAddress.FromRaw(page + (pages * K4))).Any(v => (v.Flags & VmaFlags.Locked) != 0))
                    {
                        // madvise of a VM_LOCKED VMA is -EINVAL, with nothing changed.
                        try
                        {
                            space.Advise(VirtualAddress.FromRaw(page), pages * K4, advice);
                            return $"{advice} of a locked range was not refused";
                        }
                        catch (InvalidOperationException)
                        {
                            return null;
                        }
                    }

                    space.Advise(VirtualAddress.FromRaw(page), pages * K4, advice);
                    if (advice == Advice.DontNeed)
                    {
                        Forget(world, page, pages * K4);
                    }
                    else if (advice == Advice.Free)
                    {
                        foreach (ulong key in world.Written.Keys.Where(k => k >= page && k < page + (pages * K4)))
                        {
                            world.MaybeZero.Add(key);
                        }
                    }

                    return null;
                case OpKind.Collapse:
                    // Every collapse path; each keeps the books and the bytes whatever it answers.
                    // Aim at a whole aligned 2 MiB of some VMA when one has it (most VMAs are smaller).
                    VirtualAddress at = VirtualAddress.FromRaw(page);
                    for (int k = 0; k < vmas.Count; k++)
                    {
                        Vma candidate = vmas[(op.Vma + k) % vmas.Count];
                        ulong aligned = (candidate.Start.Value + (M2 - 1)) & ~(M2 - 1);
                        if (aligned + M2 <= candidate.End.Value)
                        {
                            at = VirtualAddress.FromRaw(aligned);
                            break;
                        }
                    }

                    switch (op.Attribute % 4)
                    {
                        case 0:
                            Collapser.TryCollapseInPlace(space, at);
                            break;
                        case 1:
                            Collapser.TryCollapseByCopy(space, at, CollapseContext.MadviseCollapse);
                            break;
                        case 2:
                            Collapser.TryReformInPlace(space, at);
                            break;
                        default:
                            Collapser.MadviseCollapse(space, VirtualAddress.FromRaw(vma.Start.Value), vma.End.Value - vma.Start.Value);
                            break;
                    }

                    return null;
                case OpKind.Mlock:
                    if (op.Attribute % 2 == 0)
                    {
                        space.Unlock(VirtualAddress.FromRaw(page), pages * K4);
                    }
                    else if (space.Node.Buddy.FreeFrames > 2048)
                    {
                        space.Lock(VirtualAddress.FromRaw(page), pages * K4);
                    }

                    return null;
                case OpKind.Migrate:
                    MigrationResult migrated = space.Migrate(VirtualAddress.FromRaw(page));
                    return migrated.Status == MigrationStatus.Migrated && migrated.NewAddress == migrated.OldAddress ? $"{migrated}" : null;
                case OpKind.Remap:
                    return Remap(world, page, pages, op.Attribute);
                case OpKind.SwapOut:
                    return SwapOut(world, page, keep: op.Attribute % 2 == 0);
                case OpKind.Pin:
                    return Pin(world, vma, page, pages, write: op.Attribute % 2 == 0);
                default:
                    return $"unknown op {op.Kind}";
            }
        }

        private string? Touch(World world, Vma vma, ulong page, bool write)
        {
            AddressSpace space = world.Space;
            AccessResult result = space.Access(VirtualAddress.FromRaw(page + ByteOffset), write ? AccessKind.Write : AccessKind.Read);
            bool allowed = write ? (vma.Protection & Protection.Write) != 0 : vma.Protection != Protection.None;
            if (result.Status == AccessStatus.OutOfMemory && allowed)
            {
                return null;
            }

            if (result.Status != (allowed ? AccessStatus.Translated : AccessStatus.Segfault))
            {
                return $"{result} for {vma}";
            }

            if (!allowed)
            {
                return null;
            }

            byte seen = space.Node.Memory.ReadFrame(result.PhysicalAddress.FrameNumber)[(int)result.PhysicalAddress.PageOffset(PageSize.Size4K)];
            string? problem = Check(world, page, seen);
            if (problem is not null)
            {
                return problem;
            }

            if (write)
            {
                world.MaybeZero.Remove(page);
                space.Node.Memory.GetWritableFrame(result.PhysicalAddress.FrameNumber)[(int)result.PhysicalAddress.PageOffset(PageSize.Size4K)] = _next;
                world.Written[page] = _next;
                _next = (byte)((_next % 250) + 1);
            }

            return null;
        }

        private string? ReadBack(World world, ulong page)
        {
            AddressSpace space = world.Space;
            Vma? vma = space.Vmas.Find(VirtualAddress.FromRaw(page));
            if (vma is null)
            {
                return $"{page:x} was written but has no VMA";
            }

            if (vma.Protection == Protection.None)
            {
                space.Protect(VirtualAddress.FromRaw(page), K4, Protection.Read);
            }

            AccessResult result = space.Access(VirtualAddress.FromRaw(page + ByteOffset), AccessKind.Read);
            if (result.Status == AccessStatus.OutOfMemory)
            {
                return null;
            }

            if (result.Status != AccessStatus.Translated)
            {
                return $"reading back {page:x}: {result}";
            }

            byte seen = space.Node.Memory.ReadFrame(result.PhysicalAddress.FrameNumber)[(int)result.PhysicalAddress.PageOffset(PageSize.Size4K)];
            return Check(world, page, seen);
        }

        // The byte read at page against the oracle; a MADV_FREE page may read zero once reclaim discarded it, and then
        // stays zero until written.
        private static string? Check(World world, ulong page, byte seen)
        {
            byte expected = world.Written.GetValueOrDefault(page);
            if (seen == expected)
            {
                return null;
            }

            if (seen == 0 && world.MaybeZero.Remove(page))
            {
                world.Written.Remove(page);
                return null;
            }

            return $"read {seen} at {page:x}, expected {expected}{(world.MaybeZero.Contains(page) ? " or 0" : string.Empty)}";
        }

        private static void Forget(World world, ulong start, ulong length)
        {
            foreach (ulong key in world.Written.Keys.Where(k => k >= start && k < start + length).ToList())
            {
                world.Written.Remove(key);
                world.MaybeZero.Remove(key);
            }
        }

        private string? Remap(World world, ulong page, ulong pages, int attribute)
        {
            AddressSpace space = world.Space;
            ulong length = pages * K4;
            if (attribute % 3 == 0 && pages > 1)
            {
                // Shrink in place: the tail is unmapped.
                ulong kept = (pages / 2) * K4;
                space.Remap(VirtualAddress.FromRaw(page), length, kept);
                Forget(world, page + kept, length - kept);
                return null;
            }

            if (space.Node.Buddy.FreeFrames < 1024)
            {
                return null;
            }

            // Move to a fresh range (MREMAP_FIXED replaces the placeholder mapping there).
            VirtualAddress destination = space.Map(length, Protection.Read, VmaFlags.Anonymous);
            VirtualAddress moved = space.Remap(VirtualAddress.FromRaw(page), length, length, RemapFlags.MayMove | RemapFlags.Fixed, destination);
            if (moved != destination)
            {
                return $"mremap returned {moved}, asked for {destination}";
            }

            Forget(world, destination.Value, length);
            foreach (ulong key in world.Written.Keys.Where(k => k >= page && k < page + length).ToList())
            {
                world.Written[key - page + destination.Value] = world.Written[key];
                world.Written.Remove(key);
                if (world.MaybeZero.Remove(key))
                {
                    world.MaybeZero.Add(key - page + destination.Value);
                }
            }

            return null;
        }

        private static string? SwapOut(World world, ulong page, bool keep)
        {
            AddressSpace space = world.Space;
            if (space.Swap is null)
            {
                return null;
            }

            SwapOutResult result = space.SwapOut(VirtualAddress.FromRaw(page), keep);
            return result.Status switch
            {
                SwapOutStatus.SwappedOut when (result.Split ? result.Pages is < 1 or > 512 : result.Pages is not (1 or 512)) => $"{result}",
                _ => null,
            };
        }

        private string? Pin(World world, Vma vma, ulong page, ulong pages, bool write)
        {
            bool allowed = write ? (vma.Protection & Protection.Write) != 0 : vma.Protection != Protection.None;
            if (!allowed || world.Space.Node.Buddy.FreeFrames < 1024)
            {
                return null;
            }

            pages = Math.Min(pages, 16);
            _pins.Add(world.Space.Pin(VirtualAddress.FromRaw(page), pages * K4, write));
            return null;
        }
    }
}
