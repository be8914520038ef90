namespace ThpCore.Inspection;

/// <summary>The file format of a guest physical-memory image.</summary>
public enum ImageFormat
{
    /// <summary>Detect: a file that starts with the ELF magic <c>7f 45 4c 46</c> is <see cref="Elf"/>, any other is <see cref="Raw"/>.</summary>
    Auto = 0,

    /// <summary>A flat dump from physical address 0, as QEMU's <c>pmemsave 0 SIZE FILE</c> writes: file offset = physical address.</summary>
    Raw = 1,

    /// <summary>An ELF64 core, as QEMU's <c>dump-guest-memory FILE</c> writes: each <c>PT_LOAD</c> maps a physical range to a file range.</summary>
    Elf = 2,
}
