import ArgumentParser
import Foundation
import XPMEMSystem

/// Our communicator next to Open MPI on the same host, in one run: the `pingpong` and `allreduce`
/// examples under `xprun` against their MPI twins in Examples/mpi-c under `mpirun.openmpi`, with
/// vader's CMA single-copy and with vader's two-copy path (`btl_vader_single_copy_mechanism none`).
/// Every program prints the median of its timed batches; each is run `--runs` times, ours and Open
/// MPI's in turn. A round's ratio is ours ÷ Open MPI's best transport in that round; the figure is
/// the median of the rounds' ratios, with their spread.
struct MPIBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mpi",
        abstract: "Ping-pong and allreduce against Open MPI (vader CMA and two-copy), side by side.",
        discussion: """
            Needs Open MPI (apt-get install openmpi-bin libopenmpi-dev): the MPI programs are compiled with \
            mpicc.openmpi from Examples/mpi-c into a temporary directory. Ranks are bound to cores, as \
            mpirun binds them.
            """)

    @OptionGroup var options: BenchOptions
    @Option(help: "Times each program is run; the median run is reported.") var runs: Int = 3
    @Option(help: "Directory holding pingpong.c and allreduce.c (default: Examples/mpi-c of this checkout).")
    var mpiSources: String?

    func run() throws {
        _ = MachineLoad.atStart
        FigureGroup.emit([try Self.measure(options, runs: runs, sources: mpiSources)], json: options.json)
    }

    static let sizes = [8, 1 << 20, 4 << 20, 64 << 20]
    static let allreduceSizes = [1 << 20, 64 << 20]

    static func measure(_ options: BenchOptions, runs: Int, sources: String?) throws -> FigureGroup {
        let tools = try OpenMPITools.locate()
        let programs = try MPIPrograms.compile(sources: sources ?? Self.defaultSources(), with: tools)
        defer { programs.remove() }
        let batches = "\(max(3, Int(5 * min(options.scale, 1))))"
        let scale = "\(options.scale)"
        let sizeList = sizes.map(String.init).joined(separator: ",")
        let pingpongArguments = ["--sizes", sizeList, "--scale", scale, "--batches", batches]
        let allreduceArguments = ["--sizes", allreduceSizes.map(String.init).joined(separator: ","), "--scale", scale,
                                  "--batches", batches]

        let xprun = [BenchEnvironment.sibling("xprun"), "-n", "2", "--bind", "core"]
        // Ours and both Open MPI transports run one after the other in every round, so each round's
        // ratio compares runs taken at nearly the same moment; the figure is the median over rounds.
        var ours = Measured(), cma = Measured(), twoCopy = Measured()
        var rounds: [(ours: Measured, cma: Measured, twoCopy: Measured)] = []
        for _ in 0..<max(1, runs) {
            var round = (ours: Measured(), cma: Measured(), twoCopy: Measured())
            round.ours.add(pingpong: try run(xprun + [BenchEnvironment.sibling("pingpong")] + pingpongArguments),
                           allreduce: try run(xprun + [BenchEnvironment.sibling("allreduce")] + allreduceArguments))
            round.cma.add(pingpong: try run(tools.mpirun(ranks: 2, singleCopy: "cma") + [programs.pingpong] + pingpongArguments),
                          allreduce: try run(tools.mpirun(ranks: 2, singleCopy: "cma") + [programs.allreduce] + allreduceArguments))
            round.twoCopy.add(
                pingpong: try run(tools.mpirun(ranks: 2, singleCopy: "none") + [programs.pingpong] + pingpongArguments),
                allreduce: try run(tools.mpirun(ranks: 2, singleCopy: "none") + [programs.allreduce] + allreduceArguments))
            ours.merge(round.ours)
            cma.merge(round.cma)
            twoCopy.merge(round.twoCopy)
            rounds.append(round)
        }

        func row(_ label: String, _ value: (Measured) -> Double, format: (Double) -> String, higherIsBetter: Bool)
            -> (row: [String], figure: RatioFigure)
        {
            func best(_ first: Measured, _ second: Measured) -> Double {
                higherIsBetter ? max(value(first), value(second)) : min(value(first), value(second))
            }
            let ratios = rounds.map { value($0.ours) / best($0.cma, $0.twoCopy) }
            var figure = RatioFigure(ratios: ratios, ours: value(ours), reference: best(cma, twoCopy), settled: false)
            figure.settled = figure.pairs >= 3 && figure.spread <= 0.2
            return ([label, format(value(ours)), format(value(cma)), format(value(twoCopy)), figure.summary], figure)
        }
        let latency = row("latency 8 B (µs)", { $0.latency(8) }, format: { String(format: "%.3f", $0) },
                          higherIsBetter: false)
        let bandwidth1 = row("bandwidth 1 MiB (GB/s)", { $0.bandwidth(1 << 20) }, format: Format.gigabytesPerSecond,
                             higherIsBetter: true)
        let bandwidth4 = row("bandwidth 4 MiB (GB/s)", { $0.bandwidth(4 << 20) }, format: Format.gigabytesPerSecond,
                             higherIsBetter: true)
        let bandwidth64 = row("bandwidth 64 MiB (GB/s)", { $0.bandwidth(64 << 20) }, format: Format.gigabytesPerSecond,
                              higherIsBetter: true)
        let allreduce = row("allreduce 1 MiB, 2 ranks (µs)", { $0.allreduceMicroseconds(1 << 20) }, format: Format.micros,
                            higherIsBetter: false)
        let allreduce64 = row("allreduce 64 MiB, 2 ranks (µs)", { $0.allreduceMicroseconds(64 << 20) },
                              format: Format.micros, higherIsBetter: false)
        return FigureGroup(
            name: "mpi",
            note: "xprun + XPMEMComm vs Open MPI \(tools.version) (vader), 2 ranks bound to cores, \(runs) rounds of ours, CMA and two-copy in turn; ratio per round, median (min-max)",
            columns: ["figure", "ours", "Open MPI CMA", "Open MPI two-copy", "ours / best, per round"],
            rows: [latency.row, bandwidth1.row, bandwidth4.row, bandwidth64.row, allreduce.row, allreduce64.row],
            ratios: [:],
            targets: [
                "pingpong_bw_1MiB >= 1.2 (vs two-copy)", "pingpong_bw_4MiB >= 1.5", "pingpong_bw_64MiB >= 1.8",
                "latency_8B <= 1.1", "allreduce_1MiB <= 0.7", "allreduce_64MiB <= 0.5",
            ],
            spreads: [
                "latency_8B": latency.figure, "pingpong_bw_1MiB": bandwidth1.figure, "pingpong_bw_4MiB": bandwidth4.figure,
                "pingpong_bw_64MiB": bandwidth64.figure, "allreduce_1MiB": allreduce.figure,
                "allreduce_64MiB": allreduce64.figure,
            ])
    }

    /// Examples/mpi-c of the checkout this program was built in (.build/CONFIG/xpmem-bench).
    static func defaultSources() -> String {
        var directory = URL(fileURLWithPath: BenchEnvironment.sibling("xpmem-bench")).deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent("Examples/mpi-c")
            if FileManager.default.fileExists(atPath: candidate.appendingPathComponent("pingpong.c").path) {
                return candidate.path
            }
            directory.deleteLastPathComponent()
        }
        return "Examples/mpi-c"
    }

    /// Runs one of the measuring programs; it must exit 0 and print its "OK" verdict.
    static func run(_ command: [String]) throws -> String {
        let output = try runQuietly(command)
        guard output.contains("OK") else {
            throw ValidationError("`\(command.joined(separator: " "))` gave no OK verdict:\n\(output)")
        }
        return output
    }
}

/// One transport's figures, each the median over runs.
private struct Measured {
    /// size → (latency µs, bandwidth MB/s) samples.
    private var pingpong: [Int: (latency: Samples, bandwidth: Samples)] = [:]
    /// vector size → time µs samples.
    private var allreduce: [Int: Samples] = [:]

    mutating func add(pingpong output: String, allreduce allreduceOutput: String) {
        for (size, columns) in Self.table(output) where columns.count >= 2 {
            pingpong[size, default: (Samples(), Samples())].latency.add(columns[0])
            pingpong[size, default: (Samples(), Samples())].bandwidth.add(columns[1])
        }
        for (size, columns) in Self.table(allreduceOutput) {
            if let time = columns.first { allreduce[size, default: Samples()].add(time) }
        }
    }

    mutating func merge(_ other: Measured) {
        for (size, samples) in other.pingpong {
            pingpong[size, default: (Samples(), Samples())].latency.add(contentsOf: samples.latency)
            pingpong[size, default: (Samples(), Samples())].bandwidth.add(contentsOf: samples.bandwidth)
        }
        for (size, samples) in other.allreduce { allreduce[size, default: Samples()].add(contentsOf: samples) }
    }

    func latency(_ size: Int) -> Double { pingpong[size]?.latency.median ?? .nan }
    /// GB/s (the programs print MB/s, 10^6 bytes per second).
    func bandwidth(_ size: Int) -> Double { (pingpong[size]?.bandwidth.median ?? .nan) / 1000 }
    func allreduceMicroseconds(_ size: Int) -> Double { allreduce[size]?.median ?? .nan }

    /// The OSU-style table's rows: "size value value..." lines, comments and verdicts skipped.
    static func table(_ output: String) -> [Int: [Double]] {
        var rows: [Int: [Double]] = [:]
        for line in output.split(separator: "\n") {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard let first = fields.first, let size = Int(first) else { continue }
            rows[size] = fields.dropFirst().compactMap { Double($0) }
        }
        return rows
    }
}

/// Open MPI's compiler wrapper and launcher, called by their Debian names.
struct OpenMPITools {
    let mpicc: String
    let mpirunPath: String
    let version: String

    static func locate() throws -> OpenMPITools {
        guard let mpicc = which("mpicc.openmpi"), let mpirun = which("mpirun.openmpi") else {
            throw ValidationError(
                "Open MPI is not installed: apt-get install -y openmpi-bin libopenmpi-dev (mpicc.openmpi, mpirun.openmpi)")
        }
        let version = (try? MPIBenchmark.runQuietly([mpirun, "--version"]))?
            .split(separator: "\n").first.map { String($0.split(separator: " ").last ?? "") } ?? "?"
        return OpenMPITools(mpicc: mpicc, mpirunPath: mpirun, version: version)
    }

    /// `mpirun.openmpi -n N` with vader and the given single-copy mechanism; as root it must be allowed.
    func mpirun(ranks: Int, singleCopy: String) -> [String] {
        var command = [mpirunPath, "-n", "\(ranks)", "--bind-to", "core", "--mca", "btl", "self,vader",
                       "--mca", "btl_vader_single_copy_mechanism", singleCopy]
        if ThisProcess.userID == 0 { command.append("--allow-run-as-root") }
        return command
    }

    static func which(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/\(name)" }.first { FileSystem.isExecutable($0) }
    }
}

/// The MPI twins of the examples, compiled for this run.
struct MPIPrograms {
    let directory: String
    var pingpong: String { directory + "/pingpong-mpi" }
    var allreduce: String { directory + "/allreduce-mpi" }

    static func compile(sources: String, with tools: OpenMPITools) throws -> MPIPrograms {
        guard let made = try? FileSystem.makeTemporaryDirectory("/tmp/xpmem-bench-mpi-XXXXXX") else {
            throw ValidationError("cannot create a directory in /tmp")
        }
        let programs = MPIPrograms(directory: made)
        for (source, output) in [("pingpong.c", programs.pingpong), ("allreduce.c", programs.allreduce)] {
            do {
                _ = try MPIBenchmark.runQuietly([tools.mpicc, "-O2", "-o", output, "\(sources)/\(source)"])
            } catch {
                programs.remove()
                throw error
            }
        }
        return programs
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }
}

extension MPIBenchmark {
    /// Runs a tool and returns its output (standard error included); a non-zero exit is an error
    /// carrying that output. Open MPI is allowed to run as root (CI runs as root).
    static func runQuietly(_ command: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        var environment = ProcessInfo.processInfo.environment
        environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        process.environment = environment
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        guard process.terminationStatus == 0 else {
            throw ValidationError("`\(command.joined(separator: " "))` failed:\n\(text)")
        }
        return text
    }
}
