// xprun: starts N ranks of a program on this host, the way `mpirun` does.
//
//   xprun -n 4 [--socket PATH] [--tag-output] [--bind core|none] [--timeout S] PROGRAM [ARGS...]
//
// Each rank finds XPMEM_RANK, XPMEM_SIZE, XPMEM_LOCAL_RANK, XPMEM_LOCAL_SIZE, XPMEM_SOCKET and
// XPMEM_JOB_DIR (the rendezvous directory, see XPMEMComm's Rendezvous) in its environment.
@preconcurrency import Glibc
import ArgumentParser
import XPMEM
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

    @Option(name: .customShort("n"), help: "Number of ranks.") var ranks: Int
    @Option(help: "Broker socket (default: $XPMEM_SOCKET, else the per-user default; a private broker if none answers).")
    var socket: String?
    @Flag(help: "Prefix every line of rank output with [RANK]<stdout>: or [RANK]<stderr>:.") var tagOutput = false
    @Option(help: "core: bind rank i to the i-th CPU this process may use (wrapping around); none: no binding.")
    var bind: Binding = .none
    @Option(help: "Stop all ranks and fail after this many seconds.") var timeout: Double?
    @Argument(parsing: .captureForPassthrough, help: "The program and its arguments.") var command: [String] = []

    enum Binding: String, ExpressibleByArgument, CaseIterable { case core, none }

    func validate() throws {
        guard ranks >= 1 else { throw ValidationError("-n must be at least 1") }
        guard !command.isEmpty else { throw ValidationError("missing PROGRAM: xprun -n 4 allreduce") }
        if let timeout, timeout <= 0 { throw ValidationError("--timeout must be positive") }
    }

    func run() throws {
        guard let program = Self.locate(command[0]) else {
            throw Failure("xprun: cannot find an executable '\(command[0])' (looked in PATH and beside xprun)")
        }
        let broker = try BrokerForRun(requested: socket, for: "xprun")
        defer { broker.stop() }
        let jobDirectory: String
        do {
            jobDirectory = try FileSystem.makeTemporaryDirectory("/tmp/xprun-job-XXXXXX")
        } catch {
            throw Failure("xprun: cannot create a job directory in /tmp: \(error)")
        }
        defer { FileSystem.removeFlatDirectory(jobDirectory) }

        let cpus = ProcessLauncher.allowedCPUs()
        if bind == .core && cpus.isEmpty { throw Failure("xprun: cannot read this process's CPU affinity") }
        var supervisor = try RankSupervisor(tagOutput: tagOutput)
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

    /// PROGRAM as given if it has a slash, else the first match in PATH, else the one beside xprun
    /// (so `xprun -n 4 allreduce` finds the examples built with it).
    static func locate(_ name: String) -> String? {
        if name.contains("/") { return FileSystem.isExecutable(name) ? name : nil }
        let path = getenv("PATH").map { String(cString: $0) } ?? "/usr/bin:/bin"
        for directory in path.split(separator: ":") where FileSystem.isExecutable("\(directory)/\(name)") {
            return "\(directory)/\(name)"
        }
        let sibling = "\(FileSystem.executableDirectory())/\(name)"
        return FileSystem.isExecutable(sibling) ? sibling : nil
    }

    static func environment(overriding values: [String: String]) -> [String] {
        ProcessLauncher.currentEnvironment().filter { entry in
            guard let equals = entry.firstIndex(of: "=") else { return true }
            return values[String(entry[..<equals])] == nil
        } + values.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
    }
}

/// An error message for the user, printed as is.
struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
