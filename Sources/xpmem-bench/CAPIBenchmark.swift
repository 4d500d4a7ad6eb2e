import ArgumentParser
import Foundation

/// The C library's costs (libxpmem/tests/capi_bench.c, built by `make -C libxpmem`): the first attach
/// of private heap memory against `process_vm_readv` of the same bytes, a warm attach against a
/// bare `mmap`, and an attachment cache hit against a fresh attach of the same backed window, each a
/// median of interleaved pairs; and the windows the attachment cache held over a long run against
/// its bound. It runs its own private broker, the `xpmemd` beside this program.
struct CAPIBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "capi", abstract: "libxpmem's first, warm and cached attach against process_vm_readv, mmap and a fresh attach.",
        discussion: "Needs libxpmem built: make -C libxpmem (it builds build/tests/xpmem-capi-bench).")
    @OptionGroup var options: BenchOptions
    @Option(help: "The xpmem-capi-bench program (default: libxpmem/build/tests of this checkout).")
    var program: String?

    func run() throws {
        _ = MachineLoad.atStart
        FigureGroup.emit([try Self.measure(program: program ?? Self.defaultProgram())], json: options.json)
    }

    /// libxpmem/build/tests/xpmem-capi-bench of the checkout this program was built in.
    static func defaultProgram() -> String {
        var directory = URL(fileURLWithPath: BenchEnvironment.sibling("xpmem-bench")).deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent("libxpmem/build/tests/xpmem-capi-bench")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate.path }
            directory.deleteLastPathComponent()
        }
        return "libxpmem/build/tests/xpmem-capi-bench"
    }

    static func measure(program: String) throws -> FigureGroup {
        guard FileManager.default.isExecutableFile(atPath: program) else {
            throw ValidationError("\(program) is not built: run make -C libxpmem")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        var environment = ProcessInfo.processInfo.environment
        environment["XPMEM_BROKER"] = BenchEnvironment.sibling("xpmemd")
        process.environment = environment
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw ValidationError("\(program) failed (status \(process.terminationStatus))") }

        struct Report: Decodable {
            struct Spread: Decodable { var median, minimum, maximum: Double; var pairs: Int }
            var first_attach_1MiB_us, cma_1MiB_us, first_attach_64MiB_us, cma_64MiB_us: Double
            var warm_attach_1MiB_us, warm_attach_through_broker_1MiB_us, bare_mmap_1MiB_us: Double
            var attach_cache_hit_1MiB_us, fresh_attach_1MiB_us: Double
            var get_us, release_us: Double
            struct LongRun: Decodable {
                var windows, window_bytes, operations, bound_entries, max_entries_held, final_entries: Int
                var hits, misses, capacity_evictions: Int
            }
            var attach_cache_long_run: LongRun
            struct Crowded: Decodable {
                var idle_windows: Int
                var hit_64KiB_us, hit_alone_64KiB_us, detach_64KiB_us, detach_alone_64KiB_us: Double
            }
            var attach_cache_crowded: Crowded
            struct HugePages: Decodable {
                var private_huge_kib: Int
                var first_attach_us, first_attach_4k_us, cma_us: Double
                var touch_after_attach_us, touch_after_attach_4k_us: Double
                var exporter_pass_after_us, exporter_pass_after_4k_us: Double
            }
            struct CrowdedExporter: Decodable {
                var more_mappings: Int
                var first_attach_us, first_attach_alone_us: Double
            }
            var first_attach_1MiB_crowded_exporter: CrowdedExporter?
            var first_attach_1MiB_crowded_exporter_not_measured: String?
            /// Where shmem huge pages are allowed; else why not.
            var huge_pages_64MiB: HugePages?
            var huge_pages_64MiB_not_measured: String?
            var spread: [String: Spread]
        }
        let report = try JSONDecoder().decode(Report.self, from: data)
        var spreads: [String: RatioFigure] = [:]
        for (name, spread) in report.spread {
            var figure = RatioFigure(ratios: [spread.minimum, spread.median, spread.maximum], ours: .nan, reference: .nan,
                                     settled: false)
            figure.median = spread.median
            figure.pairs = spread.pairs
            figure.settled = figure.spread <= 0.2
            spreads[name] = figure
        }
        func summary(_ name: String) -> String { spreads[name]?.summary ?? "" }
        func longRunSummary(_ run: Report.LongRun) -> String {
            let attaches = max(run.hits + run.misses, 1)
            return "\(run.max_entries_held) (\(run.operations) attaches over \(run.windows) windows of "
                + "\(run.window_bytes / 1024) KiB: \(run.hits * 100 / attaches)% hits, \(run.capacity_evictions) evicted)"
        }
        var crowdedExporterRows: [[String]] = []
        if let crowded = report.first_attach_1MiB_crowded_exporter {
            crowdedExporterRows = [
                ["first attach of 1 MiB from an exporter with \(crowded.more_mappings) more mappings vs without",
                 Format.micros(crowded.first_attach_us), Format.micros(crowded.first_attach_alone_us),
                 summary("first_attach_1MiB_crowded_vs_alone")],
            ]
        } else if let why = report.first_attach_1MiB_crowded_exporter_not_measured {
            crowdedExporterRows = [["first attach from a crowded exporter: not measured, \(why)", "", "", ""]]
        }
        var hugePageRows: [[String]] = []
        if let huge = report.huge_pages_64MiB {
            hugePageRows = [
                ["first attach of 64 MiB with huge pages (\(huge.private_huge_kib / 1024) MiB huge) vs process_vm_readv",
                 Format.micros(huge.first_attach_us), Format.micros(huge.cma_us), summary("first_attach_64MiB_thp_vs_cma")],
                ["the same, backed with huge pages vs with 4 KiB pages (XPMEM_SHMEM_HUGE=0)",
                 Format.micros(huge.first_attach_us), Format.micros(huge.first_attach_4k_us),
                 summary("first_attach_64MiB_thp_huge_vs_4k")],
                ["importer's first touch of the 64 MiB, huge vs 4 KiB", Format.micros(huge.touch_after_attach_us),
                 Format.micros(huge.touch_after_attach_4k_us), summary("touch_after_attach_64MiB_thp_huge_vs_4k")],
                ["exporter's first read of its 64 MiB after the attach, huge vs 4 KiB",
                 Format.micros(huge.exporter_pass_after_us), Format.micros(huge.exporter_pass_after_4k_us),
                 summary("exporter_pass_after_attach_64MiB_thp_huge_vs_4k")],
            ]
        } else if let why = report.huge_pages_64MiB_not_measured {
            hugePageRows = [["memory with huge pages: not measured, \(why)", "", "", ""]]
        }
        return FigureGroup(
            name: "capi",
            note: "libxpmem, exporter and importer separate processes, a private broker; microseconds, medians",
            columns: ["what", "ours µs", "reference µs", "ratio, pair by pair"],
            rows: [
                ["first attach of 1 MiB of heap vs process_vm_readv", Format.micros(report.first_attach_1MiB_us),
                 Format.micros(report.cma_1MiB_us), summary("first_attach_1MiB_vs_cma")],
                ["first attach of 64 MiB of heap vs process_vm_readv", Format.micros(report.first_attach_64MiB_us),
                 Format.micros(report.cma_64MiB_us), summary("first_attach_64MiB_vs_cma")],
                ["warm attach of 1 MiB vs a bare mmap", String(format: "%.2f", report.warm_attach_1MiB_us),
                 String(format: "%.2f", report.bare_mmap_1MiB_us), summary("warm_attach_vs_mmap")],
                ["attach of 1 MiB through the broker (no cache)", Format.micros(report.warm_attach_through_broker_1MiB_us), "", ""],
                ["xpmem_get / xpmem_release (one broker round trip each)",
                 "\(Format.micros(report.get_us)) / \(Format.micros(report.release_us))", "", ""],
                ["attachment cache hit (1 MiB) vs a fresh attach of the backed window",
                 String(format: "%.3f", report.attach_cache_hit_1MiB_us), String(format: "%.3f", report.fresh_attach_1MiB_us),
                 summary("attach_cache_hit_vs_fresh_attach")],
                ["attachment cache, long run: most windows held vs the bound", longRunSummary(report.attach_cache_long_run),
                 "\(report.attach_cache_long_run.bound_entries)", ""],
                ["cache hit (64 KiB) among \(report.attach_cache_crowded.idle_windows) idle windows vs alone",
                 String(format: "%.3f", report.attach_cache_crowded.hit_64KiB_us),
                 String(format: "%.3f", report.attach_cache_crowded.hit_alone_64KiB_us),
                 summary("attach_cache_hit_crowded_vs_alone")],
                ["detach (64 KiB) among \(report.attach_cache_crowded.idle_windows) idle windows vs alone",
                 String(format: "%.3f", report.attach_cache_crowded.detach_64KiB_us),
                 String(format: "%.3f", report.attach_cache_crowded.detach_alone_64KiB_us),
                 summary("detach_crowded_vs_alone")],
            ] + crowdedExporterRows + hugePageRows,
            ratios: [:],
            targets: ["warm_attach_vs_mmap <= 2", "first_attach_1MiB_vs_cma <= 1.5", "first_attach_64MiB_vs_cma <= 1.5"],
            spreads: spreads)
    }
}
