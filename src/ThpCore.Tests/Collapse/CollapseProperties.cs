using System;
using System.Collections.Generic;
using System.Linq;
using FsCheck.Xunit;
using ThpCore.Collapse;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;
using ThpCore.Tests.Mm;
using static ThpCore.Tests.Collapse.CollapseFixture;

namespace ThpCore.Tests.Collapse;

/// <summary>
/// Mm operations (writes, DONTNEED, PAGEOUT, pins, fork) mixed with copy collapses in both contexts, MADV_COLLAPSE
/// and scanner steps over a parent and a child: after every step <see cref="MmBooks.Check"/> holds, and at the end
/// every byte written reads back in the space that wrote it.
/// </summary>
public sealed class CollapseProperties
{
    private const int Pages = 1024;

    [Property(MaxTest = 25)]
    public bool Collapses_never_lose_bytes_or_frames(int[] ops)
    {
        var settings = new ThpSettings { Enabled = ThpEnabled.Madvise, MaxPtesNone = 400, MaxPtesSwap = 8, MaxPtesShared = 100 };
        AddressSpace parent = NewSpace(settings, memory: 32UL << 20);
        VirtualAddress start = MapAtBase(parent, 2 * M2);
        parent.Advise(start, 2 * M2, Advice.HugePage);
        var spaces = new List<AddressSpace> { parent };
        var written = new List<Dictionary<int, byte>> { new() };
        var pins = new List<PinHandle>();
        var scanner = new Khugepaged(settings);
        scanner.Register(parent);
        byte next = 1;
        try
        {
            foreach (int raw in ops.Take(40))
            {
                uint op = (uint)raw;
                int who = (int)((op >> 3) % (uint)spaces.Count);
                AddressSpace space = spaces[who];
                int page = (int)((op >> 4) % Pages);
                VirtualAddress va = start.Add((ulong)page * K4);
                int count = 1 + (int)((op >> 14) % 64);
                switch (op % 8)
                {
                    case 0:
                    case 1:
                        for (int i = page; i < Math.Min(Pages, page + count); i++)
                        {
                            AccessResult w = space.Access(start.Add((ulong)i * K4), AccessKind.Write);
                            if (w.Status != AccessStatus.Translated)
                            {
                                continue;
                            }

                            space.Node.Memory.GetWritableFrame(w.PhysicalAddress.FrameNumber)[8] = next;
                            written[who][i] = next++;
                        }

                        break;
                    case 2:
                        int n = Math.Min(count, Pages - page);
                        space.Advise(va, (ulong)n * K4, (op >> 20) % 2 == 0 ? Advice.DontNeed : Advice.PageOut);
                        if ((op >> 20) % 2 == 0)
                        {
                            for (int i = page; i < page + n; i++)
                            {
                                written[who].Remove(i);
                            }
                        }

                        break;
                    case 3:
                        if (pins.Count > 0 && (op >> 20) % 2 == 0)
                        {
                            pins[0].Dispose();
                            pins.RemoveAt(0);
                        }
                        else if (pins.Count < 3)
                        {
                            pins.Add(space.Pin(va, K4, write: false));
                        }

                        break;
                    case 4:
                        if (spaces.Count == 1)
                        {
                            AddressSpace child = parent.Fork();
                            spaces.Add(child);
                            written.Add(new Dictionary<int, byte>(written[0]));
                            scanner.Register(child);
                        }

                        break;
                    case 5:
                        Collapser.TryCollapseByCopy(space, va, (op >> 20) % 2 == 0 ? CollapseContext.MadviseCollapse : CollapseContext.Khugepaged());
                        break;
                    case 6:
                        Collapser.MadviseCollapse(space, start, 2 * M2);
                        break;
                    default:
                        scanner.ScanStep(1 + (int)((op >> 14) % 2048));
                        break;
                }

                string? problem = MmBooks.Check(spaces, pins, parent.Swap);
                if (problem is not null)
                {
                    throw new InvalidOperationException($"after op {op % 8}: {problem}");
                }
            }

            for (int s = 0; s < spaces.Count; s++)
            {
                foreach ((int page, byte value) in written[s])
                {
                    AccessResult r = spaces[s].Access(start.Add((ulong)page * K4), AccessKind.Read);
                    byte seen = spaces[s].Node.Memory.ReadFrame(r.PhysicalAddress.FrameNumber)[8];
                    if (seen != value)
                    {
                        throw new InvalidOperationException($"space {s} page {page} reads {seen}, wrote {value}");
                    }
                }
            }

            return true;
        }
        finally
        {
            foreach (PinHandle pin in pins)
            {
                pin.Dispose();
            }
        }
    }
}
