@preconcurrency import Glibc
import CXPMEMShim
import SystemPackage

/// Starting and reaping child processes for launchers (`xprun`): `posix_spawn` with a clean signal
/// state, optional redirection of standard output and error, and CPU binding.
public enum ProcessLauncher {
    /// How a child ended.
    public enum Termination: Sendable, Equatable, CustomStringConvertible {
        case exited(Int32)
        case signaled(Int32)

        public var succeeded: Bool { self == .exited(0) }
        /// The shell's convention: the exit status, or 128 + the signal.
        public var shellStatus: Int32 {
            switch self {
            case .exited(let status): status
            case .signaled(let signal): 128 + signal
            }
        }

        /// Decodes a `waitpid` status (WIFEXITED / WEXITSTATUS / WTERMSIG are macros Swift does not import).
        init(waitStatus status: CInt) {
            let signal = status & 0x7f
            self = signal == 0 ? .exited((status >> 8) & 0xff) : .signaled(signal)
        }

        public var description: String {
            switch self {
            case .exited(let status): "exited with status \(status)"
            case .signaled(let signal): "was killed by signal \(signal) (\(String(cString: strsignal(signal))))"
            }
        }
    }

    /// Starts `path` with `arguments` (argv[0] included) and `environment` ("NAME=value" strings).
    /// The child starts with no blocked signals and default dispositions for the ones a launcher
    /// intercepts, whatever the parent had. `standardInput`/`standardOutput`/`standardError`, borrowed
    /// until the call returns, replace fds 0, 1 and 2 in the child when given. With `cpu`, the child
    /// is bound to that CPU from its first instruction (the spawning thread's affinity is set around
    /// the call; `posix_spawn` children inherit it).
    /// The corresponding C function is `posix_spawn`.
    public static func spawn(path: String, arguments: [String], environment: [String],
                             standardInput: FileDescriptor? = nil, standardOutput: FileDescriptor? = nil,
                             standardError: FileDescriptor? = nil, cpu: Int? = nil) throws(Errno) -> pid_t
    {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGPIPE] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let standardInput { posix_spawn_file_actions_adddup2(&actions, standardInput.rawValue, 0) }
        if let standardOutput { posix_spawn_file_actions_adddup2(&actions, standardOutput.rawValue, 1) }
        if let standardError { posix_spawn_file_actions_adddup2(&actions, standardError.rawValue, 2) }

        var savedAffinity = cpu_set_t()
        if let cpu {
            guard cxpmem_get_thread_affinity(&savedAffinity, MemoryLayout<cpu_set_t>.size) == 0 else { throw Errno(rawValue: errno) }
            var only = cpu_set_t()
            CPUSet.insert(cpu, into: &only)
            guard cxpmem_set_thread_affinity(&only, MemoryLayout<cpu_set_t>.size) == 0 else { throw Errno(rawValue: errno) }
        }
        defer { if cpu != nil { cxpmem_set_thread_affinity(&savedAffinity, MemoryLayout<cpu_set_t>.size) } }

        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, path, &actions, &attributes, argv, envp)
        guard result == 0 else { throw Errno(rawValue: result) }
        return pid
    }

    /// A child that has ended, if any, without blocking. The corresponding C function is `waitpid`.
    public static func reap(_ pid: pid_t = -1) -> (pid: pid_t, termination: Termination)? {
        var status: CInt = 0
        let reaped = waitpid(pid, &status, WNOHANG)
        guard reaped > 0 else { return nil }
        return (reaped, Termination(waitStatus: status))
    }

    /// Waits for a child to end (blocking). The corresponding C function is `waitpid`.
    public static func waitForExit(_ pid: pid_t) -> Termination? {
        var status: CInt = 0
        while waitpid(pid, &status, 0) < 0 {
            guard errno == EINTR else { return nil }
        }
        return Termination(waitStatus: status)
    }

    /// The CPUs this process may run on, in order. The corresponding C function is `sched_getaffinity`.
    public static func allowedCPUs() -> [Int] {
        var set = cpu_set_t()
        guard cxpmem_get_thread_affinity(&set, MemoryLayout<cpu_set_t>.size) == 0 else { return [] }
        return (0..<(MemoryLayout<cpu_set_t>.size * 8)).filter { CPUSet.contains($0, in: set) }
    }

    /// The environment of this process as "NAME=value" strings, with `additions` replacing (or
    /// joining) the variables of the same name.
    public static func currentEnvironment(adding additions: [String: String] = [:]) -> [String] {
        var result: [String] = []
        var entry = environ
        while let pointer = entry.pointee {
            let variable = String(cString: pointer)
            let name = variable.prefix { $0 != "=" }
            if additions[String(name)] == nil { result.append(variable) }
            entry += 1
        }
        return result + additions.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
    }
}

/// CPU_SET / CPU_ISSET, which are macros Swift does not import.
enum CPUSet {
    static func insert(_ cpu: Int, into set: inout cpu_set_t) {
        withUnsafeMutableBytes(of: &set) { bytes in bytes[cpu / 8] |= UInt8(1 << (cpu % 8)) }
    }

    static func contains(_ cpu: Int, in set: cpu_set_t) -> Bool {
        withUnsafeBytes(of: set) { bytes in bytes[cpu / 8] & UInt8(1 << (cpu % 8)) != 0 }
    }
}
