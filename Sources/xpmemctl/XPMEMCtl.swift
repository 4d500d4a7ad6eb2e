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

    /// Declared here as well as in every subcommand so that `--socket` works before the subcommand's
    /// name as well as after it: ArgumentParser gives a subcommand's group the value parsed here.
    @OptionGroup var connection: BrokerConnection
}

struct BrokerConnection: ParsableArguments {
    @Option(name: .long, help: "Broker socket (default: $XPMEM_SOCKET, else the per-user default).")
    var socket: String?

    func connect() throws -> XPMEMBroker { try XPMEMBroker.connect(socketPath: socket, name: "xpmemctl") }
}

struct OutputOptions: ParsableArguments {
    @Flag(name: .long, help: "Print one JSON document instead of a table.")
    var json = false
}

/// Parses a segment id while the arguments are parsed, so that a malformed one is reported with the
/// subcommand's usage rather than the root command's.
@Sendable func parseSegmentID(_ text: String) throws -> SegmentID {
    guard let id = SegmentID(text) else {
        throw ValidationError("a segment id is up to 16 hexadecimal digits, as `xpmemctl segments` lists them")
    }
    return id
}

/// A failure while talking to the broker: printed as it is, without a usage summary, since the
/// command line itself was fine.
struct CommandFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// What `xpmemctl status --json` prints: the broker's counters and, as the table shows it, the socket
/// the answer came from.
struct StatusReport: Encodable {
    var socket: String
    var status: BrokerStatus

    private enum CodingKeys: String, CodingKey { case socket }

    /// One flat object: the status's own keys (so a reader can decode it as a `BrokerStatus`) plus `socket`.
    func encode(to encoder: any Encoder) throws {
        try status.encode(to: encoder)
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(socket, forKey: .socket)
    }
}

/// Prints `value` as pretty, key-sorted JSON.
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
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
        @OptionGroup var connection: BrokerConnection
        @OptionGroup var output: OutputOptions

        func run() throws {
            let broker = try connection.connect()
            let status = try broker.status()
            if output.json { return try printJSON(StatusReport(socket: broker.socketPath, status: status)) }
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
        @OptionGroup var connection: BrokerConnection
        @OptionGroup var output: OutputOptions

        func run() throws {
            let segments = try connection.connect().segments()
            if output.json { return try printJSON(segments) }
            printTable(["SEGID", "OWNER PID", "UID", "SIZE", "MODE", "IMPORTERS", "ATTACHMENTS", "PLACEMENT",
                        "IMPORTER NODE", "PAGES", "NAME"],
                       segments.map { [$0.id, "\($0.ownerPID)", "\($0.ownerUID)", ByteCount(Int($0.size)).description,
                                        $0.mode, "\($0.importers)", "\($0.attachments)", $0.placement,
                                        $0.importerNode < 0 ? "-" : "\($0.importerNode)", $0.pages, $0.name] })
        }
    }

    struct Clients: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every connected client (this one included).")
        @OptionGroup var connection: BrokerConnection
        @OptionGroup var output: OutputOptions

        func run() throws {
            let clients = try connection.connect().clients()
            if output.json { return try printJSON(clients) }
            printTable(["ID", "PID", "UID", "GID", "NODE", "SEGMENTS", "GRANTS", "ATTACHMENTS", "ATTACH CACHE", "NAME"],
                       clients.map { ["\($0.id)", "\($0.pid)", "\($0.uid)", "\($0.gid)", $0.node < 0 ? "-" : "\($0.node)",
                                      "\($0.segments)", "\($0.grants)", "\($0.attachments)", Self.describe($0.attachCache),
                                      $0.name] })
        }

        /// "-" for a client that never reported (not the C library, or no attach yet), else its counters:
        /// "hits 1200 misses 34 evicted 10+2 held 24 (96 KiB)", evictions by capacity + by pressure.
        static func describe(_ cache: AttachCacheCounters?) -> String {
            guard let cache else { return "-" }
            return "hits \(cache.hits) misses \(cache.misses) evicted \(cache.capacityEvictions)+\(cache.pressureEvictions) "
                + "held \(cache.entries) (\(cache.bytes / 1024) KiB)"
        }
    }
}

extension XPMEMCtl {
    struct Invalidate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make every importer of a range stop access and acknowledge, then give it back.",
            discussion: "Prints who acknowledged and how long each took. Exits 1 if any importer missed the deadline.")
        @OptionGroup var connection: BrokerConnection
        @OptionGroup var output: OutputOptions
        @Argument(help: "The segment id.", transform: parseSegmentID) var segment: SegmentID
        @Option(help: "Page-aligned start of the range.") var offset: ByteCount = ByteCount(0)
        @Option(help: "Page-aligned length of the range (default: to the end of the segment).") var length: ByteCount?
        @Option(help: "Milliseconds importers get to acknowledge.") var deadline: Int = 5000

        func run() throws {
            let broker = try connection.connect()
            var length = length?.value
            if length == nil {
                guard let summary = try broker.segments().first(where: { $0.id == segment.description }) else {
                    throw CommandFailure("no segment \(segment) at \(broker.socketPath)")
                }
                length = Int(summary.size) - offset.value
            }
            let report = try broker.invalidate(segment, offset: offset.value, length: length ?? 0,
                                               deadline: .milliseconds(deadline))
            if output.json {
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
