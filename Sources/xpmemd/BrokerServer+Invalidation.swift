import Logging
import XPMEMBrokerCore
import XPMEMSystem
import XPMEMWire

/// An attach request parked until an invalidation of its range ends.
struct DeferredAttach: Equatable {
    var connection: UInt64
    var client: ClientID
    var requestID: UInt32
    var handle: AccessHandle
    var offset: UInt64
    var length: UInt64
}

extension BrokerServer {
    /// The importers an invalidation must wait for: every client mapping part of the range.
    func targets(of request: InvalidationRequest) -> [InvalidationTarget] {
        registry.importers(of: request.segment, overlapping: request.offset, length: request.length).map { client in
            let connection = connectionOfClient[client].flatMap { connections[$0] }
            return InvalidationTarget(client: client, pid: connection?.credentials.pid ?? 0,
                                      subscribed: connection?.events != nil)
        }
    }

    /// Carries out the coordinator's decisions.
    func apply(_ effects: [InvalidationEffect]) {
        for effect in effects {
            switch effect {
            case .notify(let client, let message):
                notify(client, message)
            case .reply(let client, let requestID, let message):
                if case .invalidated(let report) = message { log(report) }
                reply(client, requestID: requestID, message)
            case .revokeGrants(let client, let segment):
                let revoked = registry.revokeGrants(of: client, on: segment)
                notify(client, .released(segment, reason: .deadlineMissed))
                logger.warning("importer missed an invalidation deadline; its grants were revoked", metadata: [
                    "client": "\(client.rawValue)", "segid": "\(segment)", "grants": "\(revoked)",
                ])
            case .ready(let request):
                apply(coordinator.start(request, targets: targets(of: request), now: now))
            case .rangeReopened(let segment):
                retryDeferredAttaches(on: segment)
            }
        }
    }

    /// Serves the attaches that waited for `segment`'s invalidation, in arrival order; those still
    /// blocked by a queued invalidation park again.
    private func retryDeferredAttaches(on segment: SegmentID) {
        let waiting = deferredAttaches.filter { registry.grants[$0.handle]?.segment == segment || registry.grants[$0.handle] == nil }
        guard !waiting.isEmpty else { return }
        deferredAttaches.removeAll { waiting.contains($0) }
        for request in waiting {
            guard let connection = connections[request.connection] else { continue }
            let outcome: Outcome?
            do throws(BrokerError) {
                outcome = try attach(request)
            } catch {
                outcome = Outcome(message: .failure(error.code, error.message))
            }
            if let outcome {
                send(outcome.message, requestID: request.requestID, descriptors: outcome.descriptors,
                     on: connection.main, of: connection)
            }
        }
    }

    private func log(_ report: InvalidationReport) {
        let missed = report.importers.filter { $0.outcome == .missedDeadline }.map { "pid \($0.pid)" }
        logger.info("invalidation acknowledged", metadata: [
            "segid": "\(report.segment)", "sequence": "\(report.sequence)", "importers": "\(report.importers.count)",
            "elapsedMicroseconds": "\(report.elapsedMicroseconds)", "missed": "\(missed.joined(separator: ","))",
        ])
    }
}
