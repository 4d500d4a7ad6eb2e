@preconcurrency import Glibc
import Foundation
import Testing
import XPMEM
import XPMEMSystem

/// What a user meets first: where xpmemctl takes its options, what its JSON holds, and how xpmemctl
/// and xprun word their refusals. Each runs the real programs.
@Suite("xpmemctl and xprun on the command line", .serialized)
struct CommandLineTests {
    @Test("xpmemctl takes --socket before the subcommand as well as after it", arguments: [true, false])
    func socketBeforeOrAfterTheSubcommand(before: Bool) throws {
        let broker = try TestBroker()
        let socket = ["--socket", broker.socketPath]
        let run = try ChildProcess("xpmemctl", before ? socket + ["status", "--json"] : ["status", "--json"] + socket)
        let status = run.waitForExit()
        let output = run.remainingLines().joined()
        #expect(status == 0, "\(run.standardError())")
        let decoded = try JSONDecoder().decode(BrokerStatus.self, from: Data(output.utf8))
        #expect(decoded.pid == broker.pid)
    }

    @Test("xpmemctl status --json names the socket, as the table does")
    func statusJSONNamesTheSocket() throws {
        let broker = try TestBroker()
        let json = try ChildProcess("xpmemctl", ["status", "--json", "--socket", broker.socketPath])
        #expect(json.waitForExit() == 0)
        let object = try JSONSerialization.jsonObject(with: Data(json.remainingLines().joined().utf8)) as? [String: Any]
        #expect(object?["socket"] as? String == broker.socketPath)
        let table = try ChildProcess("xpmemctl", ["status", "--socket", broker.socketPath])
        #expect(table.waitForExit() == 0)
        #expect(table.remainingLines().contains { $0.hasPrefix("socket") && $0.hasSuffix(broker.socketPath) })
    }

    @Test("A malformed segment id is refused with the subcommand's usage, before any broker is asked",
          arguments: [["invalidate", "nothex"], ["nodes", "nothex"], ["migrate", "nothex", "1"]])
    func malformedSegmentID(arguments: [String]) throws {
        let run = try ChildProcess("xpmemctl", arguments + ["--socket", "/nonexistent/xpmemd.sock"])
        #expect(run.waitForExit() == 64, "a usage error exits with EX_USAGE")
        let errors = run.standardError()
        #expect(errors.contains("'nothex' is invalid"), "\(errors)")
        #expect(errors.contains("Usage: xpmemctl \(arguments[0]) "), "the subcommand's usage, not the root's: \(errors)")
    }

    @Test("xprun -n with a negative count says the count is wrong, not that it is missing")
    func negativeRankCount() throws {
        let run = try ChildProcess("xprun", ["-n", "-1", "/bin/true"])
        #expect(run.waitForExit() == 64)
        let errors = run.standardError()
        #expect(errors.contains("-n must be at least 1"), "\(errors)")
        #expect(!errors.contains("Missing value"), "\(errors)")
    }

    @Test("xprun says a program it found cannot be run, and why")
    func programThatCannotRun() throws {
        let directory = try TemporaryDirectory()
        let notExecutable = directory.path + "/data"
        #expect(FileManager.default.createFile(atPath: notExecutable, contents: Data("x".utf8),
                                               attributes: [.posixPermissions: 0o644]))
        let cases: [(program: String, says: String)] = [
            (notExecutable, "'\(notExecutable)' is not executable"),
            (directory.path, "'\(directory.path)' is a directory"),
            (directory.path + "/missing", "cannot find an executable '\(directory.path)/missing'"),
        ]
        for (program, says) in cases {
            let run = try ChildProcess("xprun", ["-n", "2", program])
            #expect(run.waitForExit() != 0)
            let errors = run.standardError()
            #expect(errors.contains(says), "\(errors)")
        }
    }

    @Test("xprun's errors carry one prefix")
    func oneErrorPrefix() throws {
        let run = try ChildProcess("xprun", ["-n", "2", "no-such-program-here"])
        #expect(run.waitForExit() != 0)
        let errors = run.standardError()
        #expect(errors.hasPrefix("Error: cannot find an executable 'no-such-program-here'"), "\(errors)")
        #expect(!errors.contains("xprun: "), "\(errors)")
    }

    @Test("With --tag-output each rank holds its own two pipes and none of another rank's")
    func ranksInheritNoOtherRanksPipes() throws {
        let broker = try TestBroker()
        // Each rank lists its open descriptors as "NUMBER TARGET" lines; a pipe's target names its inode.
        let script = #"for f in /proc/$$/fd/*; do echo "${f##*/} $(readlink "$f")"; done"#
        let run = try ChildProcess("xprun", ["-n", "3", "--socket", broker.socketPath, "--tag-output", "/bin/sh", "-c", script])
        #expect(run.waitForExit() == 0, "\(run.standardError())")
        var descriptors: [Int: [(number: String, target: String)]] = [:]
        for line in run.remainingLines() {
            // "[RANK]<stdout>: NUMBER TARGET"
            guard let close = line.firstIndex(of: "]"), let rank = Int(line.dropFirst().prefix(upTo: close)),
                  let colon = line.range(of: ">: ") else { continue }
            let fields = line[colon.upperBound...].split(separator: " ", maxSplits: 1).map(String.init)
            if fields.count == 2 { descriptors[rank, default: []].append((fields[0], fields[1])) }
        }
        #expect(descriptors.keys.sorted() == [0, 1, 2])
        let ownPipes = descriptors.mapValues { Set($0.filter { ["1", "2"].contains($0.number) }.map(\.target)) }
        for (rank, own) in ownPipes {
            #expect(own.count == 2 && own.allSatisfy { $0.hasPrefix("pipe:") }, "rank \(rank): \(own)")
            for (other, entries) in descriptors where other != rank {
                let leaked = entries.filter { own.contains($0.target) }
                #expect(leaked.isEmpty, "rank \(other) holds rank \(rank)'s pipes: \(leaked)")
            }
        }
    }

    /// xprun killed with SIGKILL (or by SIGPIPE in `xprun … 2>&1 | head`) runs no clean-up: its
    /// private broker used to stay behind, serving a socket nobody would use again.
    @Test("The private broker xprun started goes when xprun is killed, and its directory with it")
    func privateBrokerGoesWithKilledXprun() throws {
        // No broker at XPMEM_SOCKET: xprun starts its own, and the rank prints where.
        let run = try ChildProcess("xprun", ["-n", "1", "/bin/sh", "-c", #"echo "$$ $XPMEM_SOCKET"; exec sleep 60"#],
                                   environment: ["XPMEM_SOCKET": "/nonexistent-xprun-test/xpmemd.sock"])
        let line = run.readLine() ?? ""
        let fields = line.split(separator: " ").map(String.init)
        try #require(fields.count == 2 && fields[1].hasPrefix("/tmp/xprun-broker-"), "the rank said '\(line)'")
        let rank = pid_t(fields[0]) ?? 0
        defer { if rank > 0 { kill(rank, SIGKILL) } }
        let socket = fields[1]
        #expect((try? XPMEMBroker.connect(socketPath: socket, name: "probe", reconnect: .disabled)) != nil)
        run.signal(SIGKILL)
        _ = run.waitForExit()
        var answered = true
        for _ in 0..<1000 where answered {
            answered = (try? XPMEMBroker.connect(socketPath: socket, name: "probe", reconnect: .disabled)) != nil
            if answered { usleep(10_000) }
        }
        #expect(!answered, "a broker still answers at \(socket) after xprun was killed")
        #expect(access(socket, F_OK) != 0, "the broker left its socket file behind")
        let directory = FileSystem.directory(of: socket) ?? socket
        var directoryLeft = true
        for _ in 0..<500 where directoryLeft {
            directoryLeft = access(directory, F_OK) == 0
            if directoryLeft { usleep(10_000) }
        }
        #expect(!directoryLeft, "xprun's private broker left its directory \(directory) behind")
    }

    @Test("xpmemd --exit-with refuses a process that does not exist, naming it, and leaves no file behind; --private-directory needs it")
    func exitWithAMissingProcess() throws {
        let socket = "/tmp/xpmemd-exit-with-\(getpid()).sock"
        let run = try ChildProcess("xpmemd", ["--socket", socket, "--exit-with", "999999999"])
        #expect(run.waitForExit() == 2)
        #expect(run.standardError().contains("--exit-with 999999999: no such process"))
        #expect(access(socket, F_OK) != 0 && access(socket + ".lock", F_OK) != 0, "the refused broker left files")
        let zero = try ChildProcess("xpmemd", ["--socket", socket, "--exit-with", "0"])
        #expect(zero.waitForExit() != 0)
        #expect(zero.standardError().contains("--exit-with must be a process id"))
        let alone = try ChildProcess("xpmemd", ["--socket", socket, "--private-directory"])
        #expect(alone.waitForExit() != 0)
        #expect(alone.standardError().contains("--private-directory needs --exit-with and --socket"))
        #expect(access(socket, F_OK) != 0, "the refused broker left its socket")
    }

    /// A launcher killed between starting its broker and the broker's pidfd_open: the broker, handed
    /// to another parent by then, must not follow whatever process has the launcher's pid now.
    @Test("xpmemd --private-directory follows only its parent: another process is refused, and the directory goes")
    func privateDirectoryFollowsOnlyItsParent() throws {
        let directory = try FileSystem.makeTemporaryDirectory("/tmp/xpmemd-private-XXXXXX")
        defer { FileSystem.removeFlatDirectory(directory) }
        // Process 1 lives, and is not this broker's parent (this test process is).
        let run = try ChildProcess("xpmemd", ["--socket", directory + "/xpmemd.sock", "--exit-with", "1", "--private-directory"])
        #expect(run.waitForExit() == 2)
        #expect(run.standardError().contains("process 1 is not this broker's parent"))
        #expect(access(directory, F_OK) != 0, "the refused broker left the directory it was told is its own")
    }

    /// Whether `pid` runs: an ended process nobody has reaped yet (its new parent may not reap) is gone.
    private static func runs(_ pid: pid_t) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")")
        else { return false }
        return !stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
    }

    @Test("A broker whose launcher exits at once goes, with the launcher's directory, whichever comes first")
    func privateBrokerOfALauncherThatExitsAtOnce() throws {
        let directory = try FileSystem.makeTemporaryDirectory("/tmp/xpmemd-launcher-XXXXXX")
        defer { FileSystem.removeFlatDirectory(directory) }
        // The shell starts the broker and exits: the broker either opens the shell's pidfd first and
        // sees it exit, or finds itself reparented; either way it must not stay.
        let broker = BuiltProducts.path("xpmemd")
        let launcher = try ChildProcess(executable: "/bin/sh", ["-c",
            #""$0" --socket "$1/xpmemd.sock" --exit-with $$ --private-directory --log-level error & echo $!"#,
            broker, directory])
        let pid = pid_t(launcher.readLine() ?? "") ?? 0
        _ = launcher.waitForExit()
        #expect(pid > 0, "the launcher did not say its broker's pid")
        var left = true
        for _ in 0..<500 where left {
            left = Self.runs(pid) || access(directory, F_OK) == 0
            if left { usleep(10_000) }
        }
        #expect(!left, "the broker (\(pid)) or its directory is still there after its launcher exited")
    }
}
