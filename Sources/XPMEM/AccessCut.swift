/// How access to part of an attachment was cut for an invalidation, recorded so that the end undoes
/// exactly that and nothing else.
enum AccessCut: Sendable, Equatable {
    /// A writable shared mapping registered for minor faults, its page table entries dropped: touches
    /// sleep. Undone by unregistering and waking the sleepers.
    case sleepOnSharedMapping
    /// A read-only mapping replaced by a private read-only view of the same pages, registered for minor
    /// faults: touches sleep. Undone by mapping the file back, shared, and waking the sleepers.
    case sleepOnPrivateView
    /// An inaccessible reservation in place of the mapping: touches fault (the `.revoke` policy, or the
    /// fallback when the kernel refused to make touches sleep). Undone by mapping the file back.
    case reservation
}
