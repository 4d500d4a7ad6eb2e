import ArgumentParser
import XPMEM
import XPMEMSystem
import XPMEMWire

extension Probe {
    /// An importer that attaches a whole segment read-only (or read-write, with `--writable`) and
    /// answers "page N" with the first byte of page N as it reads it now, and "huge-bytes" with how much
    /// of its attachment huge pages map, until "quit".
    struct PageReader: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "page-reader")
        @OptionGroup var options: ProbeOptions
        @Flag var writable = false
        @Argument var segment: String

        func run() throws {
            try options.becomeRequestedUser()
            guard let id = SegmentID(segment) else { throw ValidationError("not a segment id: \(segment)") }
            let broker = try XPMEMBroker.connect(socketPath: options.socket)
            let attachment = try broker.get(id, access: writable ? .readWrite : .readOnly).attach()
            report("attached \(attachment.bytes.count)")
            while let line = readLine() {
                let words = line.split(separator: " ")
                if words == ["quit"] { return }
                if words == ["huge-bytes"] {
                    // Every page touched first, so that what can be mapped huge is.
                    var sum = 0
                    for page in stride(from: 0, to: attachment.bytes.count, by: pageSize) {
                        sum &+= Int(attachment.bytes.load(fromByteOffset: page, as: UInt8.self))
                    }
                    do {
                        let huge = try TransparentHugePages.pmdMappedBytes(
                            start: UInt(bitPattern: attachment.bytes.baseAddress!), length: attachment.bytes.count)
                        report("huge-bytes \(huge) sum \(sum)")
                    } catch {
                        // Said, not hidden: the test then sees why instead of a count.
                        report("huge-bytes unreadable: \(error)")
                    }
                    continue
                }
                guard words.count == 2, words[0] == "page", let page = Int(words[1]),
                      page >= 0, (page + 1) * pageSize <= attachment.bytes.count else {
                    report("bad request \(line)")
                    continue
                }
                report("page \(page) first-byte \(attachment.bytes.load(fromByteOffset: page * pageSize, as: UInt8.self))")
            }
        }
    }
}
