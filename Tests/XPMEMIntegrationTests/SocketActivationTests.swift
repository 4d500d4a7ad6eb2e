@preconcurrency import Glibc
import Foundation
import Testing
import XPMEM
import XPMEMSystem

/// The broker under a service manager's socket activation, played by `xpmem-probe supervise`
/// (bind, pass descriptor 3 with LISTEN_PID/LISTEN_FDS, restart on death), as systemd would.
@Suite("Socket activation", .serialized)
struct SocketActivationTests {
    @Test("An activated broker serves on the passed socket; killed, the next one serves the clients who connected meanwhile")
    func restartKeepsTheSocket() throws {
        let directory = try FileSystem.makeTemporaryDirectory("/tmp/xpmem-activate-XXXXXX")
        defer { FileSystem.removeFlatDirectory(directory) }
        let socket = directory + "/broker.sock"
        let manager = try ChildProcess("xpmem-probe", ["supervise", "--socket", socket, "--",
                                                       BuiltProducts.path("xpmemd"), "--log-level", "warning"])
        defer {
            if manager.isRunning { manager.send("stop") }
            _ = manager.waitForExit()
        }
        let first = try #require(manager.readLine().flatMap { $0.hasPrefix("started ") ? Int32($0.dropFirst(8)) : nil })
        let client = try XPMEMBroker.connect(socketPath: socket, name: "before")
        #expect(try client.status().pid == first)
        kill(first, SIGKILL)
        #expect(manager.readLine() == "exited 9")
        // Connecting before the next broker is surely up: the connection waits in the socket's backlog.
        let waiting = try XPMEMBroker.connect(socketPath: socket, name: "during the restart")
        let second = try #require(manager.readLine().flatMap { $0.hasPrefix("started ") ? Int32($0.dropFirst(8)) : nil })
        #expect(second != first)
        #expect(try waiting.status().pid == second)
        let segment = try waiting.makeSegment(size: 4096)
        segment.withUnsafeMutableBytes { $0[0] = 8 }
        #expect(try XPMEMBroker.connect(socketPath: socket, name: "after").get(segment.id).attach()
                    .withUnsafeMutableBytes { $0[0] } == 8)
        #expect(throws: XPMEMError.self, "the old broker's client must learn it is gone") { try client.status() }
        #expect(manager.send("stop"))
        #expect(manager.readLine() == "stopped")
        #expect(FileSystem.exists(socket), "a socket-activated broker removed the manager's socket")
    }
}
