using System;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using ThpCore.Internal;

namespace ThpCore.Collapse;

/// <summary>
/// The 512-entry check at the heart of in-place collapse: do the PTEs of one page table map one naturally aligned
/// 2 MiB run of frames, entry i mapping frame base + i, all with entry 0's attributes apart from A and D? The same
/// test FreeBSD's <c>pmap_promote_pde</c> makes (frame <c>first + i × 4 KiB</c>, attributes equal under
/// <c>PG_PTE_PROMOTE</c>, which leaves A out), here over all 64 bits except the address, A and D.
/// </summary>
/// <remarks>
/// Entry i is expected to be exactly <c>(entry0 &amp; ~(A|D)) + (i &lt;&lt; 12)</c> once its own A and D are masked;
/// entry 0 must be present (P) and its frame 2 MiB-aligned. No carry can leave the address field: the base is
/// 2 MiB-aligned and i &lt; 512. The vector forms compare four (<see cref="Vector256"/>) or two
/// (<see cref="Vector128"/>) entries per step against a running vector of expected entries, OR the differences
/// together, and look for the first bad index with the scalar loop only when something differed. Nothing allocates.
/// </remarks>
internal static class PteRunCheck
{
    /// <summary>The number of entries in a page table.</summary>
    internal const int Entries = 512;

    /// <summary>The accessed bit (5).</summary>
    internal const ulong Accessed = 1UL << 5;

    /// <summary>The dirty bit (6).</summary>
    internal const ulong Dirty = 1UL << 6;

    private const ulong Present = 1UL;
    private const ulong AccessedDirty = Accessed | Dirty;
    private const ulong Compared = ~AccessedDirty;

    // Bits 12..20 of entry 0: its frame must start a 2 MiB run.
    private const ulong RunOffsetMask = 0x1F_F000UL;

    /// <summary>
    /// The index of the first entry that breaks the run, or -1 when all 512 form it; <paramref name="accessedDirty"/>
    /// is the OR of A and D over all entries (meaningful when the run holds). Uses the widest vector path the
    /// hardware accelerates.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="ptes"/> does not hold exactly 512 entries.</exception>
    internal static int FindFirstMismatch(ReadOnlySpan<ulong> ptes, out ulong accessedDirty)
    {
        if (Vector256.IsHardwareAccelerated)
        {
            return FindFirstMismatchVector256(ptes, out accessedDirty);
        }

        if (Vector128.IsHardwareAccelerated)
        {
            return FindFirstMismatchVector128(ptes, out accessedDirty);
        }

        return FindFirstMismatchScalar(ptes, out accessedDirty);
    }

    /// <summary>The scalar form of <see cref="FindFirstMismatch"/>: one entry at a time, stopping at the first mismatch.</summary>
    /// <exception cref="ArgumentException"><paramref name="ptes"/> does not hold exactly 512 entries.</exception>
    internal static int FindFirstMismatchScalar(ReadOnlySpan<ulong> ptes, out ulong accessedDirty)
    {
        return TryStart(ptes, out ulong expectedBase, out accessedDirty) ? ScanScalar(ptes, expectedBase, ref accessedDirty) : 0;
    }

    /// <summary>The <see cref="Vector256"/> form of <see cref="FindFirstMismatch"/> (a software fallback when not accelerated).</summary>
    /// <exception cref="ArgumentException"><paramref name="ptes"/> does not hold exactly 512 entries.</exception>
    internal static int FindFirstMismatchVector256(ReadOnlySpan<ulong> ptes, out ulong accessedDirty)
    {
        if (!TryStart(ptes, out ulong expectedBase, out accessedDirty))
        {
            return 0;
        }

        ref ulong start = ref MemoryMarshal.GetReference(ptes);
        Vector256<ulong> mask = Vector256.Create(Compared);
        Vector256<ulong> step = Vector256.Create(4UL << 12);
        Vector256<ulong> expected = Vector256.Create(expectedBase) + Vector256.Create(0UL, 1UL << 12, 2UL << 12, 3UL << 12);
        Vector256<ulong> differences = Vector256<ulong>.Zero;
        Vector256<ulong> seen = Vector256<ulong>.Zero;
        for (nuint i = 0; i < Entries; i += 8)
        {
            // Two vectors per step: independent chains keep both load ports busy.
            Vector256<ulong> a = Vector256.LoadUnsafe(ref start, i);
            Vector256<ulong> b = Vector256.LoadUnsafe(ref start, i + 4);
            Vector256<ulong> expectedB = expected + step;
            differences |= ((a & mask) ^ expected) | ((b & mask) ^ expectedB);
            seen |= a | b;
            expected = expectedB + step;
        }

        if (differences != Vector256<ulong>.Zero)
        {
            return ScanScalar(ptes, expectedBase, ref accessedDirty);
        }

        Vector128<ulong> folded = seen.GetLower() | seen.GetUpper();
        accessedDirty = (folded.GetElement(0) | folded.GetElement(1)) & AccessedDirty;
        return -1;
    }

    /// <summary>The <see cref="Vector128"/> form of <see cref="FindFirstMismatch"/> (a software fallback when not accelerated).</summary>
    /// <exception cref="ArgumentException"><paramref name="ptes"/> does not hold exactly 512 entries.</exception>
    internal static int FindFirstMismatchVector128(ReadOnlySpan<ulong> ptes, out ulong accessedDirty)
    {
        if (!TryStart(ptes, out ulong expectedBase, out accessedDirty))
        {
            return 0;
        }

        ref ulong start = ref MemoryMarshal.GetReference(ptes);
        Vector128<ulong> mask = Vector128.Create(Compared);
        Vector128<ulong> step = Vector128.Create(2UL << 12);
        Vector128<ulong> expected = Vector128.Create(expectedBase) + Vector128.Create(0UL, 1UL << 12);
        Vector128<ulong> differences = Vector128<ulong>.Zero;
        Vector128<ulong> seen = Vector128<ulong>.Zero;
        for (nuint i = 0; i < Entries; i += 4)
        {
            Vector128<ulong> a = Vector128.LoadUnsafe(ref start, i);
            Vector128<ulong> b = Vector128.LoadUnsafe(ref start, i + 2);
            Vector128<ulong> expectedB = expected + step;
            differences |= ((a & mask) ^ expected) | ((b & mask) ^ expectedB);
            seen |= a | b;
            expected = expectedB + step;
        }

        if (differences != Vector128<ulong>.Zero)
        {
            return ScanScalar(ptes, expectedBase, ref accessedDirty);
        }

        accessedDirty = (seen.GetElement(0) | seen.GetElement(1)) & AccessedDirty;
        return -1;
    }

    // Checks the length; false when entry 0 is not present or its frame does not start a 2 MiB run.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool TryStart(ReadOnlySpan<ulong> ptes, out ulong expectedBase, out ulong accessedDirty)
    {
        CheckLength(ptes);
        ulong first = ptes[0];
        expectedBase = first & Compared;
        accessedDirty = 0;
        return (first & Present) != 0 && (first & RunOffsetMask) == 0;
    }

    private static int ScanScalar(ReadOnlySpan<ulong> ptes, ulong expectedBase, ref ulong accessedDirty)
    {
        ulong seen = 0;
        for (int i = 0; i < Entries; i++)
        {
            ulong entry = ptes[i];
            if ((entry & Compared) != expectedBase + ((ulong)i << 12))
            {
                accessedDirty = seen & AccessedDirty;
                return i;
            }

            seen |= entry;
        }

        accessedDirty = seen & AccessedDirty;
        return -1;
    }

    private static void CheckLength(ReadOnlySpan<ulong> ptes)
    {
        if (ptes.Length != Entries)
        {
            ThrowHelper.ThrowArgument(nameof(ptes), $"A page table holds {Entries} entries; {ptes.Length} were given.");
        }
    }
}
