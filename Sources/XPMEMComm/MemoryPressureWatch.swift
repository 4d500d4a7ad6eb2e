import Synchronization
import SystemPackage
import XPMEMSystem

/// Counts the machine's memory-pressure events (a pressure-stall trigger, `MemoryPressureTrigger`),
/// for every attachment cache of the process: one thread, asleep in `poll` while there is no
/// pressure, so a machine with none pays nothing. Caches compare the count with the one they last
/// acted on.
final class MemoryPressureWatch: Sendable {
    static let shared = MemoryPressureWatch(watchingTheKernel: true)

    private let counter = EventCounter()

    var events: Int { counter.value }

    /// Tests make their own, not watching the kernel, and stand in for it with `simulateEvent()`.
    /// Where the kernel has no PSI, or refuses the trigger, no event ever comes: the cache is then
    /// bounded by its limits alone.
    init(watchingTheKernel: Bool) {
        guard watchingTheKernel, let trigger = try? TriggerBox(MemoryPressureTrigger.arm()) else { return }
        let counter = self.counter
        _ = try? DetachedThread.start {
            while MemoryPressureTrigger.wait(for: trigger.descriptor) { counter.increment() }
        }
    }

    /// Tests stand in for the kernel.
    func simulateEvent() { counter.increment() }

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
