using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;

namespace ThpCore.Tests.Mm;

/// <summary>
/// Property: random sequences of map, write, read and mremap (shrink, grow, move, fixed move) keep the books of
/// <see cref="AddressSpaceProperties.CheckBooks"/> straight after every step, and every written byte follows its page
/// to wherever it was moved.
/// </summary>
public sealed class MremapProperties
{
    private const ulong K4 = 4096;
    private const ulong M2 = 2UL << 20;
    private const ulong ByteOffset = 8;
    private const ulong FixedBase = 0x1_0000_0000;

    private static readonly ulong[] s_lengths = { K4, 3 * K4, M2, 2 * M2, M2 + (5 * K4) };

    public enum OpKind
    {
        Map,
        Read,
        Write,
        Remap,
    }

    public sealed record Op(OpKind Kind, int Vma, int Page, int Pages, int Mode)
    {
        public override string ToString() =>
            string.Create(CultureInfo.InvariantCulture, $"{Kind}(vma {Vma}, page {Page}, pages {Pages}, mode {Mode})");
    }

    public sealed record Scenario(ThpEnabled Enabled, Op[] Ops)
    {
        public override string ToString() => $"{Enabled}: {string.Join(", ", Ops.Select(o => o.ToString()))}";
    }

    private static readonly Gen<Op> s_opGen =
        from kind in Gen.Elements(OpKind.Map, OpKind.Read, OpKind.Write, OpKind.Write, OpKind.Remap, OpKind.Remap)
        from vma in Gen.Choose(0, 7)
        from page in Gen.Choose(0, 1100)
        from pages in Gen.Elements(1, 2, 7, 512, 600, 1024)
        from mode in Gen.Choose(0, 5)
        select new Op(kind, vma, page, pages, mode);

    private static readonly Gen<Scenario> s_scenarioGen =
        from enabled in Gen.Elements(ThpEnabled.Always, ThpEnabled.Always, ThpEnabled.Never)
        from n in Gen.Choose(1, 30)
        from ops in s_opGen.ArrayOf(n)
        select new Scenario(enabled, ops);

    [Property(MaxTest = 150)]
    public Property Random_mremap_sequences_keep_folios_frames_and_bytes_consistent() =>
        Prop.ForAll(Arb.From(s_scenarioGen), scenario =>
        {
            string? problem = Run(scenario);
            return problem is null ? true.ToProperty() : false.ToProperty().Label(problem);
        });

    private static string? Run(Scenario scenario)
    {
        var space = new AddressSpace(new MemoryNode(24UL << 20), new ThpSettings { Enabled = scenario.Enabled });
        var written = new Dictionary<ulong, byte>();
        byte next = 1;
        for (int step = 0; step < scenario.Ops.Length; step++)
        {
            Op op = scenario.Ops[step];
            IReadOnlyList<Vma> vmas = space.Vmas.All;
            if (op.Kind == OpKind.Map || vmas.Count == 0)
            {
                space.Map(s_lengths[op.Page % s_lengths.Length], Protection.Read | Protection.Write);
            }
            else
            {
                Vma vma = vmas[op.Vma % vmas.Count];
                ulong page = vma.Start.Value + (((ulong)op.Page % vma.PageCount) * K4);
                ulong pages = Math.Min((ulong)op.Pages, (vma.End.Value - page) / K4);
                if (op.Kind == OpKind.Remap)
                {
                    string? failed = Remap(space, written, op, page, pages, vma);
                    if (failed is not null)
                    {
                        return $"step {step} {op}: {failed}";
                    }
                }
                else
                {
                    bool write = op.Kind == OpKind.Write;
                    AccessResult result = space.Access(VirtualAddress.FromRaw(page + ByteOffset), write ? AccessKind.Write : AccessKind.Read);
                    if (!result.IsTranslated)
                    {
                        return $"step {step} {op}: {result} for {vma}";
                    }

                    Span<byte> frame = space.Node.Memory.GetWritableFrame(result.PhysicalAddress.FrameNumber);
                    int offset = (int)result.PhysicalAddress.PageOffset(PageSize.Size4K);
                    byte expected = written.TryGetValue(page, out byte value) ? value : (byte)0;
                    if (frame[offset] != expected)
                    {
                        return $"step {step} {op}: read {frame[offset]} at {page:x}, expected {expected}";
                    }

                    if (write)
                    {
                        frame[offset] = next;
                        written[page] = next;
                        next = (byte)((next % 250) + 1);
                    }
                }
            }

            string? broken = AddressSpaceProperties.CheckBooks([space]);
            if (broken is not null)
            {
                return $"after step {step} {op}: {broken}";
            }
        }

        return null;
    }

    private static string? Remap(AddressSpace space, Dictionary<ulong, byte> written, Op op, ulong page, ulong pages, Vma vma)
    {
        ulong oldLength = pages * K4;
        VirtualAddress old = VirtualAddress.FromRaw(page);
        ulong newLength;
        ulong result;
        ulong moved;
        switch (op.Mode)
        {
            case 0:
                // Shrink in place.
                newLength = Math.Max(1, pages / 2) * K4;
                result = space.Remap(old, oldLength, newLength).Value;
                moved = Math.Min(oldLength, newLength);
                break;
            case 1:
            case 2:
            {
                // Fixed move, to an aligned or an unaligned destination, sometimes growing or shrinking.
                ulong target = FixedBase + ((ulong)op.Vma * 8 * M2) + (op.Mode == 2 ? ((ulong)op.Page % 4) * K4 : 0);
                newLength = op.Page % 3 == 0 ? oldLength + K4 : op.Page % 3 == 1 ? oldLength : Math.Max(1, pages / 2) * K4;
                if (page < target + newLength && target < page + oldLength)
                {
                    return null;
                }

                Forget(written, target, newLength);
                result = space.Remap(old, oldLength, newLength, RemapFlags.MayMove | RemapFlags.Fixed, VirtualAddress.FromRaw(target)).Value;
                if (result != target)
                {
                    return $"moved to {result:x}, not {target:x}";
                }

                moved = Math.Min(oldLength, newLength);
                break;
            }

            default:
            {
                // Grow the range up to its VMA's end, in place or moving.
                oldLength = vma.End.Value - page;
                newLength = oldLength + ((ulong)op.Pages * K4);
                bool mayMove = op.Mode != 5;
                try
                {
                    result = space.Remap(old, oldLength, newLength, mayMove ? RemapFlags.MayMove : RemapFlags.None).Value;
                }
                catch (InvalidOperationException) when (!mayMove)
                {
                    return space.Vmas.Find(old) == vma ? null : "a refused growth changed the VMA";
                }

                moved = oldLength;
                break;
            }
        }

        // The tail beyond the kept length is gone; the kept pages moved from page to result.
        Forget(written, page + moved, oldLength - moved);
        var shifted = written.Where(kv => kv.Key >= page && kv.Key < page + moved).ToList();
        foreach (KeyValuePair<ulong, byte> kv in shifted)
        {
            written.Remove(kv.Key);
        }

        foreach (KeyValuePair<ulong, byte> kv in shifted)
        {
            written[kv.Key - page + result] = kv.Value;
        }

        return null;
    }

    private static void Forget(Dictionary<ulong, byte> written, ulong start, ulong length)
    {
        foreach (ulong key in written.Keys.Where(k => k >= start && k < start + length).ToList())
        {
            written.Remove(key);
        }
    }
}
