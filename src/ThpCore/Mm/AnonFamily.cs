using System;
using System.Collections.Generic;
using System.Runtime.CompilerServices;
using System.Threading;
using ThpCore.Memory;

namespace ThpCore.Mm;

/// <summary>
/// The address spaces that can share anonymous folios: one made by <c>new AddressSpace(...)</c> and every
/// <see cref="AddressSpace.Fork"/> descendant of it. This is Linux's <c>anon_vma</c> hierarchy reduced to what the
/// reverse map needs: an anonymous folio can only be mapped by members of the family it was faulted in, so
/// <see cref="AddressSpace.FindMappings"/> searches the members' page tables (Linux walks the folio's
/// <c>anon_vma</c> interval tree instead).
/// </summary>
internal sealed class AnonFamily
{
    private static long s_nextId;

    // Every family with an address space on a node, for node-wide work such as compaction (Linux walks all of a
    // zone's pages and reaches their mappings through each folio's anon_vma).
    private static readonly ConditionalWeakTable<MemoryNode, List<AnonFamily>> s_byNode = new();

    private MemoryNode? _node;

    private readonly List<AddressSpace> _members = new();
    private readonly Lock _lock = new();
    private InFlightMigration? _inFlight;

    private AnonFamily()
    {
    }

    /// <summary>The migration whose entries are in the members' page tables right now, if any.</summary>
    internal InFlightMigration? InFlight => Volatile.Read(ref _inFlight);

    // The family's huge zero page, made at the first read fault that wants one and shared by every member, like the
    // 4 KiB zero page the founder allocated. Linux has one of each per system; here each family owns a pair, released
    // when its last member leaves.
    internal Folio? HugeZeroPage { get; set; }

    /// <summary>A new, unique, increasing address-space id (an order for taking several spaces' locks).</summary>
    internal static long NextId() => Interlocked.Increment(ref s_nextId);

    /// <summary>Starts a family whose first member is <paramref name="founder"/> (<c>new AddressSpace</c>).</summary>
    internal static AnonFamily Found(AddressSpace founder)
    {
        AnonFamily family = new() { _node = founder.Node };
        family.Join(founder);
        List<AnonFamily> onNode = s_byNode.GetValue(founder.Node, _ => new List<AnonFamily>());
        lock (onNode)
        {
            onNode.Add(family);
        }

        return family;
    }

    /// <summary>Adds <paramref name="member"/> (a fork child) at the end and returns this family.</summary>
    internal AnonFamily Join(AddressSpace member)
    {
        lock (_lock)
        {
            _members.Add(member);
        }

        return this;
    }

    /// <summary>
    /// Removes <paramref name="member"/> (its teardown); the last member to leave releases the family's zero pages and
    /// takes the family off its node's registry. Nothing happens when it is not a member.
    /// </summary>
    internal void Leave(AddressSpace member)
    {
        bool empty;
        lock (_lock)
        {
            empty = _members.Remove(member) && _members.Count == 0;
        }

        if (empty)
        {
            member.ZeroPage.Put();
            HugeZeroPage?.Put();
            HugeZeroPage = null;
        }

        if (empty && _node is MemoryNode node && s_byNode.TryGetValue(node, out List<AnonFamily>? onNode))
        {
            lock (onNode)
            {
                onNode.Remove(this);
            }
        }
    }

    internal static AnonFamily[] OnNode(MemoryNode node)
    {
        if (!s_byNode.TryGetValue(node, out List<AnonFamily>? onNode))
        {
            return Array.Empty<AnonFamily>();
        }

        lock (onNode)
        {
            return onNode.ToArray();
        }
    }

    /// <summary>The members in creation order, as a copy.</summary>
    internal AddressSpace[] Members()
    {
        lock (_lock)
        {
            return _members.ToArray();
        }
    }

    /// <summary>Records that <paramref name="source"/>'s mappings are migration entries now.</summary>
    /// <exception cref="InvalidOperationException">Another migration is in flight in the family.</exception>
    internal InFlightMigration Begin(Folio source, Folio destination)
    {
        InFlightMigration flight = new(source, destination, Environment.CurrentManagedThreadId);
        if (Interlocked.CompareExchange(ref _inFlight, flight, null) is InFlightMigration other)
        {
            throw new InvalidOperationException($"A migration of the {other.Source} is already in flight in this address-space family; Linux would find the folio isolated and refuse it (-EBUSY).");
        }

        return flight;
    }

    /// <summary>Records that <paramref name="flight"/> has restored every entry.</summary>
    internal void End(InFlightMigration flight) => Interlocked.CompareExchange(ref _inFlight, null, flight);
}

/// <summary>One migration in flight: its folios and the thread running it.</summary>
internal sealed record InFlightMigration(Folio Source, Folio Destination, int ThreadId)
{
    /// <summary>Whether <paramref name="frame"/> is one of the source folio's frames.</summary>
    internal bool Covers(ulong frame) => frame >= Source.HeadFrame && frame < Source.HeadFrame + (ulong)Source.PageCount;
}
