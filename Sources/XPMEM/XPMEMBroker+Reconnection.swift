import Synchronization
import XPMEMSystem
import XPMEMWire

/// A reference that does not keep its object alive.
struct WeakReference<Object: AnyObject & Sendable>: @unchecked Sendable {
    weak var object: Object?
}

/// The segments and grants of a connection, for a reconnection to restore.
struct Tracked {
    var segments: [ObjectIdentifier: WeakReference<ExportedSegment>] = [:]
    var grants: [ObjectIdentifier: WeakReference<SegmentGrant>] = [:]

    mutating func live() -> (segments: [ExportedSegment], grants: [SegmentGrant]) {
        segments = segments.filter { $0.value.object != nil }
        grants = grants.filter { $0.value.object != nil }
        return (segments.values.compactMap(\.object).sorted { $0.id < $1.id },
                grants.values.compactMap(\.object).sorted { $0.segment < $1.segment })
    }
}

struct ReconnectionState {
    var clientName = ""
    /// The reconnection thread runs (reconnecting, or retrying grants whose segment is not back).
    var running = false
    var handler: (@Sendable (BrokerConnectionEvent) -> Void)?
}

extension XPMEMBroker {
    /// Sets (or, with nil, removes) the function told when the broker goes away, when the connection
    /// comes back and what it restored. It runs on a thread of the library's own.
    public func setConnectionEventHandler(_ handler: (@Sendable (BrokerConnectionEvent) -> Void)?) {
        reconnection.withLock { $0.handler = handler }
    }

    @discardableResult
    func track(_ segment: ExportedSegment) -> ExportedSegment {
        tracked.withLock { $0.segments[ObjectIdentifier(segment)] = WeakReference(object: segment) }
        // The event channel's end is how an exporter learns at once that the broker went away, so
        // that it registers its segments again before importers come asking for them.
        _ = try? subscription()
        return segment
    }

    func track(_ grant: SegmentGrant) {
        tracked.withLock { $0.grants[ObjectIdentifier(grant)] = WeakReference(object: grant) }
    }

    private func emit(_ event: BrokerConnectionEvent) {
        reconnection.withLock { $0.handler }?(event)
    }

    /// The socket of `generation` failed, or its event channel ended: unless the application closed
    /// the connection, start reconnecting (once).
    func connectionLost(generation: UInt64, reason: String) {
        guard !channel.isClosedByOwner, generation == channel.generation else { return }
        channel.markLost(generation: generation, reason: reason)
        guard reconnectPolicy.isEnabled else {
            channel.setDownReason("\(reason); reconnection is disabled")
            return
        }
        let start = reconnection.withLock { state in
            defer { state.running = true }
            return !state.running
        }
        guard start else { return }
        channel.setDownReason("\(reason); reconnecting in the background")
        do {
            try DetachedThread.start { [weak self] in
                self?.emit(.lost(reason: reason))
                Self.reconnectionLoop(WeakReference(object: self))
            }
        } catch {
            reconnection.withLock { $0.running = false }
            channel.setDownReason("\(reason); the reconnection thread could not start: \(error)")
        }
    }

    /// Reconnects with backoff, restores, then retries grants whose segment is not back, until
    /// nothing is left to do, the policy's time is up, or the application lets go of the connection.
    private static func reconnectionLoop(_ reference: WeakReference<XPMEMBroker>) {
        var delay = reference.object?.reconnectPolicy.firstDelay ?? .zero
        var deadline = Deadline(after: reference.object?.reconnectPolicy.giveUpAfter ?? .zero)
        while true {
            guard let broker = reference.object else { return }
            let policy = broker.reconnectPolicy
            if broker.channel.isClosedByOwner {
                broker.reconnection.withLock { $0.running = false }
                return
            }
            if !broker.channel.isConnected {
                do throws(XPMEMError) {
                    let restoration = try broker.reconnectOnce()
                    broker.emit(.reconnected(restoration))
                    delay = policy.firstDelay
                    deadline = Deadline(after: policy.giveUpAfter)
                    continue
                } catch {
                    if deadline.hasPassed {
                        let reason = "no broker answered at \(broker.socketPath) for \(policy.giveUpAfter): \(error.message)"
                        broker.channel.setDownReason("gave up reconnecting: " + reason)
                        broker.reconnection.withLock { $0.running = false }
                        broker.emit(.gaveUp(reason: reason))
                        return
                    }
                }
            } else {
                let outstanding = broker.restoreOutstanding(giveUp: deadline.hasPassed)
                if outstanding == 0 {
                    // Checked under the lock `connectionLost` starts threads under, after its socket
                    // was marked lost: a loss now either is seen here or starts a new thread.
                    let done = broker.reconnection.withLock { state in
                        guard broker.channel.isConnected || broker.channel.isClosedByOwner else { return false }
                        state.running = false
                        return true
                    }
                    if done { return }
                    continue
                }
            }
            ThisProcess.sleep(microseconds: Int(delay.microseconds))
            delay = min(delay * 2, policy.maximumDelay)
        }
    }

    /// One attempt: connect, hello, a new event channel, every segment registered again, every
    /// grant obtained again (those whose segment is back), all on a socket nobody else uses yet;
    /// then that socket becomes the connection's. Throws on a failure of the connection itself.
    private func reconnectOnce() throws(XPMEMError) -> Restoration {
        let fresh = try BrokerChannel(path: channel.path, replyTimeoutMilliseconds: 30_000)
        let (clientID, brokerPID) = try Self.hello(on: fresh, name: reconnection.withLock { $0.clientName })
        let generation = channel.reserveGeneration()
        var restoration = Restoration(clientID: clientID, brokerPID: brokerPID)
        let (segments, grants) = tracked.withLock { $0.live() }
        var abandoned: [(SegmentID, String)] = []
        let needsEvents = !segments.isEmpty || !grants.isEmpty || events.withLock { $0.subscription != nil }
        let subscription = needsEvents ? try openSubscription(on: fresh, generation: generation, installed: false) : nil
        for segment in segments where segment.needsRestoring(for: generation) {
            do throws(XPMEMError) {
                try segment.restore(on: fresh, generation: generation, installed: false)
                restoration.segments.append(segment.id)
            } catch where error.code == .brokerUnavailable {
                throw error
            } catch {
                segment.abandon()
                abandoned.append((segment.id, error.message))
            }
        }
        for grant in grants where grant.needsRestoring(for: generation) {
            do throws(XPMEMError) {
                restoration.attachments += try grant.restore(on: fresh, generation: generation, installed: false)
                restoration.grants.append(grant.segment)
            } catch where error.code == .brokerUnavailable {
                throw error
            } catch where error.code == .notFound {
                restoration.pending.append(grant.segment)
            } catch {
                grant.abandon()
                abandoned.append((grant.segment, error.message))
            }
        }
        guard channel.install(fresh, as: generation) else {
            throw XPMEMError(.alreadyClosed, "the connection was closed while reconnecting")
        }
        peer.withLock { $0 = (clientID, brokerPID) }
        if let subscription { events.withLock { $0.subscription = subscription } }
        for (segment, reason) in abandoned { emit(.abandoned(segment, reason: reason)) }
        return restoration
    }

    /// Restores, on the installed socket, what the reconnection could not (grants whose segment was
    /// not back yet, objects made while it ran); returns how many are still outstanding. With
    /// `giveUp`, what is outstanding is abandoned instead.
    private func restoreOutstanding(giveUp: Bool) -> Int {
        let generation = channel.generation
        let (segments, grants) = tracked.withLock { $0.live() }
        var outstanding = 0
        for segment in segments where segment.needsRestoring(for: generation) {
            do throws(XPMEMError) {
                try segment.restore(on: channel, generation: generation, installed: true)
            } catch where error.code == .brokerUnavailable {
                outstanding += 1
            } catch {
                segment.abandon()
                emit(.abandoned(segment.id, reason: error.message))
            }
        }
        for grant in grants where grant.needsRestoring(for: generation) {
            do throws(XPMEMError) {
                let attachments = try grant.restore(on: channel, generation: generation, installed: true)
                emit(.grantRestored(grant.segment, attachments: attachments))
            } catch where error.code == .brokerUnavailable {
                outstanding += 1
            } catch where error.code == .notFound && !giveUp {
                outstanding += 1
            } catch {
                grant.abandon()
                emit(.abandoned(grant.segment, reason: error.message))
            }
        }
        return outstanding
    }
}

/// A point in time on the monotonic clock.
private struct Deadline {
    let nanoseconds: UInt64

    init(after duration: Duration) {
        nanoseconds = SharedMemoryAccess.monotonicNanoseconds() &+ UInt64(max(duration.microseconds, 0)) * 1000
    }

    var hasPassed: Bool { SharedMemoryAccess.monotonicNanoseconds() >= nanoseconds }
}

extension Duration {
    /// Whole microseconds (negative durations give 0).
    var microseconds: Int64 {
        let (seconds, attoseconds) = components
        guard seconds >= 0 else { return 0 }
        return seconds &* 1_000_000 &+ attoseconds / 1_000_000_000_000
    }
}
