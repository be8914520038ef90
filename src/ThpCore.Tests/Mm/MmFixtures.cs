using ThpCore.Mm;
using ThpCore.Paging;

namespace ThpCore.Tests.Mm;

/// <summary>Sizes, rights and settings the Mm tests share (<c>using static</c>).</summary>
internal static class MmFixtures
{
    public const ulong K4 = 4096;
    public const ulong M2 = 2UL << 20;
    public const Protection Rw = Protection.Read | Protection.Write;

    public static ThpSettings Always { get; } = new() { Enabled = ThpEnabled.Always };

    public static ThpSettings Never { get; } = new() { Enabled = ThpEnabled.Never };

    /// <summary>The rights the random-sequence properties map and protect with (read-write weighted twice), by a generated index.</summary>
    public static Protection PropertyProtection(int index) => s_propertyProtections[index % s_propertyProtections.Length];

    /// <summary>The mapping lengths the random-sequence properties use (small, whole THPs, THPs plus a tail), by a generated index.</summary>
    public static ulong PropertyLength(int index) => s_propertyLengths[index % s_propertyLengths.Length];

    private static readonly Protection[] s_propertyProtections =
    [
        Protection.Read | Protection.Write, Protection.Read | Protection.Write, Protection.Read, Protection.None, Protection.Read | Protection.Write | Protection.Execute,
    ];

    private static readonly ulong[] s_propertyLengths = [K4, 3 * K4, 16 * K4, M2, 2 * M2, M2 + (5 * K4)];

    public static PageTableEntry Pte(AddressSpace space, ulong va) => AddressSpaceTests.Pte(space, va);

    public static PageTableEntry Pde(AddressSpace space, ulong va) => AddressSpaceTests.Pde(space, va);
}
