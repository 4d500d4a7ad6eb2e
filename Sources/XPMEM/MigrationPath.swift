/// How `ExportedSegment.migrate(to:)` moves pages that importers map.
public enum MigrationPath: String, Sendable, CaseIterable {
    /// Privileged if this process may (`CAP_SYS_NICE`), else cooperative.
    case automatic
    /// `mbind(MPOL_MF_MOVE_ALL)`: moves every page, whoever maps it, without disturbing importers.
    /// Needs `CAP_SYS_NICE`.
    case privileged
    /// The invalidation protocol: importers drop their page-table entries (with `.block`, their
    /// accesses sleep), the exporter — now the only process mapping the pages — moves them with
    /// `mbind(MPOL_MF_MOVE)`, then `end` gives access back on the new node. Needs no privilege.
    case cooperative
}
