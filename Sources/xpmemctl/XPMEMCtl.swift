// xpmemctl: look inside a running broker.
import ArgumentParser
import Foundation
import XPMEM

@main
struct XPMEMCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "xpmemctl",
        abstract: "Inspect and steer a running xpmemd broker.",
        subcommands: [Status.self, Segments.self, Clients.self, Invalidate.self, Nodes.self, Migrate.self])
}

struct CommonOptions: ParsableArguments {
    @Option(name: .long, help: "Broker socket (default: $XPMEM_SOCKET, else the per-user default).")
    var socket: String?

    @Flag(name: .long, help: "Print one JSON document instead of a table.")
    var json = false

    func connect() throws -> XPMEMBroker { try XPMEMBroker.connect(socketPath: socket, name: "xpmemctl") }
}

/// Prints `value` as pretty, key-sorted JSON.
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

/// Prints rows as left-aligned columns under a header.
func printTable(_ header: [String], _ rows: [[String]]) {
    let widths = header.indices.map { column in
        ([header] + rows).map { $0[column].count }.max() ?? 0
    }
    for row in [header] + rows {
        let cells = row.enumerated().map { index, cell in
            index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
        }
        print(cells.joined(separator: "  "))
    }
}

extension XPMEMCtl {
    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The broker's pid, uptime and counters.")
        @OptionGroup var options: CommonOptions

        func run() throws {
            let broker = try options.connect()
            let status = try broker.status()
            if options.json { return try printJSON(status) }
            print("""
                broker pid        \(status.pid)
                socket            \(broker.socketPath)
                protocol version  \(status.protocolVersion)
                uptime            \(String(format: "%.1f", Double(status.uptimeMilliseconds) / 1000)) s
                clients           \(status.clients)
                segments          \(status.segments)
                grants            \(status.grants)
                attachments       \(status.attachments)
                open descriptors  \(status.openDescriptors)
                NUMA nodes        \(status.numaNodes)
                """)
        }
    }

    struct Segments: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every exported segment.")
        @OptionGroup var options: CommonOptions

        func run() throws {
            let segments = try options.connect().segments()
            if options.json { return try printJSON(segments) }
            printTable(["SEGID", "OWNER PID", "UID", "SIZE", "MODE", "IMPORTERS", "ATTACHMENTS", "PLACEMENT",
                        "IMPORTER NODE", "NAME"],
                       segments.map { [$0.id, "\($0.ownerPID)", "\($0.ownerUID)", ByteCount(Int($0.size)).description,
                                        $0.mode, "\($0.importers)", "\($0.attachments)", $0.placement,
                                        $0.importerNode < 0 ? "-" : "\($0.importerNode)", $0.name] })
        }
    }

    struct Clients: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every connected client (this one included).")
        @OptionGroup var options: CommonOptions

        func run() throws {
            let clients = try options.connect().clients()
            if options.json { return try printJSON(clients) }
            printTable(["ID", "PID", "UID", "GID", "NODE", "SEGMENTS", "GRANTS", "ATTACHMENTS", "NAME"],
                       clients.map { ["\($0.id)", "\($0.pid)", "\($0.uid)", "\($0.gid)", $0.node < 0 ? "-" : "\($0.node)",
                                      "\($0.segments)", "\($0.grants)", "\($0.attachments)", $0.name] })
        }
    }
}

extension XPMEMCtl {
    struct Invalidate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make every importer of a range stop access and acknowledge, then give it back.",
            discussion: "Prints who acknowledged and how long each took. Exits 1 if any importer missed the deadline.")
        @OptionGroup var options: CommonOptions
        @Argument(help: "The segment id.") var segment: String
        @Option(help: "Page-aligned start of the range.") var offset: ByteCount = ByteCount(0)
        @Option(help: "Page-aligned length of the range (default: to the end of the segment).") var length: ByteCount?
        @Option(help: "Milliseconds importers get to acknowledge.") var deadline: Int = 5000

        func run() throws {
            guard let id = SegmentID(segment) else { throw ValidationError("'\(segment)' is not a segment id") }
            let broker = try options.connect()
            var length = length?.value
            if length == nil {
                guard let summary = try broker.segments().first(where: { $0.id == id.description }) else {
                    throw ValidationError("no segment \(id)")
                }
                length = Int(summary.size) - offset.value
            }
            let report = try broker.invalidate(id, offset: offset.value, length: length ?? 0,
                                               deadline: .milliseconds(deadline))
            if options.json {
                try printJSON(report)
            } else {
                print("segment \(report.segment) sequence \(report.sequence) range \(report.offset)+\(report.length): "
                      + "\(report.importers.count) importers in \(Double(report.elapsedMicroseconds) / 1000) ms")
                printTable(["CLIENT", "PID", "OUTCOME", "MS"], report.importers.map {
                    ["\($0.client)", "\($0.pid)", $0.outcome.description, "\(Double($0.elapsedMicroseconds) / 1000)"]
                })
            }
            if report.anyMissedDeadline { throw ExitCode.failure }
        }
    }
}

extension ByteCount: ExpressibleByArgument {
    public init?(argument: String) { self.init(argument) }
}
