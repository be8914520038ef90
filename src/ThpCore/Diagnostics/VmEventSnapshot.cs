using System;
using System.Collections.Generic;
using System.Globalization;
using System.Text;

namespace ThpCore.Diagnostics;

/// <summary>A copy of a <see cref="VmEventCounters"/> at one time. Immutable.</summary>
public sealed class VmEventSnapshot
{
    private readonly long[] _counts;

    internal VmEventSnapshot(long[] counts) => _counts = counts;

    /// <summary>The count of <paramref name="vmEvent"/> when the snapshot was taken.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="vmEvent"/> is not a defined value.</exception>
    public long this[VmEvent vmEvent] => _counts[VmEventNames.CheckEvent(vmEvent, nameof(vmEvent))];

    /// <summary>
    /// The counts of this snapshot minus those of <paramref name="earlier"/>: what happened in between, when the
    /// counters were not reset in between.
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="earlier"/> is <see langword="null"/>.</exception>
    public VmEventSnapshot Since(VmEventSnapshot earlier)
    {
        ArgumentNullException.ThrowIfNull(earlier);
        long[] difference = new long[VmEventNames.Count];
        for (int i = 0; i < difference.Length; i++)
        {
            difference[i] = _counts[i] - earlier._counts[i];
        }

        return new VmEventSnapshot(difference);
    }

    /// <summary>The events whose count is not 0, in Linux's order, with their counts.</summary>
    public IEnumerable<KeyValuePair<VmEvent, long>> NonZero()
    {
        for (int i = 0; i < _counts.Length; i++)
        {
            if (_counts[i] != 0)
            {
                yield return new KeyValuePair<VmEvent, long>((VmEvent)i, _counts[i]);
            }
        }
    }

    /// <summary>
    /// The counts as the event part of <c>/proc/vmstat</c>: one <c>name value</c> line per event (the name, one
    /// space, the decimal value, <c>'\n'</c>), in Linux's order, zeros included.
    /// </summary>
    public string ToVmstatText()
    {
        var text = new StringBuilder(VmEventNames.Count * 32);
        for (int i = 0; i < _counts.Length; i++)
        {
            text.Append(VmEventNames.Name((VmEvent)i))
                .Append(' ')
                .Append(_counts[i].ToString(CultureInfo.InvariantCulture))
                .Append('\n');
        }

        return text.ToString();
    }

    /// <inheritdoc cref="ToVmstatText"/>
    public override string ToString() => ToVmstatText();
}
