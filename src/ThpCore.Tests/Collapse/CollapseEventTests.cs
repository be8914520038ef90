using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Diagnostics.Tracing;
using System.Linq;
using ThpCore.Collapse;
using ThpCore.Diagnostics;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;
using Xunit;
using static ThpCore.Tests.Mm.MmFixtures;

namespace ThpCore.Tests.Collapse;

/// <summary>The structured events of <see cref="ThpCoreEventSource"/>: one per collapse attempt, with its outcome.</summary>
public sealed class CollapseEventTests
{
    internal sealed class Listener : EventListener
    {
        public ConcurrentQueue<EventWrittenEventArgs> Events { get; } = new();

        protected override void OnEventSourceCreated(EventSource eventSource)
        {
            if (eventSource.Name == "ThpCore")
            {
                EnableEvents(eventSource, EventLevel.Informational);
            }
        }

        protected override void OnEventWritten(EventWrittenEventArgs eventData) => Events.Enqueue(eventData);
    }

    [Fact]
    public void Every_collapse_attempt_is_one_event_naming_the_space_range_path_and_outcome()
    {
        using var listener = new Listener();
        var space = new AddressSpace(new MemoryNode(64UL << 20), Always);
        VirtualAddress start = space.Map(2 * M2, Rw);
        Assert.Equal(PageSize.Size2M, space.Access(start, AccessKind.Write).PageSize);
        space.Protect(start.Add(K4), K4, Protection.Read);
        space.Protect(start.Add(K4), K4, Rw);
        Folio folio = space.Node.FolioOf(Pte(space, start.Value).Address.FrameNumber);

        Collapser.TryCollapseInPlace(space, start);                                       // succeeds in place
        Collapser.TryCollapseInPlace(space, start);                                       // already a PMD
        Collapser.TryCollapseByCopy(space, start.Add(M2), CollapseContext.MadviseCollapse); // the untouched 2 MiB: refused

        List<object?[]> mine = listener.Events
            .Where(e => e.EventId == ThpCoreEventSource.CollapseEventId && (long)e.Payload![0]! == space.Id)
            .Select(e => e.Payload!.ToArray())
            .ToList();
        Assert.Equal(3, mine.Count);
        Assert.Equal(new object?[] { space.Id, start.Value, "InPlace", "Succeed", 1, folio.Address.Value }, mine[0]);
        Assert.Equal(new object?[] { space.Id, start.Value, "InPlace", "PmdMapped", 4, 0UL }, mine[1]);
        CollapseResult refused = Collapser.TryCollapseByCopy(space, start.Add(M2), CollapseContext.MadviseCollapse);
        Assert.Equal(new object?[] { space.Id, start.Add(M2).Value, "Copy", refused.Status.ToString(), (int)refused.Status, 0UL }, mine[2]);
        Assert.NotEqual(CollapseStatus.Succeed, refused.Status);
    }
}
