// xprun: starts N ranks of a program on this host, the way `mpirun` does.
//
//   xprun -n 4 [--socket PATH] [--tag-output] [--bind core|none] [--timeout S] PROGRAM [ARGS...]
//
// Each rank finds XPMEM_RANK, XPMEM_SIZE, XPMEM_LOCAL_RANK, XPMEM_LOCAL_SIZE, XPMEM_SOCKET and
// XPMEM_JOB_DIR (the rendezvous directory, see XPMEMComm's Rendezvous) in its environment.
import ArgumentParser
import XPMEM
import XPMEMRunKit
import XPMEMSystem

@main
struct XPRun: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "xprun",
        abstract: "Run N ranks of a program on this host with an XPMEM broker, like mpirun.",
        discussion: """
            If no broker answers at the socket (--socket, else $XPMEM_SOCKET, else the per-user default), \
            a private xpmemd (found beside xprun) is started on a temporary socket and stopped at the end. \
            SIGINT, SIGTERM and SIGHUP are forwarded to every rank. When a rank fails (non-zero exit or a \
            signal), the others are stopped, the failed rank is named, and xprun exits with its status.
            """)

    // Unconditional, so that `-n -1` reaches validate() and is refused for what it is, instead of
    // ArgumentParser taking "-1" for an option and saying the value is missing.
    @Option(name: .customShort("n"), parsing: .unconditional, help: ArgumentHelp("Number of ranks.", valueName: "count"))
    var ranks: Int
    @Option(help: "Broker socket (default: $XPMEM_SOCKET, else the per-user default; a private broker if none answers).")
    var socket: String?
    @Flag(help: "Prefix every line of rank output with [RANK]<stdout>: or [RANK]<stderr>:.") var tagOutput = false
    @Option(help: "core: bind rank i to the i-th CPU this process may use (wrapping around); none: no binding.")
    var bind: Binding = .none
    @Option(help: "Stop all ranks and fail after this many seconds.") var timeout: Double?
    @Argument(parsing: .captureForPassthrough, help: "The program and its arguments.") var command: [String] = []

    enum Binding: String, ExpressibleByArgument, CaseIterable { case core, none }

    func validate() throws {
        guard ranks >= 1 else { throw ValidationError("-n must be at least 1 (got \(ranks))") }
        guard !command.isEmpty else { throw ValidationError("missing PROGRAM: xprun -n 4 allreduce") }
        if let timeout, timeout <= 0 { throw ValidationError("--timeout must be positive") }
    }

    func run() throws {
        let program = try Self.locate(command[0])
        let broker = try BrokerForRun(requested: socket, for: "xprun")
        defer { broker.stop() }
        let jobDirectory: String
        do {
            jobDirectory = try FileSystem.makeTemporaryDirectory("/tmp/xprun-job-XXXXXX")
        } catch {
            throw Failure("cannot create a job directory in /tmp: \(error)")
        }
        defer { FileSystem.removeFlatDirectory(jobDirectory) }

        let cpus = ProcessLauncher.allowedCPUs()
        if bind == .core && cpus.isEmpty { throw Failure("cannot read this process's CPU affinity") }
        var supervisor: RankSupervisor
        do {
            supervisor = try RankSupervisor(tagOutput: tagOutput)
        } catch {
            throw Failure("cannot set up signal forwarding: \(error)")
        }
        for rank in 0..<ranks {
            let environment = Self.environment(overriding: [
                "XPMEM_RANK": "\(rank)", "XPMEM_SIZE": "\(ranks)",
                "XPMEM_LOCAL_RANK": "\(rank)", "XPMEM_LOCAL_SIZE": "\(ranks)",
                "XPMEM_SOCKET": broker.socketPath, "XPMEM_JOB_DIR": jobDirectory,
            ])
            let cpu = bind == .core ? cpus[rank % cpus.count] : nil
            do {
                try supervisor.start(rank: rank, path: program, arguments: [program] + command.dropFirst(),
                                     environment: environment, cpu: cpu)
            } catch {
                supervisor.stopAll(reason: "xprun: could not start rank \(rank) (\(program)): \(error)")
                _ = supervisor.wait(timeout: nil)
                throw ExitCode(127)
            }
        }
        let status = supervisor.wait(timeout: timeout)
        if status != 0 { throw ExitCode(status) }
    }

    /// PROGRAM as given if it has a slash, else the first executable match in PATH, else the one beside
    /// xprun (so `xprun -n 4 allreduce` finds the examples built with it). When it cannot be run, the
    /// error says why: missing, a directory, or not executable.
    static func locate(_ name: String) throws(Failure) -> String {
        if name.contains("/") {
            try checkRunnable(name)
            return name
        }
        let directories = (ThisProcess.environment("PATH") ?? "/usr/bin:/bin").split(separator: ":").map(String.init)
            + [FileSystem.executableDirectory()]
        let candidates = directories.map { "\($0)/\(name)" }
        if let runnable = candidates.first(where: { FileSystem.isExecutable($0) && !FileSystem.isDirectory($0) }) {
            return runnable
        }
        // Something by that name exists but cannot be run: say what is wrong with the first one.
        if let unusable = candidates.first(where: FileSystem.exists) { try checkRunnable(unusable) }
        throw Failure("cannot find an executable '\(name)' (looked in PATH and beside xprun)")
    }

    /// Throws the reason `path` cannot be started as a program, if there is one.
    static func checkRunnable(_ path: String) throws(Failure) {
        guard FileSystem.exists(path) else { throw Failure("cannot find an executable '\(path)': no such file") }
        guard !FileSystem.isDirectory(path) else { throw Failure("'\(path)' is a directory, not a program") }
        guard FileSystem.isExecutable(path) else {
            throw Failure("'\(path)' is not executable (it has no execute permission for this user)")
        }
    }

    static func environment(overriding values: [String: String]) -> [String] {
        ProcessLauncher.currentEnvironment().filter { entry in
            guard let equals = entry.firstIndex(of: "=") else { return true }
            return values[String(entry[..<equals])] == nil
        } + values.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
    }
}

/// An error message for the user, printed as is after ArgumentParser's "Error: " (so without a
/// program-name prefix of its own).
struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
