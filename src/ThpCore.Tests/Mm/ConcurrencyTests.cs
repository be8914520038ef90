using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Linq;
using System.Threading;
using ThpCore.Diagnostics;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;
using Xunit;

namespace ThpCore.Tests.Mm;

/// <summary>
/// Many threads on one address space (vCPUs): concurrent <see cref="AddressSpace.Access"/> calls, alone and against
/// structural operations, forks and a forked child. Every test checks the end state (folios, frames, bytes,
/// <see cref="AddressSpaceProperties.CheckBooks"/>), which does not depend on the interleaving.
/// </summary>
public sealed class ConcurrencyTests
{
    private const ulong K4 = 4096;
    private const ulong M2 = 2UL << 20;
    private const Protection Rw = Protection.Read | Protection.Write;
    private const int Threads = 4;
    private static readonly TimeSpan s_timeout = TimeSpan.FromSeconds(60);

    private static readonly ThpSettings s_always = new() { Enabled = ThpEnabled.Always };
    private static readonly ThpSettings s_never = new() { Enabled = ThpEnabled.Never };

    [Theory]
    [InlineData(AccessKind.Write)]
    [InlineData(AccessKind.Read)]
    public void Threads_touching_one_fresh_THP_region_at_once_get_one_folio_and_one_fault_handled(AccessKind kind)
    {
        // The frames one fault on a fresh node takes (upper tables, deposited table, the folio or huge zero page).
        AddressSpace reference = AddressSpaceTests.Create(s_always);
        VirtualAddress referenceStart = reference.Map(M2, Rw);
        ulong referenceFree = reference.Node.Buddy.FreeFrames;
        Assert.True(reference.Access(referenceStart, kind).IsTranslated);
        ulong framesTaken = referenceFree - reference.Node.Buddy.FreeFrames;

        for (int iteration = 0; iteration < 40; iteration++)
        {
            AddressSpace space = AddressSpaceTests.Create(s_always);
            VirtualAddress start = space.Map(M2, Rw);
            ulong free = space.Node.Buddy.FreeFrames;
            var results = new AccessResult[Threads];

            RunTogether(Threads, t => results[t] = space.Access(start.Add((ulong)t * 37 * K4), kind));

            Assert.All(results, r => Assert.True(r.IsTranslated && r.PageSize == PageSize.Size2M, r.ToString()));
            Assert.Single(results.Select(r => r.PhysicalAddress.Value & ~(M2 - 1)).Distinct());
            FaultAction expected = kind == AccessKind.Write ? FaultAction.MappedHugePage : FaultAction.MappedHugeZeroPage;
            Assert.Equal(1, results.Count(r => r.Fault == expected));
            Assert.Equal(Threads - 1, results.Count(r => r.Fault == FaultAction.None));
            VmEvent allocated = kind == AccessKind.Write ? VmEvent.ThpFaultAlloc : VmEvent.ThpZeroPageAlloc;
            Assert.Equal(1L, space.Counters.Get(allocated));
            Assert.InRange(space.Counters.Get(VmEvent.PgFault), 1L, Threads);
            Assert.Equal(free - framesTaken, space.Node.Buddy.FreeFrames);
            Assert.Null(AddressSpaceProperties.CheckBooks([space]));
        }
    }

    [Fact]
    public void Threads_faulting_the_same_small_page_at_once_map_one_folio()
    {
        for (int iteration = 0; iteration < 40; iteration++)
        {
            AddressSpace space = AddressSpaceTests.Create(s_never);
            VirtualAddress start = space.Map(4 * K4, Rw);
            var results = new AccessResult[Threads];

            RunTogether(Threads, t => results[t] = space.Access(start.Add(K4 + ((ulong)t * 8)), AccessKind.Write));

            Assert.Single(results.Select(r => r.PhysicalAddress.FrameNumber).Distinct());
            Assert.Equal(1, results.Count(r => r.Fault == FaultAction.MappedPage));
            Folio folio = space.Node.FolioOf(results[0].PhysicalAddress.FrameNumber);
            Assert.Equal(1, folio.RefCount);
            Assert.Equal(1, folio.MapCount);
            Assert.Null(AddressSpaceProperties.CheckBooks([space]));
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Threads_writing_distinct_pages_through_the_returned_physical_addresses_read_every_byte_back(bool thp)
    {
        const int Pages = 1024;
        AddressSpace space = AddressSpaceTests.Create(thp ? s_always : s_never);
        VirtualAddress start = space.Map(Pages * K4, Rw);
        IPhysicalMemory memory = space.Node.Memory;
        static ulong Pattern(int page, int word) => ((ulong)page << 32) | ((ulong)word * 0x9E37) | 1;

        using var written = new Barrier(Threads);
        RunTogether(Threads, t =>
        {
            for (int page = t; page < Pages; page += Threads)
            {
                AccessResult result = space.Access(start.Add((ulong)page * K4), AccessKind.Write);
                Assert.True(result.IsTranslated);
                for (int word = 0; word < 512; word += 31)
                {
                    space.Node.Memory.WriteUInt64(result.PhysicalAddress.Add((ulong)word * 8), Pattern(page, word));
                }
            }

            written.SignalAndWait();

            // Every thread reads every page back, its own and the others'.
            for (int page = 0; page < Pages; page++)
            {
                AccessResult result = space.Access(start.Add((ulong)page * K4), AccessKind.Read);
                Assert.True(result.IsTranslated);
                for (int word = 0; word < 512; word += 31)
                {
                    Assert.Equal(Pattern(page, word), memory.ReadUInt64(result.PhysicalAddress.Add((ulong)word * 8)));
                }
            }
        });

        Assert.Equal(thp ? 2L : 0L, space.Counters.Get(VmEvent.ThpFaultAlloc));
        Assert.Null(AddressSpaceProperties.CheckBooks([space]));
    }

    [Fact]
    public void Accesses_racing_structural_operations_end_with_balanced_books() => AccessesRacingStructuralOperations(150, seed: 1);

    // CI does not filter traits yet: by default this runs for about 1.5 s; THPCORE_SOAK_SECONDS makes it longer.
    [Fact]
    [Trait("Category", "Soak")]
    public void Soak_accesses_racing_structural_operations_end_with_balanced_books()
    {
        double seconds = double.TryParse(Environment.GetEnvironmentVariable("THPCORE_SOAK_SECONDS"), out double s) ? s : 1.5;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        for (int seed = 2; clock.Elapsed.TotalSeconds < seconds; seed++)
        {
            AccessesRacingStructuralOperations(400, seed);
        }
    }

    [Fact]
    public void Fork_while_another_thread_faults_and_reads_the_parent_gives_children_the_parents_bytes()
    {
        const int Pages = 1024;
        AddressSpace parent = AddressSpaceTests.Create(s_always, 128UL << 20);
        VirtualAddress data = parent.Map(Pages * K4, Rw);
        VirtualAddress fresh = parent.Map(Pages * K4, Rw);
        for (int page = 0; page < Pages; page++)
        {
            Store(parent, data.Add((ulong)page * K4), 0x5000 + (ulong)page);
        }

        var children = new List<AddressSpace>();
        using var done = new ManualResetEventSlim();
        RunTogether(2, t =>
        {
            if (t == 0)
            {
                for (int i = 0; i < 6; i++)
                {
                    children.Add(parent.Fork());
                }

                done.Set();
                return;
            }

            // Reads of data (never written concurrently, so any translation is current) and write faults elsewhere.
            for (int round = 0; !done.IsSet || round < 1; round++)
            {
                for (int page = 0; page < Pages; page += 7)
                {
                    Assert.Equal(0x5000 + (ulong)page, Load(parent, data.Add((ulong)page * K4)));
                    Assert.True(parent.Access(fresh.Add((ulong)((page + round) % Pages) * K4), AccessKind.Write).IsTranslated);
                }
            }
        });

        foreach (AddressSpace space in children.Append(parent))
        {
            for (int page = 0; page < Pages; page++)
            {
                Assert.Equal(0x5000 + (ulong)page, Load(space, data.Add((ulong)page * K4)));
            }
        }

        Assert.Null(AddressSpaceProperties.CheckBooks([parent, .. children]));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Parent_and_child_faulting_fork_shared_pages_at_once_keep_every_byte_each_side_wrote(bool thp)
    {
        const int Pages = 1024;
        for (int iteration = 0; iteration < 3; iteration++)
        {
            AddressSpace parent = AddressSpaceTests.Create(thp ? s_always : s_never, 128UL << 20);
            VirtualAddress start = parent.Map(Pages * K4, Rw);
            for (int page = 0; page < Pages; page++)
            {
                Store(parent, start.Add((ulong)page * K4), Original(page));
            }

            AddressSpace child = parent.Fork();

            // The parent writes every page, the child every other page; each reads its pages back as it goes.
            RunTogether(2, t =>
            {
                AddressSpace space = t == 0 ? parent : child;
                int step = t == 0 ? 1 : 2;
                for (int page = t == 0 ? 0 : Pages - 2; page >= 0 && page < Pages; page += t == 0 ? step : -step)
                {
                    VirtualAddress va = start.Add((ulong)page * K4);
                    Store(space, va, Written(t, page));
                    Assert.Equal(Written(t, page), Load(space, va));
                }
            });

            for (int page = 0; page < Pages; page++)
            {
                VirtualAddress va = start.Add((ulong)page * K4);
                Assert.Equal(Written(0, page), Load(parent, va));
                Assert.Equal(page % 2 == 0 ? Written(1, page) : Original(page), Load(child, va));
            }

            Assert.Null(AddressSpaceProperties.CheckBooks([parent, child]));
        }

        static ulong Original(int page) => 0x0A00_0000 + (ulong)page;
        static ulong Written(int side, int page) => ((ulong)(uint)(side + 1) << 40) | (uint)page;
    }

    [Fact]
    public void Pins_and_unpins_on_other_threads_race_accesses_and_leave_no_pin_behind()
    {
        AddressSpace space = AddressSpaceTests.Create(s_always);
        VirtualAddress start = space.Map(2 * M2, Rw);
        RunTogether(Threads, t =>
        {
            for (int i = 0; i < 30; i++)
            {
                ulong page = (ulong)((t * 131) + (i * 17)) % 500;
                if (t % 2 == 0)
                {
                    using PinHandle pin = space.Pin(start.Add(page * K4), 16 * K4, write: i % 3 != 0);
                    Assert.Equal(16, pin.Pages.Count);
                }
                else
                {
                    Assert.True(space.Access(start.Add(M2 + (page * K4)), AccessKind.Write).IsTranslated);
                }
            }
        });

        // Whatever each page ended up mapped by (the THP, the huge zero page split by a write pin, 4 KiB copies), no
        // pin is left on it; CheckBooks also wants exactly one reference per mapping.
        for (ulong page = 0; page < 1024; page++)
        {
            AccessResult result = space.Access(start.Add(page * K4), AccessKind.Read);
            Assert.True(result.IsTranslated);
            Assert.False(space.Node.FolioOf(result.PhysicalAddress.FrameNumber).MaybeDmaPinned, $"page {page} is still pinned");
        }

        Assert.Null(AddressSpaceProperties.CheckBooks([space]));
    }

    [Fact]
    public void The_lock_order_is_enforced_and_nested_calls_join_the_held_lock()
    {
        AddressSpace space = AddressSpaceTests.Create(s_always);
        using (space.EnterNode())
        {
            InvalidOperationException e = Assert.Throws<InvalidOperationException>(() => space.Map(K4, Rw));
            Assert.Contains("node lock", e.Message, StringComparison.Ordinal);
        }

        using (space.EnterRead())
        {
            Assert.Throws<InvalidOperationException>(() => space.Map(K4, Rw));
            VirtualAddress none = VirtualAddress.FromRaw(M2);
            Assert.Equal(AccessStatus.Segfault, space.Access(none, AccessKind.Read).Status);
        }

        using (space.EnterWrite())
        {
            VirtualAddress start = space.Map(M2, Rw);
            space.Unmap(start, M2);
        }
    }

    [Fact]
    public void EnterWriteAll_locks_a_forked_family_and_an_access_waits_for_it()
    {
        AddressSpace parent = AddressSpaceTests.Create(s_never);
        VirtualAddress start = parent.Map(K4, Rw);
        AddressSpace child = parent.Fork();
        using var started = new ManualResetEventSlim();
        AccessResult result = default;
        Thread accessor = new(() =>
        {
            started.Set();
            result = child.Access(start, AccessKind.Write);
        });

        IDisposable family = AddressSpace.EnterWriteAll([child, parent]);
        accessor.Start();
        started.Wait(s_timeout);
        Assert.False(accessor.Join(TimeSpan.FromMilliseconds(100)), "the access ran while the family was write-locked");
        Assert.Equal(0L, parent.Counters.Get(VmEvent.PgFault));
        family.Dispose();

        Assert.True(accessor.Join(s_timeout));
        Assert.Equal(FaultAction.MappedPage, result.Fault);
        Assert.Throws<ArgumentException>(() => AddressSpace.EnterWriteAll([]));
    }

    // Accessor threads hammer two 8 MiB slots while one thread changes them: mprotect, madvise, split, munmap + mmap,
    // mremap between the slots. Segfaults are expected (a slot is often unmapped or PROT_NONE); nothing else is.
    [Fact]
    public void Migration_and_compaction_race_accesses_in_a_fork_family_and_every_byte_survives()
    {
        // Parent and child share 4 KiB pages copy-on-write and each has private pages; one thread migrates pages and
        // compacts the node while the others read (only reads: a physical address goes stale when a page moves, so
        // the bytes are checked through fresh accesses after the race).
        AddressSpace parent = AddressSpaceTests.Create(s_never, 32UL << 20);
        VirtualAddress start = parent.Map(256 * K4, Rw);
        for (ulong page = 0; page < 256; page++)
        {
            Store(parent, start.Add((page * K4) + 8), 0x5000 + page);
        }

        AddressSpace child = parent.Fork();
        for (ulong page = 0; page < 256; page += 4)
        {
            Store(child, start.Add((page * K4) + 8), 0x9000 + page); // copy-on-write: the child's own page
        }

        using var done = new ManualResetEventSlim();
        var statuses = new ConcurrentDictionary<MigrationStatus, int>();
        RunTogether(Threads, t =>
        {
            var random = new Random(t + 11);
            if (t == 0)
            {
                try
                {
                    for (int step = 0; step < 300; step++)
                    {
                        AddressSpace space = random.Next(2) == 0 ? parent : child;
                        MigrationResult result = space.Migrate(start.Add((ulong)random.Next(256) * K4));
                        statuses.AddOrUpdate(result.Status, 1, (_, n) => n + 1);
                        if (step % 50 == 49)
                        {
                            Compaction.Compact(parent.Node);
                        }
                    }
                }
                finally
                {
                    done.Set();
                }

                return;
            }

            do
            {
                AddressSpace space = random.Next(2) == 0 ? parent : child;
                AccessResult result = space.Access(start.Add(((ulong)random.Next(256) * K4) + 8), AccessKind.Read);
                Assert.Equal(AccessStatus.Translated, result.Status);
            }
            while (!done.IsSet);
        });

        Assert.True(statuses.GetValueOrDefault(MigrationStatus.Migrated) > 0, string.Join(", ", statuses));
        for (ulong page = 0; page < 256; page++)
        {
            Assert.Equal(0x5000 + page, Load(parent, start.Add((page * K4) + 8)));
            Assert.Equal(page % 4 == 0 ? 0x9000 + page : 0x5000 + page, Load(child, start.Add((page * K4) + 8)));
        }

        Assert.Null(AddressSpaceProperties.CheckBooks([parent, child]));
    }

    private static void AccessesRacingStructuralOperations(int steps, int seed)
    {
        const ulong Size = 8UL << 20;
        const int Pages = (int)(Size / K4);
        AddressSpace space = AddressSpaceTests.Create(s_always, 128UL << 20);
        VirtualAddress slotA = space.Map(Size, Rw);
        VirtualAddress slotB = space.Map(Size, Rw);
        space.Unmap(slotB, Size);
        long current = (long)slotA.Value;
        var statuses = new ConcurrentDictionary<AccessStatus, int>();
        using var done = new ManualResetEventSlim();
        Protection[] protections = [Rw, Protection.Read, Protection.None, Rw];

        RunTogether(Threads, t =>
        {
            var random = new Random((seed * 31) + t);
            if (t == 0)
            {
                try
                {
                    for (int step = 0; step < steps; step++)
                    {
                        VirtualAddress at = VirtualAddress.FromRaw((ulong)Interlocked.Read(ref current));
                        int first = random.Next(Pages);
                        VirtualAddress from = at.Add((ulong)first * K4);
                        ulong length = (ulong)random.Next(1, Math.Min(Pages - first, 1024) + 1) * K4;
                        switch (random.Next(7))
                        {
                            case 0:
                                space.Protect(from, length, protections[random.Next(protections.Length)]);
                                break;
                            case 1:
                                space.Advise(from, length, random.Next(2) == 0 ? Advice.HugePage : Advice.NoHugePage);
                                break;
                            case 2:
                                space.Advise(from, length, Advice.DontNeed);
                                break;
                            case 3:
                                space.SplitHugePmd(from);
                                break;
                            case 4:
                                space.Unmap(at, Size);
                                Assert.Equal(slotA, space.Map(Size, Rw));
                                Interlocked.Exchange(ref current, (long)slotA.Value);
                                break;
                            default:
                                // mremap moves one VMA: make the slot's pieces alike again so that they merge.
                                space.Protect(at, Size, Rw);
                                space.Advise(at, Size, Advice.HugePage);
                                VirtualAddress other = at == slotA ? slotB : slotA;
                                Assert.Equal(other, space.Remap(at, Size, Size, RemapFlags.MayMove | RemapFlags.Fixed, other));
                                Interlocked.Exchange(ref current, (long)other.Value);
                                break;
                        }
                    }
                }
                finally
                {
                    done.Set();
                }

                return;
            }

            do
            {
                ulong va = (random.Next(2) == 0 ? slotA : slotB).Value + ((ulong)random.Next(Pages) * K4);
                AccessResult result = space.Access(VirtualAddress.FromRaw(va), random.Next(3) == 0 ? AccessKind.Read : AccessKind.Write);
                statuses.AddOrUpdate(result.Status, 1, (_, n) => n + 1);
            }
            while (!done.IsSet);
        });

        // How many accesses translate depends on the interleaving (a slot may be PROT_NONE or unmapped throughout).
        Assert.Subset(new HashSet<AccessStatus> { AccessStatus.Translated, AccessStatus.Segfault }, statuses.Keys.ToHashSet());
        Assert.True(statuses.Values.Sum() >= Threads - 1);
        Assert.Null(AddressSpaceProperties.CheckBooks([space]));
    }

    private static void Store(AddressSpace space, VirtualAddress va, ulong value)
    {
        AccessResult result = space.Access(va, AccessKind.Write);
        Assert.True(result.IsTranslated, $"{va}: {result}");
        space.Node.Memory.WriteUInt64(result.PhysicalAddress, value);
    }

    private static ulong Load(AddressSpace space, VirtualAddress va)
    {
        AccessResult result = space.Access(va, AccessKind.Read);
        Assert.True(result.IsTranslated, $"{va}: {result}");
        return ((IPhysicalMemory)space.Node.Memory).ReadUInt64(result.PhysicalAddress);
    }

    // Starts count threads behind a barrier, runs body(index) on each, and fails with every exception they threw.
    private static void RunTogether(int count, Action<int> body)
    {
        using var barrier = new Barrier(count);
        var errors = new ConcurrentQueue<Exception>();
        var threads = new Thread[count];
        for (int t = 0; t < count; t++)
        {
            int index = t;
            threads[t] = new Thread(() =>
            {
                try
                {
                    barrier.SignalAndWait(s_timeout);
                    body(index);
                }
                catch (Exception e)
                {
                    errors.Enqueue(e);
                }
            })
            { IsBackground = true };
            threads[t].Start();
        }

        foreach (Thread thread in threads)
        {
            Assert.True(thread.Join(s_timeout), "a thread did not finish within the timeout (deadlock?)");
        }

        if (!errors.IsEmpty)
        {
            throw new AggregateException(errors);
        }
    }
}
