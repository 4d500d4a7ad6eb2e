import Synchronization
import XPMEMSystem
import XPMEMWire

extension ExportedSegment {
    /// Says that the segment's pages in `offset..<offset+length` hold nothing this process needs
    /// (freed buffers, a scratch area), so that the broker may drop them under memory pressure and a
    /// migration may skip them instead of moving them.
    ///
    /// The guarantee is the kernel's free-page reporting's: the hint covers only the bytes the pages
    /// held before this call. A page written after it, by this process or by the kernel on its behalf
    /// (`read(2)` into it), keeps what was written; a page nobody wrote since may read as zeros later,
    /// for this process and for importers. To keep that promise the pages are write-protected here
    /// (userfaultfd, shmem write-protection, Linux 5.19 or later) and each write is reported to the
    /// broker before it lands.
    ///
    /// Importers' writes cannot be watched (they are made through their own mappings): a segment that
    /// was ever attached read-write by anyone keeps no hints until its file is replaced, and this then
    /// returns 0.
    ///
    /// - Returns: how many of the segment's pages the broker now trusts as free (0, and the hint not
    ///   kept, while the segment moves to a fresh file).
    /// - Throws: `invalidArgument` for an unaligned or out-of-range request, or on a hugetlb segment
    ///   (its pages are the pool's, reserved for it: dropping them would give nothing back to the
    ///   system, and write tracking is per base page); `permissionDenied` when only
    ///   a user-mode userfaultfd is allowed (the kernel's writes into a hinted page would fail with
    ///   `EFAULT`); `alreadyClosed` once the segment is removed.
    @discardableResult
    public func hintFree(offset: Int, length: Int) throws(XPMEMError) -> Int {
        guard hugePages != .hugeTLB else {
            throw XPMEMError(.invalidArgument,
                "segment \(id) has hugetlb pages: they stay reserved for it, so free-page hints would give nothing back")
        }
        guard offset >= 0, length > 0, isPageAligned(offset), isPageAligned(length), offset <= size - length else {
            throw XPMEMError(.invalidArgument,
                "hint \(offset)+\(length) must be page-aligned, non-empty and inside the segment's \(size) bytes")
        }
        guard !broker.isClosing else {
            throw XPMEMError(.alreadyClosed, "the connection to the broker is closing: no hint is taken")
        }
        // A tracker stopped meanwhile (the mapping is being replaced) takes no hint: ask its successor.
        for _ in 0..<3 {
            let tracker = try state.withLock { state throws(XPMEMError) -> FreePageTracker? in
                guard !state.removed else { throw XPMEMError(.alreadyClosed, "segment \(id) was removed") }
                guard !state.movingFile else { return nil }
                if let tracker = state.freePageTracker { return tracker }
                let tracker = try FreePageTracker(segment: id, base: baseAddress, size: size, channel: broker.channel)
                state.freePageTracker = tracker
                return tracker
            }
            // Moving to a fresh file: a hint is advice, and this one is not taken.
            guard let tracker else { return 0 }
            if let trusted = try tracker.hint(offset: offset, length: length) {
                // The connection began closing meanwhile, perhaps after `close()` stopped the trackers
                // it saw: this one ends too (see `XPMEMBroker.close()`).
                if broker.isClosing {
                    stopFreePageTracking()
                    return 0
                }
                return trusted
            }
            state.withLock { state in
                if state.freePageTracker === tracker { state.freePageTracker = nil }
            }
        }
        throw XPMEMError(.brokerInternal, "segment \(id)'s mapping kept being replaced during the hint")
    }

    /// Has the broker drop now the pages hinted free and not written since (they read as zeros from
    /// then on, here and in importers). Migration does this first; memory pressure does it on its own.
    /// - Returns: how many pages were dropped.
    @discardableResult
    public func dropFreePages() throws(XPMEMError) -> Int {
        let reply = try broker.channel.request(.dropFreePages(id))
        guard case .freePages(let count) = reply.message else {
            throw BrokerChannel.unexpected(reply.message, for: .dropFreePages(id))
        }
        return Int(clamping: count)
    }

    /// Whether a free-page hint was ever given (so that a migration asks the broker to drop first).
    var hasFreePageHints: Bool { state.withLock { $0.freePageTracker != nil } }

    /// Has the broker forget the segment's hints and stops watching writes (before the connection
    /// closes: a write after that could not be reported any more, and a drop under way could free
    /// the page it landed on).
    func stopFreePageTracking() {
        state.withLock { $0.freePageTracker.take() }?.forgetHintsAndStop()
    }
}
