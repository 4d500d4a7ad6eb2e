// Ranks compute on a shared segment while it is migrated between NUMA nodes. Rank 0 owns the
// segment; every rank (rank 0 too) keeps checking the owner's half and writing and re-reading its
// own slice of the other half, while rank 0 moves the pages to the last node and back. It prints
// the pages per node before and after each move, and exits non-zero if any rank ever saw a wrong word.
//
//   xprun -n 4 migrate [--size 64M] [--path automatic|privileged|cooperative]
//
// On a one-node machine there is nowhere to move to: it says so (make numa-test runs it in an
// emulated two-node machine).
@preconcurrency import Glibc
import ArgumentParser
import XPMEM
import XPMEMComm
import XPMEMSystem

@main
struct Migrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Migrate a shared segment between NUMA nodes while ranks read and write it (run under xprun).")

    @Option(help: "Segment size, such as 64M.") var size: String = "64M"
    @Option(help: "How rank 0 moves the pages: automatic, privileged (CAP_SYS_NICE) or cooperative.")
    var path: String = "automatic"

    func run() throws {
        guard let bytes = ByteCount(size)?.value, bytes >= 2 * 4096 * 64 else {
            throw ValidationError("--size: at least 512K, such as 64M")
        }
        guard let migrationPath = MigrationPath(rawValue: path) else { throw ValidationError("--path: automatic, privileged or cooperative") }
        let comm = try Communicator()
        let nodes = NUMA.nodes
        let home = nodes.first ?? 0, away = nodes.last ?? 0

        // Rank 0 makes the segment on its home node and tells everyone its id.
        var owned: SharedBuffer?
        var id: UInt64 = 0
        if comm.rank == 0 {
            let buffer = try comm.allocate(byteCount: bytes, placement: .node(home))
            let words = buffer.elements(UInt64.self, count: bytes / 8)
            for index in 0..<(words.count / 2 - 1) { words[index] = Self.ownerWord(index) }  // the last is the stop flag
            id = buffer.segmentID.rawValue
            owned = buffer
            for peer in 1..<comm.size { try withUnsafeBytes(of: id) { try comm.send($0, to: peer) } }
        } else {
            try withUnsafeMutableBytes(of: &id) { _ = try comm.receive(into: $0, from: 0) }
        }
        let shared = try owned?.bytes ?? comm.sharedBytes(of: SegmentID(rawValue: id))
        let words = shared.bindMemory(to: UInt64.self)
        let half = words.count / 2
        let slice = (half / comm.size) * comm.rank + half ..< (half / comm.size) * (comm.rank + 1) + half
        // The last word of the owner's half is the stop flag; it is not part of the pattern check.
        let stopIndex = half - 1
        // One round each before anything moves, so every rank is at work when the pages go.
        var wrong = Self.round(words, ownerHalf: stopIndex, slice: slice, round: 0), rounds = 1
        try comm.barrier()

        if comm.rank == 0 {
            // Rank 0 computes between the moves, on this thread, so it also touches the pages as they move.
            func work(_ times: Int) {
                for _ in 0..<times { wrong += Self.round(words, ownerHalf: stopIndex, slice: slice, round: rounds); rounds += 1 }
            }
            work(3)
            let before = try owned!.pagesPerNode()
            print("pages per node before: \(Self.describe(before))")
            if nodes.count < 2 { print("only one NUMA node here: nothing to move (make numa-test runs this in a 2-node machine)") }
            for target in [away, home] {
                let report = try owned!.migrate(to: target, path: migrationPath)
                print("moved to node \(target): \(report)")
                print("pages per node now: \(Self.describe(try owned!.pagesPerNode()))")
                work(3)
            }
            SharedMemoryAccess.store(UInt64(1), to: UnsafeMutableRawPointer(words.baseAddress! + stopIndex))
        } else {
            while SharedMemoryAccess.load(UnsafeMutableRawPointer(words.baseAddress! + stopIndex)) == 0 {
                wrong += Self.round(words, ownerHalf: stopIndex, slice: slice, round: rounds)
                rounds += 1
            }
        }

        // Everyone reports to rank 0.
        var result = [UInt64(wrong), UInt64(rounds)]
        if comm.rank == 0 {
            var total = wrong
            for peer in 1..<comm.size {
                try result.withUnsafeMutableBytes { _ = try comm.receive(into: $0, from: peer) }
                print("rank \(peer): \(result[1]) rounds, \(result[0]) wrong words")
                total += Int(result[0])
            }
            print("rank 0: \(rounds) rounds, \(wrong) wrong words")
            print(total == 0 ? "OK: no rank saw a wrong word while the segment moved" : "WRONG: \(total) wrong words")
            fflush(stdout)
            try comm.finish()
            if total != 0 { throw ExitCode.failure }
        } else {
            try result.withUnsafeBytes { try comm.send($0, to: 0) }
            try comm.finish()
        }
    }

    static func ownerWord(_ index: Int) -> UInt64 { 0xC0FF_EE00_0000_0000 | UInt64(index) }

    /// One pass: check the owner's half, write this rank's slice, read it back. Returns wrong words.
    static func round(_ words: UnsafeMutableBufferPointer<UInt64>, ownerHalf: Int, slice: Range<Int>, round: Int) -> Int {
        var wrong = 0
        for index in stride(from: 0, to: ownerHalf, by: 64) where words[index] != ownerWord(index) { wrong += 1 }
        let stamp = UInt64(round) << 40
        for index in stride(from: slice.lowerBound, to: slice.upperBound, by: 64) { words[index] = stamp | UInt64(index) }
        for index in stride(from: slice.lowerBound, to: slice.upperBound, by: 64) where words[index] != stamp | UInt64(index) {
            wrong += 1
        }
        return wrong
    }

    static func describe(_ counts: [Int: Int]) -> String {
        counts.sorted { $0.key < $1.key }.map { "node \($0.key): \($0.value)" }.joined(separator: ", ")
    }
}
