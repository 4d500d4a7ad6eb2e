@preconcurrency import Glibc
import ArgumentParser
import Logging
import XPMEMSystem

/// `xpmemd`: the broker that lets processes export memory and map each other's segments.
@main
struct XPMEMDaemon: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "xpmemd",
        abstract: "The userspace XPMEM broker: shares memfd-backed memory segments between processes.",
        discussion: """
            Listens on a SOCK_SEQPACKET Unix socket. Without --socket it uses $XPMEM_SOCKET, else \
            $XDG_RUNTIME_DIR/xpmem/xpmemd.sock, else /tmp/xpmem-UID/xpmemd.sock, in a private (0700) \
            directory. To serve other users, put the socket in a directory they can reach and open it \
            with --mode (and --group). Stops cleanly on SIGTERM or SIGINT.
            """)

    @Option(name: .long, help: "Socket path (default: $XPMEM_SOCKET, else a private per-user directory).")
    var socket: String?

    @Option(name: .long, help: "Permission bits of the socket file, in octal (0600: this user only; 0660: the group too; 0666: everyone).")
    var mode: String = "0600"

    @Option(name: .long, help: "Group (name or gid) that owns the socket file, for use with --mode 0660.")
    var group: String?

    @Option(name: .long, help: "Microseconds to busy-poll for the next request before sleeping (0: never poll).")
    var spinMicroseconds: Int = 100

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func validate() throws {
        guard let value = UInt32(mode, radix: 8), value <= 0o777 else {
            throw ValidationError("--mode must be octal permission bits such as 0600 or 0666, not '\(mode)'")
        }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        if let group, FileSystem.groupID(named: group) == nil {
            throw ValidationError("no group named '\(group)'")
        }
    }

    func run() throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = Logger.Level(rawValue: logLevel) ?? .info
            return handler
        }
        let logger = Logger(label: "xpmemd")
        let path = BrokerSocketPath.resolve(explicit: socket)
        if socket == nil && BrokerSocketPath.resolve(explicit: nil) == BrokerSocketPath.defaultDirectory() + "/xpmemd.sock" {
            try FileSystem.ensurePrivateDirectory(BrokerSocketPath.defaultDirectory())
        }
        if !NUMA.isAvailable { logger.notice("NUMA API unavailable: pages go wherever the kernel puts them") }
        do {
            let server = try BrokerServer(
                socketPath: path, mode: mode_t(UInt32(mode, radix: 8)!), group: group.flatMap(FileSystem.groupID(named:)),
                spinPolicy: SpinPolicy(microseconds: spinMicroseconds), logger: logger)
            try server.run()
        } catch let error as BrokerStartError {
            logger.critical("\(error.description)")
            throw ExitCode(2)
        }
    }
}
