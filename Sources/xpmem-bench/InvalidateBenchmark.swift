import ArgumentParser
import XPMEM
import XPMEMSystem

/// The invalidation round trip (begin → every acknowledgement → end returned to the exporter) with
/// 1, 8 and 64 importer processes, next to raw SOCK_SEQPACKET references: the same messages relayed
/// as the broker relays them (`RelayedFanOut`: the reference the figure is against), and a direct
/// fan-out from the exporter to the peers with no relay and no `end` (stricter: fewer wake-ups than
/// any broker can have); each the faster of sleeping and spinning waits. Also how long a reader
/// blocked by `.block` takes to resume after `end`.
struct InvalidateBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "invalidate", abstract: "invalidate fan-out vs raw round trips.")
    @OptionGroup var options: BenchOptions
    @Option(parsing: .upToNextOption, help: "Importer counts to measure (to profile one of them alone).")
    var importers: [Int] = standardImporterCounts

    static let standardImporterCounts = [1, 8, 64]

    func run() throws {
        _ = MachineLoad.atStart
        let environment = try BenchEnvironment(socket: options.socket)
        defer { environment.stop() }
        FigureGroup.emit([try Self.measure(environment, options, importerCounts: importers)], json: options.json)
    }

    static func measure(_ environment: BenchEnvironment, _ options: BenchOptions,
                        importerCounts: [Int] = standardImporterCounts) throws -> FigureGroup {
        let exporter = try environment.connect("bench exporter")
        var rows: [[String]] = []
        var spreads: [String: RatioFigure] = [:]
        for importerCount in importerCounts where importerCount > 0 {
            // About 20 ms of ours per batch: shorter batches than a scheduler tick or two make each
            // pair's ratio a matter of where one wake-up happened to land.
            let batch = options.iterations(max(10, 20_000 / (40 + 40 * importerCount)))
            let segment = try exporter.makeSegment(size: 1 << 20)
            var importers: [HelperProcess] = []
            for _ in 0..<importerCount {
                importers.append(try environment.helper(["importer-helper", "--socket", environment.socketPath,
                                                         "--segment", "\(segment.id)"]))
            }
            for importer in importers { _ = importer.readLine() }
            let polling = RawPeerSpin.worthPolling(importerCount + 1)
            let polledRelay = polling ? try RelayedFanOut(environment, peers: importerCount, polling: true) : nil
            let blockingRelay = try RelayedFanOut(environment, peers: importerCount, polling: false)
            let polledPeers = polling ? try RawFanOut(environment, peers: importerCount, polling: true) : nil
            let blockingPeers = try RawFanOut(environment, peers: importerCount, polling: false)
            func oursBatch(_ count: Int) throws -> Samples {
                var samples = Samples()
                for _ in 0..<count {
                    let start = SharedMemoryAccess.monotonicNanoseconds()
                    let report = try segment.invalidate(deadline: .seconds(10))
                    let elapsed = SharedMemoryAccess.monotonicNanoseconds() - start
                    guard report.importers.count == importerCount, !report.anyMissedDeadline else {
                        throw XPMEMError(.brokerInternal, "an importer did not acknowledge: \(report)")
                    }
                    samples.add(Double(elapsed) / 1000)
                }
                return samples
            }
            let (figure, ours, relayed) = try measureAgainstFasterOfTwoWaits(
                batch: batch, warmUp: 5, ours: oursBatch, polled: polledRelay, blocking: blockingRelay)
            let (direct, _, raw) = try measureAgainstFasterOfTwoWaits(
                batch: batch, warmUp: 5, ours: oursBatch, polled: polledPeers, blocking: blockingPeers)
            polledRelay?.stop()
            blockingRelay.stop()
            polledPeers?.stop()
            blockingPeers.stop()
            importers.forEach { $0.stop() }
            try segment.remove()
            spreads["invalidate_vs_raw_fanout_k\(importerCount)"] = figure
            spreads["invalidate_vs_direct_fanout_k\(importerCount)"] = direct
            rows.append(["\(importerCount)", Format.micros(ours.median), Format.micros(ours.p90),
                         polling ? Format.micros(relayed.polled.median) : "not run", Format.micros(relayed.blocking.median),
                         figure.summary, polling ? Format.micros(raw.polled.median) : "not run",
                         Format.micros(raw.blocking.median), direct.summary])
        }
        let resume = try resumeLatency(environment, exporter, iterations: options.iterations(100))
        rows.append(["blocked reader resumes after end", Format.micros(resume.median), Format.micros(resume.p90),
                     "", "", "", "", "", ""])
        return FigureGroup(
            name: "invalidate",
            note: "microseconds; ours and each raw reference interleaved in batches; importers are separate processes; relayed: begin and end through a relay process, peers answer begin; direct: one message from the exporter to each peer and its answer; polled references are not run with more spinning processes than twice the cores (they cannot be the faster)",
            columns: ["importers", "ours median", "ours p90", "relayed polled", "relayed blocking", "ratio vs relayed",
                      "direct polled", "direct blocking", "ratio vs direct"],
            rows: rows, ratios: [:],
            targets: ["invalidate_vs_raw_fanout_k1/k8/k64 <= 1.5 (reference: the faster relayed variant)"], spreads: spreads)
    }

    /// `peers` raw processes, each answering one small SOCK_SEQPACKET message.
    final class RawFanOut: RawBatches {
        private let peers: RawListener
        private let spin: SpinPolicy
        private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256, alignment: 8)
        let processesSpinningAfterBatch: Int

        init(_ environment: BenchEnvironment, peers count: Int, polling: Bool) throws {
            peers = try RawListener(environment: environment, memfdSize: 0, peers: count, polling: polling)
            spin = SpinPolicy(microseconds: polling ? 50 : 0)
            processesSpinningAfterBatch = polling ? count : 0
        }

        /// `count` rounds of one message to every peer, then every answer.
        func batch(_ count: Int) throws -> Samples {
            var samples = Samples()
            let request: [UInt8] = Array(repeating: 0, count: 48)
            for _ in 0..<count {
                let start = SharedMemoryAccess.monotonicNanoseconds()
                for connection in peers.connections { try UnixSocket.send(connection.socket, bytes: request) }
                for connection in peers.connections {
                    _ = try RawReceive.receive(connection.socket, into: buffer, maximumDescriptors: 0, spin: spin)
                }
                samples.add(Double(SharedMemoryAccess.monotonicNanoseconds() - start) / 1000)
            }
            return samples
        }

        func stop() { peers.stop() }

        deinit { buffer.deallocate() }
    }

    /// From the exporter sending `end` to a reader thread of a `.block` importer completing the read it
    /// slept in (both clocks are CLOCK_MONOTONIC).
    static func resumeLatency(_ environment: BenchEnvironment, _ exporter: XPMEMBroker, iterations: Int) throws -> Samples {
        let segment = try exporter.makeSegment(size: 1 << 20)
        let importer = try environment.helper(["importer-helper", "--socket", environment.socketPath,
                                               "--segment", "\(segment.id)", "--reader"])
        _ = importer.readLine()
        let stamp = segment.bytes.baseAddress! + 64
        var samples = Samples()
        for _ in 0..<iterations {
            let report = try segment.beginInvalidation(deadline: .seconds(10))
            ThisProcess.sleep(microseconds: 2000)  // the reader is asleep in its fault now
            SharedMemoryAccess.store(0, to: stamp)
            let ended = SharedMemoryAccess.monotonicNanoseconds()
            try segment.endInvalidation(report)
            var resumed: UInt64 = 0
            let deadline = ended + 1_000_000_000
            while resumed == 0 && SharedMemoryAccess.monotonicNanoseconds() < deadline {
                resumed = SharedMemoryAccess.load(stamp)
            }
            if resumed > ended { samples.add(Double(resumed - ended) / 1000) }
        }
        importer.stop()
        try segment.remove()
        return samples
    }
}
