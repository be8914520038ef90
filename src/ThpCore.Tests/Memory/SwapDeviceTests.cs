using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using ThpCore.Memory;
using Xunit;

namespace ThpCore.Tests.Memory;

public sealed class SwapDeviceTests
{
    [Fact]
    public void Slot_0_is_the_header_and_the_first_allocation_is_slot_1()
    {
        var device = new SwapDevice(0, 1024);
        Assert.Equal(1023UL, device.FreeSlots);
        Assert.Equal(0UL, device.UsedSlots);
        Assert.True(device.TryAllocate(out ulong offset));
        Assert.Equal(1UL, offset);
        Assert.Equal(1U, device.SwapCount(1));
        Assert.Equal(1022UL, device.FreeSlots);
        Assert.Equal(1UL, device.UsedSlots);
        var header = Assert.Throws<ArgumentOutOfRangeException>(() => device.SwapCount(0));
        Assert.Contains("header", header.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Single_slots_fill_a_partly_used_cluster_before_touching_a_free_one()
    {
        var device = new SwapDevice(1, 2048);
        for (ulong expected = 1; expected < 512; expected++)
        {
            Assert.True(device.TryAllocate(out ulong offset));
            Assert.Equal(expected, offset);
        }

        // Cluster 0 is full; the next slot opens cluster 1, and then clusters 2 and 3 stay whole.
        Assert.True(device.TryAllocate(out ulong next));
        Assert.Equal(512UL, next);
        Assert.True(device.TryAllocateCluster(out ulong first));
        Assert.Equal(1024UL, first);
    }

    [Fact]
    public void A_cluster_is_512_naturally_aligned_slots_and_never_the_header_cluster_or_a_partial_tail()
    {
        // 1600 slots: cluster 0 has the header, cluster 3 has 64 slots; only clusters 1 and 2 qualify.
        var device = new SwapDevice(2, 1600);
        Assert.True(device.TryAllocateCluster(out ulong a));
        Assert.True(device.TryAllocateCluster(out ulong b));
        Assert.Equal(512UL, a);
        Assert.Equal(1024UL, b);
        Assert.Equal(0UL, a % SwapDevice.ClusterSize);
        Assert.Equal(1024UL, device.UsedSlots);
        Assert.All(Enumerable.Range(512, 1024), s => Assert.Equal(1U, device.SwapCount((ulong)s)));

        Assert.False(device.TryAllocateCluster(out _));
        Assert.Equal(2, device.ClusterAllocations);
        Assert.Equal(1, device.ClusterFailures);

        // Single slots still come from the header cluster and the tail.
        Assert.True(device.TryAllocate(out ulong single));
        Assert.Equal(1UL, single);
    }

    [Fact]
    public void One_used_slot_in_each_cluster_refuses_a_cluster_allocation()
    {
        var device = new SwapDevice(0, 4096);
        var held = new List<ulong>();
        while (device.TryAllocateCluster(out ulong first))
        {
            held.Add(first);
        }

        Assert.Equal(7, held.Count);
        Assert.Equal(1, device.ClusterFailures); // the refusal that ended the loop

        // Free all but one slot of every cluster: 511 free slots in each, and no cluster is whole.
        foreach (ulong first in held)
        {
            for (ulong s = first + 1; s < first + SwapDevice.ClusterSize; s++)
            {
                Assert.True(device.Free(s));
            }
        }

        Assert.False(device.TryAllocateCluster(out _));
        Assert.Equal(2, device.ClusterFailures);
        Assert.True(device.Free(held[3]));
        Assert.True(device.TryAllocateCluster(out ulong again));
        Assert.Equal(held[3], again);
    }

    [Fact]
    public void Duplicate_and_free_count_down_to_zero_and_the_slot_returns_to_the_pool()
    {
        var device = new SwapDevice(0, 16);
        Assert.True(device.TryAllocate(out ulong slot));
        device.Duplicate(slot);
        device.Duplicate(slot);
        Assert.Equal(3U, device.SwapCount(slot));
        Assert.False(device.Free(slot));
        Assert.False(device.Free(slot));
        Assert.Equal(1UL, device.UsedSlots);
        Assert.True(device.Free(slot));
        Assert.Equal(0U, device.SwapCount(slot));
        Assert.Equal(15UL, device.FreeSlots);
        Assert.True(device.TryAllocate(out ulong again));
        Assert.Equal(slot, again);
    }

    [Fact]
    public void Contents_round_trip_and_are_dropped_on_free()
    {
        var device = new SwapDevice(0, 16);
        Assert.True(device.TryAllocate(out ulong slot));
        byte[] page = new byte[SwapDevice.PageSize];
        page[0] = 0xAB;
        page[4095] = 0xCD;
        var read = new byte[SwapDevice.PageSize];

        device.ReadContents(slot, read);
        Assert.All(read, b => Assert.Equal(0, b));
        Assert.Equal(0, device.StoredPages);

        device.StoreContents(slot, page);
        Assert.Equal(1, device.StoredPages);
        device.ReadContents(slot, read);
        Assert.Equal(page, read);

        device.Duplicate(slot);
        Assert.False(device.Free(slot));
        device.ReadContents(slot, read);
        Assert.Equal(page, read);

        Assert.True(device.Free(slot));
        Assert.Equal(0, device.StoredPages);
        Assert.True(device.TryAllocate(out ulong again));
        Assert.Equal(slot, again);
        device.ReadContents(again, read);
        Assert.All(read, b => Assert.Equal(0, b));
    }

    [Fact]
    public void A_zero_page_is_not_stored()
    {
        var device = new SwapDevice(0, 16);
        Assert.True(device.TryAllocate(out ulong slot));
        byte[] page = new byte[SwapDevice.PageSize];
        page[7] = 1;
        device.StoreContents(slot, page);
        device.StoreContents(slot, new byte[SwapDevice.PageSize]);
        Assert.Equal(0, device.StoredPages);
    }

    [Fact]
    public void Misuse_throws_with_a_message()
    {
        var device = new SwapDevice(4, 16);
        var dup = Assert.Throws<InvalidOperationException>(() => device.Duplicate(3));
        Assert.Equal("Swap device 4: cannot duplicate slot 0x3: it is free (swap count 0).", dup.Message);
        var free = Assert.Throws<InvalidOperationException>(() => device.Free(3));
        Assert.Equal("Swap device 4: cannot free slot 0x3: its swap count is already 0.", free.Message);
        var write = Assert.Throws<InvalidOperationException>(() => device.StoreContents(3, new byte[SwapDevice.PageSize]));
        Assert.Contains("cannot write to slot 0x3", write.Message, StringComparison.Ordinal);
        var read = Assert.Throws<InvalidOperationException>(() => device.ReadContents(3, new byte[SwapDevice.PageSize]));
        Assert.Contains("cannot read from slot 0x3", read.Message, StringComparison.Ordinal);

        Assert.True(device.TryAllocate(out ulong slot));
        Assert.Equal("page", Assert.Throws<ArgumentException>(() => device.StoreContents(slot, new byte[100])).ParamName);
        Assert.Equal("destination", Assert.Throws<ArgumentException>(() => device.ReadContents(slot, new byte[100])).ParamName);

        var beyond = Assert.Throws<ArgumentOutOfRangeException>(() => device.Free(16));
        Assert.Equal("offset", beyond.ParamName);
        Assert.Contains("1..0xf", beyond.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentOutOfRangeException>(() => device.Duplicate(0));

        var type = Assert.Throws<ArgumentOutOfRangeException>(() => new SwapDevice(23, 16));
        Assert.Contains("0..22", type.Message, StringComparison.Ordinal);
        Assert.Equal("slots", Assert.Throws<ArgumentOutOfRangeException>(() => new SwapDevice(0, 1)).ParamName);
    }

    [Fact]
    public void An_exhausted_device_refuses_and_entries_carry_the_type()
    {
        var device = new SwapDevice(7, 3);
        Assert.True(device.TryAllocate(out _));
        Assert.True(device.TryAllocate(out _));
        Assert.False(device.TryAllocate(out _));
        Assert.False(device.TryAllocateCluster(out _));
        Assert.Equal(SwapEntry.Swap(7, 2), device.EntryFor(2));
    }

    public sealed record Operation(int Kind, int Pick);

    private static readonly Gen<(ulong Slots, Operation[] Operations)> ScenarioGen =
        from slots in Gen.Frequency(
            (2, Gen.Elements(2UL, 512UL, 1024UL, 2048UL)),
            (3, Gen.Choose(2, 3000).Select(n => (ulong)n)))
        from count in Gen.Choose(0, 300)
        from operations in (from kind in Gen.Frequency(
                                (4, Gen.Constant(0)), // allocate one slot
                                (2, Gen.Constant(1)), // allocate a cluster
                                (2, Gen.Constant(2)), // duplicate a held slot
                                (4, Gen.Constant(3))) // free a held slot
                            from pick in Gen.Choose(0, int.MaxValue)
                            select new Operation(kind, pick)).ArrayOf(count)
        select (slots, operations);

    [Property(MaxTest = 150)]
    public Property Random_sequences_keep_the_counts_and_never_hand_out_a_slot_twice() =>
        Prop.ForAll(Arb.From(ScenarioGen), scenario =>
        {
            string? problem = Run(scenario.Slots, scenario.Operations);
            return problem is null ? true.ToProperty() : false.ToProperty().Label(problem);
        });

    private static string? Run(ulong slots, Operation[] operations)
    {
        var device = new SwapDevice(0, slots);
        var counts = new Dictionary<ulong, uint>();
        long clusters = 0;
        long failures = 0;
        foreach (Operation op in operations)
        {
            ulong[] held = counts.Keys.Order().ToArray();
            switch (op.Kind)
            {
                case 0:
                    if (device.TryAllocate(out ulong slot))
                    {
                        if (slot == 0 || slot >= slots || !counts.TryAdd(slot, 1))
                        {
                            return string.Create(CultureInfo.InvariantCulture, $"slot {slot} handed out while held or out of range");
                        }
                    }
                    else if ((ulong)counts.Count != slots - 1)
                    {
                        return "allocation refused with free slots";
                    }

                    break;
                case 1:
                    if (device.TryAllocateCluster(out ulong first))
                    {
                        clusters++;
                        if (first % SwapDevice.ClusterSize != 0 || first == 0 || first + SwapDevice.ClusterSize > slots)
                        {
                            return string.Create(CultureInfo.InvariantCulture, $"cluster at {first} is misaligned or out of range");
                        }

                        for (ulong s = first; s < first + SwapDevice.ClusterSize; s++)
                        {
                            if (!counts.TryAdd(s, 1))
                            {
                                return string.Create(CultureInfo.InvariantCulture, $"cluster at {first} includes held slot {s}");
                            }
                        }
                    }
                    else
                    {
                        failures++;
                        for (ulong c = SwapDevice.ClusterSize; c + SwapDevice.ClusterSize <= slots; c += SwapDevice.ClusterSize)
                        {
                            ulong start = c;
                            if (!held.Any(s => s >= start && s < start + SwapDevice.ClusterSize))
                            {
                                return string.Create(CultureInfo.InvariantCulture, $"cluster refused although {c} is whole and free");
                            }
                        }
                    }

                    break;
                case 2 when held.Length > 0:
                    ulong dup = held[op.Pick % held.Length];
                    device.Duplicate(dup);
                    counts[dup]++;
                    break;
                case 3 when held.Length > 0:
                    ulong victim = held[op.Pick % held.Length];
                    bool freed = device.Free(victim);
                    if (--counts[victim] == 0)
                    {
                        counts.Remove(victim);
                    }

                    if (freed != !counts.ContainsKey(victim))
                    {
                        return string.Create(CultureInfo.InvariantCulture, $"Free({victim}) returned {freed}");
                    }

                    break;
            }

            if (device.FreeSlots + device.UsedSlots != slots - 1 || device.UsedSlots != (ulong)counts.Count)
            {
                return string.Create(CultureInfo.InvariantCulture, $"free {device.FreeSlots} + used {device.UsedSlots} vs {slots} slots, model {counts.Count}");
            }
        }

        foreach ((ulong slot, uint count) in counts)
        {
            if (device.SwapCount(slot) != count)
            {
                return string.Create(CultureInfo.InvariantCulture, $"slot {slot} count {device.SwapCount(slot)}, model {count}");
            }
        }

        return device.ClusterAllocations == clusters && device.ClusterFailures == failures ? null : "cluster counters disagree";
    }

    [Fact]
    public void A_cached_slot_stays_allocated_at_count_zero_until_its_folio_leaves_the_swap_cache()
    {
        var node = new MemoryNode(4UL << 20);
        var device = new SwapDevice(1, 2048);
        Assert.True(node.TryAllocateFolio(0, out Folio folio));
        Assert.True(device.TryAllocate(out ulong slot));
        device.AddToSwapCache(folio, slot);
        Assert.True(device.TryGetSwapCacheFolio(slot, out Folio cached, out int index));
        Assert.Equal(folio, cached);
        Assert.Equal(0, index);
        Assert.Equal(2, folio.RefCount);

        Assert.False(device.Free(slot));
        Assert.Equal(0u, device.SwapCount(slot));
        Assert.Equal(1UL, device.UsedSlots);
        Assert.False(device.IsSwapped(folio));

        Assert.True(device.TryFreeSwap(folio));
        Assert.Equal(0UL, device.UsedSlots);
        Assert.Equal(0, device.SwapCacheSlots);
        Assert.Equal(1, folio.RefCount);
        Assert.True(folio.IsDirty);
    }

    [Fact]
    public void FreeSwapAndCache_of_the_last_user_frees_slot_and_cached_folio()
    {
        var node = new MemoryNode(4UL << 20);
        var device = new SwapDevice(1, 2048);
        ulong freeFrames = node.Buddy.FreeFrames;
        Assert.True(node.TryAllocateFolio(0, out Folio folio));
        Assert.True(device.TryAllocate(out ulong slot));
        device.Duplicate(slot);
        device.AddToSwapCache(folio, slot);
        folio.Put();

        Assert.False(device.FreeSwapAndCache(slot));
        Assert.True(folio.IsSwapCache);
        Assert.True(device.FreeSwapAndCache(slot));

        Assert.Equal(0UL, device.UsedSlots);
        Assert.Equal(0, device.SwapCacheSlots);
        Assert.Equal(freeFrames, node.Buddy.FreeFrames);
        Assert.Throws<InvalidOperationException>(() => device.AddToSwapCache(folio, slot));
    }

    [Fact]
    public void Zeromap_marks_read_as_zero_and_are_cleared_by_a_write_or_by_freeing_the_slot()
    {
        var device = new SwapDevice(0, 1024);
        Assert.True(device.TryAllocate(out ulong a));
        Assert.True(device.TryAllocate(out ulong b));
        byte[] page = new byte[SwapDevice.PageSize];
        page[7] = 0x42;
        device.StoreContents(a, page);

        device.MarkZeroFilled(a, 2);

        Assert.True(device.IsZeroFilled(a) && device.IsZeroFilled(b));
        byte[] read = new byte[SwapDevice.PageSize];
        device.ReadContents(a, read);
        Assert.All(read, x => Assert.Equal(0, x)); // the old contents are gone with the mark

        device.StoreContents(a, page);
        Assert.False(device.IsZeroFilled(a));
        Assert.True(device.Free(b));
        Assert.True(device.TryAllocate(out ulong again));
        Assert.Equal(b, again);
        Assert.False(device.IsZeroFilled(again));
    }

    [Fact]
    public void Zeromap_refuses_free_slots_and_bad_ranges()
    {
        var device = new SwapDevice(0, 1024);
        Assert.Throws<InvalidOperationException>(() => device.MarkZeroFilled(5, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => device.MarkZeroFilled(0, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => device.MarkZeroFilled(1, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => device.MarkZeroFilled(1020, 8));
    }

}
