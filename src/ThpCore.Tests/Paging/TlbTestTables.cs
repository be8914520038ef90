using System;
using ThpCore.Paging;

namespace ThpCore.Tests.Paging;

/// <summary>
/// Tiny 4-level page-table builder for the TLB tests: writes raw entries into a <see cref="SparsePhysicalMemory"/>.
/// Non-leaf entries are P | R/W | U/S so that the leaf alone decides the rights unless a test says otherwise.
/// Table frames come from a bump allocator starting at 1 MiB; data frames are just numbers (never touched).
/// </summary>
internal sealed class TlbTestTables
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
    public const ulong TableFlags = P | RW | US;

    private ulong _nextTable = 0x10_0000;

    public TlbTestTables()
    {
        Root = AllocateTable();
    }

    public SparsePhysicalMemory Memory { get; } = new(64UL << 20);

    /// <summary>The PML4 of the first address space.</summary>
    public ulong Root { get; }

    public ulong AllocateTable()
    {
        ulong table = _nextTable;
        _nextTable += 0x1000;
        return table;
    }

    /// <summary>A 4-level CPU state with NXE, WP and CR4.PAE | PGE (plus <paramref name="extra"/>), CR3 = <paramref name="root"/> | <paramref name="pcid"/>.</summary>
    public CpuState Cpu(Cr4Flags extra = Cr4Flags.None, int pcid = 0, ulong root = 0) =>
        CpuState.Create((root == 0 ? Root : root) | (uint)pcid, Cr4Flags.Pae | Cr4Flags.Pge | extra);

    /// <summary>The physical address of the entry for <paramref name="va"/> at <paramref name="level"/>, making tables above it as needed.</summary>
    public ulong EntryAddress(ulong va, PagingLevel level, ulong root = 0)
    {
        ulong table = root == 0 ? Root : root;
        for (int l = 4; l > (int)level; l--)
        {
            ulong entryAddress = table + (Index(va, l) * 8);
            ulong entry = Read(entryAddress);
            if ((entry & P) == 0 || (l <= 3 && (entry & PS) != 0))
            {
                entry = AllocateTable() | TableFlags;
                Write(entryAddress, entry);
            }

            table = entry & PageTableEntry.AddressMask4K;
        }

        return table + (Index(va, (int)level) * 8);
    }

    public ulong Map4K(ulong va, ulong frame, ulong flags, ulong root = 0)
    {
        ulong at = EntryAddress(va, PagingLevel.Pt, root);
        Write(at, frame | flags | P);
        return at;
    }

    public ulong Map2M(ulong va, ulong frame, ulong flags, ulong root = 0)
    {
        ulong at = EntryAddress(va, PagingLevel.Pd, root);
        Write(at, frame | flags | P | PS);
        return at;
    }

    public ulong Map1G(ulong va, ulong frame, ulong flags, ulong root = 0)
    {
        ulong at = EntryAddress(va, PagingLevel.Pdpt, root);
        Write(at, frame | flags | P | PS);
        return at;
    }

    public ulong Read(ulong entryAddress) => ((IPhysicalMemory)Memory).ReadUInt64(PhysicalAddress.Create(entryAddress));

    public void Write(ulong entryAddress, ulong value) => Memory.WriteUInt64(PhysicalAddress.Create(entryAddress), value);

    public static VirtualAddress Va(ulong value) => VirtualAddress.Create(value);

    private static ulong Index(ulong va, int level) => (va >> (12 + (9 * (level - 1)))) & 0x1FF;
}
