using System;
using System.Collections.Generic;
using System.Linq;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using ThpCore.Collapse;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;
using ThpCore.Tests.Mm;
using Xunit;
using static ThpCore.Tests.Mm.MmFixtures;

namespace ThpCore.Tests.Collapse;

public sealed class InPlaceCollapseProperties
{
    private const ulong AccessedDirty = 0x60;

    // The rule written out plainly: entry 0 present and 2 MiB-aligned; entry i = entry 0's frame + i, all other bits
    // but A and D equal to entry 0's. Returns the first bad index or -1, and the OR of A|D over the entries before it.
    private static int Reference(ulong[] table, out ulong accessedDirty)
    {
        accessedDirty = 0;
        ulong first = table[0];
        if ((first & 1) == 0 || ((first & PageTableEntry.AddressMask4K) % (2UL << 20)) != 0)
        {
            return 0;
        }

        for (int i = 0; i < 512; i++)
        {
            bool frameOk = (table[i] & PageTableEntry.AddressMask4K) == (first & PageTableEntry.AddressMask4K) + ((ulong)i * 4096);
            bool bitsOk = ((table[i] ^ first) & ~(PageTableEntry.AddressMask4K | AccessedDirty)) == 0;
            if (!frameOk || !bitsOk)
            {
                return i;
            }

            accessedDirty |= table[i] & AccessedDirty;
        }

        return -1;
    }

    private static void AssertAllPathsAgree(ulong[] table)
    {
        int expected = Reference(table, out ulong expectedBits);
        Assert.Equal(expected, PteRunCheck.FindFirstMismatchScalar(table, out ulong scalarBits));
        Assert.Equal(expected, PteRunCheck.FindFirstMismatchVector128(table, out ulong v128Bits));
        Assert.Equal(expected, PteRunCheck.FindFirstMismatchVector256(table, out ulong v256Bits));
        Assert.Equal(expected, PteRunCheck.FindFirstMismatch(table, out ulong bits));
        Assert.Equal(expectedBits, scalarBits);
        Assert.Equal(expectedBits, v128Bits);
        Assert.Equal(expectedBits, v256Bits);
        Assert.Equal(expectedBits, bits);
    }

    private static ulong[] Run(ulong baseFrame, ulong attributes, ulong[] accessedDirty)
    {
        ulong[] table = new ulong[512];
        for (int i = 0; i < 512; i++)
        {
            table[i] = ((baseFrame * 512UL) + (ulong)i) << 12 | (attributes & ~(PageTableEntry.AddressMask4K | AccessedDirty)) | 1UL | (accessedDirty[i] & AccessedDirty);
        }

        return table;
    }

    private static readonly Gen<ulong[]> s_runs =
        from baseFrame in Gen.Choose(0, (1 << 20) - 1)
        from attributes in ArbMap.Default.GeneratorFor<ulong>()
        from ad in Gen.Elements(0UL, 0x20UL, 0x40UL, 0x60UL).ArrayOf(512)
        select Run((ulong)baseFrame, attributes, ad);

    [Property(MaxTest = 200)]
    public Property Vector_and_scalar_paths_agree_on_random_runs_and_single_bit_mutations() =>
        Prop.ForAll(Arb.From(s_runs), Arb.From(Gen.Choose(0, 511)), Arb.From(Gen.Choose(0, 63)), (table, index, bit) =>
        {
            AssertAllPathsAgree(table);
            Assert.Equal(-1, Reference(table, out _));
            table[index] ^= 1UL << bit;
            AssertAllPathsAgree(table);
        });

    [Fact]
    public void Every_single_bit_mutation_of_one_run_is_found_at_its_index_by_every_path()
    {
        ulong[] table = Run(0x1234, 0x8000_0000_0000_0004UL, Enumerable.Range(0, 512).Select(i => (ulong)(i % 4) << 5).ToArray());
        for (int index = 0; index < 512; index++)
        {
            for (int bit = 0; bit < 64; bit++)
            {
                table[index] ^= 1UL << bit;
                // Entry 0 sets the standard: changing its P bit or its offset in the 2 MiB run breaks it at once; any
                // other bit of it (but A, D) makes entry 1 the first to disagree.
                int expected = bit is 5 or 6 ? -1 : index > 0 ? index : bit is 0 or (>= 12 and <= 20) ? 0 : 1;
                Assert.Equal(expected, Reference(table, out _));
                AssertAllPathsAgree(table);
                table[index] ^= 1UL << bit;
            }
        }
    }

    public enum Step
    {
        Protect,
        Madvise,
        Mremap,
        Pin,
        Fork,
        Write,
        DontNeed,
    }

    // Property: random sequences that PTE-map THPs (mprotect, madvise, mremap round trips), pin, fork, write and punch
    // holes, then TryCollapseInPlace on every 2 MiB of every space, keep the books (MmBooks) and every byte written.
    [Property(MaxTest = 40)]
    public Property Collapsing_everywhere_after_random_PTE_mapping_keeps_books_and_bytes() =>
        Prop.ForAll(Arb.From(Gen.Elements(Enum.GetValues<Step>()).Zip(Gen.Choose(0, 1023)).ArrayOf()), steps =>
        {
            var node = new MemoryNode(48UL << 20);
            var spaces = new List<AddressSpace> { new(node, Always) };
            var pins = new List<PinHandle>();
            VirtualAddress start = spaces[0].Map(2 * M2, Rw);
            var written = new List<Dictionary<ulong, byte>> { new() };
            byte mark = 1;
            foreach ((Step step, int at) in steps.Take(12))
            {
                int which = at % spaces.Count;
                AddressSpace space = spaces[which];
                VirtualAddress page = start.Add((ulong)(at % 1024) * K4);
                switch (step)
                {
                    case Step.Protect:
                        space.Protect(page, K4, Protection.Read);
                        space.Protect(page, K4, Rw);
                        break;
                    case Step.Madvise:
                        space.Advise(page, K4, Advice.NoHugePage);
                        space.Advise(start, 2 * M2, Advice.HugePage);
                        break;
                    case Step.Mremap:
                        VirtualAddress spare = space.Map(K4, Rw);
                        space.Remap(page, K4, K4, RemapFlags.MayMove | RemapFlags.Fixed, spare);
                        space.Remap(spare, K4, K4, RemapFlags.MayMove | RemapFlags.Fixed, page);
                        break;
                    case Step.Pin:
                        pins.Add(space.Pin(page, 4 * K4 <= start.Value + (2 * M2) - page.Value ? 4 * K4 : K4, write: true));
                        break;
                    case Step.Fork when spaces.Count < 3:
                        spaces.Add(space.Fork());
                        written.Add(new Dictionary<ulong, byte>(written[which]));
                        break;
                    case Step.Write:
                        AccessResult write = space.Access(page, AccessKind.Write);
                        node.Memory.GetWritableFrame(write.PhysicalAddress.FrameNumber)[0] = mark;
                        written[which][page.Value] = mark++;
                        break;
                    case Step.DontNeed:
                        space.Advise(page, K4, Advice.DontNeed);
                        written[which].Remove(page.Value);
                        break;
                }
            }

            foreach (AddressSpace space in spaces)
            {
                foreach (ulong chunk in new[] { start.Value, start.Value + M2 })
                {
                    CollapseResult result = Collapser.TryCollapseInPlace(space, VirtualAddress.FromRaw(chunk));
                    result.Invalidation.ApplyTo(new Tlb(), space.Cpu);
                }
            }

            Assert.Null(MmBooks.Check(spaces, pins, null));
            for (int s = 0; s < spaces.Count; s++)
            {
                foreach ((ulong va, byte value) in written[s])
                {
                    AccessResult read = spaces[s].Access(VirtualAddress.FromRaw(va), AccessKind.Read);
                    Assert.Equal(value, node.Memory.ReadFrame(read.PhysicalAddress.FrameNumber)[0]);
                }
            }

            pins.ForEach(p => p.Dispose());
            Assert.Null(MmBooks.Check(spaces, [], null));
        });
}
