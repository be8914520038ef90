using System;
using System.Collections.Generic;
using ThpCore.Paging;

namespace ThpCore.Tests.Paging;

/// <summary>
/// Test-only page-table builder: writes raw 64-bit entries into a <see cref="SparsePhysicalMemory"/> with
/// nothing but shifts and masks, so walker and TLB tests do not depend on any library mapper or entry encoder.
/// Tables are handed out from a bump allocator starting at <see cref="FirstTable"/>; the root is the first, and
/// <see cref="NewTable"/> gives further roots (other address spaces) as well as tables.
/// Leaves are written exactly as given (<see cref="P"/> included); data frames are just numbers (never touched).
/// </summary>
internal sealed class TestTables
{
    public const ulong P = 1UL << 0;
    public const ulong RW = 1UL << 1;
    public const ulong US = 1UL << 2;
    public const ulong PWT = 1UL << 3;
    public const ulong PCD = 1UL << 4;
    public const ulong A = 1UL << 5;
    public const ulong D = 1UL << 6;
    public const ulong PS = 1UL << 7;
    public const ulong G = 1UL << 8;
    public const ulong XD = 1UL << 63;

    /// <summary>P | R/W | U/S: an upper-level entry that restricts nothing.</summary>
    public const ulong Open = P | RW | US;

    /// <summary>Bits 51:12 of an entry that references a table (the test's own constant).</summary>
    public const ulong TableAddressBits = 0x000F_FFFF_FFFF_F000UL;

    public const ulong FirstTable = 0x10_0000;

    private readonly List<ulong> _tables = new();
    private ulong _nextTable = FirstTable;

    public TestTables(PagingMode mode = PagingMode.FourLevel, ulong memorySize = 1UL << 30)
    {
        Mode = mode;
        Memory = new SparsePhysicalMemory(memorySize);
        Root = NewTable();
    }

    public SparsePhysicalMemory Memory { get; }

    public PagingMode Mode { get; }

    public ulong Root { get; }

    public PagingLevel RootLevel => Mode == PagingMode.FiveLevel ? PagingLevel.Pml5 : PagingLevel.Pml4;

    public IReadOnlyList<ulong> Tables => _tables;

    /// <summary>
    /// A CPU in this mode with CR3 = <paramref name="root"/> (default <see cref="Root"/>) | <paramref name="pcid"/>:
    /// CR4.PAE (+LA57), EFER.NXE, CR0.WP unless told otherwise. CR4.PGE only if <paramref name="extraCr4"/> has it.
    /// </summary>
    public CpuState Cpu(
        Cr4Flags extraCr4 = Cr4Flags.None,
        bool nxe = true,
        bool writeProtect = true,
        bool alignmentCheck = false,
        uint pkru = 0,
        CpuFeatures? features = null,
        int pcid = 0,
        ulong? root = null) =>
        CpuState.Create(
            (root ?? Root) | (uint)pcid,
            Cr4Flags.Pae | extraCr4 | (Mode == PagingMode.FiveLevel ? Cr4Flags.La57 : Cr4Flags.None),
            EferFlags.Lme | EferFlags.Lma | (nxe ? EferFlags.Nxe : EferFlags.None),
            writeProtect,
            alignmentCheck,
            pkru,
            features);

    public static int Shift(PagingLevel level) => 12 + (9 * ((int)level - 1));

    public static int Index(ulong va, PagingLevel level) => (int)((va >> Shift(level)) & 0x1FF);

    public static PagingLevel LeafLevel(PageSize size) => size switch
    {
        PageSize.Size4K => PagingLevel.Pt,
        PageSize.Size2M => PagingLevel.Pd,
        _ => PagingLevel.Pdpt,
    };

    public static ulong Bytes(PageSize size) => 1UL << (12 + (9 * (int)size));

    public static VirtualAddress Va(ulong value) => VirtualAddress.Create(value);

    public ulong NewTable()
    {
        ulong table = _nextTable;
        _nextTable += 0x1000;
        if (_nextTable > Memory.Size)
        {
            throw new InvalidOperationException("The test tables ran out of memory.");
        }

        _tables.Add(table);
        return table;
    }

    public ulong Read(ulong physical) => ((IPhysicalMemory)Memory).ReadUInt64(PhysicalAddress.Create(physical));

    public void Write(ulong physical, ulong value) => Memory.WriteUInt64(PhysicalAddress.Create(physical), value);

    /// <summary>
    /// The address of the entry for <paramref name="va"/> at <paramref name="level"/> under <paramref name="root"/>
    /// (default <see cref="Root"/>), creating every missing table above it. A missing entry at level L is written
    /// as <c>newTable | upperFlags(L)</c>; an existing one is followed as it is (it must not be a leaf).
    /// </summary>
    public ulong EnsureEntry(ulong va, PagingLevel level, Func<PagingLevel, ulong> upperFlags, ulong? root = null)
    {
        ulong table = root ?? Root;
        for (PagingLevel l = RootLevel; l > level; l--)
        {
            ulong entryAddress = table + ((ulong)Index(va, l) * 8);
            ulong entry = Read(entryAddress);
            if (entry == 0)
            {
                ulong next = NewTable();
                entry = next | upperFlags(l);
                Write(entryAddress, entry);
            }
            else if ((entry & P) == 0 || (l <= PagingLevel.Pdpt && (entry & PS) != 0))
            {
                throw new InvalidOperationException($"The {l} entry for 0x{va:x} is not a table pointer: 0x{entry:x}.");
            }

            table = entry & TableAddressBits;
        }

        return table + ((ulong)Index(va, level) * 8);
    }

    public ulong EnsureEntry(ulong va, PagingLevel level, ulong upperFlags = Open, ulong? root = null) =>
        EnsureEntry(va, level, _ => upperFlags, root);

    /// <summary>
    /// Maps one page under <paramref name="root"/> (default <see cref="Root"/>): writes <c>frame | flags</c> (plus PS
    /// for 2M/1G; P only if <paramref name="flags"/> has it) into the leaf slot; returns the leaf's address.
    /// </summary>
    public ulong Map(ulong va, PageSize size, ulong frame, ulong flags, ulong upperFlags = Open, ulong? root = null) =>
        Map(va, size, frame, flags, _ => upperFlags, root);

    public ulong Map(ulong va, PageSize size, ulong frame, ulong flags, Func<PagingLevel, ulong> upperFlags, ulong? root = null)
    {
        PagingLevel leaf = LeafLevel(size);
        ulong entryAddress = EnsureEntry(va, leaf, upperFlags, root);
        Write(entryAddress, frame | flags | (size == PageSize.Size4K ? 0 : PS));
        return entryAddress;
    }

    /// <summary>The address of the existing entry for <paramref name="va"/> at <paramref name="level"/> (tables above must exist).</summary>
    public ulong EntryAddress(ulong va, PagingLevel level)
    {
        ulong table = Root;
        for (PagingLevel l = RootLevel; l > level; l--)
        {
            ulong entry = Read(table + ((ulong)Index(va, l) * 8));
            if ((entry & P) == 0)
            {
                throw new InvalidOperationException($"No table below the {l} entry for 0x{va:x}.");
            }

            table = entry & TableAddressBits;
        }

        return table + ((ulong)Index(va, level) * 8);
    }

    public ulong Get(ulong va, PagingLevel level) => Read(EntryAddress(va, level));

    public void Set(ulong va, PagingLevel level, ulong value) => Write(EntryAddress(va, level), value);

    /// <summary>ORs <paramref name="bits"/> into the existing entry for <paramref name="va"/> at <paramref name="level"/>.</summary>
    public void Or(ulong va, PagingLevel level, ulong bits) => Set(va, level, Get(va, level) | bits);

    /// <summary>Clears <paramref name="bits"/> in the existing entry for <paramref name="va"/> at <paramref name="level"/>.</summary>
    public void Clear(ulong va, PagingLevel level, ulong bits) => Set(va, level, Get(va, level) & ~bits);

    /// <summary>Every word of every table allocated so far, to prove a walk wrote nothing.</summary>
    public ulong[] Snapshot()
    {
        var words = new ulong[_tables.Count * 512];
        for (int t = 0; t < _tables.Count; t++)
        {
            for (int i = 0; i < 512; i++)
            {
                words[(t * 512) + i] = Read(_tables[t] + ((ulong)i * 8));
            }
        }

        return words;
    }
}

/// <summary>
/// An <see cref="IPhysicalMemory"/> that forwards to another one, counts every access, and can run a hook just
/// before a compare-exchange (to make another "CPU" change the word between the walker's read and its update).
/// </summary>
internal sealed class RecordingMemory : IPhysicalMemory
{
    private readonly IPhysicalMemory _inner;

    public RecordingMemory(IPhysicalMemory inner) => _inner = inner;

    public int Reads { get; private set; }

    public int Writes { get; private set; }

    public int CompareExchanges { get; private set; }

    /// <summary>Runs before each compare-exchange with the entry address; may write to the inner memory.</summary>
    public Action<ulong>? BeforeCompareExchange { get; set; }

    public ulong Size => _inner.Size;

    public bool TryReadUInt64(PhysicalAddress address, out ulong value)
    {
        Reads++;
        return _inner.TryReadUInt64(address, out value);
    }

    public void WriteUInt64(PhysicalAddress address, ulong value)
    {
        Writes++;
        _inner.WriteUInt64(address, value);
    }

    public ulong CompareExchangeUInt64(PhysicalAddress address, ulong value, ulong comparand)
    {
        CompareExchanges++;
        BeforeCompareExchange?.Invoke(address.Value);
        return _inner.CompareExchangeUInt64(address, value, comparand);
    }

    public ReadOnlySpan<byte> ReadFrame(ulong frameNumber)
    {
        Reads++;
        return _inner.ReadFrame(frameNumber);
    }

    public Span<byte> GetWritableFrame(ulong frameNumber)
    {
        Writes++;
        return _inner.GetWritableFrame(frameNumber);
    }
}
