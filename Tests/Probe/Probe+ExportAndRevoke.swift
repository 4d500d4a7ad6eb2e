import ArgumentParser
import XPMEM

extension Probe {
    /// A Swift exporter for importers of other kinds (the C library's tests): makes a segment filled
    /// with --pattern and prints its id; then "invalidate" runs an invalidation of the whole segment
    /// with a 2 s deadline and prints the importers' outcomes ("outcomes acked, missed deadline"), which
    /// moves the segment to a fresh file when one missed it; "read" prints "first-byte N", "write V"
    /// writes the first byte and prints "wrote".
    struct ExportAndRevoke: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "export-and-revoke")
        @OptionGroup var options: ProbeOptions
        @Option var size: Int = 1 << 20
        @Option var pattern: UInt8 = 1

        func run() throws {
            try options.becomeRequestedUser()
            let broker = try XPMEMBroker.connect(socketPath: options.socket, name: "probe exporter")
            let segment = try broker.makeSegment(size: size, permit: Permit(rawValue: 0o666))
            segment.bytes.initializeMemory(as: UInt8.self, repeating: pattern)
            report("\(segment.id)")
            try serveFirstByte(of: segment.bytes) { line in
                guard line == "invalidate" else { return false }
                let invalidation = try segment.invalidate(deadline: .seconds(2))
                report("outcomes " + invalidation.importers.map(\.outcome.description).sorted().joined(separator: ", "))
                return true
            }
        }
    }
}
