using System.Collections.Generic;
using Microsoft.Win32.SafeHandles;
using ThpCore.Paging;

namespace ThpCore.Inspection;

/// <summary>
/// A raw dump of physical memory from address 0, as QEMU's HMP <c>pmemsave 0 SIZE FILE</c> (or QMP
/// <c>pmemsave</c> with <c>val: 0</c>) writes it: the byte at file offset <c>n</c> is physical byte <c>n</c>.
/// One range, <c>[0, file length)</c>. Open one with <see cref="GuestImage.Open"/>.
/// </summary>
/// <remarks>
/// A raw dump cannot tell RAM from MMIO holes: below <c>Size</c>, a hole such as 0xa0000–0xfffff or the PCI
/// window reads as whatever QEMU wrote there (usually zeros or 0xff).
/// </remarks>
public sealed class RawImage : GuestImage
{
    private RawImage(string path, SafeFileHandle handle, ImageExtent[] extents, IReadOnlyList<string> warnings)
        : base(path, ImageFormat.Raw, handle, extents, warnings)
    {
    }

    internal static RawImage Create(string path, SafeFileHandle handle, long length)
    {
        var warnings = new List<string>();
        ulong size = (ulong)length;
        if ((size >> PhysicalAddress.ArchitecturalMaxBits) != 0)
        {
            throw new InvalidImageException(path, $"the file is {size:#,0} bytes, more than the 52-bit physical address space (4 PiB) can hold.");
        }

        if ((size & 0xFFF) != 0)
        {
            ulong lastFrame = size >> 12;
            warnings.Add(
                $"The file is {size:#,0} bytes, not a multiple of 4096: frame {Hex(lastFrame)} is only partly in it " +
                $"({size & 0xFFF} of 4096 bytes); its missing bytes read as absent (as zeros in ReadFrame).");
        }

        return new RawImage(path, handle, [new ImageExtent(0, size, 0)], warnings);
    }
}
