using System;
using System.Collections.Generic;
using System.Globalization;
using System.Threading;
using System.Threading.Tasks;
using ThpCore.Internal;
using ThpCore.Mm;
using ThpCore.Paging;

namespace ThpCore.Collapse;

/// <summary>What one <see cref="Khugepaged.ScanStep(int)"/> did.</summary>
/// <param name="Progress">The progress units spent: 512 per 2 MiB range scanned, 1 per address space visited and per VMA skipped.</param>
/// <param name="Results">The result of every range scanned, in order.</param>
/// <param name="AllocationFailures">
/// How many collapses failed to allocate their THP (0 to 2). On the first, Linux's khugepaged sleeps
/// <c>alloc_sleep_millisecs</c> and goes on; the step goes on at once. The second ends the step.
/// </param>
/// <param name="FullScans">How many times the cursor passed the last registered address space during the step.</param>
public sealed record KhugepagedScanResult(int Progress, IReadOnlyList<CollapseResult> Results, int AllocationFailures, int FullScans)
{
    /// <summary>Whether a THP allocation failed: a host driving the scanner should wait <c>alloc_sleep_millisecs</c>.</summary>
    public bool ShouldBackOff => AllocationFailures > 0;
}

/// <summary>
/// A deterministic model of Linux's khugepaged: address spaces are registered (<c>__khugepaged_enter</c>) and each
/// <see cref="ScanStep(int)"/> is one round of <c>khugepaged_do_scan</c>, visiting them in registration order from a
/// cursor that persists between steps. Each 2 MiB range of an eligible VMA is collapsed: in place first, when an
/// in-place strategy is given; then, when that refused because the range has holes or pages of several folios, by
/// re-forming in place (<see cref="Collapser.TryReformInPlace"/>, ThpCore's own); else (or when those refuse) by copy
/// (<see cref="Collapser.TryCollapseByCopy"/> in the khugepaged context).
/// </summary>
/// <remarks>
/// <para>
/// Accounting follows <c>khugepaged_scan_mm_slot</c> (v6.12): a visit of an address space costs 1; a VMA that is not
/// eligible (<c>thp_vma_allowable_order</c> with <c>TVA_ENFORCE_SYSFS</c>: anonymous, not
/// <see cref="VmaFlags.NoHugePage"/>, the address space's <c>enabled</c> mode) or that ends before the cursor costs
/// 1; each aligned 2 MiB range scanned costs 512. Only the aligned part of a VMA is scanned. After a range whose
/// scan passed (a collapse was attempted, whatever its outcome) the visit ends, as Linux's <c>collapse_huge_page</c>
/// returns without the mmap lock, and the next visit resumes at the next range. When a visit runs out of VMAs, the
/// cursor moves to the next address space, or past the last one, which counts a full scan (<c>full_scans</c>). A
/// round ends when the budget is spent, when the cursor has been at the head of the list twice, when nothing is
/// registered or <c>enabled</c> (this scanner's <see cref="Settings"/>) is <c>never</c> (<c>hugepage_pmd_enabled</c>),
/// or at the second allocation failure.
/// </para>
/// <para>
/// Figures: <see cref="PagesCollapsed"/> (<c>pages_collapsed</c>: one per range collapsed, despite its name) and
/// <see cref="FullScans"/> (<c>full_scans</c>), plus ThpCore's <see cref="CollapsedInPlace"/>, <see cref="Reformed"/>
/// and <see cref="CollapsedByCopy"/> (collapsed in place, re-formed, copied), which add up to <see cref="PagesCollapsed"/>.
/// </para>
/// <para>
/// Simplified: the address space's lock is taken blocking (Linux's <c>mmap_read_trylock</c> skips a busy mm); an
/// address space is visited under its write lock; <see cref="Unregister"/> removes a space at once, and when it was
/// the one under the cursor the cursor moves to the next one without counting a full scan. A disposed address space
/// is dropped at its next visit (<c>collect_mm_slot</c>).
/// </para>
/// </remarks>
public sealed class Khugepaged : IDisposable
{
    private const ulong HugeSize = 2UL << 20;
    private readonly object _gate = new();
    private readonly List<AddressSpace> _slots = new();
    private int _cursor = -1;
    private ulong _address;
    private long _pagesCollapsed;
    private long _fullScans;
    private long _collapsedInPlace;
    private long _collapsedByCopy;
    private long _reformed;
    private ThpSettings _settings;
    private CancellationTokenSource? _cts;
    private Task? _background;

    /// <summary>Creates a scanner with no address space registered.</summary>
    /// <param name="settings">The global knobs (<c>pages_to_scan</c>, the sleeps, <c>max_ptes_*</c>, <c>khugepaged/defrag</c>,
    /// and <c>enabled</c> for <c>hugepage_pmd_enabled</c>); <see cref="ThpSettings.Default"/> when null.</param>
    /// <param name="inPlace">
    /// The in-place collapse to try before copying (it is given the address space, with its lock held for writing,
    /// and the range's address): <see langword="null"/> for ThpCore's <see cref="Collapser.TryCollapseInPlace"/>,
    /// or <see cref="CopyOnly"/> to copy as Linux v6.12 does. Its success counts in <see cref="CollapsedInPlace"/>; any
    /// other result falls back to re-form, then copy collapse.
    /// </param>
    /// <param name="reform">
    /// The re-form to try when the in-place strategy refused with <see cref="CollapseStatus.InPlaceHole"/> or
    /// <see cref="CollapseStatus.InPlaceMixedFolios"/> (same arguments, same lock): <see langword="null"/> for ThpCore's
    /// <see cref="Collapser.TryReformInPlace"/> when <paramref name="inPlace"/> is null too, and for none otherwise (so
    /// <see cref="CopyOnly"/> alone still gives Linux's behaviour); <see cref="CopyOnly"/> for none. Its success counts
    /// in <see cref="Reformed"/>; any other result falls back to copy collapse.
    /// </param>
    public Khugepaged(
        ThpSettings? settings = null, Func<AddressSpace, VirtualAddress, CollapseResult>? inPlace = null, Func<AddressSpace, VirtualAddress, CollapseResult>? reform = null)
    {
        _settings = settings ?? ThpSettings.Default;
        Reform = reform ?? (inPlace is null ? (space, address) => Collapser.TryReformInPlace(space, address) : CopyOnly);
        InPlace = inPlace ?? ((space, address) => Collapser.TryCollapseInPlace(space, address));
    }

    /// <summary>
    /// An in-place strategy that never collapses (it reports <see cref="CollapseStatus.Fail"/> and changes nothing),
    /// so that every range goes to copy collapse: Linux v6.12's khugepaged, which has no anonymous in-place path.
    /// </summary>
    public static Func<AddressSpace, VirtualAddress, CollapseResult> CopyOnly { get; } =
        (_, address) => new CollapseResult(CollapseStatus.Fail, VirtualAddress.FromRaw(address.Value & ~((2UL << 20) - 1)), CollapsePath.None, PhysicalAddress.Zero);

    /// <summary>The in-place collapse tried first.</summary>
    public Func<AddressSpace, VirtualAddress, CollapseResult> InPlace { get; }

    /// <summary>The re-form tried second, for a range with holes or pages of several folios.</summary>
    public Func<AddressSpace, VirtualAddress, CollapseResult> Reform { get; }

    /// <summary>The knobs; a new value applies from the next step (writing the sysfs files).</summary>
    /// <exception cref="ArgumentNullException">Set to null.</exception>
    public ThpSettings Settings
    {
        get => Volatile.Read(ref _settings);
        set => Volatile.Write(ref _settings, value ?? throw new ArgumentNullException(nameof(value)));
    }

    /// <summary><c>khugepaged/pages_collapsed</c>: ranges collapsed (in place, re-formed or by copy).</summary>
    public long PagesCollapsed => Interlocked.Read(ref _pagesCollapsed);

    /// <summary><c>khugepaged/full_scans</c>: times the cursor passed the last registered address space.</summary>
    public long FullScans => Interlocked.Read(ref _fullScans);

    /// <summary>Ranges collapsed in place by <see cref="InPlace"/> (ThpCore's figure).</summary>
    public long CollapsedInPlace => Interlocked.Read(ref _collapsedInPlace);

    /// <summary>Ranges collapsed by copy (ThpCore's figure).</summary>
    public long CollapsedByCopy => Interlocked.Read(ref _collapsedByCopy);

    /// <summary>Ranges re-formed in place by <see cref="Reform"/> (ThpCore's figure).</summary>
    public long Reformed => Interlocked.Read(ref _reformed);

    /// <summary>Whether the background mode runs.</summary>
    public bool IsRunning
    {
        get
        {
            lock (_gate)
            {
                return _background is { IsCompleted: false };
            }
        }
    }

    /// <summary>The registered address spaces, in scan order.</summary>
    public IReadOnlyList<AddressSpace> Registered
    {
        get
        {
            lock (_gate)
            {
                return _slots.ToArray();
            }
        }
    }

    /// <summary>
    /// Reads <c>khugepaged/pages_collapsed</c> or <c>khugepaged/full_scans</c> (the path relative to
    /// <c>/sys/kernel/mm/transparent_hugepage/</c>) as <c>%u\n</c>; the other khugepaged files are
    /// <see cref="ThpSettings.Read(string)"/>'s.
    /// </summary>
    /// <exception cref="ArgumentException">Another file.</exception>
    public string Read(string file) => file switch
    {
        "khugepaged/pages_collapsed" => string.Create(CultureInfo.InvariantCulture, $"{(uint)PagesCollapsed}\n"),
        "khugepaged/full_scans" => string.Create(CultureInfo.InvariantCulture, $"{(uint)FullScans}\n"),
        _ => ThrowHelper.ThrowArgument<string>(nameof(file), $"The scanner's read-only files are khugepaged/pages_collapsed and khugepaged/full_scans; {file} is not one."),
    };

    /// <summary>Registers an address space at the end of the scan list (<c>__khugepaged_enter</c>).</summary>
    /// <returns><see langword="false"/> when it was already registered.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="space"/> is null.</exception>
    /// <exception cref="ObjectDisposedException"><paramref name="space"/> was disposed.</exception>
    public bool Register(AddressSpace space)
    {
        ArgumentNullException.ThrowIfNull(space);
        ObjectDisposedException.ThrowIf(space.IsDisposed, space);
        lock (_gate)
        {
            if (_slots.Contains(space))
            {
                return false;
            }

            _slots.Add(space);
            return true;
        }
    }

    /// <summary>Removes an address space from the scan list (<c>__khugepaged_exit</c>).</summary>
    /// <returns><see langword="false"/> when it was not registered.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="space"/> is null.</exception>
    public bool Unregister(AddressSpace space)
    {
        ArgumentNullException.ThrowIfNull(space);
        lock (_gate)
        {
            int index = _slots.IndexOf(space);
            if (index < 0)
            {
                return false;
            }

            RemoveSlot(index);
            return true;
        }
    }

    /// <summary>One round of the scanner with <c>pages_to_scan</c> from <see cref="Settings"/>.</summary>
    public KhugepagedScanResult ScanStep() => ScanStep((int)Math.Min(Settings.PagesToScan, int.MaxValue));

    /// <summary>One round of <c>khugepaged_do_scan</c> with a budget of <paramref name="pagesToScan"/> progress units.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="pagesToScan"/> is below 1 (<c>pages_to_scan</c> must not be 0).</exception>
    public KhugepagedScanResult ScanStep(int pagesToScan)
    {
        if (pagesToScan < 1)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(pagesToScan), pagesToScan, "pages_to_scan is 1 or more.");
        }

        lock (_gate)
        {
            ThpSettings settings = Settings;
            CollapseContext context = CollapseContext.Khugepaged(settings);
            var results = new List<CollapseResult>();
            long fullScansBefore = _fullScans;
            int progress = 0;
            int passThroughHead = 0;
            int allocationFailures = 0;
            while (true)
            {
                if (_cursor < 0)
                {
                    passThroughHead++;
                }

                CollapseStatus last = CollapseStatus.Succeed;
                if (_slots.Count > 0 && settings.Enabled != ThpEnabled.Never && passThroughHead < 2)
                {
                    progress += ScanSlot(pagesToScan - progress, context, results, out last);
                }
                else
                {
                    progress = pagesToScan;
                }

                if (progress >= pagesToScan)
                {
                    break;
                }

                if (last == CollapseStatus.AllocHugePageFail && ++allocationFailures == 2)
                {
                    break;
                }
            }

            return new KhugepagedScanResult(progress, results, allocationFailures, (int)(_fullScans - fullScansBefore));
        }
    }

    /// <summary>
    /// Starts the background mode: a task that runs <see cref="ScanStep()"/> and then waits
    /// <c>scan_sleep_millisecs</c>, or <c>alloc_sleep_millisecs</c> after a step whose allocation failed, until
    /// <see cref="Stop"/> or <paramref name="cancellationToken"/>. Steps take the address spaces' locks as any
    /// operation does, so other threads may use them meanwhile.
    /// </summary>
    /// <exception cref="InvalidOperationException">It already runs.</exception>
    public void Start(CancellationToken cancellationToken = default)
    {
        lock (_gate)
        {
            if (_background is { IsCompleted: false })
            {
                ThrowHelper.ThrowInvalidOperation("The khugepaged background mode already runs; Stop it first.");
            }

            _cts?.Dispose();
            _cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            CancellationToken token = _cts.Token;
            _background = Task.Run(() => RunAsync(token), CancellationToken.None);
        }
    }

    /// <summary>Stops the background mode and waits for the step in progress; rethrows what a step threw.</summary>
    public void Stop()
    {
        Task? task;
        lock (_gate)
        {
            _cts?.Cancel();
            task = _background;
            _background = null;
        }

        task?.GetAwaiter().GetResult();
    }

    /// <summary>Stops the background mode.</summary>
    public void Dispose()
    {
        Stop();
        _cts?.Dispose();
        _cts = null;
    }

    private async Task RunAsync(CancellationToken token)
    {
        while (!token.IsCancellationRequested)
        {
            KhugepagedScanResult step = ScanStep();
            ThpSettings settings = Settings;
            uint sleep = step.ShouldBackOff ? settings.AllocSleepMilliseconds : settings.ScanSleepMilliseconds;
            try
            {
                await Task.Delay(TimeSpan.FromMilliseconds(sleep), token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    // khugepaged_scan_mm_slot: one visit of the address space under the cursor.
    private int ScanSlot(int pages, CollapseContext context, List<CollapseResult> results, out CollapseStatus last)
    {
        last = CollapseStatus.Succeed;
        if (_cursor < 0)
        {
            _cursor = 0;
            _address = 0;
        }

        AddressSpace space = _slots[_cursor];
        int progress = 1;
        bool exhausted = true;
        if (!space.IsDisposed)
        {
            using AddressSpace.LockScope locks = space.EnterWrite();
            exhausted = !space.IsDisposed && ScanVmas(space, pages, context, results, ref progress, ref last);
        }

        if (space.IsDisposed || exhausted)
        {
            int index = _cursor;
            if (_cursor < _slots.Count - 1)
            {
                _cursor++;
                _address = 0;
            }
            else
            {
                _cursor = -1;
                Interlocked.Increment(ref _fullScans);
            }

            if (space.IsDisposed)
            {
                RemoveSlot(index);
            }
        }

        return progress;
    }

    // The VMA loop of khugepaged_scan_mm_slot; true when it ran out of VMAs (vma == NULL).
    private bool ScanVmas(AddressSpace space, int pages, CollapseContext context, List<CollapseResult> results, ref int progress, ref CollapseStatus last)
    {
        IReadOnlyList<Vma> vmas = space.Vmas.FindIntersecting(VirtualAddress.FromRaw(_address), VirtualAddress.FromRaw(space.Vmas.TaskSize));
        foreach (Vma vma in vmas)
        {
            ulong hstart = (vma.Start.Value + HugeSize - 1) & ~(HugeSize - 1);
            ulong hend = vma.End.Value & ~(HugeSize - 1);
            if (!space.HugePagesAllowed(vma, enforceSysfs: true) || _address > hend)
            {
                progress++;
                continue;
            }

            _address = Math.Max(_address, hstart);
            while (_address < hend)
            {
                CollapseResult result = CollapseOne(space, VirtualAddress.FromRaw(_address), context, out bool attempted);
                results.Add(result);
                last = result.Status;
                _address += HugeSize;
                progress += 512;
                if (attempted || progress >= pages)
                {
                    return false;
                }
            }
        }

        return true;
    }

    private CollapseResult CollapseOne(AddressSpace space, VirtualAddress chunk, CollapseContext context, out bool attempted)
    {
        CollapseResult placed = InPlace(space, chunk);
        if (Counted(placed, ref _collapsedInPlace, out attempted))
        {
            return placed;
        }

        if (placed.Status is CollapseStatus.InPlaceHole or CollapseStatus.InPlaceMixedFolios
            && Reform(space, chunk) is CollapseResult reformed && Counted(reformed, ref _reformed, out attempted))
        {
            return reformed;
        }

        CollapseResult result;
        using (AddressSpace.LockScope node = space.EnterNode())
        {
            result = Collapser.CopyLocked(space, chunk, context, out attempted);
        }

        Counted(result, ref _collapsedByCopy, out _);
        return result;
    }

    // A success counts in its path's figure and in pages_collapsed.
    private bool Counted(CollapseResult result, ref long figure, out bool attempted)
    {
        attempted = result.Status == CollapseStatus.Succeed;
        if (attempted)
        {
            Interlocked.Increment(ref figure);
            Interlocked.Increment(ref _pagesCollapsed);
        }

        return attempted;
    }

    private void RemoveSlot(int index)
    {
        _slots.RemoveAt(index);
        if (_cursor > index)
        {
            _cursor--;
        }
        else if (_cursor == index)
        {
            _address = 0;
            if (_cursor >= _slots.Count)
            {
                _cursor = -1;
            }
        }
    }
}
