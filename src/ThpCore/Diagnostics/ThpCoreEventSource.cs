using System.Diagnostics.Tracing;

namespace ThpCore.Diagnostics;

/// <summary>
/// ThpCore's structured events, as an <see cref="EventSource"/> named <c>ThpCore</c>: listen in process with an
/// <see cref="EventListener"/>, or outside with <c>dotnet-trace collect --providers ThpCore</c>. Each collapse attempt
/// (in place or by copy, from any caller: the API, MADV_COLLAPSE, the khugepaged scanner) is one
/// <see cref="Collapse"/> event; nothing is built or allocated while no listener has the source enabled.
/// </summary>
[EventSource(Name = "ThpCore")]
public sealed class ThpCoreEventSource : EventSource
{
    /// <summary>The event id of <see cref="Collapse"/>.</summary>
    public const int CollapseEventId = 1;

    private ThpCoreEventSource()
    {
    }

    /// <summary>The one instance.</summary>
    public static ThpCoreEventSource Log { get; } = new();

    /// <summary>One collapse attempt on one 2 MiB range.</summary>
    /// <param name="space">The address space's id (unique in the process, increasing in creation order).</param>
    /// <param name="address">The 2 MiB-aligned virtual address of the range.</param>
    /// <param name="path"><c>InPlace</c> or <c>Copy</c>: the path tried.</param>
    /// <param name="status">The result's <c>CollapseStatus</c> name (Linux's <c>SCAN_*</c> result or ThpCore's own).</param>
    /// <param name="statusCode">The same as a number (0 to 31 are Linux's <c>enum scan_result</c> values).</param>
    /// <param name="folio">The physical address of the folio now mapped by the PMD; 0 on a refusal.</param>
    [Event(CollapseEventId, Level = EventLevel.Informational, Message = "{2} collapse of {1:x} in space {0}: {3}")]
    public void Collapse(long space, ulong address, string path, string status, int statusCode, ulong folio) =>
        WriteEvent(CollapseEventId, space, address, path, status, statusCode, folio);
}
