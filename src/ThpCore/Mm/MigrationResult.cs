using ThpCore.Paging;

namespace ThpCore.Mm;

/// <summary>The outcome of <see cref="AddressSpace.Migrate"/>.</summary>
/// <param name="Status">What happened.</param>
/// <param name="OldAddress">The physical address of the folio found at the address (its head); default when <see cref="MigrationStatus.NotMapped"/>.</param>
/// <param name="NewAddress">The physical address of the copy when <see cref="MigrationStatus.Migrated"/>; otherwise default (a split THP's pages moved one by one).</param>
/// <param name="PagesMigrated">
/// The pages counted in <c>pgmigrate_success</c>: the folio's pages when migrated; after a split, the pages migrated
/// plus the unmapped pages the split freed (Linux finds those freed under it and counts them as migrated); otherwise 0.
/// </param>
public readonly record struct MigrationResult(MigrationStatus Status, PhysicalAddress OldAddress, PhysicalAddress NewAddress, int PagesMigrated)
{
    /// <summary>Whether every page of the folio moved (<see cref="MigrationStatus.Migrated"/> or <see cref="MigrationStatus.Split"/>).</summary>
    public bool Succeeded => Status is MigrationStatus.Migrated or MigrationStatus.Split;
}
