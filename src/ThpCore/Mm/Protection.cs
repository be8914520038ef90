using System;

namespace ThpCore.Mm;

/// <summary>
/// The access rights of a mapping, with the values of Linux's <c>PROT_*</c> constants
/// (<c>PROT_READ</c> = 1, <c>PROT_WRITE</c> = 2, <c>PROT_EXEC</c> = 4).
/// </summary>
/// <remarks>
/// In Linux these rights live in <c>vm_flags</c> as <c>VM_READ</c>/<c>VM_WRITE</c>/<c>VM_EXEC</c>, so two VMAs
/// with different rights never merge (<c>is_mergeable_vma</c> compares the whole of <c>vm_flags</c>).
/// </remarks>
[Flags]
public enum Protection : byte
{
    /// <summary><c>PROT_NONE</c>: no access.</summary>
    None = 0,

    /// <summary><c>PROT_READ</c>.</summary>
    Read = 1,

    /// <summary><c>PROT_WRITE</c>.</summary>
    Write = 2,

    /// <summary><c>PROT_EXEC</c>.</summary>
    Execute = 4,
}
