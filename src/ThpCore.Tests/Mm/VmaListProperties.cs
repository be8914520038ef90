using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using ThpCore.Mm;
using ThpCore.Paging;

namespace ThpCore.Tests.Mm;

/// <summary>
/// Property: random sequences of <see cref="VmaList.Insert"/>, <see cref="VmaList.Remove"/> and <see cref="VmaList.Modify"/>
/// in a small window agree with a naive page-granular model (page → rights, flags, page offset of that page, anon_vma id),
/// and after every step the list is sorted, non-overlapping and fully merged.
/// </summary>
public sealed class VmaListProperties
{
    private const ulong Base = 0x1000_0000;
    private const int WindowPages = 64;

    private static readonly Protection[] s_protections = { Protection.Read | Protection.Write, Protection.Read, Protection.None };
    private static readonly VmaFlags[] s_flags =
    {
        VmaFlags.Anonymous, VmaFlags.Anonymous | VmaFlags.HugePage, VmaFlags.Anonymous | VmaFlags.NoHugePage, VmaFlags.Anonymous | VmaFlags.Locked,
    };

    public enum OpKind
    {
        Insert,
        Remove,
        Protect,
        Advise,
    }

    public sealed record Op(OpKind Kind, int StartPage, int Pages, int Attribute, int PageOffsetShift, int Anon)
    {
        public override string ToString() =>
            string.Create(CultureInfo.InvariantCulture, $"{Kind}(pages {StartPage}..{StartPage + Pages}, attr {Attribute}, shift {PageOffsetShift}, anon {Anon})");
    }

    private readonly record struct PageState(Protection Protection, VmaFlags Flags, ulong PageOffset, long Anon);

    private static readonly Gen<Op> s_opGen =
        from kind in Gen.Elements(OpKind.Insert, OpKind.Insert, OpKind.Insert, OpKind.Remove, OpKind.Protect, OpKind.Protect, OpKind.Advise)
        from start in Gen.Choose(0, WindowPages - 1)
        from pages in Gen.Choose(1, 16)
        from attribute in Gen.Choose(0, 3)
        from shift in Gen.Elements(0, 0, 0, -4, 4)
        from anon in Gen.Elements(0, 0, 1, 2)
        select new Op(kind, start, Math.Min(pages, WindowPages - start), attribute, shift, anon);

    private static readonly Gen<Op[]> s_scenarioGen = Gen.Choose(1, 40).SelectMany(n => s_opGen.ArrayOf(n));

    [Property(MaxTest = 300)]
    public Property Random_inserts_removes_and_modifies_agree_with_a_page_model_and_stay_fully_merged() =>
        Prop.ForAll(Arb.From(s_scenarioGen), ops =>
        {
            string? problem = Run(ops);
            return problem is null ? true.ToProperty() : false.ToProperty().Label(problem);
        });

    private static VirtualAddress PageAddress(int page) => VirtualAddress.Create(Base + ((ulong)page << 12));

    private static string? Run(Op[] ops)
    {
        var list = new VmaList();
        var model = new Dictionary<int, PageState>();
        for (int step = 0; step < ops.Length; step++)
        {
            Op op = ops[step];
            string? problem = Apply(list, model, op) ?? Check(list, model);
            if (problem is not null)
            {
                return string.Create(CultureInfo.InvariantCulture, $"step {step} {op}: {problem}\n  ops: {string.Join("; ", ops.Take(step + 1))}\n  list: {string.Join("; ", list.All)}");
            }
        }

        return null;
    }

    private static string? Apply(VmaList list, Dictionary<int, PageState> model, Op op)
    {
        int end = op.StartPage + op.Pages;
        VirtualAddress start = PageAddress(op.StartPage);
        VirtualAddress stop = PageAddress(end);
        bool anyMapped = Enumerable.Range(op.StartPage, op.Pages).Any(model.ContainsKey);
        bool allMapped = Enumerable.Range(op.StartPage, op.Pages).All(model.ContainsKey);
        switch (op.Kind)
        {
            case OpKind.Insert:
            {
                ulong pageOffset = (ulong)((long)(start.Value >> 12) + op.PageOffsetShift);
                var vma = new Vma(start, stop, s_protections[op.Attribute % 3], s_flags[op.Attribute], pageOffset, op.Anon);
                if (anyMapped)
                {
                    try
                    {
                        list.Insert(vma);
                        return "Insert over mapped pages did not throw";
                    }
                    catch (ArgumentException)
                    {
                        return null;
                    }
                }

                Vma result = list.Insert(vma);
                for (int p = op.StartPage; p < end; p++)
                {
                    model[p] = new PageState(vma.Protection, vma.Flags, pageOffset + (ulong)(p - op.StartPage), op.Anon);
                }

                return result.Start <= start && result.End >= stop ? null : $"Insert returned {result}, which does not cover the new VMA";
            }

            case OpKind.Remove:
            {
                IReadOnlyList<Vma> removed = list.Remove(start, stop);
                int expected = Enumerable.Range(op.StartPage, op.Pages).Count(model.ContainsKey);
                ulong removedPages = removed.Aggregate(0UL, (sum, v) => sum + v.PageCount);
                foreach (Vma v in removed)
                {
                    for (ulong a = v.Start.Value; a < v.End.Value; a += 4096)
                    {
                        PageState want = model[(int)((a - Base) >> 12)];
                        if (v.Protection != want.Protection || v.Flags != want.Flags || v.PageOffsetOf(VirtualAddress.Create(a)) != want.PageOffset)
                        {
                            return $"Remove returned {v}, which disagrees with the model at {a:x}";
                        }
                    }
                }

                for (int p = op.StartPage; p < end; p++)
                {
                    model.Remove(p);
                }

                return removedPages == (ulong)expected ? null : $"Remove returned {removedPages} pages, model had {expected}";
            }

            default:
            {
                Func<Vma, Vma> change = op.Kind == OpKind.Protect
                    ? v => v with { Protection = s_protections[op.Attribute % 3] }
                    : v => v with { Flags = s_flags[op.Attribute] };
                if (!allMapped)
                {
                    try
                    {
                        list.Modify(start, stop, change);
                        return "Modify over a hole did not throw";
                    }
                    catch (InvalidOperationException)
                    {
                        return null;
                    }
                }

                IReadOnlyList<Vma> result = list.Modify(start, stop, change);
                for (int p = op.StartPage; p < end; p++)
                {
                    PageState old = model[p];
                    model[p] = op.Kind == OpKind.Protect
                        ? old with { Protection = s_protections[op.Attribute % 3] }
                        : old with { Flags = s_flags[op.Attribute] };
                }

                bool covers = result.Count > 0 && result[0].Start <= start && result[^1].End >= stop
                    && result.Zip(result.Skip(1)).All(pair => pair.First.End == pair.Second.Start);
                return covers ? null : $"Modify returned {string.Join("; ", result)}, which does not cover the range";
            }
        }
    }

    private static string? Check(VmaList list, Dictionary<int, PageState> model)
    {
        var seen = new HashSet<int>();
        Vma? previous = null;
        foreach (Vma vma in list.All)
        {
            if ((vma.Start.Value & 4095) != 0 || (vma.End.Value & 4095) != 0 || vma.Start >= vma.End)
            {
                return $"{vma} is malformed";
            }

            if (previous is not null)
            {
                if (previous.End > vma.Start)
                {
                    return $"{previous} and {vma} overlap or are out of order";
                }

                if (previous.CanMergeWith(vma))
                {
                    return $"{previous} and {vma} are mergeable but not merged";
                }
            }

            for (ulong a = vma.Start.Value; a < vma.End.Value; a += 4096)
            {
                int page = (int)((a - Base) >> 12);
                if (!model.TryGetValue(page, out PageState want))
                {
                    return $"{vma} covers page {page}, which the model does not map";
                }

                if (vma.Protection != want.Protection || vma.Flags != want.Flags || vma.PageOffsetOf(VirtualAddress.Create(a)) != want.PageOffset)
                {
                    return $"{vma} disagrees with the model at page {page}: {want}";
                }

                if (vma.AnonVmaId != want.Anon && want.Anon != 0)
                {
                    return $"{vma} lost anon_vma {want.Anon} at page {page}";
                }

                // A page without an anon_vma adopts the one of the VMA it merged into (Linux: dup_anon_vma).
                model[page] = want with { Anon = vma.AnonVmaId };
                seen.Add(page);
            }

            previous = vma;
        }

        return seen.Count == model.Count ? null : $"the list covers {seen.Count} pages, the model {model.Count}";
    }
}
