using System.Runtime.CompilerServices;

// Hot paths use small stack buffers that are always written before they are read.
[module: SkipLocalsInit]
