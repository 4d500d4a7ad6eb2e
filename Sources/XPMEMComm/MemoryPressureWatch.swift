import Synchronization
import SystemPackage
import XPMEMSystem

/// Counts memory-pressure events (a pressure-stall trigger, `MemoryPressureTrigger`, on the process's
/// cgroup v2 `memory.pressure` where it has one, else the machine's),
/// for every attachment cache of the process: one thread, asleep in `poll` while there is no
/// pressure, so a machine with none pays nothing. Each event runs the caches' handlers on that
/// thread (so that a rank idle between operations gives back too); caches also compare the count
/// with the one they last acted on.
final class MemoryPressureWatch: Sendable {
    static let shared = MemoryPressureWatch(watchingTheKernel: true)

    private let counter = EventCounter()
    private let handlers = Mutex<(next: UInt64, byToken: [UInt64: @Sendable () -> Void])>((0, [:]))

    var events: Int { counter.value }

    /// Runs `handler` after each event, until `unsubscribe(token)`.
    func subscribe(_ handler: @escaping @Sendable () -> Void) -> UInt64 {
        handlers.withLock { handlers in
            handlers.next += 1
            handlers.byToken[handlers.next] = handler
            return handlers.next
        }
    }

    func unsubscribe(_ token: UInt64) {
        _ = handlers.withLock { $0.byToken.removeValue(forKey: token) }
    }

    /// Counts an event, then runs the handlers (outside the lock: a handler may unsubscribe).
    private func record() {
        counter.increment()
        for handler in handlers.withLock({ Array($0.byToken.values) }) { handler() }
    }

    /// Tests make their own, not watching the kernel, and stand in for it with `simulateEvent()`.
    /// Where the kernel has no PSI, or refuses the trigger, no event ever comes: the cache is then
    /// bounded by its limits alone.
    init(watchingTheKernel: Bool) {
        guard watchingTheKernel else { return }
        start(try? TriggerBox(MemoryPressureTrigger.armForThisProcess()))
    }

    /// Watches the pressure file at `path` (a test's: the memory cgroup it makes the pressure in).
    init(triggerPath path: String) {
        start(try? TriggerBox(MemoryPressureTrigger.arm(path: path)))
    }

    /// The thread holds the watch, so a watch that started one lives as long as the process (the
    /// shared one does anyway; a test's costs a sleeping thread and a descriptor).
    private func start(_ trigger: TriggerBox?) {
        guard let trigger else { return }
        _ = try? DetachedThread.start { [self] in
            while MemoryPressureTrigger.wait(for: trigger.descriptor) { record() }
        }
    }

    /// Tests stand in for the kernel (the handlers run on the caller's thread).
    func simulateEvent() { record() }

    private final class EventCounter: Sendable {
        private let count = Atomic<Int>(0)
        var value: Int { count.load(ordering: .acquiring) }
        func increment() { count.add(1, ordering: .releasing) }
    }

    /// Keeps the trigger open for the life of the thread that waits on it.
    private final class TriggerBox: Sendable {
        let descriptor: OwnedDescriptor
        init(_ descriptor: consuming OwnedDescriptor) { self.descriptor = descriptor }
    }
}
