/// Where the broker's socket lives unless told otherwise, the same rule for every program:
/// `--socket PATH`, else `$XPMEM_SOCKET`, else the per-user socket `$XDG_RUNTIME_DIR/xpmem/xpmemd.sock`
/// (or `/tmp/xpmem-UID/xpmemd.sock`) if it exists, else the system-wide broker's
/// `/run/xpmem/xpmemd.sock` (systemd's `xpmemd.socket`) if that exists, else the per-user path. The
/// per-user directory is private (0700): use `--socket` with a shared directory and `xpmemd --mode`
/// to open a broker to other users.
public enum BrokerSocketPath {
    public static let environmentVariable = "XPMEM_SOCKET"
    /// Where the system-wide broker's socket unit listens.
    public static let systemWide = "/run/xpmem/xpmemd.sock"

    public static func resolve(explicit: String?) -> String {
        if let chosen = chosen(explicit) { return chosen }
        let perUser = perUserPath()
        if !FileSystem.isSocket(perUser) && FileSystem.isSocket(systemWide) { return systemWide }
        return perUser
    }

    /// Where a broker started without `--socket` listens: `$XPMEM_SOCKET`, else the per-user socket
    /// (never the system-wide one, which belongs to the service manager).
    public static func listeningPath(explicit: String?) -> String {
        chosen(explicit) ?? perUserPath()
    }

    /// The private per-user directory for the default socket.
    public static func defaultDirectory() -> String {
        if let runtime = ThisProcess.environment("XDG_RUNTIME_DIR"), !runtime.isEmpty { return runtime + "/xpmem" }
        return "/tmp/xpmem-\(ThisProcess.userID)"
    }

    /// The path given with `--socket`, else `$XPMEM_SOCKET`, if either is set.
    private static func chosen(_ explicit: String?) -> String? {
        if let explicit, !explicit.isEmpty { return explicit }
        if let fromEnvironment = ThisProcess.environment(environmentVariable), !fromEnvironment.isEmpty {
            return fromEnvironment
        }
        return nil
    }

    private static func perUserPath() -> String { defaultDirectory() + "/xpmemd.sock" }
}
