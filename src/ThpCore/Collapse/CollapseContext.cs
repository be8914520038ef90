using ThpCore.Mm;

namespace ThpCore.Collapse;

/// <summary>
/// Who runs a copy collapse, Linux's <c>struct collapse_control</c>: khugepaged (<c>is_khugepaged</c>: the
/// <c>max_ptes_*</c> limits, the young/referenced rule and the sysfs <c>enabled</c> mode are enforced, and the THP is
/// allocated as <c>khugepaged/defrag</c> says) or <c>MADV_COLLAPSE</c> (none of these; the allocation may always
/// compact, <c>GFP_TRANSHUGE</c>).
/// </summary>
public sealed record CollapseContext
{
    private CollapseContext(bool isKhugepaged, ThpSettings? settings)
    {
        IsKhugepaged = isKhugepaged;
        Settings = settings;
    }

    /// <summary>The <c>MADV_COLLAPSE</c> context: limits, the referenced rule and sysfs <c>enabled</c> not enforced.</summary>
    public static CollapseContext MadviseCollapse { get; } = new(false, null);

    /// <summary>Whether this is khugepaged (<c>cc-&gt;is_khugepaged</c>).</summary>
    public bool IsKhugepaged { get; }

    /// <summary>
    /// The khugepaged knobs (<c>max_ptes_*</c>, <c>khugepaged/defrag</c>); <see langword="null"/> to use the address
    /// space's <see cref="AddressSpace.Settings"/>. The VMA check always uses the address space's <c>enabled</c> mode.
    /// </summary>
    public ThpSettings? Settings { get; }

    /// <summary>The khugepaged context, with the knobs of <paramref name="settings"/> or, when null, of each address space.</summary>
    public static CollapseContext Khugepaged(ThpSettings? settings = null) => new(true, settings);

    /// <summary>The knobs that apply to <paramref name="space"/>.</summary>
    internal ThpSettings KnobsFor(AddressSpace space) => Settings ?? space.Settings;
}
