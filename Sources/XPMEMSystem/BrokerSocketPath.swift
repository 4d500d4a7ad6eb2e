@preconcurrency import Glibc

/// Where the broker's socket lives unless told otherwise, the same rule for every program:
/// `--socket PATH`, else `$XPMEM_SOCKET`, else `$XDG_RUNTIME_DIR/xpmem/xpmemd.sock`, else
/// `/tmp/xpmem-UID/xpmemd.sock`. The directory is private (0700): use `--socket` with a shared
/// directory and `xpmemd --mode` to open the broker to other users.
public enum BrokerSocketPath {
    public static let environmentVariable = "XPMEM_SOCKET"

    public static func resolve(explicit: String?) -> String {
        if let explicit, !explicit.isEmpty { return explicit }
        if let fromEnvironment = environment(environmentVariable), !fromEnvironment.isEmpty { return fromEnvironment }
        return defaultDirectory() + "/xpmemd.sock"
    }

    /// The private per-user directory for the default socket.
    public static func defaultDirectory() -> String {
        if let runtime = environment("XDG_RUNTIME_DIR"), !runtime.isEmpty { return runtime + "/xpmem" }
        return "/tmp/xpmem-\(getuid())"
    }

    static func environment(_ name: String) -> String? {
        guard let value = getenv(name) else { return nil }
        return String(cString: value)
    }
}
