/// The secret behind a reclaimable segment's id: 128 random bits the exporter chooses, keeps in its
/// own memory and shows the broker only in `claim` requests.
///
/// The id is derived from the token and the owner's uid, `SHA-256("xpmem segment id" ‖ uid ‖ token)`
/// cut to 63 bits, so a broker that has forgotten everything (it was restarted) can still check,
/// from the request alone, that whoever claims an id is the uid that first made it and holds its
/// token: nobody else can squat a dead segment's id before its owner comes back.
public struct ReclaimToken: Hashable, Sendable, CustomStringConvertible {
    public let high: UInt64
    public let low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// The segment id this token stands for when `uid` owns it; nil in the one case in 2^63 where
    /// the digest gives 0, which is never an id (the exporter then draws another token).
    public func segmentID(ownerUID uid: UInt32) -> SegmentID? {
        var input = Array("xpmem segment id".utf8)
        input += uid.littleEndianBytes + high.littleEndianBytes + low.littleEndianBytes
        let digest = SHA256.hash(input)
        var raw: UInt64 = 0
        for index in 0..<8 { raw |= UInt64(digest[index]) << UInt64(index * 8) }
        // Below 2^63, as every id, so C callers holding a signed xpmem_segid_t see it positive.
        raw &= UInt64(Int64.max)
        return raw == 0 ? nil : SegmentID(rawValue: raw)
    }

    /// Not the token itself: a secret must not end up in logs.
    public var description: String { "reclaim token" }
}

extension FixedWidthInteger {
    fileprivate var littleEndianBytes: [UInt8] {
        (0..<(Self.bitWidth / 8)).map { UInt8(truncatingIfNeeded: self >> ($0 * 8)) }
    }
}
