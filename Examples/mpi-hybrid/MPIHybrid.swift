// Ranks launched by MPI's own launcher use the broker for single-copy transfers on this host.
//
//   xpmemd --socket /tmp/x.sock &        # one broker per host
//   mpirun.openmpi -n 4 -x XPMEM_SOCKET=/tmp/x.sock mpi-hybrid [--size 4M]
//
// This is the path for jobs that outgrow one host: MPI carries data between hosts, the broker
// within one. The communicator is built from the launcher's variables (Open MPI's
// OMPI_COMM_WORLD_LOCAL_RANK/_SIZE, MPICH's MPI_LOCALRANKID/PMI_RANK; see JobEnvironment), so it
// spans the ranks on this host; ranks find each other through a directory named after the MPI job.
// Each rank passes a buffer to the next local rank single-copy, and all ranks allreduce a vector;
// both are checked.
@preconcurrency import Glibc
import ArgumentParser
import XPMEM
import XPMEMComm

@main
struct MPIHybrid: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mpi-hybrid",
        abstract: "Under mpirun: single-copy transfers between the local ranks through the XPMEM broker, checked.")

    @Option(help: "Bytes each rank passes to the next, single-copy.") var size: String = "4M"

    func run() throws {
        guard let bytes = ByteCount(size)?.value, bytes >= 8, bytes % 8 == 0 else {
            throw ValidationError("--size: a multiple of 8 bytes, such as 4M")
        }
        let comm = try Communicator()
        let worldRank = Self.environment("OMPI_COMM_WORLD_RANK") ?? Self.environment("PMI_RANK") ?? comm.rank
        let worldSize = Self.environment("OMPI_COMM_WORLD_SIZE") ?? Self.environment("PMI_SIZE") ?? comm.size
        guard comm.size >= 2 else { throw ValidationError("run at least 2 ranks on this host") }
        let next = (comm.rank + 1) % comm.size, previous = (comm.rank + comm.size - 1) % comm.size
        let count = bytes / 8
        let outgoing = try comm.allocate(byteCount: bytes)
        let incoming = try comm.allocate(byteCount: bytes)
        let words = outgoing.elements(UInt64.self, count: count)
        for index in 0..<count { words[index] = Self.word(rank: comm.rank, index: index) }
        // Even ranks send first, odd ones receive first, so blocking single-copy sends pair up.
        if comm.rank % 2 == 0 { try comm.send(UnsafeRawBufferPointer(outgoing.bytes), to: next) }
        try comm.receive(into: incoming.bytes, from: previous)
        if comm.rank % 2 != 0 { try comm.send(UnsafeRawBufferPointer(outgoing.bytes), to: next) }
        let received = incoming.elements(UInt64.self, count: count)
        let passed = (0..<count).allSatisfy { received[$0] == Self.word(rank: previous, index: $0) }

        let input = try comm.allocate(byteCount: bytes), output = try comm.allocate(byteCount: bytes)
        let values = input.elements(Double.self, count: count)
        for index in 0..<count { values[index] = Double(comm.rank + 1) * Double(index % 97) }
        try comm.allreduceSum(input, into: output, count: count)
        let rankSum = Double(comm.size * (comm.size + 1) / 2)
        let sums = output.elements(Double.self, count: count)
        let reduced = (0..<count).allSatisfy { sums[$0] == rankSum * Double($0 % 97) }

        print("\(comm.launcher) world rank \(worldRank) of \(worldSize), local rank \(comm.rank) of \(comm.size): "
              + "\(bytes) bytes from local rank \(previous) single-copy \(passed ? "OK" : "CORRUPTED"), "
              + "allreduce \(reduced ? "OK" : "WRONG"); single-copy messages \(comm.singleCopyMessages)")
        fflush(stdout)
        try comm.finish()
        if !passed || !reduced || comm.singleCopyMessages == 0 { throw ExitCode.failure }
    }

    static func word(rank: Int, index: Int) -> UInt64 { UInt64(rank) << 48 | UInt64(index) }

    static func environment(_ name: String) -> Int? { getenv(name).flatMap { Int(String(cString: $0)) } }
}
