using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using ThpCore.Memory;

namespace ThpCore.Tests.Memory;

/// <summary>
/// Properties of <see cref="BuddyAllocator"/> over random sequences of allocations (orders 0 to 10) and frees of
/// held blocks, on memory sizes that are and are not multiples of 4 MiB, with random reserved ranges. A naive model
/// (a set of free blocks, merged by searching the set) predicts every free list's contents; the frame table, read
/// through <see cref="FrameTable.Describe"/>, must agree with the counters.
/// </summary>
public sealed class BuddyAllocatorProperties
{
    public sealed record Operation(bool Allocate, int Order, int Pick);

    public sealed record Scenario(ulong Frames, (ulong FirstFrame, ulong Count)[] Reserved, Operation[] Operations)
    {
        public override string ToString() =>
            string.Create(
                CultureInfo.InvariantCulture,
                $"{Frames} frames, reserved [{string.Join(", ", Reserved.Select(r => $"{r.FirstFrame}+{r.Count}"))}], " +
                $"ops: {string.Join(' ', Operations.Select(o => o.Allocate ? $"a{o.Order}" : $"f{o.Pick}"))}");
    }

    private static Gen<ulong> FramesGen =>
        Gen.Frequency(
            (1, Gen.Elements(1024UL, 2048UL, 4096UL)),
            (3, Gen.Choose(1, 4500).Select(n => (ulong)n)));

    private static Gen<(ulong, ulong)[]> ReservedGen(ulong frames) =>
        from count in Gen.Frequency((2, Gen.Constant(0)), (3, Gen.Choose(1, 4)))
        from ranges in (
            from first in Gen.Choose(0, (int)frames - 1)
            from length in Gen.Frequency((3, Gen.Choose(0, 8)), (1, Gen.Choose(0, 600)))
            select ((ulong)first, Math.Min((ulong)length, frames - (ulong)first))).ArrayOf(count)
        select ranges;

    private static Gen<Operation> OperationGen =>
        from allocate in Gen.Frequency((3, Gen.Constant(true)), (2, Gen.Constant(false)))
        from order in Gen.Frequency((8, Gen.Choose(0, 3)), (3, Gen.Choose(4, 8)), (1, Gen.Choose(9, 10)))
        from pick in Gen.Choose(0, int.MaxValue)
        select new Operation(allocate, order, pick);

    private static Gen<Scenario> ScenarioGen =>
        from frames in FramesGen
        from reserved in ReservedGen(frames)
        from count in Gen.Choose(0, 250)
        from operations in OperationGen.ArrayOf(count)
        select new Scenario(frames, reserved, operations);

    [Property(MaxTest = 150)]
    public Property Random_allocations_and_frees_agree_with_a_naive_model_and_with_the_frame_table() =>
        Prop.ForAll(Arb.From(ScenarioGen), scenario =>
        {
            string? problem = Run(scenario);
            return problem is null ? true.ToProperty() : false.ToProperty().Label(problem);
        });

    private static string? Run(Scenario scenario)
    {
        var allocator = new BuddyAllocator(new FrameTable(scenario.Frames), scenario.Reserved);
        var reserved = new HashSet<ulong>();
        foreach ((ulong first, ulong count) in scenario.Reserved)
        {
            for (ulong frame = first; frame < first + count; frame++)
            {
                reserved.Add(frame);
            }
        }

        if (allocator.ManagedFrames != scenario.Frames - (ulong)reserved.Count)
        {
            return $"ManagedFrames {allocator.ManagedFrames}, expected {scenario.Frames - (ulong)reserved.Count}";
        }

        HashSet<(ulong, int)> initial = AllFreeBlocks(allocator);
        var model = new HashSet<(ulong FirstFrame, int Order)>(initial);
        if (InitialBlocksProblem(scenario.Frames, reserved, model) is string initialProblem)
        {
            return initialProblem;
        }

        var held = new List<(ulong FirstFrame, int Order)>();
        var heldFrames = new HashSet<ulong>();
        long failures = 0;

        for (int step = 0; step < scenario.Operations.Length; step++)
        {
            Operation operation = scenario.Operations[step];
            string at = $"step {step} ({(operation.Allocate ? "allocate order " + operation.Order : "free")})";
            if (operation.Allocate && operation.Pick % 4 == 3)
            {
                // TryAllocateAt: the chosen block is taken exactly when the model has a free block around it.
                int order = operation.Order;
                ulong frame = ((ulong)(operation.Pick / 4) % scenario.Frames) & ~((1UL << order) - 1);
                if (frame + (1UL << order) > scenario.Frames)
                {
                    continue;
                }

                (ulong FirstFrame, int Order)[] around = model.Where(b => b.Order >= order && b.FirstFrame <= frame && frame < b.FirstFrame + (1UL << b.Order)).ToArray();
                bool taken = allocator.TryAllocateAt(frame, order);
                if (taken != (around.Length == 1))
                {
                    return $"{at}: TryAllocateAt({frame}, {order}) gave {taken} with model blocks around it [{Describe(around)}]";
                }

                if (taken)
                {
                    (ulong block, int blockOrder) = around[0];
                    model.Remove(around[0]);
                    while (blockOrder > order)
                    {
                        blockOrder--;
                        ulong upper = block + (1UL << blockOrder);
                        model.Add(frame >= upper ? (block, blockOrder) : (upper, blockOrder));
                        block = frame >= upper ? upper : block;
                    }

                    held.Add((frame, order));
                    for (ulong f = frame; f < frame + (1UL << order); f++)
                    {
                        if (!heldFrames.Add(f) || reserved.Contains(f))
                        {
                            return $"{at}: frame {f} taken while {(reserved.Contains(f) ? "reserved" : "held")}";
                        }
                    }
                }
            }
            else if (operation.Allocate || held.Count == 0)
            {
                int order = operation.Order;
                int smallest = Enumerable.Range(order, BuddyAllocator.MaxOrder - order + 1).FirstOrDefault(o => model.Any(b => b.Order == o), -1);
                ulong expectedFrame = smallest < 0 ? 0 : allocator.FreeBlockList(smallest).First().FirstFrame;
                bool ok = allocator.TryAllocate(order, out ulong frame);

                if (smallest < 0)
                {
                    failures++;
                    if (ok || frame != 0 || allocator.AllocationFailures != failures)
                    {
                        return $"{at}: no block of order >= {order} is free, yet TryAllocate gave {ok}/{frame} with {allocator.AllocationFailures} failures counted";
                    }

                    continue;
                }

                if (!ok || frame != expectedFrame)
                {
                    return $"{at}: expected the first block of order {smallest} ({expectedFrame}), got {ok}/{frame}";
                }

                if (frame % (1UL << order) != 0 || frame + (1UL << order) > scenario.Frames)
                {
                    return $"{at}: block {frame} is not aligned to order {order} or leaves the table";
                }

                for (ulong f = frame; f < frame + (1UL << order); f++)
                {
                    if (!heldFrames.Add(f) || reserved.Contains(f))
                    {
                        return $"{at}: frame {f} handed out while {(reserved.Contains(f) ? "reserved" : "held")}";
                    }
                }

                held.Add((frame, order));

                // The model splits the block the same way: the lower half is kept, upper halves become free.
                model.Remove((frame, smallest));
                for (int high = smallest - 1; high >= order; high--)
                {
                    model.Add((frame + (1UL << high), high));
                }
            }
            else
            {
                int index = operation.Pick % held.Count;
                (ulong frame, int order) = held[index];
                held[index] = held[^1];
                held.RemoveAt(held.Count - 1);
                for (ulong f = frame; f < frame + (1UL << order); f++)
                {
                    heldFrames.Remove(f);
                }

                allocator.Free(frame, order);
                ModelFree(model, frame, order);
            }

            if (ListsProblem(allocator, model) is string listProblem)
            {
                return $"{at}: {listProblem}";
            }

            if (step % 64 == 63 && FrameTableProblem(allocator, reserved, held) is string tableProblem)
            {
                return $"{at}: {tableProblem}";
            }
        }

        if (FrameTableProblem(allocator, reserved, held) is string finalProblem)
        {
            return $"after the operations: {finalProblem}";
        }

        // Freeing everything restores the initial free blocks: merging rebuilds the higher orders.
        foreach ((ulong frame, int order) in held.OrderBy(h => (h.FirstFrame * 2654435761UL) & 0xFFFF))
        {
            allocator.Free(frame, order);
        }

        HashSet<(ulong, int)> final = AllFreeBlocks(allocator);
        if (!final.SetEquals(initial) || allocator.FreeFrames != allocator.ManagedFrames)
        {
            return $"after freeing everything: {Describe(final)} instead of {Describe(initial)}; {allocator.FreeFrames} of {allocator.ManagedFrames} free";
        }

        return FrameTableProblem(allocator, reserved, Array.Empty<(ulong, int)>()) is string emptyProblem ? $"after freeing everything: {emptyProblem}" : null;
    }

    private static void ModelFree(HashSet<(ulong FirstFrame, int Order)> model, ulong frame, int order)
    {
        while (order < BuddyAllocator.MaxOrder && model.Remove((frame ^ (1UL << order), order)))
        {
            frame &= ~(1UL << order);
            order++;
        }

        model.Add((frame, order));
    }

    private static HashSet<(ulong, int)> AllFreeBlocks(BuddyAllocator allocator) =>
        Enumerable.Range(0, BuddyAllocator.MaxOrder + 1).SelectMany(allocator.FreeBlockList).ToHashSet();

    private static string Describe(IEnumerable<(ulong FirstFrame, int Order)> blocks) =>
        string.Join(' ', blocks.OrderBy(b => b.FirstFrame).Select(b => $"{b.FirstFrame}/o{b.Order}"));

    // Each maximal run of unreserved frames is cut from its start into the largest aligned blocks that fit.
    private static string? InitialBlocksProblem(ulong frames, HashSet<ulong> reserved, HashSet<(ulong FirstFrame, int Order)> blocks)
    {
        var expected = new HashSet<(ulong, int)>();
        ulong frame = 0;
        while (frame < frames)
        {
            if (reserved.Contains(frame))
            {
                frame++;
                continue;
            }

            int order = BuddyAllocator.MaxOrder;
            while (frame % (1UL << order) != 0 || frame + (1UL << order) > frames || Enumerable.Range(0, 1 << order).Any(i => reserved.Contains(frame + (ulong)i)))
            {
                order--;
            }

            expected.Add((frame, order));
            frame += 1UL << order;
        }

        return expected.SetEquals(blocks) ? null : $"initial blocks {Describe(blocks)}, expected {Describe(expected)}";
    }

    private static string? ListsProblem(BuddyAllocator allocator, HashSet<(ulong FirstFrame, int Order)> model)
    {
        ulong freeFrames = 0;
        for (int order = 0; order <= BuddyAllocator.MaxOrder; order++)
        {
            (ulong FirstFrame, int Order)[] list = allocator.FreeBlockList(order).ToArray();
            var expected = model.Where(b => b.Order == order).ToHashSet();
            if (allocator.FreeBlocks(order) != list.Length || !expected.SetEquals(list) || list.Length != expected.Count)
            {
                return $"order {order}: FreeBlocks {allocator.FreeBlocks(order)}, list {Describe(list)}, model {Describe(expected)}";
            }

            freeFrames += (ulong)list.Length << order;
        }

        return freeFrames == allocator.FreeFrames ? null : $"FreeFrames {allocator.FreeFrames}, lists hold {freeFrames}";
    }

    // Recount everything from the frame table, frame by frame.
    private static string? FrameTableProblem(BuddyAllocator allocator, HashSet<ulong> reserved, IReadOnlyCollection<(ulong FirstFrame, int Order)> held)
    {
        FrameTable table = allocator.Frames;
        var heldOrder = held.ToDictionary(h => h.FirstFrame, h => h.Order);
        var heldFrames = held.SelectMany(h => Enumerable.Range(0, 1 << h.Order).Select(i => h.FirstFrame + (ulong)i)).ToHashSet();
        var heads = new long[BuddyAllocator.MaxOrder + 1];
        var headOrder = new Dictionary<ulong, int>();
        ulong freeFrames = 0;

        for (ulong frame = 0; frame < table.FrameCount; frame++)
        {
            FrameInfo info = table.Describe(frame);
            if (reserved.Contains(frame))
            {
                if (info.Flags != FrameFlags.Reserved)
                {
                    return $"reserved frame {frame} reads {info}";
                }
            }
            else if (heldFrames.Contains(frame))
            {
                int order = heldOrder.TryGetValue(frame, out int o) ? o : 0;
                if (info != new FrameInfo(frame, FrameFlags.None, order, 0, 0, frame))
                {
                    return $"held frame {frame} reads {info}";
                }
            }
            else
            {
                if (info.Flags != FrameFlags.Free || info.RefCount != 0 || info.MapCount != 0)
                {
                    return $"frame {frame}, neither held nor reserved, reads {info}";
                }

                freeFrames++;
                if (info.HeadFrame == frame)
                {
                    heads[info.Order]++;
                    headOrder[frame] = info.Order;
                }
                else if (!headOrder.TryGetValue(info.HeadFrame, out int order) || frame >= info.HeadFrame + (1UL << order))
                {
                    return $"free frame {frame} names {info.HeadFrame} as its block's first frame, which does not cover it";
                }
            }
        }

        if (freeFrames != allocator.FreeFrames || freeFrames + (ulong)heldFrames.Count + (ulong)reserved.Count != table.FrameCount)
        {
            return $"{freeFrames} free frames in the table, FreeFrames {allocator.FreeFrames}, {heldFrames.Count} held, {reserved.Count} reserved, {table.FrameCount} in all";
        }

        for (int order = 0; order <= BuddyAllocator.MaxOrder; order++)
        {
            if (heads[order] != allocator.FreeBlocks(order))
            {
                return $"{heads[order]} free blocks of order {order} in the table, FreeBlocks says {allocator.FreeBlocks(order)}";
            }
        }

        // The buddy invariant: no two free buddies of the same order below MaxOrder are left unmerged.
        foreach ((ulong frame, int order) in headOrder)
        {
            if (order < BuddyAllocator.MaxOrder && headOrder.TryGetValue(frame ^ (1UL << order), out int buddyOrder) && buddyOrder == order)
            {
                return $"free buddies {frame} and {frame ^ (1UL << order)} of order {order} are not merged";
            }
        }

        return null;
    }
}
