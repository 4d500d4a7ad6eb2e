@preconcurrency import Glibc

/// How long a waiter busy-polls before it blocks in the kernel. On this class of machine a blocking
/// cross-core wake-up costs tens of microseconds while polling notices a message in well under one,
/// so a short spin right after sending a request (or serving one) catches the answer (or the next
/// request) at polling speed; past the budget the waiter sleeps and costs nothing.
///
/// Every poll that finds nothing yields the CPU. The process that must answer is often runnable on
/// this very CPU (the kernel wakes a task near its waker; a node runs as many ranks as it has cores,
/// and the broker shares one of them), and without the yield the scheduler lets the spinner run out
/// its budget first: each request or reply then cost the whole budget on top of the wake-up. With
/// nobody else runnable, the yield returns at once.
public struct SpinPolicy: Sendable {
    /// Zero disables spinning.
    public var budgetNanoseconds: UInt64

    public init(microseconds: Int) { budgetNanoseconds = UInt64(max(microseconds, 0)) * 1000 }

    /// The budget from environment variable `name` (microseconds), else `defaultMicroseconds`.
    public static func fromEnvironment(_ name: String, defaultMicroseconds: Int) -> SpinPolicy {
        if let text = getenv(name).map({ String(cString: $0) }), let value = Int(text) {
            return SpinPolicy(microseconds: value)
        }
        return SpinPolicy(microseconds: defaultMicroseconds)
    }

    /// Calls `attempt` until it returns a value or the budget is spent; nil means: now block.
    /// `T` may be noncopyable (a received message that owns descriptors), and `attempt`'s error type
    /// is kept, so a typed `throws(Errno)` stays typed. Inlinable, so that it is specialized where it
    /// is used (the broker's loop and every polled reply) instead of running as generic code.
    @inlinable
    public func spin<T: ~Copyable, Failure: Error>(_ attempt: () throws(Failure) -> T?) throws(Failure) -> T? {
        guard budgetNanoseconds > 0 else { return nil }
        let start = SharedMemoryAccess.monotonicNanoseconds()
        repeat {
            if let value = try attempt() { return value }
            ThisProcess.yieldProcessor()
        } while SharedMemoryAccess.monotonicNanoseconds() - start < budgetNanoseconds
        return nil
    }
}

extension SpinPolicy {
    /// The cores online, read once: `sysconf` reads a sysfs file on every call.
    public static let onlineCores = ThisProcess.onlineProcessors

    /// Whether polling for an answer pays while `others` processes must run before it can come: only
    /// while they leave a core free. As many as the cores or more, a poller takes a core the very
    /// processes it waits for need.
    public static func pollingPays(whileWaitingFor others: Int, cores: Int = onlineCores) -> Bool { others < cores }
}
