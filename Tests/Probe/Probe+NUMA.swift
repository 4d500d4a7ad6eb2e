@preconcurrency import Glibc
import ArgumentParser
import XPMEM
import XPMEMSystem

/// The data pattern the NUMA checks use: the first half of a segment is the exporter's, every
/// page's first word `NUMAPattern.exporterWord(page)`; the second half is the importer's, which
/// writes round `k` into every page and reads it all back.
enum NUMAPattern {
    static func exporterWord(_ page: Int) -> UInt64 { 0x5EED_0000_0000 | UInt64(page) }
    static func importerWord(round: Int, page: Int) -> UInt64 { UInt64(round) << 32 | UInt64(page) }
}

extension Probe {
    /// An importer that keeps reading and writing a segment while it is migrated: pinned to the CPUs
    /// of `--node` before it connects (so the broker records that node), attached with `.block`. It
    /// prints `ready`, loops until a line arrives on standard input, then prints
    /// `rounds R errors E` (errors: words that did not hold what they must) and exits.
    struct NUMAImporter: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "numa-importer")
        @OptionGroup var options: ProbeOptions
        @Argument var segment: String
        @Option var node: Int?
        @Flag(help: "Only read the exporter's half (several importers at once).") var readOnly = false

        func run() throws {
            try options.becomeRequestedUser()
            if let node { try NUMA.runCurrentThread(onNode: node) }
            guard let id = SegmentID(segment) else { throw ValidationError("bad segment id") }
            let broker = try XPMEMBroker.connect(socketPath: options.socket, name: "numa importer")
            let grant = try broker.get(id, access: readOnly ? .readOnly : .readWrite)
            let attachment = try grant.attach(policy: .block)
            let words = attachment.bytes.bindMemory(to: UInt64.self)
            let pages = attachment.length / pageSize
            let half = pages / 2, stride = pageSize / 8
            report("ready \(attachment.policy)")
            var rounds = 0, errors = 0
            var input = pollfd(fd: 0, events: Int16(POLLIN), revents: 0)
            while poll(&input, 1, 0) == 0 {
                for page in 0..<half where words[page * stride] != NUMAPattern.exporterWord(page) { errors += 1 }
                if !readOnly {
                    for page in half..<pages { words[page * stride] = NUMAPattern.importerWord(round: rounds, page: page) }
                    for page in half..<pages where words[page * stride] != NUMAPattern.importerWord(round: rounds, page: page) {
                        errors += 1
                    }
                }
                rounds += 1
            }
            report("rounds \(rounds) errors \(errors)")
            withExtendedLifetime(attachment) {}
        }
    }
}
