import XPMEMWire

/// A memfd the daemon hands over with a reply: the segment's file, opened as the grant allows.
public struct SegmentFileHandOver: Equatable, Sendable {
    public var segment: SegmentID
    public var access: AccessMode

    public init(segment: SegmentID, access: AccessMode) {
        self.segment = segment
        self.access = access
    }
}

/// What the daemon must do to carry out one of the core's decisions. The core performs no I/O: it
/// says which frame goes to whom, which descriptors to keep or close, which connection to end.
public enum BrokerEffect: Equatable, Sendable {
    /// Send `message` on one of the peer's sockets; with `handOver`, the segment's memfd travels with it.
    case send(PeerID, PeerChannel, requestID: UInt32, Message, handOver: SegmentFileHandOver? = nil)
    /// The descriptors that came with the `make` being handled now back this segment: keep them. With
    /// `sharing`, they are of the same file as that live segment's: back this one with those instead
    /// (the new ones close), so that the file is held once.
    case keepSegmentFiles(SegmentID, sharing: SegmentID? = nil)
    /// Free the segment file's pages in these byte ranges (`fallocate(PUNCH_HOLE)`): every process
    /// mapping them reads zeros there afterwards. Only ever ranges hinted free and not written since,
    /// and only if the owner's connection `owner` has not hung up meanwhile (an owner whose
    /// connection is gone lets its writes through without telling the broker).
    case dropPages(SegmentID, [Range<UInt64>], owner: PeerID?)
    /// The segment is gone: close the broker's descriptors of it.
    case discardSegmentFiles(SegmentID)
    /// The socket that came with the `subscribe` being handled is now the peer's event channel.
    case adoptEventChannel(PeerID)
    /// Watch the peer's process (a pidfd), so its death is seen even if a child inherited its socket.
    case watchProcess(PeerID, pid: Int32)
    /// End the connection once the frames already queued for it are sent.
    case close(PeerID, reason: String)
    /// Something worth a line in the log; the daemon chooses the level.
    case note(BrokerNote)
}

/// Events an operator may want to read about. Routine ones (joins, leaves, makes) are logged at
/// debug level; refusals by quota and missed deadlines are rarer and louder.
public enum BrokerNote: Equatable, Sendable {
    case clientJoined(ClientID, name: String, pid: Int32, uid: UInt32)
    case clientLeft(ClientID, pid: Int32, reason: String, segmentsRemoved: Int, grantsReleased: Int)
    case segmentMade(SegmentID, size: UInt64, permit: Permit, pid: Int32)
    /// A segment registered again under its previous id, by its owner after a restart of the broker.
    case segmentReclaimed(SegmentID, size: UInt64, permit: Permit, pid: Int32, uid: UInt32)
    case segmentRemoved(SegmentID, importersTold: Int)
    /// The owner moved the segment to a fresh memfd, which `importersTold` importers were sent.
    case segmentFileReplaced(SegmentID, importersTold: Int)
    /// The new file could not be sent to an importer, whose grants on the segment were revoked.
    case fileNotDelivered(ClientID, SegmentID, grantsRevoked: Int)
    case placementDescribed(SegmentID, String)
    /// A request or a connection was refused because a quota or the descriptor budget was reached.
    case quotaReached(uid: UInt32, pid: Int32, String)
    case deadlineMissed(ClientID, SegmentID, grantsRevoked: Int)
    /// A client broke the protocol in a way that hurts only its own requests (malformed backed extents).
    case misbehaved(uid: UInt32, pid: Int32, String)
    case invalidationAcknowledged(InvalidationReport)
    /// Memory pressure dropped the pages hinted free of `segments` segments.
    case freePagesDropped(segments: Int, bytes: UInt64)
}
