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

    public static PageTableEntry Pte(AddressSpace space, ulong va) => AddressSpaceTests.Pte(space, va);

    public static PageTableEntry Pde(AddressSpace space, ulong va) => AddressSpaceTests.Pde(space, va);
}
