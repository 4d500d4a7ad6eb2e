// Sum of N vectors of doubles, one per rank, with the communicator's single-copy allreduce
// (reduce-scatter + allgather straight through the ranks' exported buffers), checked on every rank
// against a serial sum and timed like Examples/mpi-c/allreduce.c.
//
//   xprun -n 4 allreduce [--sizes 1M,8M] [--scale 0.1] [--batches 5]
@preconcurrency import Glibc
import ArgumentParser
import XPMEM
import XPMEMComm

@main
struct Allreduce: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Allreduce (sum) of a vector of doubles across the ranks, checked against a serial sum.",
        discussion: "Run under xprun: `xprun -n 4 allreduce`. Exits non-zero on any rank whose result is wrong.")

    @Option(help: "Comma-separated vector sizes in bytes, such as 1M or 8K,1M (8 bytes per double).")
    var sizes: String = "1M"
    @Option(help: "Multiply the operations per batch by this (< 1 for a quick run).") var scale: Double = 1
    @Option(help: "Timed batches per size; the median is printed.") var batches: Int = 5

    func run() throws {
        guard let sizeList = MeasurementSchedule.sizes(sizes), sizeList.allSatisfy({ $0 >= 8 }) else {
            throw ValidationError("--sizes: a list of sizes of at least 8 bytes")
        }
        guard batches >= 1 else { throw ValidationError("--batches must be at least 1") }
        let comm = try Communicator()
        if comm.rank == 0 {
            print("# allreduce (sum of doubles): XPMEM communicator \(comm.size) ranks")
            print("# " + MeasurementSchedule.column("Size", width: 12) + " Time (us)")
            fflush(stdout)
        }
        var wrong = 0
        for size in sizeList {
            let count = size / MemoryLayout<Double>.stride
            let input = try comm.allocate(byteCount: size)
            let output = try comm.allocate(byteCount: size)
            let values = input.elements(Double.self, count: count)
            for index in 0..<count { values[index] = Self.contribution(rank: comm.rank, index: index) }
            let repetitions = MeasurementSchedule.repetitions(size: size, scale: scale)
            var times: [Double] = []
            for batch in -1..<batches {
                try comm.barrier()
                let start = MeasurementSchedule.now()
                for _ in 0..<repetitions { try comm.allreduceSum(input, into: output, count: count) }
                if batch >= 0 { times.append((MeasurementSchedule.now() - start) * 1e6 / Double(repetitions)) }
            }
            let result = output.elements(Double.self, count: count)
            for index in 0..<count {
                var expected = 0.0
                for rank in 0..<comm.size { expected += Self.contribution(rank: rank, index: index) }
                if result[index] != expected {
                    print("rank \(comm.rank): element \(index) is \(result[index]), the serial sum is \(expected)")
                    wrong += 1
                    break
                }
            }
            if comm.rank == 0 {
                print(MeasurementSchedule.column(String(size), width: 14) + " "
                      + MeasurementSchedule.fixed(MeasurementSchedule.median(times), places: 3))
                fflush(stdout)
            }
            try comm.barrier()  // nobody reads these buffers any more
            try input.free()
            try output.free()
        }
        // Every rank checked its own copy of the result; gather the verdicts on rank 0.
        var failedRanks = wrong > 0 ? 1 : 0
        if comm.rank == 0 {
            for peer in 1..<comm.size {
                var peerWrong = 0
                try withUnsafeMutableBytes(of: &peerWrong) { _ = try comm.receive(into: $0, from: peer, tag: 9) }
                failedRanks += peerWrong > 0 ? 1 : 0
            }
            print(failedRanks == 0 ? "OK: matches the serial sum on all \(comm.size) ranks"
                  : "FAILED: \(failedRanks) ranks hold a result that differs from the serial sum")
            fflush(stdout)
        } else {
            try withUnsafeBytes(of: wrong) { try comm.send($0, to: 0, tag: 9) }
        }
        try comm.finish()
        if wrong > 0 || failedRanks > 0 { throw ExitCode.failure }
    }

    /// Integer-valued doubles (as in allreduce.c): every partial sum is exact, so any summation
    /// order gives the serial sum's bits.
    static func contribution(rank: Int, index: Int) -> Double { Double((rank + 1) * (index % 1021)) + 0.5 }
}
