import ArgumentParser
import Logging
import XPMEMBrokerCore
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

    @Option(name: .long, help: "Connections one uid may hold (root and the broker's own uid are exempt).")
    var maxConnectionsPerUid: Int = BrokerQuotas().connectionsPerUID

    @Option(name: .long, help: "Segments one uid may export (root and the broker's own uid are exempt).")
    var maxSegmentsPerUid: Int = BrokerQuotas().segmentsPerUID

    @Option(name: .long, help: "Bytes (declared segment sizes, summed) one uid may export; suffixes K, M, G, T.")
    var maxBytesPerUid: String = "4T"

    @Option(name: .long, help: "Seconds a client may leave the broker's frames unread before it is dropped.")
    var stallSeconds: Int = 30

    @Option(name: .long, help: "Stop, as on SIGTERM, when process PID exits (for a private broker a launcher starts: it goes even when the launcher is killed).")
    var exitWith: Int32?

    @Flag(name: .long, help: "The socket's directory was made for this broker alone by the --exit-with process, its parent (a launcher's temporary one): when that process exits, remove it, lock file included.")
    var privateDirectory = false

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
        guard maxConnectionsPerUid > 0, maxSegmentsPerUid > 0, stallSeconds > 0 else {
            throw ValidationError("--max-connections-per-uid, --max-segments-per-uid and --stall-seconds must be positive")
        }
        if let exitWith, exitWith <= 0 {
            throw ValidationError("--exit-with must be a process id (a positive number), not \(exitWith)")
        }
        if privateDirectory && (exitWith == nil || socket == nil) {
            throw ValidationError("--private-directory needs --exit-with and --socket: the directory of that socket goes when that process has gone")
        }
        guard Self.byteCount(maxBytesPerUid) != nil else {
            throw ValidationError("--max-bytes-per-uid must be a byte count such as 1073741824, 64G or 4T, not '\(maxBytesPerUid)'")
        }
    }

    /// "4T", "64G", "512M", "4096K" or plain bytes.
    static func byteCount(_ text: String) -> UInt64? {
        let shifts: [Character: UInt64] = ["K": 10, "M": 20, "G": 30, "T": 40]
        guard let last = text.uppercased().last else { return nil }
        if let shift = shifts[last] {
            guard let value = UInt64(text.dropLast()), value > 0, value <= UInt64.max >> shift else { return nil }
            return value << shift
        }
        return UInt64(text).flatMap { $0 > 0 ? $0 : nil }
    }

    /// The quotas from the options, and a descriptor budget from the limit the broker runs under: an
    /// eighth of it (at least 64) is kept for the broker's own descriptors and frames in flight.
    func quotas() -> BrokerQuotas {
        let limit = DescriptorLimit.raiseToMaximum()
        var quotas = BrokerQuotas()
        quotas.connectionsPerUID = maxConnectionsPerUid
        quotas.segmentsPerUID = maxSegmentsPerUid
        quotas.bytesPerUID = Self.byteCount(maxBytesPerUid) ?? quotas.bytesPerUID
        quotas.descriptorBudget = max(limit - max(64, limit / 8), 16)
        quotas.administratorReserve = min(max(32, quotas.descriptorBudget / 16), quotas.descriptorBudget / 2)
        quotas.brokerUID = UInt32(ThisProcess.userID)
        return quotas
    }

    func run() throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = Logger.Level(rawValue: logLevel) ?? .info
            return handler
        }
        let logger = Logger(label: "xpmemd")
        let path = BrokerSocketPath.listeningPath(explicit: socket)
        if socket == nil && path == BrokerSocketPath.defaultDirectory() + "/xpmemd.sock" {
            try FileSystem.ensurePrivateDirectory(BrokerSocketPath.defaultDirectory())
        }
        if !NUMA.isAvailable { logger.notice("NUMA API unavailable: pages go wherever the kernel puts them") }
        do {
            let server = try BrokerServer(
                socketPath: path, mode: UInt32(mode, radix: 8)!, group: group.flatMap(FileSystem.groupID(named:)),
                quotas: quotas(), stallSeconds: stallSeconds, spinPolicy: SpinPolicy(microseconds: spinMicroseconds),
                exitWith: exitWith,
                removesDirectoryWhenOwnerExits: privateDirectory, logger: logger)
            try server.run()
        } catch let error as BrokerStartError {
            logger.critical("\(error.description)")
            throw ExitCode(2)
        }
    }
}
