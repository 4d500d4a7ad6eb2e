// Hidden subcommands: the other processes of a measurement, started by the benchmark itself.
import ArgumentParser
import XPMEM
import XPMEMSystem

/// Exports one segment per size, filled, and prints `SEGID PID ADDRESS` for each; exits when its
/// standard input closes.
struct ExporterHelper: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "exporter-helper", shouldDisplay: false)
    @Option var socket: String
    @Option(parsing: .upToNextOption) var sizes: [Int]

    func run() throws {
        let broker = try XPMEMBroker.connect(socketPath: socket, name: "bench exporter")
        var segments: [ExportedSegment] = []
        for size in sizes {
            let segment = try broker.makeSegment(size: size, permit: Permit(rawValue: 0o600))
            segment.bytes.initializeMemory(as: UInt8.self, repeating: 0x5A)
            segments.append(segment)
            print("\(segment.id) \(ThisProcess.processID) \(UInt(bitPattern: segment.bytes.baseAddress!))")
        }
        StandardStream.flushPrinted()
        while readLine() != nil {}
        withExtendedLifetime(segments) {}
    }
}

/// Attaches a segment with the `.block` policy and idles; with `--reader`, a thread reads the first
/// word in a loop and, whenever a read completes after a pause, stores the time it resumed (monotonic
/// nanoseconds) at byte 64, for the exporter to measure how fast blocked readers resume after `end`.
struct ImporterHelper: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "importer-helper", shouldDisplay: false)
    @Option var socket: String
    @Option var segment: String
    @Flag var reader = false

    func run() throws {
        let broker = try XPMEMBroker.connect(socketPath: socket, name: "bench importer")
        let grant = try broker.get(SegmentID(segment)!)
        let attachment = try grant.attach(policy: .block)
        if reader {
            let base = UInt(bitPattern: attachment.bytes.baseAddress!)
            try DetachedThread.start {
                let word = UnsafeMutableRawPointer(bitPattern: base)!
                var last = SharedMemoryAccess.monotonicNanoseconds()
                while true {
                    _ = SharedMemoryAccess.load(word)
                    let now = SharedMemoryAccess.monotonicNanoseconds()
                    if now - last > 200_000 { SharedMemoryAccess.store(now, to: word + 64) }
                    last = now
                }
            }
        }
        print("ready \(attachment.policy)")
        StandardStream.flushPrinted()
        while readLine() != nil {}
        withExtendedLifetime(attachment) {}
    }
}

/// The reference peer: connects to a plain SOCK_SEQPACKET listener and answers every message with
/// 8 bytes, plus a memfd of `--memfd-size` bytes when asked (the bare minimum an attach needs).
struct RawPeerHelper: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "raw-peer", shouldDisplay: false)
    @Option var path: String
    @Option var memfdSize: Int = 0
    @Flag(help: "Busy-poll for requests (for up to a millisecond at a time) instead of sleeping in recvmsg.")
    var poll = false
    @Flag(help: "Answer only messages whose first byte is 0 (a relayed fan-out's begin, not its end).")
    var answerBeginsOnly = false

    func run() throws {
        let socket = try UnixSocket.connect(to: path)
        // Owned for the life of the process: every reply carries it.
        let attached = OwnedDescriptorList()
        if memfdSize > 0 {
            let file = try MemoryFile.create(name: "raw-peer", size: memfdSize)
            let filled = try MemoryMapping.mapShared(file, length: memfdSize, protection: .readWrite)
            filled.bytes.initializeMemory(as: UInt8.self, repeating: 0x5A)
            attached.append(file)
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256, alignment: 8)
        defer { buffer.deallocate() }
        let reply: [UInt8] = Array(repeating: 1, count: 8)
        let spin = SpinPolicy(microseconds: poll ? RawPeerSpin.microseconds : 0)
        while true {
            let received = try RawReceive.receive(socket, into: buffer, maximumDescriptors: 0, spin: spin)
            if received.isEndOfFile { return }
            if answerBeginsOnly, buffer[0] != RelayedFanOut.begin { continue }
            try UnixSocket.send(socket, bytes: reply, passing: attached.fileDescriptors)
        }
    }
}

/// The reference side's receive: optionally busy-polls like the library does, then blocks.
enum RawReceive {
    static func receive(_ socket: borrowing OwnedDescriptor, into buffer: UnsafeMutableRawBufferPointer,
                        maximumDescriptors: Int, spin: SpinPolicy) throws -> ReceivedMessage {
        final class Box {
            var message: ReceivedMessage?
            init(_ message: consuming ReceivedMessage) { self.message = .some(message) }
        }
        let polled: Box? = spin.spin {
            guard let message = try? UnixSocket.receiveIfPending(socket, into: buffer,
                                                                 maximumDescriptors: maximumDescriptors)
            else { return nil }
            return Box(message)
        }
        if let polled, let message = polled.message.take() { return message }
        return try UnixSocket.receive(socket, into: buffer, maximumDescriptors: maximumDescriptors)
    }
}
