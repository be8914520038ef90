using System;
using System.Diagnostics.Metrics;
using System.Threading;
using ThpCore.Internal;

namespace ThpCore.Diagnostics;

/// <summary>
/// One set of <c>/proc/vmstat</c> event counters (Linux's <c>count_vm_event</c> / <c>count_vm_events</c>): a
/// <see cref="long"/> per <see cref="VmEvent"/>, updated atomically. Thread-safe; <see cref="Count(VmEvent)"/>
/// and <see cref="Add(VmEvent, long)"/> do not allocate.
/// </summary>
/// <remarks>
/// <para>
/// Linux keeps these per CPU and sums them when <c>/proc/vmstat</c> is read, so a reader never sees a torn value
/// but may see one counter updated and a related one not yet. The same holds here: each counter is read
/// atomically, but <see cref="Snapshot"/> and <see cref="ToVmstatText"/> read them one after another, not all at
/// one instant, while other threads count.
/// </para>
/// <para>
/// Publishing through <see cref="System.Diagnostics.Metrics"/> is opt-in (<see cref="PublishTo(Meter)"/>), so a host
/// without a metrics listener pays only the interlocked increments.
/// </para>
/// </remarks>
public sealed class VmEventCounters
{
    /// <summary>The meter name to use for ThpCore's counters: <c>ThpCore</c>.</summary>
    public const string MeterName = "ThpCore";

    /// <summary>
    /// The prefix of each instrument <see cref="PublishTo(Meter)"/> creates: the instrument for an event is this
    /// followed by the event's <c>/proc/vmstat</c> name, e.g. <c>thpcore.vmstat.thp_fault_alloc</c>.
    /// </summary>
    public const string InstrumentPrefix = "thpcore.vmstat.";

    private readonly long[] _counts = new long[VmEventNames.Count];

    /// <summary>Counts one occurrence of <paramref name="vmEvent"/> (Linux: <c>count_vm_event</c>).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="vmEvent"/> is not a defined value.</exception>
    public void Count(VmEvent vmEvent) =>
        Interlocked.Increment(ref _counts[VmEventNames.CheckEvent(vmEvent, nameof(vmEvent))]);

    /// <summary>Counts <paramref name="delta"/> occurrences of <paramref name="vmEvent"/> (Linux: <c>count_vm_events</c>).</summary>
    /// <param name="vmEvent">The event.</param>
    /// <param name="delta">How many; 0 or more, since the counters only grow (reset with <see cref="Reset"/>).</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="vmEvent"/> is not a defined value, or <paramref name="delta"/> is negative.</exception>
    public void Add(VmEvent vmEvent, long delta)
    {
        int index = VmEventNames.CheckEvent(vmEvent, nameof(vmEvent));
        if (delta < 0)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(delta), delta, "Event counters only grow; the delta must be 0 or more.");
        }

        Interlocked.Add(ref _counts[index], delta);
    }

    /// <summary>The current count of <paramref name="vmEvent"/>, read atomically.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="vmEvent"/> is not a defined value.</exception>
    public long Get(VmEvent vmEvent) => Volatile.Read(ref _counts[VmEventNames.CheckEvent(vmEvent, nameof(vmEvent))]);

    /// <summary>A copy of every counter (each read atomically; see the remarks of <see cref="VmEventCounters"/>).</summary>
    public VmEventSnapshot Snapshot()
    {
        long[] copy = new long[VmEventNames.Count];
        for (int i = 0; i < copy.Length; i++)
        {
            copy[i] = Volatile.Read(ref _counts[i]);
        }

        return new VmEventSnapshot(copy);
    }

    /// <summary>Sets every counter to 0. Counts made by other threads while this runs may survive or be lost.</summary>
    public void Reset()
    {
        for (int i = 0; i < _counts.Length; i++)
        {
            Interlocked.Exchange(ref _counts[i], 0);
        }
    }

    /// <summary>
    /// The counters as the event part of <c>/proc/vmstat</c>: one <c>name value</c> line per event, each ending in
    /// <c>'\n'</c>, in Linux's order (<c>vmstat_show</c>), zeros included.
    /// </summary>
    public string ToVmstatText() => Snapshot().ToVmstatText();

    /// <summary>
    /// Publishes every counter on <paramref name="meter"/> as an <see cref="ObservableCounter{T}"/> of
    /// <see cref="long"/> named <see cref="InstrumentPrefix"/> + the <c>/proc/vmstat</c> name (for example
    /// <c>thpcore.vmstat.thp_split_pmd</c>), unit <c>{event}</c>. Listeners read the live values when they collect.
    /// </summary>
    /// <param name="meter">
    /// The meter, normally <c>new Meter(VmEventCounters.MeterName)</c>, owned and disposed by the caller. To publish
    /// several counter sets, give each its own meter, told apart by the meter's tags or version.
    /// </param>
    /// <exception cref="ArgumentNullException"><paramref name="meter"/> is <see langword="null"/>.</exception>
    public void PublishTo(Meter meter)
    {
        ArgumentNullException.ThrowIfNull(meter);
        for (int i = 0; i < VmEventNames.Count; i++)
        {
            VmEvent vmEvent = (VmEvent)i;
            string name = VmEventNames.Name(vmEvent);
            meter.CreateObservableCounter(
                InstrumentPrefix + name,
                () => Get(vmEvent),
                unit: "{event}",
                description: "Linux /proc/vmstat " + name);
        }
    }
}
