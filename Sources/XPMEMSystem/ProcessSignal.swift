@preconcurrency import Glibc
import SystemPackage

/// A signal, by name, so that code above this layer (the launcher) needs no libc import.
public struct ProcessSignal: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: CInt
    public init(rawValue: CInt) { self.rawValue = rawValue }

    public static let hangUp = ProcessSignal(rawValue: SIGHUP)
    public static let interrupt = ProcessSignal(rawValue: SIGINT)
    public static let kill = ProcessSignal(rawValue: SIGKILL)
    public static let terminate = ProcessSignal(rawValue: SIGTERM)
    public static let childStatusChanged = ProcessSignal(rawValue: SIGCHLD)
    public static let user1 = ProcessSignal(rawValue: SIGUSR1)

    /// "SIGTERM" for the signals named above, else "signal N".
    public var description: String {
        switch self {
        case .hangUp: "SIGHUP"
        case .interrupt: "SIGINT"
        case .kill: "SIGKILL"
        case .terminate: "SIGTERM"
        case .childStatusChanged: "SIGCHLD"
        case .user1: "SIGUSR1"
        default: "signal \(rawValue)"
        }
    }

    /// Sends this signal to process `pid`. The corresponding C function is `kill`.
    public func send(to pid: pid_t) throws(Errno) {
        _ = try valueOrErrno { Glibc.kill(pid, rawValue) }
    }
}

/// Signals received as data rather than by handlers: they are blocked for the creating thread (and
/// the threads it starts) and queue on a signalfd, which an `EventPoll` can watch with the rest.
public struct SignalInbox: ~Copyable {
    /// Readable while a signal is pending; for registering with `EventPoll`.
    public let descriptor: OwnedDescriptor

    /// The corresponding C function is `signalfd`.
    public init(_ signals: [ProcessSignal]) throws(Errno) {
        descriptor = try ProcessHandle.signalDescriptor(for: signals.map(\.rawValue))
    }

    /// The next pending signal, or nil when none is pending (or the descriptor could not be read).
    public func next() -> ProcessSignal? {
        guard let number = try? ProcessHandle.nextSignal(on: descriptor) else { return nil }
        return ProcessSignal(rawValue: number)
    }
}
