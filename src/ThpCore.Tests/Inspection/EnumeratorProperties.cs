using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using ThpCore.Inspection;
using ThpCore.Paging;
using ThpCore.Tests.Paging;
using Xunit;
using static ThpCore.Tests.Inspection.InspectionTestSupport;
using EnumerationOptions = ThpCore.Inspection.EnumerationOptions;

namespace ThpCore.Tests.Inspection;

/// <summary>
/// Properties of the enumerator: over garbage it never throws and always ends within its limits, and whatever it
/// lists a CPU would translate the same way; over tables built by the mapper it lists exactly what was mapped.
/// </summary>
public sealed class EnumeratorProperties
{
    private const long MaxLeaves = 20_000;
    private const long MaxEntriesRead = 200_000;

    /// <summary>
    /// Random table contents: <paramref name="Frames"/> frames of words drawn from <paramref name="Seed"/>,
    /// <paramref name="ZeroPercent"/> % of them zero (sparse tables end, dense ones hit the limits) and most of the
    /// rest plausible entries pointing into the small memory (so that the garbage is walked deeply, with cycles,
    /// sharing and fan-out), some fully random; CR3 may point outside memory.
    /// </summary>
    public sealed record GarbageCase(int Seed, int Frames, int RootFrame, bool FiveLevel, bool Nxe, int MaxPhysicalAddressBits, int ZeroPercent)
    {
        public const int MemoryFrames = 8;

        public SparsePhysicalMemory Build()
        {
            var memory = new SparsePhysicalMemory(MemoryFrames * 4096UL);
            var random = new Random(Seed);
            for (int frame = 0; frame < Frames; frame++)
            {
                for (int i = 0; i < 512; i++)
                {
                    memory.WriteUInt64(PhysicalAddress.Create(((ulong)frame << 12) + ((ulong)i * 8)), random.Next(100) < ZeroPercent ? 0 : Word(random));
                }
            }

            return memory;
        }

        public CpuState Cpu() =>
            CpuState.Create(
                (ulong)RootFrame << 12,
                Cr4Flags.Pae | (FiveLevel ? Cr4Flags.La57 : Cr4Flags.None),
                EferFlags.Lme | EferFlags.Lma | (Nxe ? EferFlags.Nxe : EferFlags.None),
                features: new CpuFeatures { MaxPhysicalAddressBits = MaxPhysicalAddressBits });

        public override string ToString() => $"seed {Seed}, {Frames} frames, root frame {RootFrame}, {(FiveLevel ? "5" : "4")}-level, NXE {Nxe}, MAXPHYADDR {MaxPhysicalAddressBits}, {ZeroPercent}% zero";

        private static ulong Word(Random random)
        {
            ulong high = random.Next(8) == 0 ? (ulong)random.NextInt64() << 1 & 0xFFF0_0000_0000_0000UL : 0;
            return random.Next(10) switch
            {
                0 => 0,
                1 => (ulong)random.NextInt64() ^ ((ulong)(uint)random.Next() << 33),
                2 => (ulong)(uint)random.Next(1 << 12) & ~1UL,
                _ => ((ulong)(uint)random.Next(MemoryFrames + 2) << 12) | (ulong)(uint)random.Next(1 << 12) | 1UL | high,
            };
        }
    }

    public static Arbitrary<GarbageCase> GarbageCases() => (
        from seed in Gen.Choose(0, int.MaxValue)
        from frames in Gen.Choose(1, GarbageCase.MemoryFrames)
        from root in Gen.Choose(0, GarbageCase.MemoryFrames + 1)
        from fiveLevel in Gen.Elements(false, true)
        from nxe in Gen.Elements(true, true, false)
        from maxPhysical in Gen.Elements(36, 46, 52)
        from zeroPercent in Gen.Elements(0, 50, 90, 98, 99)
        select new GarbageCase(seed, frames, root, fiveLevel, nxe, maxPhysical, zeroPercent)).ToArbitrary();

    [Property(Arbitrary = new[] { typeof(EnumeratorProperties) }, MaxTest = 150)]
    public void Garbage_tables_never_throw_end_within_the_limits_and_list_only_what_a_CPU_would_translate(GarbageCase garbage)
    {
        SparsePhysicalMemory memory = garbage.Build();
        CpuState cpu = garbage.Cpu();
        var options = new EnumerationOptions { MaxLeaves = MaxLeaves, MaxEntriesRead = MaxEntriesRead, MaxAnomalies = 1_000 };

        (List<Mapping> mappings, PageTableEnumerator enumerator) = EnumerateAll(memory, cpu, options);

        Assert.InRange(enumerator.EntriesRead, 0, MaxEntriesRead);
        Assert.InRange(enumerator.LeafCount, 0, MaxLeaves);
        Assert.Equal(enumerator.LeafCount, mappings.Count);
        Assert.True(enumerator.Completed ^ enumerator.Stopped);
        Assert.InRange(enumerator.Anomalies.Count, 0, options.MaxAnomalies + 1);
        Assert.All(mappings.Zip(mappings.Skip(1)), pair => Assert.True(pair.First.Address < pair.Second.Address, "addresses strictly increase"));
        Assert.All(mappings, m => Assert.True(m.Address.IsCanonicalIn(cpu.PagingMode)));
        foreach (Mapping mapping in mappings.Take(200))
        {
            AssertWalkerAgrees(memory, cpu, mapping);
        }

        var writer = new StringWriter();
        InfoTlb.Write(writer, mappings);
        Assert.Equal(mappings.Count * InfoTlb.LineLength, writer.ToString().Length);

        ThpReport report = ThpAnalyzer.Analyze(memory, cpu, enumeration: options);
        Assert.Equal(enumerator.LeafCount, report.Leaves4K + report.Leaves2M + report.Leaves1G);
        Assert.Equal(enumerator.Stopped, report.Stopped);
    }

    [Property(Arbitrary = new[] { typeof(MapperArbitraries) }, MaxTest = 100)]
    public void Tables_built_by_the_mapper_list_exactly_the_mapped_pages_in_address_order(MappingScenario scenario)
    {
        PagingMode mode = scenario.FiveLevel ? PagingMode.FiveLevel : PagingMode.FourLevel;
        (PageTableMapper mapper, SparsePhysicalMemory memory, CpuState cpu) = NewMapper(mode);
        var accepted = new List<(ulong Va, PageSize Size, ulong Frame, EffectiveRights Rights)>();
        foreach (MappingSpec spec in scenario.Mappings)
        {
            VirtualAddress page = spec.Page(mode);
            ulong start = page.Value;
            ulong end = start + spec.Size.Bytes();
            if (accepted.Any(m => start < m.Va + m.Size.Bytes() && m.Va < end))
            {
                continue;
            }

            PageTableFlags flags = PageTableFlags.Present | (spec.Writable ? PageTableFlags.Writable : 0) | (spec.User ? PageTableFlags.User : 0);
            mapper.Map(page, spec.Frame, spec.Size, flags).Ignore();
            var rights = (spec.Writable ? EffectiveRights.Writable : 0) | (spec.User ? EffectiveRights.User : 0);
            accepted.Add((start, spec.Size, spec.Frame.Value, rights));
        }

        (List<Mapping> mappings, PageTableEnumerator enumerator) = EnumerateAll(memory, cpu);

        Assert.Equal(accepted.OrderBy(m => m.Va), mappings.Select(m => (m.Address.Value, m.Size, m.Frame.Value, m.Rights)));
        Assert.Empty(enumerator.Anomalies);
        Assert.All(mappings, m => AssertWalkerAgrees(memory, cpu, m));
    }
}
