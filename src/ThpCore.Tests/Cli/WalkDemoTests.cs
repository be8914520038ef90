using System;
using Xunit;

namespace ThpCore.Tests.Cli;

public sealed class WalkDemoTests
{
    private static string RunDemo()
    {
        var (exit, output, error) = ThpRunner.Run("walk-demo");
        Assert.True(exit == 0, error);
        return output;
    }

    [Fact]
    public void The_demo_translates_each_page_size_to_the_hand_computed_address()
    {
        string text = RunDemo();

        // 4 KiB: 0x555555554000 + 0x123 maps frame 0x1234000, so 0x1234123.
        Assert.Contains("0x555555554123 -> 0x1234123 (4K page, offset 0x123", text, StringComparison.Ordinal);

        // 2 MiB: 0x7f0000200000 + 0x12345 maps frame 0x40000000, so 0x40012345.
        Assert.Contains("0x7f0000212345 -> 0x40012345 (2M page, offset 0x12345", text, StringComparison.Ordinal);

        // 1 GiB: 0xffff888040000000 + 0x12345678 maps frame 0x80000000, so 0x92345678.
        Assert.Contains("0xffff888052345678 -> 0x92345678 (1G page, offset 0x12345678", text, StringComparison.Ordinal);
    }

    [Fact]
    public void The_demo_shows_three_faults_with_their_SDM_error_codes()
    {
        string text = RunDemo();

        // User read of a supervisor page: P=1, U/S=1 -> 0x5.
        Assert.Contains("error code 0x5 = P U", text, StringComparison.Ordinal);

        // User write to an empty PTE: P=0, W/R=1, U/S=1 -> 0x6, found at the PTE.
        Assert.Contains("Page fault at the PTE: CR2 = 0x555555555000, error code 0x6 = not-present W U", text, StringComparison.Ordinal);

        // Supervisor fetch from a user page under SMEP: P=1, I/D=1 -> 0x11.
        Assert.Contains("error code 0x11 = P I/D", text, StringComparison.Ordinal);
    }

    [Fact]
    public void The_demo_shows_each_level_and_the_A_and_D_updates()
    {
        string text = RunDemo();
        foreach (string level in new[] { "PML4E", "PDPTE", "PDE", "PTE" })
        {
            Assert.Contains(level, text, StringComparison.Ordinal);
        }

        Assert.Contains("CPU sets A+D", text, StringComparison.Ordinal);
        Assert.Contains("CPU sets A   at 0x", text, StringComparison.Ordinal);
    }
}
