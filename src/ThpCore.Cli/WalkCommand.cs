using System.CommandLine;
using Spectre.Console;
using ThpCore.Inspection;
using ThpCore.Paging;

namespace ThpCore.Cli;

/// <summary><c>thp walk</c>: one page walk through a guest image, step by step.</summary>
internal static class WalkCommand
{
    public static Command Create(CliContext context)
    {
        var image = new ImageOptions();
        var address = new Argument<string>("VA") { Description = "The virtual address to translate, in hexadecimal." };
        var write = new Option<bool>("--write") { Description = "Translate for a write (default: a read)." };
        var user = new Option<bool>("--user") { Description = "A user-mode access (CPL 3); default: supervisor." };
        var fetch = new Option<bool>("--fetch") { Description = "An instruction fetch." };

        var command = new Command("walk", "Walk one virtual address through the page tables of a QEMU memory image, level by level, as the CPU would (nothing is written: the image is read-only, so A/D are not set).");
        image.AddTo(command);
        command.Arguments.Add(address);
        command.Options.Add(write);
        command.Options.Add(user);
        command.Options.Add(fetch);
        command.Validators.Add(result =>
        {
            if (result.GetValue(write) && result.GetValue(fetch))
            {
                result.AddError("An access is a read, a write (--write) or a fetch (--fetch), not both.");
            }
        });

        command.SetAction(parse => Cli.Run(context, () =>
        {
            ulong va = HexNumber.Parse(parse.GetValue(address)!, "VA");
            var (guest, cpu) = image.Open(parse);
            using (guest)
            {
                AccessKind access = parse.GetValue(write) ? AccessKind.Write : parse.GetValue(fetch) ? AccessKind.Fetch : AccessKind.Read;
                Privilege privilege = parse.GetValue(user) ? Privilege.User : Privilege.Supervisor;
                var trace = new WalkTrace();
                WalkResult result = PageWalker.Translate(cpu, guest, VirtualAddress.FromRaw(va), access, privilege, new WalkOptions { Probe = true }, trace);
                context.Console.MarkupLineInterpolated($"[bold]{privilege.ToString().ToLowerInvariant()} {access.ToString().ToLowerInvariant()}[/] at {VirtualAddress.FromRaw(va).ToString()}; {ImageOptions.Describe(cpu)}");
                WalkRenderer.Render(context.Console, trace, result);
                return result.IsTranslated ? ExitCodes.Success : ExitCodes.WalkFaulted;
            }
        }));
        return command;
    }
}
