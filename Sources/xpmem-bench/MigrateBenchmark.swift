import ArgumentParser
import Foundation
import XPMEM
import XPMEMSystem

/// Live migration of a shared segment between two NUMA nodes, with importers attached, next to a
/// raw `mbind(MPOL_MF_MOVE_ALL)` of the same pages in the same run; and an importer's read
/// bandwidth from the segment before and after it moves. Needs two nodes and `CAP_SYS_NICE` (the
/// reference and the privileged path): `make numa-bench` runs it as root in an emulated 2-node
/// machine.
struct MigrateBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Migration throughput with 1 and 8 importers, both paths, against raw MPOL_MF_MOVE_ALL.")

    @OptionGroup var options: BenchOptions
    @Option(help: "Segment size, such as 256M.") var size: String = "256M"
    @Option(help: "Migrations timed per configuration (the median is reported).") var repeats: Int = 3

    func run() throws {
        _ = MachineLoad.atStart
        let environment = try BenchEnvironment(socket: options.socket)
        defer { environment.stop() }
        guard let bytes = ByteCount(size)?.value, bytes > 0 else { throw ValidationError("--size: not a size") }
        FigureGroup.emit([try Self.measure(environment, size: bytes, repeats: max(1, repeats))], json: options.json)
    }

    static func measure(_ environment: BenchEnvironment, size: Int, repeats: Int) throws -> FigureGroup {
        let nodes = NUMA.nodes
        guard nodes.count >= 2 else {
            throw ValidationError("this machine has \(nodes.count) NUMA node(s); run `make numa-bench` (an emulated 2-node machine)")
        }
        let home = nodes[0], away = nodes[1]
        let mebibytes = Double(size) / Double(1 << 20)
        var rows: [[String]] = []
        var ratios: [String: Double] = [:]
        var bandwidthRows: [[String]] = []

        for importerCount in [1, 8] {
            for path in [MigrationPath.privileged, .cooperative] {
                let exporter = try environment.connect("migrate bench exporter")
                let segment = try exporter.makeSegment(size: size, placement: .node(home))
                segment.bytes.initializeMemory(as: UInt8.self, repeating: 0x5A)
                let importers = try (0..<importerCount).map { index in
                    try environment.helper(["numa-importer-helper", "--socket", environment.socketPath,
                                            "--segment", "\(segment.id)", "--node", "\(index == 0 ? home : away)"])
                }
                defer { importers.forEach { $0.stop() } }
                for importer in importers where !importer.readLine().hasPrefix("ready") {
                    throw ValidationError("a migrate importer did not start")
                }
                func touchAll() {
                    importers.forEach { $0.send("touch") }
                    importers.forEach { _ = $0.readLine() }
                }
                var ours = Samples(), raw = Samples()
                var incomplete = 0
                for _ in 0..<repeats {
                    touchAll()
                    let report = try segment.migrate(to: away, path: path, deadline: .seconds(30))
                    incomplete += report.notMoved
                    ours.add(mebibytes / report.elapsed.seconds)
                    touchAll()
                    let started = SharedMemoryAccess.monotonicNanoseconds()
                    try NUMA.setPolicy(.bind([home]), address: segment.bytes.baseAddress!, length: size, move: .allPages)
                    raw.add(mebibytes / (Double(SharedMemoryAccess.monotonicNanoseconds() - started) / 1e9))
                }
                let key = "migrate_vs_move_all_\(path.rawValue)"
                let ratio = ours.median / raw.median
                if importerCount == 1 { ratios[key] = ratio }
                rows.append(["\(path.rawValue), \(importerCount) importer\(importerCount == 1 ? "" : "s")",
                             String(format: "%.0f", ours.median), String(format: "%.0f", raw.median), Format.ratio(ratio),
                             incomplete == 0 ? "all" : "\(incomplete) pages left behind"])
                if importerCount == 8 { ratios[key + "_8_importers"] = ratio }

                // Read bandwidth of the importer pinned to `home`: local now, remote after a move.
                if importerCount == 1 && path == .privileged {
                    touchAll()
                    let local = try readBandwidth(importers[0])
                    _ = try segment.migrate(to: away, path: .privileged)
                    touchAll()
                    let remote = try readBandwidth(importers[0])
                    _ = try segment.migrate(to: home, path: .privileged)
                    touchAll()
                    let localAgain = try readBandwidth(importers[0])
                    bandwidthRows = [
                        ["importer read, pages local (node \(home))", Format.gigabytesPerSecond(local), "GB/s", "", ""],
                        ["importer read, after migration to node \(away) (remote)", Format.gigabytesPerSecond(remote), "GB/s", "", ""],
                        ["importer read, after migration back (local)", Format.gigabytesPerSecond(localAgain), "GB/s", "", ""],
                    ]
                }
                try segment.remove()
            }
        }
        let hints = try halfHintedFreeVersusNoHints(environment, size: size, home: home, away: away)
        let hintRow = ["privileged, half hinted free, vs no hints (ms)", String(format: "%.1f", hints.figure.ours),
                       String(format: "%.1f", hints.figure.reference), hints.figure.summary,
                       "\(hints.skipped) pages skipped as free"]
        return FigureGroup(
            name: "migrate",
            note: "\(size >> 20) MiB segment between nodes \(home) and \(away); MiB/s, median of \(repeats)",
            columns: ["path, importers", "ours MiB/s", "raw MOVE_ALL MiB/s", "ours / raw", "pages moved"],
            rows: rows + bandwidthRows + [hintRow], ratios: ratios,
            targets: ["migrate_vs_move_all_privileged >= 0.8", "migrate_vs_move_all_cooperative >= 0.8"],
            spreads: ["migrate_half_hinted_free_vs_no_hints": hints.figure])
    }

    /// The same segment migrated with its first half hinted free and without hints, interleaved: each
    /// run first writes every page (which ends any earlier hint), hints or not, migrates away (timed),
    /// and migrates back. Times in milliseconds; the ratio is hinted over not.
    static func halfHintedFreeVersusNoHints(_ environment: BenchEnvironment, size: Int, home: Int, away: Int)
        throws -> (figure: RatioFigure, skipped: Int)
    {
        let exporter = try environment.connect("hint bench exporter")
        let segment = try exporter.makeSegment(size: size, placement: .node(home))
        defer { try? segment.remove() }
        var skipped = 0
        func migrationMilliseconds(hinting: Bool) throws -> Double {
            segment.bytes.initializeMemory(as: UInt8.self, repeating: 0x5A)
            if hinting { try segment.hintFree(offset: 0, length: size / 2) }
            let report = try segment.migrate(to: away, path: .privileged)
            if hinting { skipped = report.skippedAsFree }
            _ = try segment.migrate(to: home, path: .privileged)
            return report.elapsed.seconds * 1000
        }
        let figure = try InterleavedRatio(minimumPairs: 5, maximumPairs: 11, spreadBound: 0.2, budgetSeconds: 120)
            .measure(ours: { try migrationMilliseconds(hinting: true) }, reference: { try migrationMilliseconds(hinting: false) })
        return (figure, skipped)
    }

    static func readBandwidth(_ importer: HelperProcess) throws -> Double {
        importer.send("read")
        guard let value = Double(importer.readLine()) else { throw ValidationError("the importer did not report a bandwidth") }
        return value
    }
}

/// The importer of the migrate benchmark: attaches the whole segment (`.block`), pinned to the CPUs
/// of `--node`; on `touch` it reads one word of every page (so it maps them all) and says `touched`;
/// on `read` it reads every byte and prints GB/s; it exits when its input closes.
struct NUMAImporterHelper: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "numa-importer-helper", shouldDisplay: false)
    @Option var socket: String
    @Option var segment: String
    @Option var node: Int

    func run() throws {
        _ = MachineLoad.atStart
        try NUMA.runCurrentThread(onNode: node)
        let broker = try XPMEMBroker.connect(socketPath: socket, name: "bench numa importer")
        let attachment = try broker.get(SegmentID(segment)!).attach(policy: .block)
        let words = UnsafeBufferPointer(attachment.bytes.bindMemory(to: UInt64.self))
        print("ready")
        StandardStream.flushPrinted()
        var sink: UInt64 = 0
        while let command = readLine() {
            switch command {
            case "touch":
                for page in stride(from: 0, to: words.count, by: pageSize / 8) { sink &+= words[page] }
                print("touched")
            case "read":
                let started = SharedMemoryAccess.monotonicNanoseconds()
                var sum: UInt64 = 0
                for word in words { sum &+= word }
                sink &+= sum
                let seconds = Double(SharedMemoryAccess.monotonicNanoseconds() - started) / 1e9
                print(Double(words.count * 8) / seconds / 1e9)
            default:
                print("unknown \(command)")
            }
            StandardStream.flushPrinted()
        }
        if sink == 42 { print("") }  // keeps the reads from being optimised away
        withExtendedLifetime(attachment) {}
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
