import ArgumentParser
import XPMEM

/// What `xpmemctl nodes --json` prints.
struct PagesPerNode: Encodable {
    var segment: String
    var pages: Int
    /// Node number (as text, for JSON keys) → pages on it.
    var nodes: [String: Int]
    /// Pages that could not be queried, by errno.
    var unknown: [String: Int]
}

/// What `xpmemctl migrate --json` prints.
struct MigrationSummary: Encodable {
    var segment: String
    var node: Int
    var path: String
    var pages: Int
    var moved: Int
    var alreadyThere: Int
    var notMoved: Int
    var notMovedReason: String?
    var milliseconds: Double
}

extension XPMEMCtl {
    struct Nodes: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "How many of a segment's pages are on each NUMA node.",
            discussion: """
                Attaches the segment read-only and asks the kernel where each page is (move_pages without \
                target nodes: a query, nothing moves). Pages nobody has touched yet are allocated by the \
                query, under the segment's placement. Needs read permission on the segment.
                """)
        @OptionGroup var connection: BrokerConnection
        @OptionGroup var output: OutputOptions
        @Argument(help: "The segment id.", transform: parseSegmentID) var segment: SegmentID

        func run() throws {
            let grant = try connection.connect().get(segment, access: .readOnly)
            let attachment = try grant.attach(policy: .revoke)
            let pages = try attachment.pageNodes()
            try attachment.detach()
            let counts = Dictionary(grouping: pages, by: { $0 }).mapValues(\.count)
            let summary = PagesPerNode(
                segment: segment.description, pages: pages.count,
                nodes: Dictionary(uniqueKeysWithValues: counts.filter { $0.key >= 0 }.map { ("\($0.key)", $0.value) }),
                unknown: Dictionary(uniqueKeysWithValues: counts.filter { $0.key < 0 }.map { ("errno \(-$0.key)", $0.value) }))
            if output.json { return try printJSON(summary) }
            print("segment \(segment): \(pages.count) pages")
            printTable(["NODE", "PAGES"], summary.nodes.sorted { Int($0.key)! < Int($1.key)! }.map { [$0.key, "\($0.value)"] }
                + summary.unknown.sorted { $0.key < $1.key }.map { [$0.key, "\($0.value)"] })
        }
    }

    struct Migrate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Move a segment's pages to a NUMA node while importers keep it attached.",
            discussion: """
                Uses mbind(MPOL_MF_MOVE_ALL), which moves pages whoever maps them, without disturbing \
                importers; that needs CAP_SYS_NICE (root). Without it, the exporter migrates its own segment \
                cooperatively through the invalidation protocol (ExportedSegment.migrate(to:), \
                `share export --migrate-to NODE`). Exits 1 if any page could not be moved.
                """)
        @OptionGroup var connection: BrokerConnection
        @OptionGroup var output: OutputOptions
        @Argument(help: "The segment id.", transform: parseSegmentID) var segment: SegmentID
        @Argument(help: "The target node.") var node: Int

        func run() throws {
            let grant = try connection.connect().get(segment, access: .readOnly)
            let attachment = try grant.attach(policy: .revoke)
            let report = try attachment.moveAllPages(to: node)
            try attachment.detach()
            if output.json {
                try printJSON(MigrationSummary(
                    segment: segment.description, node: node, path: report.path.rawValue, pages: report.pages,
                    moved: report.moved, alreadyThere: report.alreadyThere, notMoved: report.notMoved,
                    notMovedReason: report.notMovedReason,
                    milliseconds: Double(report.elapsed.components.attoseconds) / 1e15
                        + Double(report.elapsed.components.seconds) * 1000))
            } else {
                print("segment \(segment): \(report)")
            }
            if report.notMoved > 0 { throw ExitCode.failure }
        }
    }
}
