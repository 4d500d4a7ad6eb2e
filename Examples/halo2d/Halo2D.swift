// A Jacobi stencil on a 2-D grid whose rows are split across the ranks; each iteration exchanges
// one halo row with each neighbour. Every rank then checks its block against the same computation
// done on the whole grid by a single rank (bit for bit: each point is computed in the same order).
//
//   xprun -n 4 halo2d [--rows 256] [--columns 256] [--iterations 100]
@preconcurrency import Glibc
import ArgumentParser
import XPMEM
import XPMEMComm

@main
struct Halo2D: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Jacobi iterations on a row-split 2-D grid with halo exchange, checked against a single-rank run.")

    @Option(help: "Grid rows (split across ranks).") var rows: Int = 256
    @Option(help: "Grid columns.") var columns: Int = 256
    @Option(help: "Jacobi iterations.") var iterations: Int = 100

    func run() throws {
        guard columns >= 3, iterations >= 1 else { throw ValidationError("needs --columns >= 3 and --iterations >= 1") }
        let comm = try Communicator()
        guard rows >= 2 * comm.size + 2 else { throw ValidationError("--rows must be at least 2 × ranks + 2") }
        let (first, count) = Self.block(of: comm.rank, ranks: comm.size, rows: rows)
        // Local rows first-1 ... first+count (one halo row each side), in shared buffers so that wide
        // rows go single-copy.
        let rowBytes = columns * MemoryLayout<Double>.stride
        var current = try comm.allocate(byteCount: (count + 2) * rowBytes)
        var next = try comm.allocate(byteCount: (count + 2) * rowBytes)
        for local in 0..<(count + 2) {
            let global = first - 1 + local
            for column in 0..<columns {
                let value = (0..<rows).contains(global) ? Self.initial(row: global, column: column, rows: rows, columns: columns) : 0
                current.elements(Double.self, count: (count + 2) * columns)[local * columns + column] = value
                next.elements(Double.self, count: (count + 2) * columns)[local * columns + column] = value
            }
        }
        let up = comm.rank > 0 ? comm.rank - 1 : nil
        let down = comm.rank < comm.size - 1 ? comm.rank + 1 : nil
        let start = MeasurementSchedule.now()
        for _ in 0..<iterations {
            try exchangeHalos(current, comm: comm, count: count, rowBytes: rowBytes, up: up, down: down)
            let source = current.elements(Double.self, count: (count + 2) * columns)
            let target = next.elements(Double.self, count: (count + 2) * columns)
            for local in 1...count {
                let global = first - 1 + local
                guard global > 0 && global < rows - 1 else { continue }  // fixed boundary rows
                Self.relax(row: local, source: UnsafePointer(source.baseAddress!), target: target.baseAddress!, columns: columns)
            }
            swap(&current, &next)
        }
        let elapsed = MeasurementSchedule.now() - start

        // The single-rank reference, on the whole grid.
        let reference = Self.serial(rows: rows, columns: columns, iterations: iterations)
        let mine = current.elements(Double.self, count: (count + 2) * columns)
        var differing = 0
        for local in 1...count {
            for column in 0..<columns
            where mine[local * columns + column] != reference[(first - 1 + local) * columns + column] {
                differing += 1
            }
        }
        var failedRanks = differing > 0 ? 1 : 0
        if comm.rank == 0 {
            for peer in 1..<comm.size {
                var peerDiffering = 0
                try withUnsafeMutableBytes(of: &peerDiffering) { _ = try comm.receive(into: $0, from: peer, tag: 7) }
                failedRanks += peerDiffering > 0 ? 1 : 0
            }
            print("halo2d: \(rows)x\(columns) grid on \(comm.size) ranks, \(iterations) iterations in "
                  + "\(MeasurementSchedule.fixed(elapsed * 1e3, places: 2)) ms")
            print(failedRanks == 0 ? "OK: every rank's block equals the single-rank run bit for bit"
                  : "FAILED: \(failedRanks) ranks differ from the single-rank run")
            fflush(stdout)
        } else {
            try withUnsafeBytes(of: differing) { try comm.send($0, to: 0, tag: 7) }
        }
        if differing > 0 { print("rank \(comm.rank): \(differing) points differ from the single-rank run") }
        try comm.finish()
        if differing > 0 || failedRanks > 0 { throw ExitCode.failure }
    }

    /// Sends the first and last owned rows to the neighbours and receives their rows into the halos.
    /// Even ranks send first and odd ranks receive first, so that blocking single-copy sends pair
    /// up instead of all waiting at once.
    private func exchangeHalos(_ grid: SharedBuffer, comm: Communicator, count: Int, rowBytes: Int, up: Int?,
                               down: Int?) throws {
        func row(_ local: Int) -> UnsafeMutableRawBufferPointer {
            UnsafeMutableRawBufferPointer(rebasing: grid.bytes[(local * rowBytes)..<((local + 1) * rowBytes)])
        }
        let sendFirst = comm.rank % 2 == 0
        // Downwards: my last owned row becomes the lower neighbour's upper halo.
        if sendFirst, let down { try comm.send(UnsafeRawBufferPointer(row(count)), to: down, tag: 1) }
        if let up { try comm.receive(into: row(0), from: up, tag: 1) }
        if !sendFirst, let down { try comm.send(UnsafeRawBufferPointer(row(count)), to: down, tag: 1) }
        // Upwards: my first owned row becomes the upper neighbour's lower halo.
        if sendFirst, let up { try comm.send(UnsafeRawBufferPointer(row(1)), to: up, tag: 2) }
        if let down { try comm.receive(into: row(count + 1), from: down, tag: 2) }
        if !sendFirst, let up { try comm.send(UnsafeRawBufferPointer(row(1)), to: up, tag: 2) }
    }

    /// The first global row and the number of rows of `rank`'s block (sizes differ by at most one).
    static func block(of rank: Int, ranks: Int, rows: Int) -> (first: Int, count: Int) {
        let base = rows / ranks, extra = rows % ranks
        return (rank * base + min(rank, extra), base + (rank < extra ? 1 : 0))
    }

    /// A hot top edge and a warm left edge over a cold interior.
    static func initial(row: Int, column: Int, rows: Int, columns: Int) -> Double {
        if row == 0 { return 100 }
        if column == 0 { return 50 }
        return row == rows - 1 || column == columns - 1 ? 0 : 1
    }

    /// One Jacobi update of an interior row: each point becomes the mean of its four neighbours.
    static func relax(row: Int, source: UnsafePointer<Double>, target: UnsafeMutablePointer<Double>, columns: Int) {
        let above = source + (row - 1) * columns, here = source + row * columns, below = source + (row + 1) * columns
        let out = target + row * columns
        for column in 1..<(columns - 1) {
            out[column] = 0.25 * (above[column] + below[column] + here[column - 1] + here[column + 1])
        }
    }

    /// The whole computation on one rank, for the check.
    static func serial(rows: Int, columns: Int, iterations: Int) -> [Double] {
        var current = [Double](repeating: 0, count: rows * columns)
        for row in 0..<rows {
            for column in 0..<columns { current[row * columns + column] = initial(row: row, column: column, rows: rows, columns: columns) }
        }
        var next = current
        for _ in 0..<iterations {
            current.withUnsafeBufferPointer { source in
                next.withUnsafeMutableBufferPointer { target in
                    for row in 1..<(rows - 1) {
                        relax(row: row, source: source.baseAddress!, target: target.baseAddress!, columns: columns)
                    }
                }
            }
            swap(&current, &next)
        }
        return current
    }
}
