@preconcurrency import Glibc
import SystemPackage

/// This process's standard output or error, for code that must write whole lines itself (a
/// launcher relaying its children's lines) rather than through `print`'s buffer.
public enum StandardStream: Sendable {
    case output, error

    private var descriptor: CInt {
        switch self {
        case .output: STDOUT_FILENO
        case .error: STDERR_FILENO
        }
    }

    /// Writes all of `bytes`, in one `write` when the kernel takes them at once (a line up to
    /// PIPE_BUF bytes never interleaves with another writer's on a pipe). Errors are dropped: a
    /// stream that cannot be written leaves nowhere to report them. The corresponding C function is `write`.
    public func write(_ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let written = try? valueOrErrno {
                bytes[offset...].withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
            }
            guard let written, written > 0 else { return }
            offset += written
        }
    }

    /// Writes `text` and a newline.
    public func writeLine(_ text: String) { write(Array((text + "\n").utf8)) }

    /// Sends on what `print` has buffered (stdio buffers whole blocks when the output is a pipe, and a
    /// parent reading this process's lines would wait for them). The corresponding C function is `fflush`.
    public static func flushPrinted() { fflush(stdout) }
}
