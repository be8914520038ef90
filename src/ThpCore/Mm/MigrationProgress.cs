using System.Collections.Generic;
using ThpCore.Memory;

namespace ThpCore.Mm;

/// <summary>A migration caught between unmap and remap (<see cref="MigrationOptions.WhileUnmapped"/>).</summary>
/// <param name="Source">The folio being moved; it is mapped nowhere now.</param>
/// <param name="Destination">The newly allocated folio it moves to; mapped nowhere yet.</param>
/// <param name="Entries">Where the migration entries are: one per former mapping, in reverse-map order.</param>
public sealed record MigrationProgress(Folio Source, Folio Destination, IReadOnlyList<FolioMapping> Entries);
