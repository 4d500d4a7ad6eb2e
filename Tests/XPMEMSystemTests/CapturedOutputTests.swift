import Glibc
import SystemPackage
import Testing
@testable import XPMEMSystem

extension SystemTests {
    /// What xprun's supervisor stands on: children whose output comes back through pipes, and
    /// signals sent by name.
    struct CapturedOutputTests {
        @Test func standardOutputAndErrorArriveApartThenEndOfFile() throws {
            let child = try ProcessLauncher.spawnCapturingOutput(
                path: "/bin/sh", arguments: ["sh", "-c", "echo out; echo err >&2"], environment: [])
            #expect(try readToEnd(child.standardOutput) == Array("out\n".utf8))
            #expect(try readToEnd(child.standardError) == Array("err\n".utf8))
            #expect(ProcessLauncher.waitForExit(child.pid) == .exited(0))
        }

        @Test func readEndsAreCloseOnExecAndLaterChildrenInheritNeitherEnd() throws {
            let holder = try ProcessLauncher.spawnCapturingOutput(
                path: "/bin/sh", arguments: ["sh", "-c", "exec sleep 30"], environment: [])
            defer {
                try? ProcessSignal.kill.send(to: holder.pid)
                _ = ProcessLauncher.waitForExit(holder.pid)
            }
            for pipe in [holder.standardOutput, holder.standardError] {
                #expect(fcntl(pipe.descriptor.rawValue, F_GETFD) & FD_CLOEXEC != 0)
            }
            let inodes = try [holder.standardOutput, holder.standardError].map { "pipe:[\(try $0.descriptor.status().st_ino)]" }

            // A child started while the first is alive lists what it holds: none of the first one's pipes.
            let lister = try ProcessLauncher.spawnCapturingOutput(
                path: "/bin/sh", arguments: ["sh", "-c", #"for f in /proc/$$/fd/*; do readlink "$f"; done"#],
                environment: [])
            let held = String(decoding: try readToEnd(lister.standardOutput), as: UTF8.self).split(separator: "\n")
            #expect(ProcessLauncher.waitForExit(lister.pid) == .exited(0))
            #expect(!held.isEmpty)
            #expect(held.allSatisfy { !inodes.contains(String($0)) }, "\(held) holds one of \(inodes)")
        }

        @Test func signalsAreSentByName() throws {
            let child = try ProcessLauncher.spawnCapturingOutput(
                path: "/bin/sh", arguments: ["sh", "-c", "exec sleep 30"], environment: [])
            try ProcessSignal.terminate.send(to: child.pid)
            #expect(ProcessLauncher.waitForExit(child.pid) == .signaled(SIGTERM))
            #expect(throws: Errno.noSuchProcess) { try ProcessSignal.terminate.send(to: child.pid) }
            #expect(ProcessSignal.terminate.description == "SIGTERM")
            #expect(ProcessSignal.user1.description == "SIGUSR1")
            #expect(ProcessSignal(rawValue: SIGUSR2).description == "signal \(SIGUSR2)")
        }

        private func readToEnd(_ pipe: OutputPipe) throws -> [UInt8] {
            var bytes: [UInt8] = []
            while true {
                let chunk = try pipe.read(limit: 7)
                if chunk.isEmpty { return bytes }
                bytes += chunk
            }
        }
    }
}
