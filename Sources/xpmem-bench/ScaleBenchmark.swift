import ArgumentParser
import Foundation
import Synchronization
import XPMEMRunKit
import XPMEMSystem
import XPMEMWire

/// The broker on a node with many ranks: N clients export M segments each, then attach in a ring
/// (client i attaches segments of client i+1), from several threads at once. Reported: attaches per
/// second, p50/p99 attach latency, the broker's resident memory per client and per segment (beyond
/// the kernel's socket buffers and files, which VmRSS does not count), and the broker's CPU during
/// the storm. Clients speak the protocol directly, as a rank's library would. With `--windows` the
/// segments are windows of one address-space file per client (as libxpmem's `xpmem_make`s are), and
/// each attach is a first attach: the broker asks the exporter to back the range, which one thread
/// answering every client's event channel does (`BackingResponder`), as an exporter's event thread would.
struct ScaleBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scale", abstract: "The broker under many clients and segments: attach storm, memory per client and segment.",
        discussion: """
            Starts a private broker with room for every descriptor (2 per memfd segment, or 2 per client for \
            its address-space file with --windows; 3 per client for its connection, 1 or 2 more on this \
            side): as root the limit is raised past the hard one; otherwise --clients and --segments must fit it.
            """)
    @OptionGroup var options: BenchOptions
    @Option(help: "Clients, each its own connection.") var clients = 1000
    @Option(help: "Segments each client exports (4 KiB memfds, or one-page windows with --windows).") var segments = 100
    @Option(help: "Attaches each client makes of its neighbour's segments.") var attaches = 20
    @Option(help: "Threads driving the clients during the attach storm.") var threads = 4
    @Flag(help: "Export windows of one address-space file per client (libxpmem's kind) instead of a memfd each.")
    var windows = false

    func run() throws {
        _ = MachineLoad.atStart
        FigureGroup.emit([try measure()], json: options.json)
    }

    func measure() throws -> FigureGroup {
        guard clients >= 2, segments >= 1, attaches >= 1, threads >= 1 else {
            throw ValidationError("--clients must be at least 2, --segments, --attaches and --threads at least 1")
        }
        let needed = 2 * clients * (windows ? 1 : segments) + (windows ? 6 : 4) * clients + 1024
        let limit = DescriptorLimit.raise(toAtLeast: needed)
        guard limit >= needed else {
            throw ValidationError("\(needed) descriptors needed, the limit is \(limit): run as root or with fewer clients or segments")
        }
        let broker = try PrivateBroker(for: "xpmem-bench-scale", arguments: [
            "--log-level", "warning", "--max-connections-per-uid", "\(clients + 16)",
            "--max-segments-per-uid", "\(clients * segments + 16)",
        ])
        let baseline = ResidentMemory.of(broker.pid)
        var connected: [ScaleClient] = []
        for index in 0..<clients {
            connected.append(try ScaleClient(broker.socketPath, name: "scale \(index)", servesBacking: windows))
        }
        let afterClients = ResidentMemory.of(broker.pid)
        let exportStart = SharedMemoryAccess.monotonicNanoseconds()
        for client in connected {
            if windows {
                try client.exportWindows(segments)
            } else {
                for _ in 0..<segments { try client.export() }
            }
        }
        let exportSeconds = Double(SharedMemoryAccess.monotonicNanoseconds() - exportStart) / 1e9
        let afterSegments = ResidentMemory.of(broker.pid)

        // The storm: thread t drives clients t, t+threads, ...; client i gets and attaches `attaches`
        // segments of client i+1.
        let responder = windows ? try BackingResponder(serving: connected) : nil
        let cpuBefore = ProcessCPU.of(broker.pid)
        let stormStart = SharedMemoryAccess.monotonicNanoseconds()
        let storm = Result { try AttachStorm.run(clients: connected, attaches: attaches, threads: threads) }
        let stormSeconds = Double(SharedMemoryAccess.monotonicNanoseconds() - stormStart) / 1e9
        let answered = try responder?.stop() ?? 0
        let latencies = try storm.get()
        let cpuSeconds = ProcessCPU.of(broker.pid) - cpuBefore
        let afterStorm = ResidentMemory.of(broker.pid)
        connected.removeAll()
        broker.stop()

        let sorted = latencies.sorted()
        func percentile(_ fraction: Double) -> Double { sorted[min(sorted.count - 1, Int(Double(sorted.count) * fraction))] }
        let perClient = Double(afterClients - baseline) / Double(clients)
        let perSegment = Double(afterSegments - afterClients) / Double(clients * segments)
        let perAttachment = Double(afterStorm - afterSegments) / Double(sorted.count)
        let rate = Double(sorted.count) / stormSeconds
        func kib(_ bytes: Int) -> String { "\(bytes / 1024) KiB" }
        let kind = windows ? "address-space windows, \(answered) backings answered" : "a memfd each"
        let rows: [[String]] = [
            ["clients × segments", "\(clients) × \(segments), \(kind) (exported in \(String(format: "%.2f", exportSeconds)) s, \(Int(Double(clients * segments) / exportSeconds))/s)", ""],
            ["attach storm", "\(sorted.count) attaches from \(threads) threads in \(String(format: "%.2f", stormSeconds)) s", ""],
            ["attaches per second", String(format: "%.0f", rate), ""],
            ["attach latency p50 / p99", String(format: "%.1f / %.1f µs", percentile(0.5), percentile(0.99)), ""],
            ["broker CPU during the storm", String(format: "%.0f%% of a core", 100 * cpuSeconds / stormSeconds), ""],
            ["broker RSS: start, clients, segments, storm",
             "\(kib(baseline)), \(kib(afterClients)), \(kib(afterSegments)), \(kib(afterStorm))", ""],
            ["broker bytes per client", String(format: "%.0f", perClient), "≤ 8192"],
            ["broker bytes per segment", String(format: "%.0f", perSegment), "≤ 512"],
            ["broker bytes per attachment", String(format: "%.0f", perAttachment), ""],
        ]
        let key = "\(clients)_clients"
        return FigureGroup(
            name: "scale",
            note: "\(clients) clients × \(segments) \(windows ? "address-space windows" : "memfd segments") on a private broker, then \(attaches) ring attaches each from \(threads) threads",
            columns: ["figure", "value", "goal"], rows: rows,
            ratios: [
                "attach_p50_us_\(key)": percentile(0.5), "attach_p99_us_\(key)": percentile(0.99),
                "attaches_per_second_\(key)": rate, "broker_bytes_per_client": perClient,
                "broker_bytes_per_segment": perSegment, "broker_cpu_fraction_during_storm": cpuSeconds / stormSeconds,
            ],
            targets: ["broker_bytes_per_segment <= 512", "broker_bytes_per_client <= 8192"])
    }
}

/// One client of the scale benchmark: a connection that said hello, and the segments it exported.
final class ScaleClient: @unchecked Sendable {
    private let connection: OwnedDescriptor
    /// Its end of the event channel, when it serves backings (used by `BackingResponder` only).
    private(set) var events: EventChannel?
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: WireProtocol.maximumReplySize, alignment: 16)
    private(set) var exported: [SegmentID] = []
    private var nextRequest: UInt32 = 1

    init(_ path: String, name: String, servesBacking: Bool = false) throws {
        connection = try UnixSocket.connect(to: path)
        guard case .welcome = try exchange(.hello(clientName: name)).message else {
            throw ValidationError("the broker did not welcome \(name)")
        }
        if servesBacking {
            let pair = try UnixSocket.pair()
            try UnixSocket.send(connection, bytes: frame(.subscribe), passing: [pair.first.fileDescriptor])
            guard case .done = try receive().message else { throw ValidationError("the broker refused \(name)'s subscribe") }
            events = EventChannel(pair.second)
        }
    }

    deinit { buffer.deallocate() }

    /// Exports a fresh 4 KiB memfd (the broker keeps it; ours closes here).
    func export() throws {
        let file = try MemoryFile.create(name: "xpmem-bench-scale", size: 4096)
        try MemoryFile.setMode(0o600, of: file)
        let readOnly = try MemoryFile.reopenReadOnly(file)
        try UnixSocket.send(connection, bytes: frame(.make(size: 4096, permit: Permit(rawValue: 0o600), name: "scale")),
                            passing: [file.fileDescriptor, readOnly.fileDescriptor])
        let reply = try receive()
        guard case .made(let id) = reply.message else { throw ValidationError("make refused: \(reply.message)") }
        exported.append(id)
    }

    /// Exports `count` one-page windows of one fresh address-space file, sending its descriptors with
    /// each as libxpmem does (the broker keeps them once; ours close here).
    func exportWindows(_ count: Int) throws {
        let page = UInt64(4096)
        let file = try MemoryFile.create(name: "xpmem-bench-scale-as", size: Int(page) * count)
        try MemoryFile.setMode(0o600, of: file)
        let readOnly = try MemoryFile.reopenReadOnly(file)
        for index in 0..<UInt64(count) {
            let make = Message.makeAddressSpace(base: index * page, size: page, permit: Permit(rawValue: 0o600), name: "scale")
            try UnixSocket.send(connection, bytes: frame(make), passing: [file.fileDescriptor, readOnly.fileDescriptor])
            let reply = try receive()
            guard case .made(let id) = reply.message else { throw ValidationError("makeAddressSpace refused: \(reply.message)") }
            exported.append(id)
        }
    }

    /// Gets and attaches `segment` (its descriptor closes at once); returns the attach's round trip in µs.
    func attach(_ segment: SegmentID) throws -> Double {
        guard case .granted(let handle, _, _) = try exchange(.get(segment, .readWrite)).message else {
            throw ValidationError("get of \(segment) refused")
        }
        let start = SharedMemoryAccess.monotonicNanoseconds()
        let reply = try exchange(.attach(handle, offset: 0, length: 4096))
        let elapsed = Double(SharedMemoryAccess.monotonicNanoseconds() - start) / 1000
        // A memfd segment's attach answers `attached`, a window's `attachedWindow`; both with the file.
        let attached: Bool
        switch reply.message {
        case .attached, .attachedWindow: attached = true
        default: attached = false
        }
        guard attached, reply.descriptors.count == 1 else {
            throw ValidationError("attach of \(segment) refused: \(reply.message)")
        }
        return elapsed
    }

    private func frame(_ message: Message) -> [UInt8] {
        defer { nextRequest += 1 }
        return Frame(requestID: nextRequest, message: message).encoded()
    }

    private func exchange(_ message: Message) throws -> (message: Message, descriptors: OwnedDescriptorList) {
        try UnixSocket.send(connection, bytes: frame(message))
        return try receive()
    }

    private func receive() throws -> (message: Message, descriptors: OwnedDescriptorList) {
        let received = try UnixSocket.receive(connection, into: buffer, maximumDescriptors: 2)
        let frame = try Frame.decode(UnsafeRawBufferPointer(rebasing: buffer[..<received.byteCount]))
        return (frame.message, received.descriptors)
    }
}

/// A client's end of its event channel.
final class EventChannel: Sendable {
    let socket: OwnedDescriptor
    init(_ socket: consuming OwnedDescriptor) { self.socket = socket }
}

/// Every client attaching its neighbour's segments, from several threads at once.
enum AttachStorm {
    /// Thread t drives clients t, t+threads, ...; client i attaches `attaches` segments of client i+1
    /// (cycling through them). Returns every attach's round trip in µs.
    static func run(clients: [ScaleClient], attaches: Int, threads: Int) throws -> [Double] {
        let results = Mutex<(latencies: [Double], failure: String?)>(([], nil))
        let finished = Mutex(0)
        for thread in 0..<threads {
            try DetachedThread.start {
                var latencies: [Double] = []
                var failure: String?
                for index in stride(from: thread, to: clients.count, by: threads) where failure == nil {
                    let neighbour = clients[(index + 1) % clients.count].exported
                    for round in 0..<attaches {
                        do {
                            latencies.append(try clients[index].attach(neighbour[round % neighbour.count]))
                        } catch {
                            failure = "client \(index): \(error)"
                            break
                        }
                    }
                }
                results.withLock { $0.latencies += latencies; $0.failure = $0.failure ?? failure }
                finished.withLock { $0 += 1 }
            }
        }
        while finished.withLock({ $0 }) < threads { ThisProcess.sleep(microseconds: 1000) }
        let (latencies, failure) = results.withLock { $0 }
        if let failure { throw ValidationError("the attach storm failed: \(failure)") }
        return latencies
    }
}

/// A process's resident memory, from /proc/PID/status (VmRSS), in bytes; 0 if unreadable.
enum ResidentMemory {
    static func of(_ pid: Int32) -> Int {
        guard let status = FileSystem.readSmallFile("/proc/\(pid)/status", limit: 8192) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
        }
        return 0
    }
}

/// A process's CPU time so far (user + system), from /proc/PID/stat, in seconds.
enum ProcessCPU {
    static func of(_ pid: Int32) -> Double {
        guard let stat = FileSystem.readSmallFile("/proc/\(pid)/stat"), let nameEnd = stat.lastIndex(of: ")") else { return 0 }
        // After the name: field 3 is fields[0], so utime (14) and stime (15) are fields[11] and [12].
        let fields = stat[stat.index(after: nameEnd)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(ThisProcess.clockTicksPerSecond)
    }
}
