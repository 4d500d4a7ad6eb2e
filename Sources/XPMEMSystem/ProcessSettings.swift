@preconcurrency import Glibc

/// Process-wide settings a daemon makes once at start.
public enum ProcessSettings {
    /// Sets the file-creation mask and returns the previous one. The corresponding C function is `umask`.
    @discardableResult
    public static func setFileCreationMask(_ mask: mode_t) -> mode_t { umask(mask) }

    /// Makes writes to a closed socket fail with `EPIPE` instead of killing the process.
    public static func ignoreBrokenPipes() { signal(SIGPIPE, SIG_IGN) }

    /// The signals that ask a daemon to stop cleanly.
    public static let terminationSignals: [CInt] = [SIGTERM, SIGINT]
}
