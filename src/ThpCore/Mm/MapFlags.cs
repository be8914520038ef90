using System;

namespace ThpCore.Mm;

/// <summary>
/// The placement flags of <c>mmap</c> that <see cref="AddressSpace.Map"/> models; each value is Linux's bit on x86-64
/// (<c>include/uapi/asm-generic/mman-common.h</c>, <c>arch/x86/include/uapi/asm/mman.h</c>). Private anonymous mappings
/// only; <c>MAP_POPULATE</c>, <c>MAP_GROWSDOWN</c> and the rest are not modelled.
/// </summary>
[Flags]
public enum MapFlags
{
    /// <summary>No flag: the address, if one is given, is only a hint.</summary>
    None = 0,

    /// <summary><c>MAP_FIXED</c> (0x10): map exactly at the address, unmapping whatever is there first.</summary>
    Fixed = 0x10,

    /// <summary>
    /// <c>MAP_LOCKED</c> (0x2000): the mapping is locked in memory (<see cref="VmaFlags.Locked"/>) and populated, as
    /// <see cref="AddressSpace.Lock"/> does, except that running out of frames while populating is ignored
    /// (<c>mm_populate</c> with errors ignored).
    /// </summary>
    Locked = 0x2000,

    /// <summary><c>MAP_FIXED_NOREPLACE</c> (0x100000): map exactly at the address, or fail if anything is mapped there (<c>-EEXIST</c>).</summary>
    FixedNoReplace = 0x10_0000,
}
