@preconcurrency import Glibc
import Foundation
import XPMEM
import XPMEMRunKit

/// A real `xpmemd` on a socket in a fresh temporary directory (a `PrivateBroker`, as xprun and the
/// benchmark start theirs), stopped when the test is done; and what tests ask of it.
final class TestBroker: @unchecked Sendable {
    private let broker: PrivateBroker
    var directory: String { broker.directory }
    var socketPath: String { broker.socketPath }

    /// Starts the broker and waits until it accepts connections.
    /// - Parameters:
    ///   - mode: "0666" with an open directory lets other uids in (`--mode 0666`, directory 0755);
    ///     otherwise the socket is the broker's default 0600.
    ///   - openDirectory: make the directory reachable by every user (for tests as another uid).
    ///   - arguments: more options for `xpmemd` (quotas, say).
    init(mode: String = "0600", openDirectory: Bool = false, arguments: [String] = []) throws {
        precondition(mode == "0600" || (mode == "0666" && openDirectory), "TestBroker offers 0600, or 0666 with an open directory")
        broker = try PrivateBroker(for: "xpmem-test", openToEveryUID: mode == "0666",
                                   arguments: ["--log-level", "warning"] + arguments)
    }

    /// Kills the broker with SIGKILL (it cleans nothing up: its socket file and lock file stay) and
    /// waits until it is gone.
    func kill9() { broker.kill() }

    /// Starts a new broker with the same options on the same socket and waits until it serves.
    func startAgain() throws { try broker.start() }

    var pid: pid_t { broker.pid }

    /// A new client connection to this broker.
    func connect(name: String = "test") throws -> XPMEMBroker {
        try XPMEMBroker.connect(socketPath: socketPath, name: name)
    }

    /// How many descriptors the broker process has open right now.
    func openDescriptorCount() -> Int {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []).count
    }

    /// The broker's descriptor count once it has settled (no change for 200 ms): take it with no client
    /// connected, after the start-up readiness check has been cleaned up.
    func settledDescriptorCount() -> Int {
        var count = openDescriptorCount()
        var stableSince = Date()
        let deadline = Date().addingTimeInterval(5)
        while Date().timeIntervalSince(stableSince) < 0.2 && Date() < deadline {
            usleep(10_000)
            let now = openDescriptorCount()
            if now != count {
                count = now
                stableSince = Date()
            }
        }
        return count
    }

    /// Polls until the broker's descriptor count is `expected` (clean-up after a client exits is
    /// asynchronous), returning the last count seen.
    func waitForDescriptorCount(_ expected: Int, timeout: Double = 5) -> Int {
        let deadline = Date().addingTimeInterval(timeout)
        var count = openDescriptorCount()
        while count != expected && Date() < deadline {
            usleep(10_000)
            count = openDescriptorCount()
        }
        return count
    }

    /// Polls `condition` against the broker's status until it holds or `timeout` passes.
    func waitForStatus(timeout: Double = 5, _ condition: (BrokerStatus) -> Bool) throws -> BrokerStatus {
        let broker = try connect(name: "status poll")
        let deadline = Date().addingTimeInterval(timeout)
        var status = try broker.status()
        while !condition(status) && Date() < deadline {
            usleep(10_000)
            status = try broker.status()
        }
        return status
    }

    var isRunning: Bool { broker.isRunning }

    /// Stops the broker with SIGTERM and returns its exit status.
    @discardableResult
    func stop() -> Int32? { broker.stop() }
}

/// Whether the tests can act as another uid (they run as root in CI and drop to `nobody`).
enum OtherUser {
    static let uid: UInt32 = 65534
    static let gid: UInt32 = 65534
    static var available: Bool { getuid() == 0 }
}
