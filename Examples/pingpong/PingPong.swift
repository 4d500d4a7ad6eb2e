// Latency and bandwidth between ranks 0 and 1, printed like the OSU micro-benchmarks: for each
// size, half the round-trip time (median of timed batches) and size ÷ that time. Messages from
// 16 KiB up go single-copy (the receiver copies straight out of the sender's exported buffer).
// Every size is first sent once with a known pattern and checked byte for byte.
//
//   xprun -n 2 pingpong [--sizes 0,8,1M] [--max-size 64M] [--scale 0.1] [--batches 5]
@preconcurrency import Glibc
import ArgumentParser
import XPMEM
import XPMEMComm

@main
struct PingPong: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "OSU-style ping-pong latency and bandwidth between ranks 0 and 1 (run under xprun).",
        discussion: "Exits non-zero if any message arrived corrupted. Ranks beyond 1 only join the barriers.")

    @Option(help: "Comma-separated sizes such as 0,8,1M (default: 0 and powers of two up to --max-size).")
    var sizes: String?
    @Option(help: "Largest size when --sizes is not given.") var maxSize: String = "64M"
    @Option(help: "Multiply the round trips per batch by this (< 1 for a quick run).") var scale: Double = 1
    @Option(help: "Timed batches per size; the median is printed.") var batches: Int = 5

    func run() throws {
        guard let maxBytes = ByteCount(maxSize)?.value else { throw ValidationError("--max-size: not a size") }
        let sizeList: [Int]
        if let sizes {
            guard let parsed = MeasurementSchedule.sizes(sizes) else { throw ValidationError("--sizes: not a list of sizes") }
            sizeList = parsed
        } else {
            sizeList = MeasurementSchedule.powersOfTwo(upTo: maxBytes)
        }
        guard batches >= 1 else { throw ValidationError("--batches must be at least 1") }
        let comm = try Communicator()
        guard comm.size >= 2 else { throw ValidationError("pingpong needs at least 2 ranks (xprun -n 2 pingpong)") }
        let largest = max(sizeList.max() ?? 0, 1)
        let buffer = try comm.allocate(byteCount: largest)
        let peer = 1 - comm.rank
        let active = comm.rank < 2
        var corrupted = 0
        if comm.rank == 0 {
            print("# OSU-style ping-pong: XPMEM communicator \(comm.size) ranks")
            print("# " + MeasurementSchedule.column("Size", width: 12) + " " + MeasurementSchedule.column("Latency (us)", width: 16)
                  + " Bandwidth (MB/s)")
            fflush(stdout)
        }
        for size in sizeList {
            let message = UnsafeMutableRawBufferPointer(rebasing: buffer.bytes[0..<size])
            if comm.rank == 0 {
                for index in 0..<size { message[index] = Self.patternByte(size: size, index: index) }
                try comm.send(UnsafeRawBufferPointer(message), to: 1, tag: 1)
            } else if comm.rank == 1 {
                message.initializeMemory(as: UInt8.self, repeating: 0)
                try comm.receive(into: message, from: 0, tag: 1)
                if (0..<size).contains(where: { message[$0] != Self.patternByte(size: size, index: $0) }) { corrupted += 1 }
            }
            let trips = MeasurementSchedule.repetitions(size: size, scale: scale)
            var latencies: [Double] = []
            for batch in -1..<batches {  // batch -1 warms up (and attaches the peer's buffer)
                try comm.barrier()
                guard active else { continue }
                let start = MeasurementSchedule.now()
                for _ in 0..<trips {
                    if comm.rank == 0 {
                        try comm.send(UnsafeRawBufferPointer(message), to: peer)
                        try comm.receive(into: message, from: peer)
                    } else {
                        try comm.receive(into: message, from: peer)
                        try comm.send(UnsafeRawBufferPointer(message), to: peer)
                    }
                }
                if batch >= 0 { latencies.append((MeasurementSchedule.now() - start) * 1e6 / Double(2 * trips)) }
            }
            if comm.rank == 0 {
                let latency = MeasurementSchedule.median(latencies)
                let bandwidth = latency > 0 ? Double(size) / latency : 0
                print(MeasurementSchedule.column(String(size), width: 14) + " "
                      + MeasurementSchedule.column(MeasurementSchedule.fixed(latency, places: 3), width: 16) + " "
                      + MeasurementSchedule.fixed(bandwidth, places: 2))
                fflush(stdout)
            }
        }
        // Rank 1 did the checking; rank 0 reports.
        var remoteCorrupted = 0
        if comm.rank == 1 {
            try withUnsafeBytes(of: corrupted) { try comm.send($0, to: 0, tag: 2) }
        } else if comm.rank == 0 {
            try withUnsafeMutableBytes(of: &remoteCorrupted) { _ = try comm.receive(into: $0, from: 1, tag: 2) }
            print(remoteCorrupted == 0 ? "OK: every size arrived intact"
                  : "FAILED: \(remoteCorrupted) sizes arrived corrupted")
            fflush(stdout)
        }
        try comm.finish()
        if corrupted + remoteCorrupted > 0 { throw ExitCode.failure }
    }

    static func patternByte(size: Int, index: Int) -> UInt8 { UInt8(truncatingIfNeeded: index &* 131 &+ size) }
}
