using System;
using System.IO;
using System.Linq;
using ThpCore.Paging;
using Xunit;

namespace ThpCore.Tests;

public sealed class ReadmeExampleTests
{
    private const string Marker = "<!-- readme-example -->";

    [Fact]
    public void The_README_example_is_this_compiled_code_line_for_line()
    {
        string[] readme = File.ReadAllLines(Path.Combine(AppContext.BaseDirectory, "README.md"));
        int start = Array.IndexOf(readme, Marker);
        Assert.True(start >= 0, "README.md lost its example marker.");
        string[] block = readme.Skip(start + 2).TakeWhile(l => l != "```").Select(l => l.Trim()).ToArray();

        string[] source = File.ReadAllLines(Path.Combine(AppContext.BaseDirectory, "ReadmeSource", "ReadmeExampleTests.cs"));
        int from = Array.FindIndex(source, l => l.Trim() == "#region readme-example");
        int to = Array.FindIndex(source, l => l.Trim() == "#endregion");
        string[] compiled = source[(from + 1)..to].Select(l => l.Trim()).ToArray();

        Assert.Equal(compiled, block);
        Assert.InRange(block.Length, 5, 12);
    }

    [Fact]
    public void The_README_example_translates_and_sets_accessed_and_dirty()
    {
        var output = new StringWriter();
        TextWriter original = Console.Out;
        Console.SetOut(output);
        try
        {
            Example();
        }
        finally
        {
            Console.SetOut(original);
        }

        string text = output.ToString();
        Assert.Contains("0x7f0000212345 -> 0x40012345 (2M, W U X)", text, StringComparison.Ordinal);
        Assert.Contains("[P W U A D PS]", text, StringComparison.Ordinal);
    }

    private static void Example()
    {
        #region readme-example
        var memory = new SparsePhysicalMemory(4UL << 30);                        // 4 GiB, zero until written
        var frames = new SimpleFrameAllocator(PhysicalAddress.Create(0x10_0000), PhysicalAddress.Create(0x20_0000));
        var mapper = new PageTableMapper(memory, frames, PagingMode.FourLevel);   // allocates a PML4 table
        var page = VirtualAddress.Create(0x7f00_0020_0000);
        mapper.Map(page, PhysicalAddress.Create(0x4000_0000), PageSize.Size2M,
            PageTableFlags.Present | PageTableFlags.Writable | PageTableFlags.User).Ignore(); // nothing cached yet
        var cpu = CpuState.Create(cr3: mapper.Root.Value);                       // CR0.WP=1, EFER.NXE=1
        WalkResult walk = PageWalker.Translate(cpu, memory, page.Add(0x1_2345), AccessKind.Write, Privilege.User);
        mapper.TryGetLeaf(page, out PageTableEntry pde, out _);
        Console.WriteLine($"{walk}\n{pde}");   // ... -> 0x40012345 (2M, W U X) / PDE ... [P W U A D PS] ...
        #endregion
    }
}
