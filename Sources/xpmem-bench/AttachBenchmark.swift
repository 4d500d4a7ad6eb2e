import ArgumentParser
import XPMEM
import XPMEMSystem

/// Cold get + attach + first touch of 1 MiB, next to the bare minimum for the same work: one raw
/// SOCK_SEQPACKET round trip that brings back a memfd, then mmap and touch of the same 1 MiB.
struct AttachBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "attach", abstract: "get+attach+touch vs a raw round trip with a memfd.")
    @OptionGroup var options: BenchOptions

    static let size = 1 << 20

    func run() throws {
        _ = MachineLoad.atStart
        let environment = try BenchEnvironment(socket: options.socket)
        defer { environment.stop() }
        FigureGroup.emit([try Self.measure(environment, options)], json: options.json)
    }

    static func measure(_ environment: BenchEnvironment, _ options: BenchOptions) throws -> FigureGroup {
        let batch = options.iterations(30)
        let exporterProcess = try environment.helper(["exporter-helper", "--socket", environment.socketPath, "--sizes", "\(size)"])
        defer { exporterProcess.stop() }
        let segment = SegmentID(String(exporterProcess.readLine().split(separator: " ")[0]))!
        let importer = try environment.connect("bench importer")
        let polledPeer = try RawAttach(environment, polling: true)
        defer { polledPeer.stop() }
        let blockingPeer = try RawAttach(environment, polling: false)
        defer { blockingPeer.stop() }

        func oursBatch(_ count: Int) throws -> Samples {
            var samples = Samples()
            for _ in 0..<count {
                let start = SharedMemoryAccess.monotonicNanoseconds()
                let grant = try importer.get(segment, access: .readWrite)
                let attachment = try grant.attach()
                touchEveryPage(UnsafeRawBufferPointer(attachment.bytes))
                let elapsed = SharedMemoryAccess.monotonicNanoseconds() - start
                try attachment.detach()
                try grant.release()
                samples.add(Double(elapsed) / 1000)
            }
            return samples
        }
        let (figure, ours, raw) = try measureAgainstFasterOfTwoWaits(
            batch: batch, warmUp: 10, ours: oursBatch, polled: polledPeer, blocking: blockingPeer)
        return FigureGroup(
            name: "attach",
            note: "1 MiB, batches of \(batch), ours and the raw reference interleaved; microseconds; importer and exporter are separate processes",
            columns: ["what", "median µs", "p90 µs"],
            rows: [
                ["get + attach + touch 1 MiB (ours)", Format.micros(ours.median), Format.micros(ours.p90)],
                ["raw round trip with memfd + mmap + touch, polling", Format.micros(raw.polled.median), Format.micros(raw.polled.p90)],
                ["raw round trip with memfd + mmap + touch, blocking", Format.micros(raw.blocking.median), Format.micros(raw.blocking.p90)],
                ["ratio (ours / raw), pair by pair", figure.summary, ""],
            ],
            ratios: [:],
            targets: ["attach_vs_raw_roundtrip <= 1.5 (reference: the faster raw variant)"],
            spreads: ["attach_vs_raw_roundtrip": figure])
    }

    /// A raw peer process answering one SOCK_SEQPACKET round trip with a memfd.
    final class RawAttach: RawBatches {
        private let peer: RawListener
        private let spin: SpinPolicy
        private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256, alignment: 8)
        let processesSpinningAfterBatch: Int

        init(_ environment: BenchEnvironment, polling: Bool) throws {
            peer = try RawListener(environment: environment, memfdSize: AttachBenchmark.size, peers: 1, polling: polling)
            spin = SpinPolicy(microseconds: polling ? 50 : 0)
            processesSpinningAfterBatch = polling ? 1 : 0
        }

        /// `count` round trips, each followed by mmap and a touch of every page.
        func batch(_ count: Int) throws -> Samples {
            var samples = Samples()
            let request: [UInt8] = Array(repeating: 0, count: 24)
            for _ in 0..<count {
                let start = SharedMemoryAccess.monotonicNanoseconds()
                let connection = peer.connections[0]
                try UnixSocket.send(connection.socket, bytes: request)
                let received = try RawReceive.receive(connection.socket, into: buffer, maximumDescriptors: 1, spin: spin)
                guard let file = received.descriptors.takeFirst() else { throw XPMEMError(.protocolError, "no memfd came back") }
                let mapping = try MemoryMapping.mapShared(file, length: AttachBenchmark.size, protection: .readWrite)
                touchEveryPage(UnsafeRawBufferPointer(mapping.bytes))
                let elapsed = SharedMemoryAccess.monotonicNanoseconds() - start
                mapping.unmap()
                samples.add(Double(elapsed) / 1000)
            }
            return samples
        }

        func stop() { peer.stop() }

        deinit { buffer.deallocate() }
    }

    /// Reads one byte of every page, so every page is faulted in.
    static func touchEveryPage(_ bytes: UnsafeRawBufferPointer) {
        var sum: UInt64 = 0
        var offset = 0
        while offset < bytes.count {
            sum &+= SharedMemoryAccess.load(bytes.baseAddress! + offset)
            offset += pageSize
        }
        if sum == 1 { print("") }  // keeps the loads
    }
}

/// A plain SOCK_SEQPACKET listener with `peers` raw-peer processes connected: the reference for
/// what any socket-based design must pay.
final class RawListener {
    /// One accepted connection (a class, so that the listener can hold its peers in an array).
    final class Connection {
        let socket: OwnedDescriptor
        init(_ socket: consuming OwnedDescriptor) { self.socket = socket }
    }

    /// The connected peers in the order they were started; dropping one closes its socket.
    private(set) var connections: [Connection] = []
    private var helpers: [HelperProcess] = []
    private let path: String

    init(environment: BenchEnvironment, memfdSize: Int, peers: Int, polling: Bool) throws {
        path = "/tmp/xpmem-bench-raw-\(ThisProcess.processID)-\(peers)-\(polling ? "polled" : "blocking").sock"
        let listener = try UnixSocket.listen(at: path)
        for _ in 0..<peers {
            helpers.append(try environment.helper(["raw-peer", "--path", path, "--memfd-size", "\(memfdSize)"]
                                                  + (polling ? ["--poll"] : [])))
            connections.append(Connection(try Self.acceptOne(on: listener)))
        }
    }

    /// The next connection to `listener` (polled every millisecond, for at most `limit` seconds), made blocking.
    static func acceptOne(on listener: borrowing OwnedDescriptor, withinSeconds limit: UInt64 = 30) throws -> OwnedDescriptor {
        let deadline = SharedMemoryAccess.monotonicNanoseconds() + limit * 1_000_000_000
        try listener.setNonBlocking(true)  // polled, so that the deadline is kept
        while SharedMemoryAccess.monotonicNanoseconds() < deadline {
            if let accepted = try UnixSocket.accept(on: listener) {
                try accepted.setNonBlocking(false)
                return accepted
            }
            ThisProcess.sleep(microseconds: 1000)
        }
        // A helper that died before connecting would otherwise leave the benchmark waiting forever.
        throw ValidationError("no reference process connected within \(limit) s: one of the benchmark's helpers did not start")
    }

    func stop() {
        connections.removeAll()
        helpers.forEach { $0.stop() }
        FileSystem.removeQuietly(path)
    }

    deinit { stop() }
}

