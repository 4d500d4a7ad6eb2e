import Testing
import XPMEMSystem

/// The NUMA checks need two or more nodes. On such a machine they run here too; on a one-node
/// machine (like the development VM) `make test` runs them in emulated 2- and 4-node machines
/// (`make numa-test`, Tests/NUMAMachine), and this test says so instead of pretending.
@Suite("NUMA on this machine")
struct NUMAOnThisMachineTests {
    static let nodes = NUMA.configuredNodes

    @Test("Placement and migration checks on this machine's own nodes (as root)",
          .enabled(if: nodes >= 2 && OtherUser.available,
                   "this machine has \(nodes) NUMA node(s): the NUMA checks ran in the emulated 2- and 4-node machines of `make numa-test` instead"))
    func numaChecksOnThisMachine() throws {
        let check = try ChildProcess("xpmem-numa-check", ["all"])
        let status = check.waitForExit(timeout: 300)
        let lines = check.remainingLines()
        #expect(status == 0, "\(lines.filter { $0.hasPrefix("FAIL") })")
        #expect(lines.contains { $0.hasPrefix("PASS") })
    }
}
