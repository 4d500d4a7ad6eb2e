@preconcurrency import Glibc
import ArgumentParser
import SystemPackage
import XPMEM
import XPMEMSystem
import XPMEMWire

/// What a connection says about its broker going away and coming back, one line per event.
func reportConnectionEvents(of broker: XPMEMBroker) {
    broker.setConnectionEventHandler { event in
        switch event {
        case .lost:
            report("lost")
        case .reconnected(let restoration):
            let segments = restoration.segments.map(\.description).joined(separator: ",")
            let pending = restoration.pending.map(\.description).joined(separator: ",")
            report("reconnected segments=\(segments) grants=\(restoration.grants.count) attachments=\(restoration.attachments) pending=\(pending)")
            for segment in restoration.grants { report("restored \(segment)") }
        case .grantRestored(let segment, let attachments):
            report("restored \(segment) attachments=\(attachments)")
        case .abandoned(let segment, let reason):
            report("abandoned \(segment) \(reason)")
        case .gaveUp(let reason):
            report("gave-up \(reason)")
        }
    }
}

/// Whether every byte of `bytes` holds one value: "uniform V", else "mixed".
func uniformity(_ bytes: UnsafeMutableRawBufferPointer) -> String {
    let first = bytes[0]
    return bytes.allSatisfy { $0 == first } ? "uniform \(first)" : "mixed"
}

extension Probe {
    /// An exporter that survives restarts of the broker: makes a segment filled with `--pattern`,
    /// prints `segment ID`, reports connection events, and serves commands on standard input:
    /// `read` (`bytes uniform V` or `bytes mixed`), `invalidate` (`invalidated SEQ OUTCOME,...`),
    /// `quit`.
    struct RestartExporter: ParsableCommand {
        @OptionGroup var options: ProbeOptions
        @Option var size: Int
        @Option var pattern: UInt8
        @Option var permit = "0644"

        func run() throws {
            try options.becomeRequestedUser()
            let broker = try XPMEMBroker.connect(socketPath: options.socket, name: "restart exporter")
            reportConnectionEvents(of: broker)
            let segment = try broker.makeSegment(size: size, permit: Permit(octal: permit)!)
            segment.bytes.initializeMemory(as: UInt8.self, repeating: pattern)
            report("segment \(segment.id)")
            while let line = readLine() {
                switch line {
                case "read":
                    report("bytes \(uniformity(segment.bytes))")
                case "invalidate":
                    do {
                        let result = try segment.invalidate(deadline: .seconds(30))
                        report("invalidated \(result.sequence) \(result.importers.map { "\($0.outcome)" }.joined(separator: ","))")
                    } catch {
                        report("invalidate-error \(error)")
                    }
                case "quit":
                    return
                default:
                    report("unknown \(line)")
                }
            }
        }
    }

    /// An importer that survives restarts of the broker: gets and attaches the whole segment
    /// (`--readonly` for read-only), prints `attached POLICY`, reports invalidation and connection
    /// events, and serves `read` (`bytes uniform V` / `bytes mixed`), `write V` (`wrote V`), `quit`.
    struct RestartImporter: ParsableCommand {
        @OptionGroup var options: ProbeOptions
        @Argument var segment: String
        @Flag var readonly = false

        func run() throws {
            try options.becomeRequestedUser()
            let broker = try XPMEMBroker.connect(socketPath: options.socket, name: "restart importer")
            reportConnectionEvents(of: broker)
            let grant = try broker.get(SegmentID(segment)!, access: readonly ? .readOnly : .readWrite)
            let attachment = try grant.attach(handlers: InvalidationHandlers(
                willInvalidate: { report("begin \($0.sequence) \($0.offset) \($0.length)") },
                didInvalidate: { report("end \($0.sequence)") },
                released: { _, reason in report("release \(reason)") },
                brokerLost: { report("broker-lost \($0.interrupted.map(\.sequence))") }))
            report("attached \(attachment.policy)")
            while let line = readLine() {
                let words = line.split(separator: " ")
                switch words.first {
                case "read":
                    report("bytes \(uniformity(attachment.bytes))")
                case "write":
                    guard let value = words.dropFirst().first.flatMap({ UInt8($0) }) else { report("bad write"); continue }
                    attachment.bytes.initializeMemory(as: UInt8.self, repeating: value)
                    report("wrote \(value)")
                case "quit":
                    return
                default:
                    report("unknown \(line)")
                }
            }
            withExtendedLifetime(attachment) {}
        }
    }

    /// Tries to register someone else's segment id with a token of its own, speaking the protocol
    /// directly: prints `claim made ID` or `claim refused CODE`.
    struct Squat: ParsableCommand {
        @OptionGroup var options: ProbeOptions
        @Argument var segment: String

        func run() throws {
            try options.becomeRequestedUser()
            let socket = try UnixSocket.connect(to: options.socket)
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: WireProtocol.maximumReplySize, alignment: 16)
            defer { buffer.deallocate() }
            func exchange(_ message: Message, passing descriptors: [FileDescriptor] = []) throws -> Message {
                try UnixSocket.send(socket, bytes: Frame(requestID: 1, message: message).encoded(), passing: descriptors)
                let received = try UnixSocket.receive(socket, into: buffer, maximumDescriptors: 4)
                return try Frame.decode(UnsafeRawBufferPointer(rebasing: buffer[..<received.byteCount])).message
            }
            _ = try exchange(.hello(clientName: "squatter"))
            let file = try MemoryFile.create(name: "squat", size: 65536)
            try MemoryFile.setMode(0o600, of: file)
            let readOnly = try MemoryFile.reopenReadOnly(file)
            let token = ReclaimToken(high: try ProcessHandle.randomUInt64(), low: try ProcessHandle.randomUInt64())
            let reply = try exchange(.claim(SegmentID(segment)!, token: token, size: 65536, permit: Permit(rawValue: 0o666),
                                            name: "squat"),
                                     passing: [file.fileDescriptor, readOnly.fileDescriptor])
            switch reply {
            case .made(let id): report("claim made \(id)")
            case .failure(let code, let text): report("claim refused \(code): \(text)")
            default: report("claim answered \(reply.type)")
            }
        }
    }
}
