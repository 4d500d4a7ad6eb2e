import ArgumentParser
import XPMEMSystem

/// The raw reference the invalidation issue describes: the same messages as an invalidation, carried
/// the same way, with nothing else. The benchmark sends "begin" to a relay process (as an exporter
/// sends `invalidate` to the broker), the relay sends it to every peer process (the importers), each
/// peer answers it (the acknowledgement), and the relay answers the benchmark once all have; then
/// "end": the relay passes it on to every peer, which does not answer, and answers the benchmark at
/// once. Relay and peers wait the way the broker and the importers' event threads do (sleeping in
/// `recvmsg`), or spin first (`polling`).
final class RelayedFanOut: RawBatches {
    static let begin: UInt8 = 0
    static let end: UInt8 = 1

    private let path: String
    private let peerPath: String
    private let relay: OwnedDescriptor
    private var helpers: [HelperProcess] = []
    private let spin: SpinPolicy
    /// The relay and every peer spin after a polled batch.
    let processesSpinningAfterBatch: Int
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256, alignment: 8)

    init(_ environment: BenchEnvironment, peers count: Int, polling: Bool) throws {
        let tag = "\(ThisProcess.processID)-\(count)-\(polling ? "polled" : "blocking")"
        path = "/tmp/xpmem-bench-relay-\(tag).sock"
        peerPath = "/tmp/xpmem-bench-relay-peers-\(tag).sock"
        let listener = try UnixSocket.listen(at: path)
        let waiting = polling ? ["--poll"] : []
        helpers.append(try environment.helper(["raw-relay", "--path", path, "--peer-path", peerPath,
                                               "--peers", "\(count)"] + waiting))
        // The relay listens for its peers first, and says so.
        guard helpers[0].readLine() == "listening" else { throw ValidationError("the relay did not start") }
        for _ in 0..<count {
            helpers.append(try environment.helper(["raw-peer", "--path", peerPath, "--answer-begins-only"] + waiting))
        }
        relay = try RawListener.acceptOne(on: listener)
        spin = SpinPolicy(microseconds: polling ? 50 : 0)
        processesSpinningAfterBatch = polling ? count + 1 : 0
    }

    /// `count` invalidation-shaped rounds: begin, every answer, end.
    func batch(_ count: Int) throws -> Samples {
        var samples = Samples()
        var message: [UInt8] = Array(repeating: 0, count: 48)
        for _ in 0..<count {
            let start = SharedMemoryAccess.monotonicNanoseconds()
            for kind in [Self.begin, Self.end] {
                message[0] = kind
                try UnixSocket.send(relay, bytes: message)
                _ = try RawReceive.receive(relay, into: buffer, maximumDescriptors: 0, spin: spin)
            }
            samples.add(Double(SharedMemoryAccess.monotonicNanoseconds() - start) / 1000)
        }
        return samples
    }

    func stop() {
        helpers.forEach { $0.stop() }
        helpers.removeAll()
        // The relay is killed, so its own clean-up does not run.
        FileSystem.removeQuietly(path)
        FileSystem.removeQuietly(peerPath)
    }

    deinit {
        stop()
        buffer.deallocate()
    }
}

/// The relay of `RelayedFanOut`, in a process of its own as the broker is.
struct RawRelayHelper: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "raw-relay", shouldDisplay: false)
    @Option var path: String
    @Option var peerPath: String
    @Option var peers: Int
    @Flag(help: "Busy-poll for messages (for up to a millisecond at a time) instead of sleeping in recvmsg.")
    var poll = false

    func run() throws {
        FileSystem.removeQuietly(peerPath)  // left by a killed relay of an earlier process with this pid
        let listener = try UnixSocket.listen(at: peerPath)
        defer { FileSystem.removeQuietly(peerPath) }
        print("listening")
        StandardStream.flushPrinted()
        final class Peer {
            let socket: OwnedDescriptor
            init(_ socket: consuming OwnedDescriptor) { self.socket = socket }
        }
        var connected: [Peer] = []
        while connected.count < peers { connected.append(Peer(try RawListener.acceptOne(on: listener))) }
        let bench = try UnixSocket.connect(to: path)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256, alignment: 8)
        defer { buffer.deallocate() }
        let answers = UnsafeMutableRawBufferPointer.allocate(byteCount: 256, alignment: 8)
        defer { answers.deallocate() }
        let reply: [UInt8] = Array(repeating: 1, count: 8)
        let spin = SpinPolicy(microseconds: poll ? RawPeerSpin.microseconds : 0)
        while true {
            let received = try RawReceive.receive(bench, into: buffer, maximumDescriptors: 0, spin: spin)
            if received.isEndOfFile { return }
            let message = Array(buffer[0..<received.byteCount])
            for peer in connected { try UnixSocket.send(peer.socket, bytes: message) }
            if message.first == RelayedFanOut.begin {
                for peer in connected {
                    _ = try RawReceive.receive(peer.socket, into: answers, maximumDescriptors: 0, spin: spin)
                }
            }
            try UnixSocket.send(bench, bytes: reply)
        }
    }
}
