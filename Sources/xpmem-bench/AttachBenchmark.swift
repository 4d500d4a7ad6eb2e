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
        let environment = try BenchEnvironment(socket: options.socket)
        defer { environment.stop() }
        FigureGroup.emit([try Self.measure(environment, options)], json: options.json)
    }

    static func measure(_ environment: BenchEnvironment, _ options: BenchOptions) throws -> FigureGroup {
        let iterations = options.iterations(300)
        let exporterProcess = try environment.helper(["exporter-helper", "--socket", environment.socketPath, "--sizes", "\(size)"])
        let segment = SegmentID(String(exporterProcess.readLine().split(separator: " ")[0]))!
        let importer = try environment.connect("bench importer")
        var ours = Samples()
        for iteration in 0..<(iterations + 10) {
            let start = SharedMemoryAccess.monotonicNanoseconds()
            let grant = try importer.get(segment, access: .readWrite)
            let attachment = try grant.attach()
            touchEveryPage(UnsafeRawBufferPointer(attachment.bytes))
            let elapsed = SharedMemoryAccess.monotonicNanoseconds() - start
            try attachment.detach()
            try grant.release()
            if iteration >= 10 { ours.add(Double(elapsed) / 1000) }
        }
        exporterProcess.stop()

        let polled = try rawAttach(environment, iterations: iterations, polling: true)
        let blocking = try rawAttach(environment, iterations: iterations, polling: false)
        // The bare minimum is the faster of the two ways to wait.
        let raw = polled.median <= blocking.median ? polled : blocking
        let ratio = ours.median / raw.median
        return FigureGroup(
            name: "attach",
            note: "1 MiB, \(iterations) iterations, microseconds; importer and exporter are separate processes",
            columns: ["what", "median µs", "p90 µs"],
            rows: [
                ["get + attach + touch 1 MiB (ours)", Format.micros(ours.median), Format.micros(ours.p90)],
                ["raw round trip with memfd + mmap + touch, polling", Format.micros(polled.median), Format.micros(polled.p90)],
                ["raw round trip with memfd + mmap + touch, blocking", Format.micros(blocking.median), Format.micros(blocking.p90)],
                ["ratio (ours / raw)", Format.ratio(ratio), ""],
            ],
            ratios: ["attach_vs_raw_roundtrip": ratio],
            targets: ["attach_vs_raw_roundtrip <= 1.5 (reference: the faster raw variant)"])
    }

    /// One raw SOCK_SEQPACKET round trip bringing back a memfd, then mmap and touch of every page.
    static func rawAttach(_ environment: BenchEnvironment, iterations: Int, polling: Bool) throws -> Samples {
        var raw = Samples()
        let peer = try RawListener(environment: environment, memfdSize: size, peers: 1, polling: polling)
        let spin = SpinPolicy(microseconds: polling ? 50 : 0)
        let request: [UInt8] = Array(repeating: 0, count: 24)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256, alignment: 8)
        defer { buffer.deallocate() }
        for iteration in 0..<(iterations + 10) {
            let start = SharedMemoryAccess.monotonicNanoseconds()
            try UnixSocket.send(peer.sockets[0], bytes: request)
            let received = try RawReceive.receive(peer.sockets[0], into: buffer, maximumDescriptors: 1, spin: spin)
            guard let file = received.descriptors.takeFirst() else { throw XPMEMError(.protocolError, "no memfd came back") }
            let mapping = try MemoryMapping.mapShared(file, length: size, protection: .readWrite)
            touchEveryPage(UnsafeRawBufferPointer(mapping.bytes))
            let elapsed = SharedMemoryAccess.monotonicNanoseconds() - start
            mapping.unmap()
            if iteration >= 10 { raw.add(Double(elapsed) / 1000) }
        }
        peer.stop()
        return raw
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
    private(set) var sockets: [CInt] = []
    private var helpers: [HelperProcess] = []
    private let path: String

    init(environment: BenchEnvironment, memfdSize: Int, peers: Int, polling: Bool) throws {
        path = "/tmp/xpmem-bench-raw-\(ThisProcess.processID)-\(peers).sock"
        let listener = try UnixSocket.listen(at: path)
        try listener.setNonBlocking(false)
        for _ in 0..<peers {
            helpers.append(try environment.helper(["raw-peer", "--path", path, "--memfd-size", "\(memfdSize)"]
                                                  + (polling ? ["--poll"] : [])))
            var socket: CInt = -1
            while socket < 0 {
                if let accepted = try UnixSocket.accept(on: listener) {
                    try accepted.setNonBlocking(false)
                    socket = accepted.relinquish()
                } else {
                    ThisProcess.sleep(microseconds: 1000)
                }
            }
            sockets.append(socket)
        }
    }

    func stop() {
        for socket in sockets { _ = OwnedDescriptor(adopting: socket) }  // closes it
        sockets.removeAll()
        helpers.forEach { $0.stop() }
        FileSystem.removeQuietly(path)
    }

    deinit { stop() }
}

