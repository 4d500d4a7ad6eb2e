// xpmem-numa-check: the NUMA integration tests. They need a machine with two or more NUMA nodes,
// so `make numa-test` runs them inside an emulated 2-node and 4-node machine (Tests/NUMAMachine):
// a real broker, a real exporter (this process, or a child of it as another uid) and real importer
// processes (`xpmem-probe numa-importer`), checked page by page with move_pages.
@preconcurrency import Glibc
import ArgumentParser
import Foundation
import XPMEM
import XPMEMSystem

@main
struct NUMACheck: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "xpmem-numa-check",
        abstract: "NUMA placement and live-migration checks (run as root on a machine with 2+ nodes).",
        subcommands: [All.self, Cooperative.self], defaultSubcommand: All.self)
}

/// Every check, in order; exits 1 if any failed.
struct All: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "all")
    @Option(help: "Run only the checks whose names contain this (for debugging one).") var only: String?

    func run() throws {
        let nodes = NUMA.nodes
        print("xpmem-numa-check: \(nodes.count) NUMA nodes \(nodes), uid \(getuid())")
        guard nodes.count >= 2 else {
            print("FAIL this machine has \(nodes.count) NUMA node(s): the checks need 2 or more (run make numa-test)")
            throw ExitCode.failure
        }
        let checks = Checks()
        let broker = try CheckBroker()
        defer { broker.stop() }
        let scenario = Scenarios(broker: broker, checks: checks, nodes: nodes)
        let all: [(String, () -> Void)] = [
            ("placement", scenario.placementPutsPagesWhereItSays),
            ("importer-faults", scenario.importerFaultsFollowTheSegmentsPolicy),
            ("invalid-nodes", scenario.invalidNodesGetAClearError),
            ("privileged", scenario.privilegedMigrationWithAnImporterWorking),
            ("free-hints", scenario.migrationSkipsPagesHintedFreeAndMovesWrittenOnes),
            ("near-importers", scenario.nearImportersFollowsImportersPinnedToAnotherNode),
            ("xpmemctl", scenario.xpmemctlReportsAndMigrates),
            ("migrate-example", scenario.migrateExampleUnderXprun),
        ]
        for (name, body) in all where only.map({ name.contains($0) }) ?? true {
            print("-- \(name)")
            fflush(stdout)
            body()
        }
        guard only.map({ "cooperative".contains($0) }) ?? true else {
            print("xpmem-numa-check: \(checks.passes) passed, \(checks.failures) failed")
            if checks.failures > 0 { throw ExitCode.failure }
            return
        }
        print("-- cooperative (as uid 65534)")
        // The cooperative path as a real unprivileged user: a child of this program, as uid 65534.
        let child = try Helper(path: Helper.sibling("xpmem-numa-check"),
                               ["cooperative", "--socket", broker.socketPath, "--as-uid", "65534"])
        for line in child.remainingLines() {
            print(line)
            if line.hasPrefix("FAIL") { checks.failures += 1 }
            if line.hasPrefix("PASS") { checks.passes += 1 }
        }
        checks.expect(child.wait() == 0, "cooperative checks as uid 65534 ran to the end")
        print("xpmem-numa-check: \(checks.passes) passed, \(checks.failures) failed")
        if checks.failures > 0 { throw ExitCode.failure }
    }
}

/// The unprivileged (cooperative) migration checks, as another uid.
struct Cooperative: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cooperative")
    @Option var socket: String
    @Option var asUID: UInt32

    func run() throws {
        guard setgroups(0, nil) == 0, setgid(asUID) == 0, setuid(asUID) == 0 else {
            print("FAIL cannot become uid \(asUID)")
            throw ExitCode.failure
        }
        let checks = Checks()
        let scenario = Scenarios(broker: CheckBroker(existing: socket), checks: checks, nodes: NUMA.nodes)
        scenario.cooperativeMigrationWithoutPrivilege()
        if checks.failures > 0 { throw ExitCode.failure }
    }
}

/// Counts and prints outcomes.
final class Checks {
    var passes = 0
    var failures = 0

    func expect(_ condition: Bool, _ what: String, _ detail: @autoclosure () -> String = "") {
        if condition {
            passes += 1
            print("PASS \(what)")
        } else {
            failures += 1
            print("FAIL \(what)\(detail().isEmpty ? "" : ": \(detail())")")
        }
        fflush(stdout)
    }

    /// Runs a step that may throw; a throw is one failure.
    func attempt(_ what: String, _ body: () throws -> Void) {
        do { try body() } catch {
            failures += 1
            print("FAIL \(what): \(error)")
            fflush(stdout)
        }
    }
}
