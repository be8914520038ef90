namespace ThpCore.Memory;

/// <summary>
/// The three kinds of migration entry Linux writes in place of a page-table entry while a page moves
/// (<c>include/linux/swap.h</c>: <c>SWP_MIGRATION_READ</c>, <c>SWP_MIGRATION_READ_EXCLUSIVE</c>,
/// <c>SWP_MIGRATION_WRITE</c>).
/// </summary>
public enum MigrationKind
{
    /// <summary>The page was mapped read-only and may be shared (<c>SWP_MIGRATION_READ</c>).</summary>
    Read = 0,

    /// <summary>
    /// The page was mapped read-only but is anonymous and exclusive to one process
    /// (<c>SWP_MIGRATION_READ_EXCLUSIVE</c>, v5.19+).
    /// </summary>
    ReadExclusive = 1,

    /// <summary>The page was mapped writable, which implies exclusive (<c>SWP_MIGRATION_WRITE</c>).</summary>
    Write = 2,
}
