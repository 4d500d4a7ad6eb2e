import Synchronization
import XPMEMSystem
import XPMEMWire

extension ExportedSegment {
    /// Changes a range that importers may map, the safe way (like an mmu notifier's
    /// `invalidate_range_start`/`end`): every importer mapping part of the range runs its
    /// `willInvalidate` callback and stops access, then acknowledges; once all have (or `deadline`
    /// has passed, and the laggards' grants were revoked), `change` runs; then importers get access
    /// back and run `didInvalidate`.
    ///
    /// - Parameters:
    ///   - offset, length: the page-aligned range; by default the whole segment.
    ///   - deadline: how long importers get to acknowledge. The call never waits much longer.
    ///   - reason: passed to the importers' callbacks.
    ///   - change: the modification, made while no importer can see the range.
    /// - Returns: who acknowledged, how long each took, who missed the deadline.
    @discardableResult
    public func invalidate(
        offset: Int = 0, length: Int? = nil, deadline: Duration = .seconds(5), reason: InvalidationReason = .reuse,
        during change: () throws -> Void = {}
    ) throws -> InvalidationReport {
        let report = try beginInvalidation(offset: offset, length: length, deadline: deadline, reason: reason)
        do {
            try change()
        } catch {
            try? endInvalidation(report)
            throw error
        }
        try endInvalidation(report)
        return report
    }

    /// The first half of `invalidate`: returns once every affected importer has acknowledged or the
    /// deadline passed. The range stays invalid for importers until `endInvalidation(report)`.
    public func beginInvalidation(
        offset: Int = 0, length: Int? = nil, deadline: Duration = .seconds(5), reason: InvalidationReason = .reuse
    ) throws(XPMEMError) -> InvalidationReport {
        let length = length ?? (size - offset)
        let message = Message.invalidate(
            id, offset: UInt64(max(offset, 0)), length: UInt64(max(length, 0)),
            deadlineMilliseconds: deadline.milliseconds, reason: reason, holdForChange: true)
        let reply = try broker.channel.request(message, replyWait: replyWaitForInvalidation())
        guard case .invalidated(let report) = reply.message else { throw BrokerChannel.unexpected(reply.message, for: message) }
        state.withLock { $0.lastInvalidationImporters = report.importers.count }
        return report
    }

    /// How the next invalidation of this segment waits for its reply.
    func replyWaitForInvalidation() -> BrokerChannel.ReplyWait {
        .forInvalidation(lastImporters: state.withLock { $0.lastInvalidationImporters }, cores: SpinPolicy.onlineCores)
    }

    /// The second half of `invalidate`: importers may access the range again.
    ///
    /// When an importer missed the deadline (`report` says `.missedDeadline`), its grants are gone but
    /// the memfd it was given still aliases the segment's pages: before access comes back, the pages
    /// move to a fresh memfd (`moveToFreshFile`), inside this window when it covers the whole segment,
    /// else in a window of its own over the whole segment (reason `.revoke`) right after this one.
    /// As for `exportRange`, no other thread of this process may write the segment meanwhile.
    public func endInvalidation(_ report: InvalidationReport) throws(XPMEMError) {
        let revoked = report.importers.contains { $0.outcome == .missedDeadline }
        let coversSegment = report.offset == 0 && report.length >= UInt64(size)
        if revoked && coversSegment {
            try moveToFreshFile(thenEnd: report)
            return
        }
        try broker.channel.requestDone(.endInvalidation(id, sequence: report.sequence))
        if revoked {
            try moveToFreshFile(thenEnd: beginInvalidation(deadline: .seconds(5), reason: .revoke))
        }
    }

    /// Moves the segment to a fresh file inside `window` (over the whole segment), then ends it, also
    /// when the move failed. Importers that miss this window's deadline lose their grants too, and
    /// the move cuts them off as well.
    private func moveToFreshFile(thenEnd window: InvalidationReport) throws(XPMEMError) {
        var moveFailure: XPMEMError?
        let removedBefore = state.withLock { $0.removed }
        do throws(XPMEMError) { try moveToFreshFile() } catch { moveFailure = error }
        if let moveFailure, !removedBefore, lostItsFile {
            // A hugetlb move that let its emptied file go: the segment is withdrawn inside the window
            // (its bytes are private here), so that no importer ever gets the empty file back as the
            // segment; the broker tells them it is released.
            state.withLock { $0.removed = true }
            do throws(XPMEMError) {
                try broker.channel.requestDone(.remove(id))
            } catch {
                throw XPMEMError(error.code,
                    "\(moveFailure.message); and withdrawing it failed too (\(error.message)): importers may map the emptied file")
            }
            throw moveFailure
        }
        try broker.channel.requestDone(.endInvalidation(id, sequence: window.sequence))
        if let moveFailure { throw moveFailure }
    }
}

extension XPMEMBroker {
    /// An operator's invalidation of someone's segment (`xpmemctl invalidate`): importers of the range
    /// stop access and acknowledge, then get it back at once. Needs the segment owner's uid or root.
    public func invalidate(
        _ segment: SegmentID, offset: Int, length: Int, deadline: Duration = .seconds(5),
        reason: InvalidationReason = .requestedByOperator
    ) throws(XPMEMError) -> InvalidationReport {
        let message = Message.invalidate(
            segment, offset: UInt64(max(offset, 0)), length: UInt64(max(length, 0)),
            deadlineMilliseconds: deadline.milliseconds, reason: reason, holdForChange: false)
        let reply = try channel.request(message)
        guard case .invalidated(let report) = reply.message else { throw BrokerChannel.unexpected(reply.message, for: message) }
        return report
    }
}

extension Duration {
    /// Whole milliseconds, clamped to what the wire carries.
    var milliseconds: UInt32 {
        let (seconds, attoseconds) = components
        guard seconds >= 0 else { return 0 }
        return UInt32(clamping: seconds * 1000 + attoseconds / 1_000_000_000_000_000)
    }
}

extension BrokerChannel.ReplyWait {
    /// An invalidation's reply waits for every importer's acknowledgement: the exporter polls for it
    /// where polling pays with as many importers as the segment's last invalidation reached, as the
    /// broker does (saving the wake-up); before the first, the count is unknown: sleep.
    static func forInvalidation(lastImporters: Int?, cores: Int) -> Self {
        guard let lastImporters, SpinPolicy.pollingPays(whileWaitingFor: lastImporters, cores: cores) else { return .sleep }
        return .pollThenSleep
    }
}
