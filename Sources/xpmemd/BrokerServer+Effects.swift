import Logging
import XPMEMBrokerCore
import XPMEMSystem
import XPMEMWire

extension BrokerServer {
    /// Carries out the core's decisions, in order. `incoming` holds the descriptors that came with the
    /// request being answered, for the effects that keep them.
    func apply(_ effects: [BrokerEffect], incoming: IncomingDescriptors? = nil) {
        for effect in effects {
            switch effect {
            case .send(let peer, let channelKind, let requestID, let message, let handOver):
                guard let connection = connections[peer], let channel = connection.channel(channelKind) else { continue }
                send(message, requestID: requestID, handOver: handOver, on: channel, of: connection)
            case .keepSegmentFiles(let segment, let sharing):
                // The core found the same file behind a live window of this client: the descriptors that
                // came now close with `incoming`, the held ones back both.
                if let sharing, let held = segmentFiles[sharing] {
                    segmentFiles[segment] = held
                } else {
                    if let sharing {
                        // The core counts one file for both; holding two would spend descriptors it does not count.
                        logger.error("no files held for \(sharing), whose file \(segment) shares; keeping its own")
                    }
                    segmentFiles[segment] = incoming?.segmentFiles.take()
                }
            case .dropPages(let segment, let ranges, let owner):
                dropPages(of: segment, in: ranges, owner: owner)
            case .discardSegmentFiles(let segment):
                // Descriptors close only with the last window of a shared file; only then is there room.
                if var files = segmentFiles.removeValue(forKey: segment), isKnownUniquelyReferenced(&files) {
                    resumeAcceptingIfPaused()
                }
            case .adoptEventChannel(let peer):
                adoptEventChannel(of: peer, incoming: incoming)
            case .watchProcess(let peer, let pid):
                watchProcess(of: peer, pid: pid)
            case .close(let peer, let reason):
                if let connection = connections[peer] {
                    close(connection, reason: reason)
                } else {
                    apply(core.peerDeparted(peer, reason: reason, now: now))
                }
            case .note(let note):
                log(note)
            }
        }
    }

    /// Frees pages hinted free, unless the owner has hung up: its library may have let writes through
    /// that it could no longer report (the hang-up is not yet handled, or it would have no hints). A
    /// failure leaves the pages in place, which costs memory and nothing else.
    private func dropPages(of segment: SegmentID, in ranges: [Range<UInt64>], owner: PeerID?) {
        guard let files = segmentFiles[segment], let owner, let connection = connections[owner] else { return }
        for range in ranges {
            // Checked again before each range: the owner may hang up while the broker punches.
            guard !UnixSocket.peerHasHungUp(connection.main.socket) else { return }
            do {
                try MemoryFile.dropPages(of: files.readWrite, in: range)
            } catch {
                logger.warning("could not drop free pages", metadata: [
                    "segid": "\(segment)", "offset": "\(range.lowerBound)", "error": "\(error)",
                ])
            }
        }
    }

    /// Ends a connection once what is queued for it is sent; nothing more is read from it.
    func close(_ connection: PeerConnection, reason: String) {
        connection.closing = reason
        if connection.main.outbound.isEmpty {
            drop(connection.peer, reason: reason)
        } else {
            updateInterest(connection.main, of: connection)
        }
    }

    private func adoptEventChannel(of peer: PeerID, incoming: IncomingDescriptors?) {
        guard let connection = connections[peer], let socket = incoming?.eventSocket.take() else { return }
        let channel = Channel(socket: socket, kind: .events)
        do {
            try channel.socket.setNonBlocking(true)
            try poll.add(channel.socket, events: .readable, token: connection.token(for: channel))
        } catch {
            drop(peer, reason: "cannot watch its event socket: \(error)")
            return
        }
        connection.events = channel
    }

    /// A pidfd tells when the peer's process dies even if a child inherited its socket.
    private func watchProcess(of peer: PeerID, pid: Int32) {
        guard let connection = connections[peer] else { return }
        do {
            let handle = try ProcessHandle.open(pid: pid)
            try poll.add(handle, events: .readable, token: .peer(peer, .process))
            connection.processHandle = .some(handle)
        } catch {
            logger.debug("no pidfd for pid \(pid) (\(error)): only socket EOF will tell when it exits")
        }
    }

    /// Routine events go to the debug level, so that connection churn does not flood the log.
    private func log(_ note: BrokerNote) {
        switch note {
        case .clientJoined(let client, let name, let pid, let uid):
            logger.debug("client joined", metadata: ["client": "\(client.rawValue)", "name": "\(name)", "pid": "\(pid)",
                                                      "uid": "\(uid)"])
        case .clientLeft(let client, let pid, let reason, let removed, let released):
            logger.debug("client left", metadata: [
                "client": "\(client.rawValue)", "pid": "\(pid)", "reason": "\(reason)",
                "segmentsRemoved": "\(removed)", "grantsReleased": "\(released)",
            ])
        case .segmentMade(let segment, let size, let permit, let pid):
            logger.debug("segment made", metadata: ["segid": "\(segment)", "size": "\(size)", "mode": "\(permit)",
                                                     "pid": "\(pid)"])
        case .segmentReclaimed(let segment, let size, let permit, let pid, let uid):
            logger.debug("segment reclaimed", metadata: ["segid": "\(segment)", "size": "\(size)", "mode": "\(permit)",
                                                          "pid": "\(pid)", "uid": "\(uid)"])
        case .segmentRemoved(let segment, let told):
            logger.debug("segment removed", metadata: ["segid": "\(segment)", "importersTold": "\(told)"])
        case .segmentFileReplaced(let segment, let told):
            logger.info("segment moved to a fresh file", metadata: ["segid": "\(segment)", "importersTold": "\(told)"])
        case .fileNotDelivered(let client, let segment, let grants):
            logger.warning("could not send an importer the segment's new file; its grants were revoked", metadata: [
                "client": "\(client.rawValue)", "segid": "\(segment)", "grants": "\(grants)",
            ])
        case .placementDescribed(let segment, let placement):
            logger.debug("segment placement", metadata: ["segid": "\(segment)", "placement": "\(placement)"])
        case .quotaReached(let uid, let pid, let text):
            logThrottled(&refusals, "refused pid \(pid) uid \(uid): \(text)")
        case .misbehaved(let uid, let pid, let text):
            logThrottled(&refusals, "pid \(pid) uid \(uid) \(text)")
        case .deadlineMissed(let client, let segment, let grants):
            logger.warning("importer missed an invalidation deadline; its grants were revoked", metadata: [
                "client": "\(client.rawValue)", "segid": "\(segment)", "grants": "\(grants)",
            ])
        case .freePagesDropped(let segments, let bytes):
            logger.info("memory pressure: dropped pages hinted free", metadata: [
                "segments": "\(segments)", "bytes": "\(bytes)",
            ])
        case .invalidationAcknowledged(let report):
            // Everything in the message is built only when debug logging is on (an autoclosure):
            // this runs for every invalidation.
            logger.debug("invalidation acknowledged", metadata: [
                "segid": "\(report.segment)", "sequence": "\(report.sequence)", "importers": "\(report.importers.count)",
                "elapsedMicroseconds": "\(report.elapsedMicroseconds)",
                "missed": "\(report.importers.filter { $0.outcome == .missedDeadline }.map { "pid \($0.pid)" }.joined(separator: ","))",
            ])
        }
    }
}
