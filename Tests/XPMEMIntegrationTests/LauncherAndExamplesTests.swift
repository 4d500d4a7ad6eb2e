@preconcurrency import Glibc
import Foundation
import Testing
import XPMEM

/// `xprun` and the MPI-like examples, as a user runs them: real rank processes under the real
/// launcher, against a real broker. Each example checks its own result and exits non-zero if wrong.
@Suite("xprun and the examples", .serialized)
struct LauncherAndExamplesTests {
    /// Small sizes: these prove correctness, `xpmem-bench mpi` measures.
    static let examples: [(name: String, arguments: [String])] = [
        ("pingpong", ["--sizes", "0,8,20000,64K,1M", "--scale", "0.01", "--batches", "1"]),
        ("ring", ["--laps", "3", "--size", "64K"]),
        ("allreduce", ["--sizes", "8K,1M", "--scale", "0.01", "--batches", "1"]),
        ("halo2d", ["--rows", "64", "--columns", "48", "--iterations", "20"]),
        ("migrate", ["--size", "1M"]),
    ]

    @Test("Every example runs under xprun with 2 and 4 ranks, checks its result, and leaves no descriptor behind",
          arguments: [2, 4])
    func examplesCheckTheirResults(ranks: Int) throws {
        let broker = try TestBroker()
        let baseline = broker.settledDescriptorCount()
        for example in Self.examples {
            let run = try ChildProcess(
                "xprun", ["-n", "\(ranks)", "--socket", broker.socketPath, "--timeout", "120",
                          BuiltProducts.path(example.name)] + example.arguments)
            let status = run.waitForExit(timeout: 150)
            let output = run.remainingLines()
            #expect(status == 0, "\(example.name) on \(ranks) ranks: \(output) \(run.standardError())")
            #expect(output.contains { $0.hasPrefix("OK") }, "\(example.name): no OK verdict in \(output)")
        }
        #expect(broker.waitForDescriptorCount(baseline) == baseline)
        let status = try broker.waitForStatus { $0.clients == 0 && $0.segments == 0 }
        #expect(status.segments == 0, "the ranks' segments must go when they exit")
    }

    @Test("Each rank finds its rank, size, local rank and the socket; --tag-output prefixes its lines")
    func ranksSeeTheirEnvironment() throws {
        let broker = try TestBroker()
        let run = try ChildProcess(
            "xprun", ["-n", "3", "--socket", broker.socketPath, "--tag-output", "/bin/sh", "-c",
                      "echo \"$XPMEM_RANK $XPMEM_SIZE $XPMEM_LOCAL_RANK $XPMEM_SOCKET\""])
        #expect(run.waitForExit() == 0)
        let lines = Set(run.remainingLines())
        let expected = Set((0..<3).map { "[\($0)]<stdout>: \($0) 3 \($0) \(broker.socketPath)" })
        #expect(lines == expected)
    }

    @Test("With no broker at the socket, xprun starts a private one for the job and stops it afterwards")
    func privateBrokerForTheJob() throws {
        let directory = try TemporaryDirectory()
        let socket = directory.path + "/none.sock"
        let run = try ChildProcess(
            "xprun", ["-n", "2", "--socket", socket, BuiltProducts.path("ring"), "--laps", "2", "--size", "4K"])
        #expect(run.waitForExit(timeout: 60) == 0, "\(run.remainingLines()) \(run.standardError())")
        #expect(run.remainingLines().contains { $0.hasPrefix("OK") })
        #expect(access(socket, F_OK) != 0, "nothing may be left listening at the requested path")
    }

    @Test("When one rank fails, xprun stops the others, names the failed rank and exits non-zero")
    func oneFailingRankStopsTheJob() throws {
        let directory = try TemporaryDirectory()
        let broker = try TestBroker()
        // Rank 1 fails at once; the others would sleep a minute, recording their pids first.
        let script = """
            echo $$ > \(directory.path)/rank-$XPMEM_RANK.pid
            if [ "$XPMEM_RANK" = 1 ]; then sleep 0.3; exit 3; fi
            exec sleep 60
            """
        let started = Date()
        let run = try ChildProcess("xprun", ["-n", "4", "--socket", broker.socketPath, "/bin/sh", "-c", script])
        let status = run.waitForExit(timeout: 30)
        #expect(status == 3, "xprun exits with the failed rank's status")
        #expect(Date().timeIntervalSince(started) < 20, "the sleeping ranks must have been stopped, not waited for")
        let errors = run.standardError()
        #expect(errors.contains("rank 1"), "the message names the rank: \(errors)")
        for rank in [0, 2, 3] {
            let text = try String(contentsOfFile: "\(directory.path)/rank-\(rank).pid", encoding: .utf8)
            let pid = try #require(pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)))
            #expect(kill(pid, 0) != 0 && errno == ESRCH, "rank \(rank) (pid \(pid)) must be gone")
        }
    }

    @Test("SIGTERM to xprun reaches every rank; a rank killed by a signal is reported as such")
    func signalsAreForwarded() throws {
        let directory = try TemporaryDirectory()
        let broker = try TestBroker()
        let script = """
            trap 'echo "rank $XPMEM_RANK got TERM"; exit 143' TERM
            touch \(directory.path)/ready-$XPMEM_RANK
            while :; do sleep 0.05; done
            """
        let run = try ChildProcess("xprun", ["-n", "2", "--socket", broker.socketPath, "/bin/sh", "-c", script])
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline, (0..<2).contains(where: { access("\(directory.path)/ready-\($0)", F_OK) != 0 }) {
            usleep(10_000)
        }
        run.signal(SIGTERM)
        let status = run.waitForExit(timeout: 15)
        #expect(status != nil && status != 0)
        let lines = run.remainingLines()
        #expect(lines.contains("rank 0 got TERM") && lines.contains("rank 1 got TERM"), "\(lines)")
    }

    @Test("xprun refuses a missing program and a bad rank count with a clear message")
    func badInvocations() throws {
        let missing = try ChildProcess("xprun", ["-n", "2", "no-such-program-here"])
        #expect(missing.waitForExit() != 0)
        #expect(missing.standardError().contains("cannot find an executable 'no-such-program-here'"))
        let zero = try ChildProcess("xprun", ["-n", "0", "/bin/true"])
        #expect(zero.waitForExit() != 0)
        #expect(zero.standardError().contains("-n must be at least 1"))
    }

    /// Open MPI is installed by `.ci/run`; on a machine without it, this says so instead of passing.
    static let openMPI: String? = {
        let candidates = ["/usr/bin/mpirun.openmpi", "/usr/local/bin/mpirun.openmpi"]
        return candidates.first { access($0, X_OK) == 0 }
    }()

    @Test("Under Open MPI's mpirun, local ranks move data single-copy through the broker",
          .enabled(if: openMPI != nil, "Open MPI is not installed (apt-get install openmpi-bin); .ci/run installs it"),
          arguments: [2, 4])
    func hybridExampleUnderMPIRun(ranks: Int) throws {
        let broker = try TestBroker()
        var arguments = ["-n", "\(ranks)", "--oversubscribe", "-x", "XPMEM_SOCKET=\(broker.socketPath)"]
        if getuid() == 0 { arguments.append("--allow-run-as-root") }
        let run = try ChildProcess(
            executable: try #require(Self.openMPI), arguments + [BuiltProducts.path("mpi-hybrid"), "--size", "256K"],
            environment: ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"])
        let status = run.waitForExit(timeout: 120)
        let lines = run.remainingLines()
        #expect(status == 0, "\(lines) \(run.standardError())")
        let verdicts = lines.filter { $0.contains("single-copy OK, allreduce OK") }
        #expect(verdicts.count == ranks, "\(lines)")
        #expect(lines.allSatisfy { $0.hasPrefix("Open MPI world rank") })
    }
}

/// A fresh directory under /tmp, removed with everything in it when the value goes away.
final class TemporaryDirectory {
    let path: String

    init() throws {
        var template = Array("/tmp/xpmem-test-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw POSIXError(.EIO) }
        path = String(cString: made)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}
