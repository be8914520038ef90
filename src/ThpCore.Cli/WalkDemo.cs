using System;
using Spectre.Console;
using ThpCore.Paging;

namespace ThpCore.Cli;

/// <summary>
/// <c>thp walk-demo</c>: builds a small 4-level address space with one page of each size and walks it the way
/// the CPU does, printing each level.
/// </summary>
internal static class WalkDemo
{
    // Places in a 4 GiB physical memory; the tables come from [1 MiB, 16 MiB).
    private static readonly PhysicalAddress s_frame4K = PhysicalAddress.Create(0x0123_4000);
    private static readonly PhysicalAddress s_frame2M = PhysicalAddress.Create(0x4000_0000);
    private static readonly PhysicalAddress s_frame1G = PhysicalAddress.Create(0x8000_0000);

    private static readonly VirtualAddress s_user4K = VirtualAddress.Create(0x0000_5555_5555_4000);
    private static readonly VirtualAddress s_user2M = VirtualAddress.Create(0x0000_7f00_0020_0000);
    private static readonly VirtualAddress s_kernel1G = VirtualAddress.Create(0xffff_8880_4000_0000);

    public static void Run(IAnsiConsole console)
    {
        var memory = new SparsePhysicalMemory(4UL << 30);
        var allocator = new SimpleFrameAllocator(PhysicalAddress.Create(0x10_0000), PhysicalAddress.Create(0x100_0000));
        var mapper = new PageTableMapper(memory, allocator, PagingMode.FourLevel);

        const PageTableFlags userCode = PageTableFlags.Present | PageTableFlags.User;
        const PageTableFlags userData = PageTableFlags.Present | PageTableFlags.Writable | PageTableFlags.User | PageTableFlags.ExecuteDisable;
        const PageTableFlags kernelData = PageTableFlags.Present | PageTableFlags.Writable | PageTableFlags.Global | PageTableFlags.ExecuteDisable;
        mapper.Map(s_user4K, s_frame4K, PageSize.Size4K, userCode).Ignore();
        mapper.Map(s_user2M, s_frame2M, PageSize.Size2M, userData).Ignore();
        mapper.Map(s_kernel1G, s_frame1G, PageSize.Size1G, kernelData).Ignore();

        CpuState cpu = CpuState.Create(mapper.Root.Value, Cr4Flags.Pae | Cr4Flags.Pge | Cr4Flags.Smep | Cr4Flags.Smap);

        console.Write(new Rule("[bold]thp walk-demo[/]: x86-64 4-level paging, walked as the CPU walks it").LeftJustified());
        console.MarkupLine("Physical memory: 4 GiB, sparse. Tables are real 8-byte entries in 4 KiB frames.");
        console.MarkupLineInterpolated($"CPU: CR3 = {mapper.Root.ToString()}, CR0.WP = 1, CR4.PGE/SMEP/SMAP = 1, EFER.NXE = 1.");
        console.MarkupLine("Mappings:");
        console.MarkupLineInterpolated($"  {s_user4K.ToString(),-20} -> {s_frame4K.ToString(),-11} 4 KiB, user code (read-only)");
        console.MarkupLineInterpolated($"  {s_user2M.ToString(),-20} -> {s_frame2M.ToString(),-11} 2 MiB, user data (no execute)");
        console.MarkupLineInterpolated($"  {s_kernel1G.ToString(),-20} -> {s_frame1G.ToString(),-11} 1 GiB, kernel data (global)");
        console.WriteLine();

        var trace = new WalkTrace();
        Walk(console, cpu, memory, trace, 1, "A user program reads its 4 KiB code page: four levels, PML4E -> PDPTE -> PDE -> PTE.",
            s_user4K.Add(0x123), AccessKind.Read, Privilege.User);
        Walk(console, cpu, memory, trace, 2, "The program writes into its 2 MiB page: the walk stops at the PDE (PS=1) and the CPU sets D there.",
            s_user2M.Add(0x1_2345), AccessKind.Write, Privilege.User);
        Walk(console, cpu, memory, trace, 3, "The kernel reads through its 1 GiB page: the walk stops at the PDPTE (PS=1).",
            s_kernel1G.Add(0x1234_5678), AccessKind.Read, Privilege.Supervisor);
        Walk(console, cpu, memory, trace, 4, "The user program tries to read kernel memory: every entry is present, but U/S=0, so it faults with P=1.",
            s_kernel1G.Add(0x1000), AccessKind.Read, Privilege.User);
        Walk(console, cpu, memory, trace, 5, "The program writes just past its code page, where nothing is mapped: the PTE is empty, so it faults with P=0.",
            s_user4K.Add(0x1000), AccessKind.Write, Privilege.User);
        Walk(console, cpu, memory, trace, 6, "The kernel jumps into the user's code page: the page is executable, but SMEP forbids supervisor fetches from user-mode addresses (I/D=1).",
            s_user4K, AccessKind.Fetch, Privilege.Supervisor);
    }

    private static void Walk(IAnsiConsole console, CpuState cpu, IPhysicalMemory memory, WalkTrace trace, int number, string story, VirtualAddress address, AccessKind access, Privilege privilege)
    {
        console.Write(new Rule($"Walk {number}: {privilege.ToString().ToLowerInvariant()} {access.ToString().ToLowerInvariant()} at {address}").LeftJustified());
        console.MarkupLine(Markup.Escape(story));
        WalkResult result = PageWalker.Translate(cpu, memory, address, access, privilege, default, trace);
        WalkRenderer.Render(console, trace, result);
        console.WriteLine();
    }
}
