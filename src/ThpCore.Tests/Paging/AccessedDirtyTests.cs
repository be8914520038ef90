using System;
using System.Collections.Generic;
using System.Linq;
using System.Threading;
using System.Threading.Tasks;
using ThpCore.Paging;
using Xunit;
using Xunit.Abstractions;

namespace ThpCore.Tests.Paging;

/// <summary>
/// Accessed and dirty flags (Intel SDM Vol. 3A §4.8): A in every entry used, D only in the leaf and only on a
/// permitted write, nothing (or only upper-level A, by policy) on a faulting walk, nothing at all in probe mode,
/// and every update an atomic compare-exchange that loses no concurrent change to the entry.
/// </summary>
public sealed class AccessedDirtyTests
{
    private const ulong Va = 0x0000_7F12_3456_7000UL;
    private const ulong Frame = 0x0000_0012_3456_7000UL;
    private const ulong P = TestTables.P;
    private const ulong RW = TestTables.RW;
    private const ulong US = TestTables.US;
    private const ulong A = TestTables.A;
    private const ulong D = TestTables.D;

    private static readonly WalkOptions s_upperAsWalked = new() { AccessedOnFault = AccessedOnFaultPolicy.UpperLevelsAsWalked };

    private readonly ITestOutputHelper _output;

    public AccessedDirtyTests(ITestOutputHelper output) => _output = output;

    public enum Fault
    {
        NotPresentPt,
        NotPresentPdpt,
        ReservedPd,
        ReservedPml4,
        ReadOnlyLeaf,
        ReadOnlyPdpt,
        SupervisorLeaf,
        ProtectionKey,
        Smap,
    }

    /// <summary>Tables with <see cref="Va"/> mapped by a 4 KiB, 2 MiB or 1 GiB leaf, plus a sibling mapping whose entries must not change.</summary>
    private static TestTables Mapped(PageSize size)
    {
        var tables = new TestTables();
        ulong va = Va & ~(TestTables.Bytes(size) - 1);
        ulong frame = Frame & ~(TestTables.Bytes(size) - 1);
        tables.Map(va, size, frame, P | RW | US);
        tables.Map(va + TestTables.Bytes(size), size, frame + TestTables.Bytes(size), P | RW | US); // sibling
        return tables;
    }

    private static IEnumerable<ulong> PathAddresses(TestTables tables, ulong va, PagingLevel leaf)
    {
        for (PagingLevel level = tables.RootLevel; level >= leaf; level--)
        {
            yield return tables.EntryAddress(va, level);
        }
    }

    /// <summary>The words that differ between two snapshots, by physical address.</summary>
    private static Dictionary<ulong, (ulong Before, ulong After)> Changes(TestTables tables, ulong[] before, ulong[] after)
    {
        var changes = new Dictionary<ulong, (ulong, ulong)>();
        for (int i = 0; i < after.Length; i++)
        {
            ulong old = i < before.Length ? before[i] : 0;
            if (old != after[i])
            {
                changes[tables.Tables[i / 512] + ((ulong)(i % 512) * 8)] = (old, after[i]);
            }
        }

        return changes;
    }

    private static WalkResult Walk(TestTables tables, CpuState cpu, AccessKind access, Privilege privilege = Privilege.User, WalkOptions options = default, IPhysicalMemory? memory = null) =>
        PageWalker.Translate(cpu, memory ?? tables.Memory, VirtualAddress.Create(Va), access, privilege, options, null);

    // ---------------------------------------------------------------- success

    [Theory]
    [InlineData(PageSize.Size4K, AccessKind.Read)]
    [InlineData(PageSize.Size4K, AccessKind.Write)]
    [InlineData(PageSize.Size4K, AccessKind.Fetch)]
    [InlineData(PageSize.Size2M, AccessKind.Read)]
    [InlineData(PageSize.Size2M, AccessKind.Write)]
    [InlineData(PageSize.Size1G, AccessKind.Read)]
    [InlineData(PageSize.Size1G, AccessKind.Write)]
    public void A_successful_walk_sets_A_in_every_entry_used_and_D_only_in_the_leaf_on_a_write(PageSize size, AccessKind access)
    {
        TestTables tables = Mapped(size);
        PagingLevel leafLevel = TestTables.LeafLevel(size);
        ulong[] path = PathAddresses(tables, Va, leafLevel).ToArray();
        ulong[] before = tables.Snapshot();
        var memory = new RecordingMemory(tables.Memory);

        WalkResult result = Walk(tables, tables.Cpu(), access, memory: memory);
        Assert.Equal(WalkStatus.Translated, result.Status);

        var changes = Changes(tables, before, tables.Snapshot());
        Assert.Equal(path.OrderBy(a => a), changes.Keys.OrderBy(a => a)); // exactly the entries used, nothing else
        for (int i = 0; i < path.Length; i++)
        {
            bool leaf = i == path.Length - 1;
            ulong want = A | (leaf && access == AccessKind.Write ? D : 0);
            Assert.Equal(changes[path[i]].Before | want, changes[path[i]].After);
        }

        // Every update was a compare-exchange, never a plain store.
        Assert.Equal(0, memory.Writes);
        Assert.Equal(path.Length, memory.CompareExchanges);
    }

    [Fact]
    public void D_is_never_set_by_a_read_and_stays_set_afterwards()
    {
        TestTables tables = Mapped(PageSize.Size4K);
        ulong leaf = tables.EntryAddress(Va, PagingLevel.Pt);

        Walk(tables, tables.Cpu(), AccessKind.Read);
        Walk(tables, tables.Cpu(), AccessKind.Fetch);
        Walk(tables, tables.Cpu(), AccessKind.Read, Privilege.Supervisor);
        Assert.Equal(A, tables.Read(leaf) & (A | D));

        Walk(tables, tables.Cpu(), AccessKind.Write);
        Assert.Equal(A | D, tables.Read(leaf) & (A | D));

        Walk(tables, tables.Cpu(), AccessKind.Read);
        Assert.Equal(A | D, tables.Read(leaf) & (A | D));

        // D is never set in a non-leaf entry (bit 6 is ignored there).
        foreach (PagingLevel level in new[] { PagingLevel.Pml4, PagingLevel.Pdpt, PagingLevel.Pd })
        {
            Assert.Equal(A, tables.Get(Va, level) & (A | D));
        }
    }

    [Fact]
    public void A_walk_over_entries_already_accessed_and_dirty_writes_nothing()
    {
        TestTables tables = Mapped(PageSize.Size4K);
        Walk(tables, tables.Cpu(), AccessKind.Write);
        var memory = new RecordingMemory(tables.Memory);
        Assert.Equal(WalkStatus.Translated, Walk(tables, tables.Cpu(), AccessKind.Write, memory: memory).Status);
        Assert.Equal(0, memory.Writes + memory.CompareExchanges);
    }

    // ---------------------------------------------------------------- faults

    private static (TestTables Tables, AccessKind Access, CpuState Cpu, PagingLevel Level) Faulting(Fault fault)
    {
        TestTables tables = Mapped(PageSize.Size4K);
        CpuState cpu = tables.Cpu();
        AccessKind access = AccessKind.Write;
        PagingLevel level = PagingLevel.Pt;
        switch (fault)
        {
            case Fault.NotPresentPt:
                tables.Clear(Va, PagingLevel.Pt, P);
                break;
            case Fault.NotPresentPdpt:
                tables.Clear(Va, PagingLevel.Pdpt, P);
                level = PagingLevel.Pdpt;
                break;
            case Fault.ReservedPd:
                tables.Or(Va, PagingLevel.Pd, 1UL << 48);
                level = PagingLevel.Pd;
                break;
            case Fault.ReservedPml4:
                tables.Or(Va, PagingLevel.Pml4, TestTables.PS);
                level = PagingLevel.Pml4;
                break;
            case Fault.ReadOnlyLeaf:
                tables.Clear(Va, PagingLevel.Pt, RW);
                break;
            case Fault.ReadOnlyPdpt:
                tables.Clear(Va, PagingLevel.Pdpt, RW);
                break;
            case Fault.SupervisorLeaf:
                tables.Clear(Va, PagingLevel.Pt, US);
                access = AccessKind.Read;
                break;
            case Fault.ProtectionKey:
                tables.Or(Va, PagingLevel.Pt, 3UL << 59);
                cpu = tables.Cpu(Cr4Flags.Pke, pkru: 2u << (2 * 3)); // WD for key 3
                break;
            case Fault.Smap:
                cpu = tables.Cpu(Cr4Flags.Smap);
                return (tables, AccessKind.Read, cpu, level); // supervisor read, AC = 0; see caller
        }

        return (tables, access, cpu, level);
    }

    private static Privilege PrivilegeFor(Fault fault) => fault == Fault.Smap ? Privilege.Supervisor : Privilege.User;

    [Theory]
    [InlineData(Fault.NotPresentPt)]
    [InlineData(Fault.NotPresentPdpt)]
    [InlineData(Fault.ReservedPd)]
    [InlineData(Fault.ReservedPml4)]
    [InlineData(Fault.ReadOnlyLeaf)]
    [InlineData(Fault.ReadOnlyPdpt)]
    [InlineData(Fault.SupervisorLeaf)]
    [InlineData(Fault.ProtectionKey)]
    [InlineData(Fault.Smap)]
    public void A_faulting_walk_writes_nothing_under_the_default_policy(Fault fault)
    {
        var (tables, access, cpu, level) = Faulting(fault);
        ulong[] before = tables.Snapshot();
        var memory = new RecordingMemory(tables.Memory);

        WalkResult result = Walk(tables, cpu, access, PrivilegeFor(fault), memory: memory);

        Assert.Equal(WalkStatus.PageFault, result.Status);
        Assert.Equal(level, result.FaultLevel);
        Assert.Equal(before, tables.Snapshot());
        Assert.Equal(0, memory.Writes + memory.CompareExchanges);
    }

    [Theory]
    [InlineData(Fault.NotPresentPt)]
    [InlineData(Fault.NotPresentPdpt)]
    [InlineData(Fault.ReservedPd)]
    [InlineData(Fault.ReservedPml4)]
    [InlineData(Fault.ReadOnlyLeaf)]
    [InlineData(Fault.ReadOnlyPdpt)]
    [InlineData(Fault.SupervisorLeaf)]
    [InlineData(Fault.ProtectionKey)]
    [InlineData(Fault.Smap)]
    public void Under_UpperLevelsAsWalked_a_fault_leaves_A_in_the_non_leaf_entries_walked_before_it_and_D_nowhere(Fault fault)
    {
        var (tables, access, cpu, level) = Faulting(fault);
        ulong[] before = tables.Snapshot();

        WalkResult result = Walk(tables, cpu, access, PrivilegeFor(fault), s_upperAsWalked);
        Assert.Equal(WalkStatus.PageFault, result.Status);
        Assert.Equal(level, result.FaultLevel);

        // The non-leaf entries strictly above the one that stopped the walk (for a protection fault, the leaf).
        var expected = new HashSet<ulong>();
        for (PagingLevel l = PagingLevel.Pml4; l > level; l--)
        {
            expected.Add(tables.EntryAddress(Va, l));
        }

        var changes = Changes(tables, before, tables.Snapshot());
        Assert.Equal(expected.OrderBy(a => a), changes.Keys.OrderBy(a => a));
        foreach (var (_, (old, now)) in changes)
        {
            Assert.Equal(old | A, now);
        }
    }

    [Fact]
    public void Under_UpperLevelsAsWalked_a_protection_fault_on_a_1G_leaf_sets_only_the_PML4E()
    {
        TestTables tables = Mapped(PageSize.Size1G);
        tables.Clear(Va, PagingLevel.Pdpt, RW);
        ulong[] before = tables.Snapshot();

        WalkResult result = Walk(tables, tables.Cpu(), AccessKind.Write, Privilege.User, s_upperAsWalked);
        Assert.Equal(PagingLevel.Pdpt, result.FaultLevel);

        var changes = Changes(tables, before, tables.Snapshot());
        Assert.Equal(new[] { tables.EntryAddress(Va, PagingLevel.Pml4) }, changes.Keys);
    }

    [Fact]
    public void Under_UpperLevelsAsWalked_a_successful_walk_ends_like_the_default_one()
    {
        TestTables byDefault = Mapped(PageSize.Size4K);
        TestTables asWalked = Mapped(PageSize.Size4K);
        Walk(byDefault, byDefault.Cpu(), AccessKind.Write);
        Walk(asWalked, asWalked.Cpu(), AccessKind.Write, Privilege.User, s_upperAsWalked);
        Assert.Equal(byDefault.Snapshot(), asWalked.Snapshot());
    }

    // ---------------------------------------------------------------- probe

    [Theory]
    [InlineData(AccessKind.Write, AccessedOnFaultPolicy.NothingSet, false)]
    [InlineData(AccessKind.Read, AccessedOnFaultPolicy.NothingSet, false)]
    [InlineData(AccessKind.Write, AccessedOnFaultPolicy.UpperLevelsAsWalked, false)]
    [InlineData(AccessKind.Write, AccessedOnFaultPolicy.UpperLevelsAsWalked, true)] // faults at the PTE
    [InlineData(AccessKind.Write, AccessedOnFaultPolicy.NothingSet, true)]
    public void A_probe_writes_nothing(AccessKind access, AccessedOnFaultPolicy policy, bool leafNotPresent)
    {
        TestTables tables = Mapped(PageSize.Size4K);
        if (leafNotPresent)
        {
            tables.Clear(Va, PagingLevel.Pt, P);
        }

        ulong[] before = tables.Snapshot();
        var memory = new RecordingMemory(tables.Memory);
        var trace = new WalkTrace();

        WalkResult result = PageWalker.Translate(tables.Cpu(), memory, VirtualAddress.Create(Va + 0x10), access, Privilege.User, new WalkOptions { Probe = true, AccessedOnFault = policy }, trace);

        Assert.Equal(leafNotPresent ? WalkStatus.PageFault : WalkStatus.Translated, result.Status);
        if (!leafNotPresent)
        {
            Assert.Equal(Frame + 0x10, result.PhysicalAddress.Value);
        }

        Assert.Equal(0, memory.Writes + memory.CompareExchanges);
        Assert.Equal(before, tables.Snapshot());
        Assert.Empty(trace.Writes);
        Assert.Equal(4, trace.Steps.Count);
    }

    // ---------------------------------------------------------------- atomicity

    [Theory]
    [InlineData(PagingLevel.Pt)]
    [InlineData(PagingLevel.Pd)]
    [InlineData(PagingLevel.Pml4)]
    public void An_entry_changed_between_the_read_and_the_update_restarts_the_walk_and_keeps_both_changes(PagingLevel level)
    {
        TestTables tables = Mapped(PageSize.Size4K);
        ulong target = tables.EntryAddress(Va, level);
        const ulong software = (1UL << 9) | (1UL << 52);
        bool injected = false;
        var memory = new RecordingMemory(tables.Memory)
        {
            // Another CPU sets software bits in the entry just before the walker's compare-exchange on it.
            BeforeCompareExchange = address =>
            {
                if (address == target && !injected)
                {
                    injected = true;
                    tables.Or(Va, level, software);
                }
            },
        };
        var trace = new WalkTrace();

        WalkResult result = PageWalker.Translate(tables.Cpu(), memory, VirtualAddress.Create(Va), AccessKind.Write, Privilege.User, default, trace);

        Assert.Equal(WalkStatus.Translated, result.Status);
        Assert.True(injected);
        Assert.Equal(1, trace.Restarts);
        ulong final = tables.Read(target);
        Assert.Equal(software | A | (level == PagingLevel.Pt ? D : 0), final & (software | A | D));
        foreach (ulong entry in PathAddresses(tables, Va, PagingLevel.Pt))
        {
            Assert.NotEqual(0UL, tables.Read(entry) & A);
        }
    }

    [Fact]
    public void Under_UpperLevelsAsWalked_a_change_racing_an_upper_A_update_restarts_the_walk_and_keeps_both()
    {
        TestTables tables = Mapped(PageSize.Size4K);
        tables.Clear(Va, PagingLevel.Pt, P); // the walk will fault at the PTE after setting A above it
        ulong target = tables.EntryAddress(Va, PagingLevel.Pdpt);
        bool injected = false;
        var memory = new RecordingMemory(tables.Memory)
        {
            BeforeCompareExchange = address =>
            {
                if (address == target && !injected)
                {
                    injected = true;
                    tables.Or(Va, PagingLevel.Pdpt, 1UL << 11);
                }
            },
        };
        var trace = new WalkTrace();

        WalkResult result = PageWalker.Translate(tables.Cpu(), memory, VirtualAddress.Create(Va), AccessKind.Read, Privilege.User, s_upperAsWalked, trace);

        Assert.Equal(PagingLevel.Pt, result.FaultLevel);
        Assert.Equal(1, trace.Restarts);
        Assert.Equal((1UL << 11) | A, tables.Get(Va, PagingLevel.Pdpt) & ((1UL << 11) | A | D));
        Assert.Equal(A, tables.Get(Va, PagingLevel.Pd) & (A | D));
        Assert.Equal(0UL, tables.Get(Va, PagingLevel.Pt) & (A | D));
    }

    [Fact]
    public async Task Concurrent_software_bit_flips_and_walker_A_D_updates_are_never_lost()
    {
        const int pages = 4;
        const int walks = 20_000;
        const ulong flipBit = 1UL << 52; // toggled by the other thread, many times
        const ulong markBit = 1UL << 9; // set once per entry by the other thread
        const ulong upperFlipBit = 1UL << 10;

        var tables = new TestTables();
        ulong baseVa = Va & ~0x1F_FFFFUL;
        var leaves = new ulong[pages];
        for (int i = 0; i < pages; i++)
        {
            leaves[i] = tables.Map(baseVa + ((ulong)i << 12), PageSize.Size4K, 0x4000_0000UL + ((ulong)i << 12), P | RW | US);
        }

        ulong[] uppers = PathAddresses(tables, baseVa, PagingLevel.Pd).ToArray();
        CpuState cpu = tables.Cpu();
        var leafFlips = new int[pages];
        var upperFlips = new int[uppers.Length];
        int restarts = 0;
        int walkerDone = 0;
        using var start = new Barrier(2);

        // The walker thread walks with writes, then clears A and D again (with its own locked RMW, as an OS
        // harvesting dirty bits would) so that every walk has to update all four entries.
        Task walker = Task.Run(() =>
        {
            var trace = new WalkTrace();
            start.SignalAndWait();
            for (int n = 0; n < walks; n++)
            {
                int page = n % pages;
                WalkResult result = PageWalker.Translate(cpu, tables.Memory, VirtualAddress.Create(baseVa + ((ulong)page << 12)), AccessKind.Write, Privilege.User, default, trace);
                if (result.Status != WalkStatus.Translated)
                {
                    throw new InvalidOperationException($"walk {n}: {result}");
                }

                restarts += trace.Restarts;

                // Only this thread ever clears A/D, so they must be there now.
                foreach (ulong address in uppers)
                {
                    if ((tables.Read(address) & A) == 0)
                    {
                        throw new InvalidOperationException($"walk {n}: A lost in 0x{address:x}");
                    }
                }

                if ((tables.Read(leaves[page]) & (A | D)) != (A | D))
                {
                    throw new InvalidOperationException($"walk {n}: A/D lost in the PTE");
                }

                if (n < walks - pages)
                {
                    AtomicUpdate(tables.Memory, leaves[page], ~(A | D), 0, 0);
                    foreach (ulong address in uppers)
                    {
                        AtomicUpdate(tables.Memory, address, ~A, 0, 0);
                    }
                }
            }

            Volatile.Write(ref walkerDone, 1);
        });

        // The other thread toggles and sets software-available bits in the very same entries, as fast as it can.
        Task flipper = Task.Run(() =>
        {
            start.SignalAndWait();
            bool first = true;
            while (first || Volatile.Read(ref walkerDone) == 0)
            {
                for (int i = 0; i < pages; i++)
                {
                    AtomicUpdate(tables.Memory, leaves[i], ~0UL, flipBit, first ? markBit : 0);
                    leafFlips[i]++;
                }

                for (int u = 0; u < uppers.Length; u++)
                {
                    AtomicUpdate(tables.Memory, uppers[u], ~0UL, upperFlipBit, 0);
                    upperFlips[u]++;
                }

                first = false;
            }
        });

        await Task.WhenAll(walker, flipper);

        // Nothing lost: the walker's A/D of the last walks and every one of the other thread's changes.
        for (int i = 0; i < pages; i++)
        {
            ulong entry = tables.Read(leaves[i]);
            ulong want = A | D | markBit | (leafFlips[i] % 2 == 1 ? flipBit : 0);
            Assert.True((entry & (A | D | markBit | flipBit)) == want, $"PTE {i}: 0x{entry:x}, expected bits 0x{want:x} after {leafFlips[i]} flips");
        }

        for (int u = 0; u < uppers.Length; u++)
        {
            ulong entry = tables.Read(uppers[u]);
            ulong want = A | (upperFlips[u] % 2 == 1 ? upperFlipBit : 0);
            Assert.True((entry & (A | D | upperFlipBit)) == want, $"upper entry {u}: 0x{entry:x}, expected bits 0x{want:x} after {upperFlips[u]} flips");
        }

        // Not asserted (timing-dependent): how often a walk had to restart because the other thread got in between.
        _output.WriteLine($"{walks} walks, {restarts} restarts, {leafFlips.Sum() + upperFlips.Sum()} flips");
    }

    /// <summary>A locked read-modify-write of one entry: <c>((old &amp; and) ^ xor) | or</c>.</summary>
    private static void AtomicUpdate(IPhysicalMemory memory, ulong address, ulong and, ulong xor, ulong or)
    {
        var at = PhysicalAddress.Create(address);
        while (true)
        {
            ulong old = memory.ReadUInt64(at);
            ulong updated = ((old & and) ^ xor) | or;
            if (memory.CompareExchangeUInt64(at, updated, old) == old)
            {
                return;
            }
        }
    }
}
