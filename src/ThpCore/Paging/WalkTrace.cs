using System;
using System.Collections.Generic;

namespace ThpCore.Paging;

/// <summary>One level of a page walk as recorded in a <see cref="WalkTrace"/>.</summary>
/// <param name="Level">The level of the entry.</param>
/// <param name="Index">The 9-bit index the virtual address selected.</param>
/// <param name="EntryAddress">The physical address of the entry.</param>
/// <param name="Entry">The entry as the walk read it.</param>
public readonly record struct WalkStep(PagingLevel Level, int Index, PhysicalAddress EntryAddress, PageTableEntry Entry);

/// <summary>
/// The steps of a walk, for teaching and debugging: pass one to
/// <see cref="PageWalker.Translate(CpuState, IPhysicalMemory, VirtualAddress, AccessKind, Privilege, in WalkOptions, WalkTrace?)"/>.
/// A walk that had to restart (an entry changed under it) records only its last pass. Reusable: each walk
/// clears it first. Walks without a trace record nothing and pay nothing.
/// </summary>
public sealed class WalkTrace
{
    private readonly List<WalkStep> _steps = new(5);
    private readonly List<(PhysicalAddress Address, ulong Before, ulong After)> _writes = new(5);

    /// <summary>The entries read, from the root down.</summary>
    public IReadOnlyList<WalkStep> Steps => _steps;

    /// <summary>The A/D updates the walk made: entry address, value before and after.</summary>
    public IReadOnlyList<(PhysicalAddress Address, ulong Before, ulong After)> Writes => _writes;

    /// <summary>How many times the walk restarted because an entry changed between its read and its A/D update.</summary>
    public int Restarts { get; private set; }

    internal void Begin(bool restart)
    {
        _steps.Clear();
        _writes.Clear();
        if (restart)
        {
            Restarts++;
        }
        else
        {
            Restarts = 0;
        }
    }

    internal void AddStep(PagingLevel level, int index, ulong entryAddress, ulong value) =>
        _steps.Add(new WalkStep(level, index, PhysicalAddress.FromMaskedBits(entryAddress), new PageTableEntry(level, value)));

    internal void AddWrite(ulong entryAddress, ulong before, ulong after) =>
        _writes.Add((PhysicalAddress.FromMaskedBits(entryAddress), before, after));
}
