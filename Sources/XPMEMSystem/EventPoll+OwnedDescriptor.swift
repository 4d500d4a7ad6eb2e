import SystemPackage

extension EventPoll {
    /// Watches a descriptor this process owns; remove it (or close it) before it goes.
    public func add(_ descriptor: borrowing OwnedDescriptor, events: PollEvents, token: UInt64) throws(Errno) {
        try add(descriptor.rawValue, events: events, token: token)
    }

    public func remove(_ descriptor: borrowing OwnedDescriptor) throws(Errno) {
        try remove(descriptor.rawValue)
    }
}
