import Testing
import XPMEMSystem

/// The NUMA checks need two or more nodes. On such a machine they run here too; on a one-node
/// machine (like the development VM) `make test` runs them in emulated 2- and 4-node machines
/// after the Swift tests (`make numa-test`, Tests/NUMAMachine), and this test says so instead of
/// pretending. It cannot say they passed: when it is skipped they have not run yet.
@Suite("NUMA on this machine")
struct NUMAOnThisMachineTests {
    static let nodes = NUMA.configuredNodes

    static let skipReason: Comment = nodes < 2
        ? "this machine has \(nodes) NUMA node(s); these checks run in emulated 2- and 4-node machines instead: `make test` runs them after the Swift tests, `make numa-test` on their own"
        : "the NUMA checks need root, to run the cooperative migration as another uid"

    @Test("Placement and migration checks on this machine's own nodes (as root)",
          .enabled(if: nodes >= 2 && OtherUser.available, skipReason))
    func numaChecksOnThisMachine() throws {
        let check = try ChildProcess("xpmem-numa-check", ["all"])
        let status = check.waitForExit(timeout: 300)
        let lines = check.remainingLines()
        #expect(status == 0, "\(lines.filter { $0.hasPrefix("FAIL") })")
        #expect(lines.contains { $0.hasPrefix("PASS") })
    }
}
