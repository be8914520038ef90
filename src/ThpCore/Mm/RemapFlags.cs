using System;

namespace ThpCore.Mm;

/// <summary>
/// The <c>mremap</c> flags <see cref="AddressSpace.Remap"/> models; each value is Linux's <c>MREMAP_*</c> bit
/// (<c>include/uapi/linux/mman.h</c>). <c>MREMAP_DONTUNMAP</c> (4) is not modelled.
/// </summary>
[Flags]
public enum RemapFlags
{
    /// <summary>No flag: the range is resized in place or not at all.</summary>
    None = 0,

    /// <summary><c>MREMAP_MAYMOVE</c> (1): the range may be moved when it cannot grow in place.</summary>
    MayMove = 1,

    /// <summary><c>MREMAP_FIXED</c> (2): move to the given new address, unmapping what is there first; needs <see cref="MayMove"/>.</summary>
    Fixed = 2,
}
