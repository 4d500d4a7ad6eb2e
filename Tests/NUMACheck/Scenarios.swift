@preconcurrency import Glibc
import Foundation
import XPMEM
import XPMEMSystem

/// The NUMA checks. `near` is the first node, `far` the last (on the 4-node machine, node 3).
struct Scenarios {
    let broker: CheckBroker
    let checks: Checks
    let nodes: [Int]
    var near: Int { nodes.first! }
    var far: Int { nodes.last! }

    // MARK: Placement

    func placementPutsPagesWhereItSays() {
        let placements: [Placement] = [.node(near), .node(far), .interleave(nodes), .preferred(far), .local]
        for placement in placements {
            checks.attempt("placement \(placement)") {
                // `.local` means the exporter's node: run on the far one to tell it from the default.
                if placement == .local { try NUMA.runCurrentThread(onNode: far) }
                defer { if placement == .local { try? NUMA.runCurrentThread(onNode: -1) } }
                let exporter = try broker.connect("placement")
                let segment = try exporter.makeSegment(size: 8 << 20, placement: placement)
                segment.bytes.initializeMemory(as: UInt8.self, repeating: 1)
                let pages = try segment.pageNodes()
                let counts = NUMA.histogram(pages)
                switch placement {
                case .node(let node), .preferred(let node):
                    checks.expect(counts == [node: pages.count], "placement \(placement): every page on node \(node)", "\(counts)")
                case .local:
                    checks.expect(counts == [far: pages.count], "placement local (exporter on node \(far)): every page there", "\(counts)")
                case .interleave(let over):
                    let share = pages.count / over.count
                    let balanced = Set(counts.keys) == Set(over) && counts.values.allSatisfy { abs($0 - share) <= share / 10 }
                    checks.expect(balanced, "placement \(placement): pages spread evenly over \(over)", "\(counts)")
                default: break
                }
                let listed = try exporter.segments().first { $0.id == segment.id.description }
                checks.expect(listed?.placement == placement.description, "xpmemctl segments shows placement \(placement)",
                              "\(listed?.placement ?? "none")")
                try segment.remove()
            }
        }
    }

    /// The policy lives on the memfd: an importer faulting the pages first still puts them there.
    func importerFaultsFollowTheSegmentsPolicy() {
        checks.attempt("importer faults follow the policy") {
            let exporter = try broker.connect("policy exporter")
            let segment = try exporter.makeSegment(size: 8 << 20, placement: .node(far))
            let importer = try startImporter(segment, node: near)
            usleep(200_000)
            _ = try stopImporter(importer)
            let counts = try segment.pagesPerNode()
            checks.expect(counts == [far: segment.size / pageSize],
                          "pages first touched by an importer on node \(near) are on the policy's node \(far)", "\(counts)")
            try segment.remove()
        }
    }

    func invalidNodesGetAClearError() {
        checks.attempt("invalid nodes") {
            let exporter = try broker.connect("invalid")
            for placement in [Placement.node(63), .interleave([near, 99]), .preferred(-1)] {
                do {
                    _ = try exporter.makeSegment(size: 1 << 20, placement: placement)
                    checks.expect(false, "placement \(placement) is refused")
                } catch let error as XPMEMError {
                    checks.expect(error.code == .invalidArgument && error.message.contains("does not exist"),
                                  "placement \(placement) is refused with a clear error", error.description)
                }
            }
            let segment = try exporter.makeSegment(size: 1 << 20, placement: .node(near))
            do {
                _ = try segment.migrate(to: 42)
                checks.expect(false, "migrating to node 42 is refused")
            } catch let error as XPMEMError {
                checks.expect(error.code == .invalidArgument && error.message.contains("node 42 does not exist"),
                              "migrating to node 42 is refused with a clear error", error.description)
            }
            try segment.remove()
        }
    }

    // MARK: Migration

    func privilegedMigrationWithAnImporterWorking() {
        checks.attempt("privileged migration") {
            let exporter = try broker.connect("privileged exporter")
            let segment = try makeFilledSegment(exporter, size: 64 << 20, on: near)
            let importer = try startImporter(segment, node: near)
            usleep(100_000)
            for (target, leg) in [(far, "there"), (near, "back")] {
                let report = try segment.migrate(to: target, path: .privileged)
                checks.expect(report.path == .privileged && report.notMoved == 0 && report.moved > 0
                                  && report.moved + report.alreadyThere == report.pages,
                              "privileged migration \(leg) to node \(target) moves every page", report.description)
                let counts = try segment.pagesPerNode()
                checks.expect(counts == [target: report.pages], "every page is on node \(target) afterwards", "\(counts)")
                usleep(100_000)
            }
            let result = try stopImporter(importer)
            checks.expect(result.rounds > 0 && result.errors == 0,
                          "the importer read and wrote correct data throughout (privileged)", "\(result)")
            try segment.remove()
        }
    }

    /// Half the segment hinted free; one page of it written after the hint (which ends the hint of its
    /// 256 KiB granule) and one written by the kernel (`read(2)`). The migration drops the clean
    /// hinted pages instead of moving them, and says how many; the written ones move with their bytes.
    func migrationSkipsPagesHintedFreeAndMovesWrittenOnes() {
        checks.attempt("migration with pages hinted free") {
            let exporter = try broker.connect("hinting exporter")
            let segment = try makeFilledSegment(exporter, size: 64 << 20, on: near)
            let words = segment.bytes.bindMemory(to: UInt64.self)
            let pages = segment.size / pageSize, stride = pageSize / 8
            for page in 0..<pages { words[page * stride] = NUMAPatternCopy.exporterWord(page) }
            let granule = 256 * 1024 / pageSize
            let trusted = try segment.hintFree(offset: 0, length: segment.size / 2)
            checks.expect(trusted == pages / 2, "the broker trusts every hinted page free", "\(trusted) of \(pages / 2)")
            let written = 3 * granule + 5
            words[written * stride] = 0xC0FFEE
            var ends: [CInt] = [0, 0]
            pipe(&ends)
            _ = write(ends[1], "kernel", 6)
            let kernelPage = 7 * granule + 1
            let kernelWrote = read(ends[0], segment.bytes.baseAddress! + kernelPage * pageSize, 6)
            close(ends[0])
            close(ends[1])
            checks.expect(kernelWrote == 6, "the kernel may write into a hinted page", "read(2) returned \(kernelWrote)")

            let report = try segment.migrate(to: far, path: .privileged)
            let expectedSkipped = pages / 2 - 2 * granule
            checks.expect(report.skippedAsFree == expectedSkipped && report.notMoved == 0
                              && report.moved == pages - expectedSkipped,
                          "the migration skips the clean hinted pages and moves every other page",
                          report.description)
            checks.expect(report.description.contains("\(expectedSkipped) pages skipped as free"),
                          "the report says how many pages were skipped as free", report.description)
            checks.expect(words[written * stride] == 0xC0FFEE, "a page written after its hint keeps its bytes",
                          String(words[written * stride], radix: 16))
            let kernelBytes = String(decoding: UnsafeRawBufferPointer(start: segment.bytes.baseAddress! + kernelPage * pageSize,
                                                                      count: 6), as: UTF8.self)
            checks.expect(kernelBytes == "kernel", "a page the kernel wrote after its hint keeps its bytes", kernelBytes)
            checks.expect(words[0] == 0 && words[(pages / 2 - 1) * stride] == 0,
                          "clean hinted pages read as zeros afterwards", "\(words[0]) \(words[(pages / 2 - 1) * stride])")
            checks.expect(words[(pages / 2) * stride] == NUMAPatternCopy.exporterWord(pages / 2)
                              && words[(pages - 1) * stride] == NUMAPatternCopy.exporterWord(pages - 1),
                          "pages never hinted keep their bytes")
            let nodes = try segment.pageNodes()
            let elsewhere = (pages / 2..<pages).filter { nodes[$0] != Int32(far) }
            checks.expect(elsewhere.isEmpty, "the unhinted half is on node \(far)", "\(elsewhere.count) pages elsewhere")
            try segment.remove()
        }
    }

    /// Run as an unprivileged uid: no CAP_SYS_NICE, so only the invalidation protocol can move
    /// pages an importer maps.
    func cooperativeMigrationWithoutPrivilege() {
        checks.attempt("cooperative migration") {
            let exporter = try broker.connect("cooperative exporter")
            let segment = try makeFilledSegment(exporter, size: 64 << 20, on: near)
            let importer = try startImporter(segment, node: near)
            usleep(100_000)
            do {
                _ = try segment.migrate(to: far, path: .privileged)
                checks.expect(false, "the privileged path is refused without CAP_SYS_NICE")
            } catch let error as XPMEMError {
                checks.expect(error.code == .permissionDenied && error.message.contains("CAP_SYS_NICE"),
                              "the privileged path is refused without CAP_SYS_NICE, clearly", error.description)
            }
            for (target, leg) in [(far, "there"), (near, "back")] {
                let report = try segment.migrate(to: target, path: .automatic)
                let acknowledged = report.invalidation?.importers.map(\.outcome) == [.acknowledged]
                checks.expect(report.path == .cooperative && acknowledged && report.notMoved == 0 && report.moved > 0,
                              "unprivileged migration \(leg) to node \(target) goes cooperative and moves every page",
                              "\(report) importers \(report.invalidation?.importers.map(\.outcome.description) ?? [])")
                let counts = try segment.pagesPerNode()
                checks.expect(counts == [target: report.pages], "every page is on node \(target) afterwards (uid \(getuid()))",
                              "\(counts)")
                usleep(100_000)
            }
            let result = try stopImporter(importer)
            checks.expect(result.rounds > 0 && result.errors == 0,
                          "the importer (.block) read and wrote correct data throughout (cooperative)", "\(result)")
            try segment.remove()
        }
    }

    func nearImportersFollowsImportersPinnedToAnotherNode() {
        checks.attempt("near importers") {
            try NUMA.runCurrentThread(onNode: near)
            defer { try? NUMA.runCurrentThread(onNode: -1) }
            let exporter = try broker.connect("near-importers exporter")
            let segment = try exporter.makeSegment(size: 16 << 20, placement: .nearImporters)
            fill(segment)
            checks.expect(try segment.pagesPerNode() == [near: segment.size / pageSize],
                          "near-importers starts on the exporter's node \(near)")
            let importer = try startImporter(segment, node: far)
            let listed = try exporter.segments().first { $0.id == segment.id.description }
            checks.expect(listed?.importerNode == Int32(far), "the broker sees the importer's node \(far)",
                          "\(listed?.importerNode ?? -2)")
            let report = try segment.followImporters()
            checks.expect(report?.node == far && report?.notMoved == 0, "followImporters moves the segment to node \(far)",
                          report?.description ?? "no migration")
            checks.expect(try segment.pagesPerNode() == [far: segment.size / pageSize], "every page is on node \(far)")
            let result = try stopImporter(importer)
            checks.expect(result.errors == 0, "the importer saw correct data (near-importers)", "\(result)")
            try segment.remove()
        }
    }

    // MARK: xpmemctl

    func xpmemctlReportsAndMigrates() {
        checks.attempt("xpmemctl nodes and migrate") {
            let exporter = try broker.connect("xpmemctl exporter")
            let segment = try makeFilledSegment(exporter, size: 16 << 20, on: near)
            let pages = segment.size / pageSize
            let nodesBefore = try run("xpmemctl", ["nodes", "\(segment.id)", "--json"])
            checks.expect(nodesBefore.contains("\"\(near)\" : \(pages)"), "xpmemctl nodes: every page on node \(near)", nodesBefore)
            let migrated = try run("xpmemctl", ["migrate", "\(segment.id)", "\(far)"])
            checks.expect(migrated.contains("\(pages) of \(pages) pages moved to node \(far)"),
                          "xpmemctl migrate moves every page", migrated)
            let nodesAfter = try run("xpmemctl", ["nodes", "\(segment.id)"])
            checks.expect(nodesAfter.contains("\(far)     \(pages)"), "xpmemctl nodes after: every page on node \(far)", nodesAfter)
            let wrong = try run("xpmemctl", ["migrate", "\(segment.id)", "77"], expectSuccess: false)
            checks.expect(wrong.contains("node 77 does not exist"), "xpmemctl migrate to a missing node says so", wrong)
            try segment.remove()
        }
    }

    // MARK: The migrate example

    /// `xprun -n 3 migrate`: ranks keep computing on a segment while rank 0 moves it there and back.
    func migrateExampleUnderXprun() {
        for path in ["privileged", "cooperative"] {
            checks.attempt("migrate example (\(path))") {
                let output = try run("xprun", ["-n", "3", Helper.sibling("migrate"), "--size", "16M", "--path", path])
                let pages = (16 << 20) / pageSize
                checks.expect(output.contains("moved to node \(far): \(pages) of \(pages) pages moved")
                                  && output.contains("OK: no rank saw a wrong word"),
                              "xprun -n 3 migrate --path \(path): every page moved, no rank saw a wrong word", output)
            }
        }
    }

    // MARK: Helpers

    func makeFilledSegment(_ exporter: XPMEMBroker, size: Int, on node: Int) throws -> ExportedSegment {
        let segment = try exporter.makeSegment(size: size, placement: .node(node))
        fill(segment)
        return segment
    }

    /// Writes the exporter's half of the pattern and touches the importer's half.
    func fill(_ segment: ExportedSegment) {
        let words = segment.bytes.bindMemory(to: UInt64.self)
        let pages = segment.size / pageSize, stride = pageSize / 8
        for page in 0..<pages { words[page * stride] = page < pages / 2 ? NUMAPatternCopy.exporterWord(page) : 0 }
    }

    func startImporter(_ segment: ExportedSegment, node: Int, readOnly: Bool = false) throws -> Helper {
        let importer = try Helper(
            path: Helper.sibling("xpmem-probe"),
            ["numa-importer", "--socket", broker.socketPath, "\(segment.id)", "--node", "\(node)"]
                + (readOnly ? ["--read-only"] : []))
        print("   importer for \(segment.id) on node \(node) started, waiting for it")
        fflush(stdout)
        let line = importer.readLine() ?? "nothing"
        print("   importer said: \(line)")
        fflush(stdout)
        guard line.hasPrefix("ready") else { throw XPMEMError(.invalidArgument, "importer did not start: \(line)") }
        return importer
    }

    func stopImporter(_ importer: Helper) throws -> (rounds: Int, errors: Int) {
        importer.send("stop")
        let line = importer.readLine() ?? ""
        importer.wait()
        let fields = line.split(separator: " ")
        guard fields.count == 4, let rounds = Int(fields[1]), let errors = Int(fields[3]) else {
            throw XPMEMError(.invalidArgument, "importer said '\(line)'")
        }
        return (rounds, errors)
    }

    /// Runs a sibling program with the checks' broker and returns its output (standard error too).
    /// The socket option goes last (xpmemctl's subcommands take it) except for xprun, where it must
    /// precede the program.
    func run(_ program: String, _ arguments: [String], expectSuccess: Bool = true) throws -> String {
        let socket = ["--socket", broker.socketPath]
        let withSocket = program == "xprun" ? socket + arguments : arguments + socket
        let child = try Helper(path: "/bin/sh", ["-c", "exec \"$0\" \"$@\" 2>&1", Helper.sibling(program)] + withSocket)
        let text = child.remainingLines().joined(separator: "\n")
        let status = child.wait()
        if expectSuccess && status != 0 {
            throw XPMEMError(.invalidArgument, "\(program) \(arguments) failed: \(text)")
        }
        return text
    }
}

/// The exporter's half of the pattern `xpmem-probe numa-importer` checks (Tests/Probe/Probe+NUMA.swift).
enum NUMAPatternCopy {
    static func exporterWord(_ page: Int) -> UInt64 { 0x5EED_0000_0000 | UInt64(page) }
}
