using System;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using ThpCore.Paging;
using Xunit;
using static ThpCore.Tests.Paging.SdmBits;

namespace ThpCore.Tests.Paging;

/// <summary>
/// Encode/decode properties of entries and addresses over random values. Bit positions in the oracles below
/// are the SDM's (see TestData/entry-bit-positions.txt), written as literals.
/// </summary>
public sealed class EntryProperties
{
    // SDM positions: P 0, R/W 1, U/S 2, PWT 3, PCD 4, A 5, D 6, G 8, XD 63.
    private const ulong FixedFlagBits = 0x8000_0000_0000_017FUL;
    private const ulong PkBits = 0x7800_0000_0000_0000UL; // 62:59

    public sealed record LeafCase(PageSize Size, ulong Frame, PageTableFlags Flags, bool Pat, int Key);

    public sealed record TableCase(PagingLevel Level, ulong Table, PageTableFlags Flags);

    public sealed record RawCase(PagingLevel Level, ulong Raw, ulong Other);

    public sealed record AddressCase(ulong Value, PagingMode Mode);

    public sealed record ReservedCase(PagingLevel Level, ulong Raw, int MaxPhysicalAddressBits, bool Nxe, bool Has1G, CpuVendor Vendor);

    /// <summary>Any 64-bit value, biased toward the edges (single bits, all-but-one bits, 0, all ones).</summary>
    private static Gen<ulong> AnyUInt64 { get; } = Gen.OneOf(
        from a in Gen.Choose(0, 0xFFFF)
        from b in Gen.Choose(0, 0xFFFF)
        from c in Gen.Choose(0, 0xFFFF)
        from d in Gen.Choose(0, 0xFFFF)
        select ((ulong)(uint)a << 48) | ((ulong)(uint)b << 32) | ((ulong)(uint)c << 16) | (uint)d,
        Gen.Choose(0, 63).Select(i => 1UL << i),
        Gen.Choose(0, 63).Select(i => ~(1UL << i)),
        Gen.Elements(0UL, ulong.MaxValue));

    private static Gen<PagingLevel> AnyLevel { get; } = Gen.Elements(PagingLevel.Pt, PagingLevel.Pd, PagingLevel.Pdpt, PagingLevel.Pml4, PagingLevel.Pml5);

    private static Gen<PageSize> AnySize { get; } = Gen.Elements(PageSize.Size4K, PageSize.Size2M, PageSize.Size1G);

    private static Gen<PagingMode> AnyMode { get; } = Gen.Elements(PagingMode.FourLevel, PagingMode.FiveLevel);

    private static Gen<bool> AnyBool { get; } = Gen.Elements(false, true);

    private static Arbitrary<LeafCase> Leaves { get; } = (
        from size in AnySize
        from frame in AnyUInt64
        from flags in AnyUInt64
        from pat in AnyBool
        from key in Gen.Choose(0, 15)
        select new LeafCase(size, frame & Bits(51, size.Shift()), (PageTableFlags)(flags & FixedFlagBits), pat, key)).ToArbitrary();

    private static Arbitrary<TableCase> Tables { get; } = (
        from level in Gen.Elements(PagingLevel.Pd, PagingLevel.Pdpt, PagingLevel.Pml4, PagingLevel.Pml5)
        from table in AnyUInt64
        from flags in AnyUInt64
        select new TableCase(level, table & Bits(51, 12), (PageTableFlags)(flags & FixedFlagBits))).ToArbitrary();

    private static Arbitrary<RawCase> Raws { get; } = (
        from level in AnyLevel
        from raw in AnyUInt64
        from other in AnyUInt64
        select new RawCase(level, raw, other)).ToArbitrary();

    private static Arbitrary<AddressCase> Addresses { get; } = (
        from value in AnyUInt64
        from mode in AnyMode
        select new AddressCase(value, mode)).ToArbitrary();

    private static Arbitrary<ReservedCase> ReservedCases { get; } = (
        from level in AnyLevel
        from raw in AnyUInt64
        from m in Gen.Choose(32, 52)
        from nxe in AnyBool
        from has1G in AnyBool
        from vendor in Gen.Elements(CpuVendor.Intel, CpuVendor.Amd)
        select new ReservedCase(level, raw, m, nxe, has1G, vendor)).ToArbitrary();

    [Property]
    public Property Leaf_then_read_back_gives_the_frame_flags_PAT_and_key_at_every_size() => Prop.ForAll(Leaves, c =>
    {
        PageTableEntry e = PageTableEntry.Leaf(c.Size, PhysicalAddress.Create(c.Frame), c.Flags, c.Pat, c.Key);

        // The SDM encoding, from literals: PS is bit 7 of a large leaf; PAT is bit 7 of a PTE, bit 12 of a large leaf.
        ulong ps = c.Size == PageSize.Size4K ? 0 : Bit(7);
        ulong pat = c.Pat ? (c.Size == PageSize.Size4K ? Bit(7) : Bit(12)) : 0;
        Assert.Equal(c.Frame | (ulong)c.Flags | ps | pat | ((ulong)c.Key << 59), e.Raw);

        Assert.Equal(c.Size.LeafLevel(), e.Level);
        Assert.True(e.IsLeaf);
        Assert.Equal(c.Size, e.LeafSize);
        Assert.Equal(c.Frame, e.Address.Value);
        Assert.Equal(c.Flags, e.Flags);
        Assert.Equal(c.Pat, e.Pat);
        Assert.Equal(c.Key, e.ProtectionKey);
        Assert.Equal(0UL, e.AvailableBits);
        Assert.Equal(((ulong)c.Flags & Bit(6)) != 0, e.IsDirty);
        Assert.Equal(((ulong)c.Flags & Bit(8)) != 0, e.IsGlobal);
    });

    [Property]
    public Property Table_then_read_back_gives_the_address_and_flags_at_every_level() => Prop.ForAll(Tables, c =>
    {
        PageTableEntry e = PageTableEntry.Table(c.Level, PhysicalAddress.Create(c.Table), c.Flags);
        Assert.Equal(c.Table | (ulong)c.Flags, e.Raw);
        Assert.Equal(c.Level, e.Level);
        Assert.False(e.IsLeaf);
        Assert.Null(e.LeafSize);
        Assert.False(e.PageSizeBit);
        Assert.Equal(c.Table, e.Address.Value);
        Assert.Equal(c.Flags, e.Flags);
    });

    [Property]
    public Property Decoding_then_re_encoding_keeps_every_bit_that_is_not_reserved() => Prop.ForAll(Raws, c =>
    {
        var e = new PageTableEntry(c.Level, c.Raw);
        PageTableEntry rebuilt = e.IsLeaf
            ? PageTableEntry.Leaf(e.LeafSize!.Value, e.Address, e.Flags, e.Pat, e.ProtectionKey).WithAvailableBits(e.AvailableBits)
            : PageTableEntry.Table(c.Level, e.Address, e.Flags).WithAvailableBits(e.AvailableBits);

        // Only the bits no field covers are lost: 20:13 of a 2 MiB leaf, 29:13 of a 1 GiB leaf and bit 7 of a
        // PML4E/PML5E (all reserved). Bits 6 and 8 of a table entry come back through Flags.
        ulong lost = (e.IsLeaf, c.Level) switch
        {
            (true, PagingLevel.Pd) => Bits(20, 13),
            (true, PagingLevel.Pdpt) => Bits(29, 13),
            (false, _) => Bit(7),
            _ => 0,
        };
        Assert.Equal(c.Raw & ~lost, rebuilt.Raw);
        Assert.Equal(c.Level, rebuilt.Level);
    });

    [Property]
    public Property With_then_read_back_changes_only_that_field_at_every_level() => Prop.ForAll(Raws, c =>
    {
        var e = new PageTableEntry(c.Level, c.Raw);
        bool v = (c.Other & 1) != 0;

        Check(e.WithPresent(v), Bit(0), x => x.IsPresent);
        Check(e.WithWritable(v), Bit(1), x => x.IsWritable);
        Check(e.WithUser(v), Bit(2), x => x.IsUser);
        Check(e.WithWriteThrough(v), Bit(3), x => x.IsWriteThrough);
        Check(e.WithCacheDisabled(v), Bit(4), x => x.IsCacheDisabled);
        Check(e.WithAccessed(v), Bit(5), x => x.IsAccessed);
        Check(e.WithExecuteDisable(v), Bit(63), x => x.IsExecuteDisable);
        if (c.Level != PagingLevel.Pt)
        {
            Check(e.WithPageSizeBit(v), Bit(7), x => x.PageSizeBit);
        }

        if (e.IsLeaf)
        {
            Check(e.WithDirty(v), Bit(6), x => x.IsDirty);
            Check(e.WithGlobal(v), Bit(8), x => x.IsGlobal);
            Check(e.WithPat(v), c.Level == PagingLevel.Pt ? Bit(7) : Bit(12), x => x.Pat);

            int key = (int)(c.Other >> 60);
            PageTableEntry keyed = e.WithProtectionKey(key);
            Assert.Equal(key, keyed.ProtectionKey);
            Assert.Equal(0UL, (keyed.Raw ^ c.Raw) & ~PkBits);
        }

        ulong address = c.Other & e.AddressMask;
        PageTableEntry moved = e.WithAddress(PhysicalAddress.Create(address));
        Assert.Equal(address, moved.Address.Value);
        Assert.Equal(0UL, (moved.Raw ^ c.Raw) & ~e.AddressMask);

        ulong available = c.Other & e.AvailableMask;
        PageTableEntry marked = e.WithAvailableBits(available);
        Assert.Equal(available, marked.AvailableBits);
        Assert.Equal(0UL, (marked.Raw ^ c.Raw) & ~e.AvailableMask);

        Assert.Equal(c.Other, e.WithRaw(c.Other).Raw);
        Assert.Equal(c.Level, e.WithRaw(c.Other).Level);

        void Check(PageTableEntry changed, ulong bit, Func<PageTableEntry, bool> read)
        {
            Assert.Equal(v, read(changed));
            Assert.Equal(c.Level, changed.Level);
            Assert.Equal(v ? c.Raw | bit : c.Raw & ~bit, changed.Raw);
        }
    });

    [Property]
    public Property Reserved_bits_of_any_raw_value_are_the_SDM_set() => Prop.ForAll(ReservedCases, c =>
    {
        ReservedBitMasks masks = ReservedBitMasks.For(c.MaxPhysicalAddressBits, c.Nxe, c.Has1G, c.Vendor);
        bool bit7 = (c.Raw & Bit(7)) != 0;
        EntryKind kind = c.Level switch
        {
            PagingLevel.Pml5 => EntryKind.Pml5e,
            PagingLevel.Pml4 => EntryKind.Pml4e,
            PagingLevel.Pdpt => bit7 ? EntryKind.Pdpte1G : EntryKind.PdptePd,
            PagingLevel.Pd => bit7 ? EntryKind.Pde2M : EntryKind.PdePt,
            _ => EntryKind.Pte,
        };
        ulong expected = (c.Raw & 1) == 0 ? 0 : c.Raw & ReservedBitTests.Expected(kind, c.MaxPhysicalAddressBits, c.Nxe, c.Has1G, c.Vendor);
        Assert.Equal(expected, new PageTableEntry(c.Level, c.Raw).GetReservedBits(masks));
    });

    [Property]
    public Property VirtualAddress_CreateTruncate_is_canonical_and_idempotent() => Prop.ForAll(Addresses, c =>
    {
        VirtualAddress once = VirtualAddress.CreateTruncate(c.Value, c.Mode);
        Assert.True(once.IsCanonicalIn(c.Mode));
        Assert.Equal(once, VirtualAddress.CreateTruncate(once.Value, c.Mode));
        Assert.Equal(once, VirtualAddress.Create(once.Value, c.Mode));

        // The significant bits are kept; canonical exactly when truncation changes nothing.
        int bits = c.Mode == PagingMode.FourLevel ? 48 : 57;
        Assert.Equal(c.Value & Bits(bits - 1, 0), once.Value & Bits(bits - 1, 0));
        Assert.Equal(once.Value == c.Value, VirtualAddress.IsCanonical(c.Value, c.Mode));

        // A 48-bit canonical address is 57-bit canonical too.
        if (c.Mode == PagingMode.FourLevel)
        {
            Assert.True(once.IsCanonicalIn(PagingMode.FiveLevel));
        }
    });

    [Property]
    public Property PhysicalAddress_CreateTruncate_is_idempotent_and_Create_checks_MAXPHYADDR() => Prop.ForAll(
        (from value in AnyUInt64 from m in Gen.Choose(1, 52) select (value, m)).ToArbitrary(),
        c =>
        {
            PhysicalAddress once = PhysicalAddress.CreateTruncate(c.value);
            Assert.Equal(c.value & Bits(51, 0), once.Value);
            Assert.Equal(once, PhysicalAddress.CreateTruncate(once.Value));

            bool fits = c.value < (1UL << c.m);
            Assert.Equal(fits, PhysicalAddress.TryCreate(c.value, c.m, out _));
            if (!fits)
            {
                Assert.Throws<ArgumentOutOfRangeException>(() => PhysicalAddress.Create(c.value, c.m));
            }
        });

    [Property]
    public Property Indices_and_offset_reassemble_the_address() => Prop.ForAll(Addresses, c =>
    {
        VirtualAddress va = VirtualAddress.CreateTruncate(c.Value, c.Mode);
        int levels = c.Mode == PagingMode.FourLevel ? 4 : 5;
        int[] indices = new int[levels];
        ulong sum = va.PageOffset(PageSize.Size4K);
        for (int i = 0; i < levels; i++)
        {
            var level = (PagingLevel)(levels - i);
            indices[i] = va.IndexAt(level);
            Assert.InRange(indices[i], 0, 511);
            sum |= (ulong)indices[i] << (12 + (9 * (levels - i - 1)));
        }

        // Sign-extend from bit 47 or 56 by hand.
        int top = levels == 4 ? 47 : 56;
        if ((sum & Bit(top)) != 0)
        {
            sum |= Bits(63, top + 1);
        }

        Assert.Equal(va.Value, sum);
        Assert.Equal(va, VirtualAddress.FromIndices(c.Mode, indices, va.PageOffset(PageSize.Size4K)));

        // Larger pages: the offset absorbs the indices below the leaf.
        Assert.Equal(((ulong)va.IndexAt(PagingLevel.Pt) << 12) | va.PageOffset(PageSize.Size4K), va.PageOffset(PageSize.Size2M));
        Assert.Equal(((ulong)va.IndexAt(PagingLevel.Pd) << 21) | va.PageOffset(PageSize.Size2M), va.PageOffset(PageSize.Size1G));
        foreach (PageSize size in new[] { PageSize.Size4K, PageSize.Size2M, PageSize.Size1G })
        {
            Assert.Equal(va.Value, va.AlignDown(size).Value + va.PageOffset(size));
            Assert.True(va.AlignDown(size).IsAligned(size));
            Assert.True(va.AlignDown(size).IsCanonicalIn(c.Mode));
        }
    });
}
