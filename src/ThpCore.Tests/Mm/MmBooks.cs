using System.Collections.Generic;
using System.Linq;
using ThpCore.Memory;
using ThpCore.Mm;
using ThpCore.Paging;

namespace ThpCore.Tests.Mm;

/// <summary>The whole-node bookkeeping check, independent of the code under test's own counters.</summary>
internal static class MmBooks
{
    public static string? Check(List<AddressSpace> spaces, IReadOnlyList<PinHandle> pins, SwapDevice? device)
    {
        MemoryNode node = spaces[0].Node;
        var mappings = new Dictionary<ulong, int>();
        var zeroFolios = new HashSet<Folio>();
        var swapPtes = new Dictionary<ulong, int>();
        long tables = 0;
        long deposited = 0;
        string? problem = null;

        foreach (AddressSpace space in spaces)
        {
            zeroFolios.Add(space.ZeroPage);
            if (space.HugeZeroPage is Folio huge)
            {
                zeroFolios.Add(huge);
            }
        }

        bool IsZero(ulong frame) => zeroFolios.Any(z => frame >= z.HeadFrame && frame < z.HeadFrame + (ulong)z.PageCount);

        void Visit(ulong table, int level)
        {
            tables++;
            for (ulong i = 0; i < 512; i++)
            {
                ulong raw = ((IPhysicalMemory)node.Memory).ReadUInt64(PhysicalAddress.Create(table + (i * 8)));
                if (raw == 0)
                {
                    continue;
                }

                if ((raw & 0x101) == 0)
                {
                    if (level != 1 || !SwapEntry.TryFromPteRaw(raw, out SwapEntry entry, out _) || !entry.IsSwap)
                    {
                        problem ??= $"non-present entry {raw:x} at level {level} is not a swap entry";
                        continue;
                    }

                    swapPtes[entry.Offset] = swapPtes.GetValueOrDefault(entry.Offset) + 1;
                    continue;
                }

                bool leaf = level == 1 || (level == 2 && (raw & 0x80) != 0);
                if (!leaf)
                {
                    Visit(raw & PageTableEntry.AddressMask4K, level - 1);
                    continue;
                }

                if (level == 2)
                {
                    deposited++;
                }

                ulong frame = (raw & (level == 1 ? PageTableEntry.AddressMask4K : PageTableEntry.AddressMask2M)) >> 12;
                if (IsZero(frame))
                {
                    continue;
                }

                Folio folio = node.FolioOf(frame);
                mappings[folio.HeadFrame] = mappings.GetValueOrDefault(folio.HeadFrame) + 1;
            }
        }

        foreach (AddressSpace space in spaces)
        {
            Visit(space.Root.Value, (int)space.Cpu.PagingMode);
        }

        if (problem is not null)
        {
            return problem;
        }

        // Pins: one per listed page of a live handle, on the folio holding it (the 4 KiB zero page is never pinned).
        var pinned = new Dictionary<ulong, int>();
        foreach (PinHandle pin in pins)
        {
            foreach (PhysicalAddress page in pin.Pages)
            {
                if (page.FrameNumber == spaces[0].ZeroPage.HeadFrame)
                {
                    continue;
                }

                ulong head = node.FolioOf(page.FrameNumber).HeadFrame;
                pinned[head] = pinned.GetValueOrDefault(head) + 1;
            }
        }

        // The swap cache: every in-use slot's folio, found through any space attached to the device.
        var cached = new HashSet<ulong>();
        if (device is not null)
        {
            for (ulong slot = 1; slot < device.Slots; slot++)
            {
                uint count = device.SwapCount(slot);
                int ptes = swapPtes.GetValueOrDefault(slot);
                if (count != ptes)
                {
                    return $"swap slot {slot} has count {count} but {ptes} swap PTEs";
                }

                foreach (AddressSpace space in spaces)
                {
                    if (space.TryGetSwapCacheFolio(slot, out Folio folio))
                    {
                        cached.Add(folio.HeadFrame);
                        break;
                    }
                }
            }

            ulong used = device.UsedSlots;
            ulong referenced = (ulong)swapPtes.Count;
            if (used < referenced)
            {
                return $"{used} slots in use but {referenced} slots referenced by swap PTEs";
            }
        }

        long dataFrames = zeroFolios.Sum(z => (long)z.PageCount);
        foreach (ulong head in mappings.Keys.Concat(pinned.Keys).Concat(cached).Distinct())
        {
            Folio folio = node.FolioOf(head);
            int mapped = mappings.GetValueOrDefault(head);
            int pinCount = pinned.GetValueOrDefault(head);
            int pinReferences = folio.IsLarge ? pinCount : pinCount * 1024;
            int cacheReferences = cached.Contains(head) ? folio.PageCount : 0;
            if (IsZero(head))
            {
                // A zero page is held by the address spaces (not per mapping); a GUP pin of the huge zero page adds
                // its references on top.
                if (folio.RefCount < 1 + pinReferences)
                {
                    return $"zero {folio}: RefCount {folio.RefCount} < 1 + {pinReferences} pin references";
                }

                continue;
            }

            if (folio.MapCount != mapped)
            {
                return $"{folio}: {mapped} mappings in the tables, MapCount {folio.MapCount}";
            }

            if (folio.RefCount < folio.MapCount + pinCount)
            {
                return $"{folio}: RefCount {folio.RefCount} < MapCount {folio.MapCount} + pins {pinCount}";
            }

            if (folio.RefCount != mapped + pinReferences + cacheReferences)
            {
                return $"{folio}: RefCount {folio.RefCount}, expected {mapped} mappings + {pinReferences} pin references + {cacheReferences} swap-cache references";
            }

            dataFrames += folio.PageCount;
        }

        long free = 0;
        long pageTables = 0;
        long data = 0;
        for (ulong frame = 0; frame < node.Frames.FrameCount; frame++)
        {
            FrameFlags flags = node.Frames.Describe(frame).Flags;
            if ((flags & FrameFlags.Free) != 0)
            {
                free++;
            }
            else if ((flags & FrameFlags.PageTable) != 0)
            {
                pageTables++;
            }
            else if ((flags & FrameFlags.Reserved) != 0)
            {
                return $"frame {frame} is reserved in a node without reserved ranges";
            }
            else
            {
                data++;
            }
        }

        if (pageTables != tables + deposited)
        {
            return $"{pageTables} page-table frames, but {tables} tables are reachable and {deposited} are deposited";
        }

        if (data != dataFrames)
        {
            return $"{data} data frames, but mapped, pinned and swap-cached folios and zero pages hold {dataFrames}";
        }

        return (ulong)free != node.Buddy.FreeFrames ? $"{free} free frames, the buddy allocator says {node.Buddy.FreeFrames}" : null;
    }
}
