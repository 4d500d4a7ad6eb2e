import CXPMEMShim
import SystemPackage

/// Starts threads the library owns (never the application's, never a pool's), for work that may
/// block for a long time.
public enum DetachedThread {
    private final class Body {
        let run: @Sendable () -> Void
        init(_ run: @escaping @Sendable () -> Void) { self.run = run }
    }

    /// Runs `body` on a new detached thread. The corresponding C function is `pthread_create`.
    public static func start(_ body: @escaping @Sendable () -> Void) throws(Errno) {
        let context = Unmanaged.passRetained(Body(body)).toOpaque()
        let result = cxpmem_start_detached_thread({ context in
            let body = Unmanaged<Body>.fromOpaque(context!).takeRetainedValue()
            body.run()
        }, context)
        if result != 0 {
            Unmanaged<Body>.fromOpaque(context).release()
            throw Errno(rawValue: result)
        }
    }
}
