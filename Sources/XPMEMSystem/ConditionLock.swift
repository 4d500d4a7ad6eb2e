import Glibc

/// A value behind a lock that a thread can sleep on until another thread changes it: what
/// `Mutex` cannot do. The corresponding C types are `pthread_mutex_t` and `pthread_cond_t`.
public final class ConditionLock<Value: Sendable>: @unchecked Sendable {
    // Allocated, not stored inline: pthread objects must not move, and a class's stored
    // properties have no stable address to hand to C.
    @usableFromInline let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    @usableFromInline let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    // Read and written only with `mutex` held: that is what makes the class Sendable.
    @usableFromInline var value: Value

    public init(_ value: Value) {
        self.value = value
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    /// Reads or changes the value under the lock, then wakes every thread in `wait`, which looks at
    /// the value again. Inlinable so that callers in other modules get it specialized for their
    /// value: an event thread takes locks on every event.
    @inlinable
    public func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        pthread_mutex_lock(mutex)
        defer {
            pthread_cond_broadcast(condition)
            pthread_mutex_unlock(mutex)
        }
        return try body(&value)
    }

    /// Sleeps until `isReady` holds for the value (checked under the lock, first at once).
    @inlinable
    public func wait(until isReady: (Value) -> Bool) {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while !isReady(value) {
            pthread_cond_wait(condition, mutex)
        }
    }
}
