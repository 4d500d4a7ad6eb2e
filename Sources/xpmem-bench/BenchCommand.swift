// xpmem-bench: the project's figures, each next to the reference it must beat, measured in one run.
import ArgumentParser
import Foundation

@main
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "xpmem-bench",
        abstract: "Measure the broker against the bare minimum for the same work.",
        discussion: """
            Each group prints a table; with --json, one JSON object with a `ratios` object. Without a broker at \
            --socket / $XPMEM_SOCKET, a private xpmemd (built beside this program) is started and stopped.
            """,
        subcommands: [
            All.self, AttachBenchmark.self, CopyBenchmark.self, InvalidateBenchmark.self, MPIBenchmark.self,
            MigrateBenchmark.self, CAPIBenchmark.self, ScaleBenchmark.self, HugePageBenchmark.self, NUMAImporterHelper.self,
            ExporterHelper.self, ImporterHelper.self, RawPeerHelper.self, RawRelayHelper.self,
        ],
        defaultSubcommand: All.self)
}

/// Options every figure group takes.
struct BenchOptions: ParsableArguments {
    @Option(help: "Broker socket (default: $XPMEM_SOCKET, else a private broker is started).")
    var socket: String?

    @Flag(help: "Print one JSON object instead of tables.")
    var json = false

    @Option(help: "Multiply every group's iteration counts by this (use < 1 for a quick look).")
    var scale: Double = 1

    func iterations(_ base: Int) -> Int { max(3, Int(Double(base) * scale)) }
}

/// Runs every group in one process and prints all tables, or one JSON object with every group and a
/// merged `ratios`.
struct All: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "all", abstract: "Every figure group.")
    @OptionGroup var options: BenchOptions

    func run() throws {
        _ = MachineLoad.atStart
        let environment = try BenchEnvironment(socket: options.socket)
        defer { environment.stop() }
        let groups: [FigureGroup] = [
            try AttachBenchmark.measure(environment, options),
            try CopyBenchmark.measure(environment, options),
            try InvalidateBenchmark.measure(environment, options),
        ]
        FigureGroup.emit(groups, json: options.json)
    }
}
