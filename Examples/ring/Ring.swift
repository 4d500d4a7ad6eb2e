// A token and a buffer passed around the ranks: rank 0 starts them, every rank adds its share and
// forwards to the next, for several laps. Every rank checks what it receives against what the
// ranks before it must have added; the buffer (64 KiB by default) goes single-copy.
//
//   xprun -n 4 ring [--laps 10] [--size 64K]
@preconcurrency import Glibc
import ArgumentParser
import XPMEM
import XPMEMComm

@main
struct Ring: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pass a token and a buffer around the ranks (run under xprun), checking both at every hop.")

    @Option(help: "Times around the ring.") var laps: Int = 10
    @Option(help: "Buffer size, a multiple of 4, such as 64K or 1M.") var size: String = "64K"

    func run() throws {
        guard let bytes = ByteCount(size)?.value, bytes >= 4, bytes % 4 == 0 else {
            throw ValidationError("--size: a multiple of 4 bytes, such as 64K")
        }
        guard laps >= 1 else { throw ValidationError("--laps must be at least 1") }
        let comm = try Communicator()
        guard comm.size >= 2 else { throw ValidationError("ring needs at least 2 ranks (xprun -n 2 ring)") }
        let rank = comm.rank, ranks = comm.size
        let next = (rank + 1) % ranks, previous = (rank + ranks - 1) % ranks
        let buffer = try comm.allocate(byteCount: bytes)
        let words = buffer.elements(UInt32.self, count: bytes / 4)
        words.initialize(repeating: 0)
        // Each lap every rank adds rank + 1 to each word and 1 to the token.
        let perLap = UInt32(ranks * (ranks + 1) / 2)
        var token = 0
        var mismatches = 0
        let start = MeasurementSchedule.now()
        for lap in 0..<laps {
            if rank != 0 || lap > 0 {
                try withUnsafeMutableBytes(of: &token) { _ = try comm.receive(into: $0, from: previous, tag: 1) }
                try comm.receive(into: buffer.bytes, from: previous, tag: 2)
                // What the ranks before this one added so far.
                let hopsBefore = rank == 0 ? lap * ranks : lap * ranks + rank
                let expectedWord = rank == 0 ? UInt32(lap) * perLap : UInt32(lap) * perLap + UInt32(rank * (rank + 1) / 2)
                if token != hopsBefore || words.contains(where: { $0 != expectedWord }) {
                    print("rank \(rank) lap \(lap): token \(token) (expected \(hopsBefore)), buffer word 0 is \(words[0]) (expected \(expectedWord))")
                    mismatches += 1
                }
            }
            token += 1
            for index in words.indices { words[index] &+= UInt32(rank + 1) }
            try withUnsafeBytes(of: token) { try comm.send($0, to: next, tag: 1) }
            try comm.send(UnsafeRawBufferPointer(buffer.bytes), to: next, tag: 2)
        }
        if rank == 0 {
            try withUnsafeMutableBytes(of: &token) { _ = try comm.receive(into: $0, from: previous, tag: 1) }
            try comm.receive(into: buffer.bytes, from: previous, tag: 2)
            let expectedWord = UInt32(laps) * perLap
            if token != laps * ranks || words.contains(where: { $0 != expectedWord }) {
                print("rank 0 final: token \(token) (expected \(laps * ranks)), word 0 is \(words[0]) (expected \(expectedWord))")
                mismatches += 1
            }
            let elapsed = MeasurementSchedule.now() - start
            print("ring: \(ranks) ranks, \(laps) laps, \(bytes)-byte buffer: "
                  + "\(MeasurementSchedule.fixed(elapsed * 1e6 / Double(laps * ranks), places: 1)) us per hop")
            print(mismatches == 0 ? "OK: token \(token) and every buffer word \(expectedWord) as expected"
                  : "FAILED: \(mismatches) checks failed")
            fflush(stdout)
        }
        try comm.finish()
        if mismatches > 0 { throw ExitCode.failure }
    }
}
