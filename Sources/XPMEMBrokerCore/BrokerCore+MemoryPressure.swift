import XPMEMWire

extension BrokerCore {
    /// Free ranges dropped per pressure event at most (one `fallocate` each), so that an event never
    /// holds the broker's thread for long; what is left goes at the next event.
    static let freeRangesPerPressureEvent = 4096

    /// The machine is short of memory: drop pages hinted free and not written since, segment after
    /// segment. Importers and owners read zeros there afterwards, which is all a free hint promised.
    public mutating func memoryPressure() -> [BrokerEffect] {
        let taken = registry.takeFreePages(budget: Self.freeRangesPerPressureEvent)
        guard !taken.isEmpty else { return [] }
        let bytes = taken.reduce(UInt64(0)) { total, segment in
            segment.1.reduce(total) { $0 + ($1.upperBound - $1.lowerBound) }
        }
        return taken.map { segment, ranges in .dropPages(segment, ranges, owner: ownerPeer(of: segment)) }
            + [.note(.freePagesDropped(segments: taken.count, bytes: bytes))]
    }

    /// The connection of the segment's owner, which the daemon checks is still open before dropping:
    /// an owner that hung up may have let writes through without telling.
    func ownerPeer(of segment: SegmentID) -> PeerID? {
        registry.segments[segment].flatMap { peerOfClient[$0.owner] }
    }
}
