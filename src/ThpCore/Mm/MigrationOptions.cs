using System;

namespace ThpCore.Mm;

/// <summary>Options of <see cref="AddressSpace.Migrate"/>.</summary>
public sealed record MigrationOptions
{
    /// <summary>
    /// Called once per folio moved, when every mapping of it holds a migration entry and before the bytes are copied
    /// (between Linux's <c>try_to_migrate</c> and <c>move_to_new_folio</c>), so that a caller can look at the entries.
    /// An access from inside it that reaches such an entry throws <see cref="InvalidOperationException"/>: Linux's fault
    /// would wait in <c>migration_entry_wait</c> for this very migration. The migration completes even when the callback throws.
    /// </summary>
    public Action<MigrationProgress>? WhileUnmapped { get; init; }
}
