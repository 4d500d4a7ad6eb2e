import XPMEMWire

/// Free-page hints (`FreePageHints`): only a segment's owner gives them, only for ordinary segments
/// (an address-space file is the owner's live memory, written by paths no hint tracking sees).
extension Registry {
    /// Records a hint; returns how many pages of the segment are trusted free afterwards (0 when a
    /// writable descriptor is out, and the hint is not kept).
    public mutating func hintFree(_ segment: SegmentID, offset: UInt64, length: UInt64, by client: ClientID)
        throws(BrokerError) -> UInt64
    {
        let range = try ownedFreePageRange(segment, offset: offset, length: length, by: client)
        guard segments[segment]?.freePages.add(range) == true else {
            if segments[segment]?.freePages.writableFileHandedOut == true { return 0 }
            throw BrokerError(.resourceExhausted,
                "segment \(segment) already has \(FreePageHints.maximumRanges) separate free ranges; hint larger ranges")
        }
        return (segments[segment]?.freePages.byteCount ?? 0) / limits.pageSize
    }

    /// The owner is about to write the range: its pages stop being free.
    public mutating func forgetFreeHint(_ segment: SegmentID, offset: UInt64, length: UInt64, by client: ClientID)
        throws(BrokerError)
    {
        let range = try ownedFreePageRange(segment, offset: offset, length: length, by: client)
        segments[segment]?.freePages.remove(range)
    }

    /// The owner's request to drop its free pages now: the ranges to drop, forgotten.
    public mutating func takeFreePages(of segment: SegmentID, by client: ClientID) throws(BrokerError) -> [Range<UInt64>] {
        _ = try ownedOrdinarySegment(segment, by: client)
        return segments[segment]?.freePages.takeAll() ?? []
    }

    /// Segments' free pages, forgotten, whole segments until `budget` ranges are taken (at least one
    /// segment's): memory pressure drops them, a bounded amount per event so that the broker's one
    /// thread is never held for long. Each call starts after the segment where the last one stopped
    /// (in id order, round the end), so the rest go at the next events, whatever is hinted meanwhile.
    public mutating func takeFreePages(budget: Int) -> [(SegmentID, [Range<UInt64>])] {
        let hinted = segments.values.filter { !$0.freePages.ranges.isEmpty }.map(\.id).sorted()
        guard !hinted.isEmpty else { return [] }
        let start = freePagesResumeAfter.map { resume in hinted.firstIndex { $0 > resume } ?? 0 } ?? 0
        var taken: [(SegmentID, [Range<UInt64>])] = []
        var count = 0
        for id in hinted[start...] + hinted[..<start] {
            guard count < budget else { break }
            let ranges = segments[id]?.freePages.takeAll() ?? []
            count += ranges.count
            taken.append((id, ranges))
            freePagesResumeAfter = id
        }
        return taken
    }

    /// A writable descriptor of the segment's file is being handed to a client.
    mutating func writableFileHandedOut(of segment: SegmentID) {
        segments[segment]?.freePages.writableFileWasHandedOut()
    }

    /// The owner moved the segment to a fresh file.
    mutating func segmentFileReplaced(_ segment: SegmentID) {
        segments[segment]?.freePages.fileWasReplaced()
    }

    private func ownedOrdinarySegment(_ segment: SegmentID, by client: ClientID) throws(BrokerError) -> SegmentRecord {
        guard let record = segments[segment] else { throw Registry.segmentNotFound(segment) }
        guard record.owner == client else {
            throw BrokerError(.permissionDenied, "only the owner of segment \(segment) may hint its pages free")
        }
        guard record.addressSpaceBase == nil else {
            throw BrokerError(.invalidArgument,
                "segment \(segment) is a window of its owner's address space; free-page hints are for ordinary segments")
        }
        return record
    }

    private func ownedFreePageRange(_ segment: SegmentID, offset: UInt64, length: UInt64, by client: ClientID)
        throws(BrokerError) -> Range<UInt64>
    {
        let record = try ownedOrdinarySegment(segment, by: client)
        guard offset % record.pageSize == 0, length % record.pageSize == 0 else {
            throw BrokerError(.invalidArgument,
                "offset \(offset) and length \(length) must be multiples of segment \(segment)'s page size \(record.pageSize)")
        }
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, end <= record.size else {
            throw BrokerError(.invalidArgument, "range \(offset)+\(length) lies outside segment \(segment) of \(record.size) bytes")
        }
        return offset..<end
    }
}
