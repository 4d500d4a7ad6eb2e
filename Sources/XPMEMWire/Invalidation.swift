/// Why an exporter is invalidating a range; importers see it in their callbacks.
public enum InvalidationReason: UInt8, Sendable, CustomStringConvertible {
    /// An operator asked (`xpmemctl invalidate`).
    case requestedByOperator = 1
    /// The exporter is about to put other data in the range.
    case reuse = 2
    /// The segment is shrinking past the range.
    case shrink = 3
    /// The segment is being removed.
    case remove = 4
    /// The range's pages are moving to another NUMA node.
    case migrate = 5
    /// The range's pages are being discarded.
    case discard = 6
    /// An importer missed a deadline and lost its grants: the pages move to a fresh file, so that the
    /// descriptor it still holds aliases nothing live.
    case revoke = 7

    public var description: String {
        switch self {
        case .requestedByOperator: "operator"
        case .reuse: "reuse"
        case .shrink: "shrink"
        case .remove: "remove"
        case .migrate: "migrate"
        case .discard: "discard"
        case .revoke: "revoke"
        }
    }
}

/// Why a segment is gone for an importer.
public enum ReleaseReason: UInt8, Sendable, CustomStringConvertible {
    /// The exporter removed it.
    case removed = 1
    /// The exporter's process or connection ended.
    case exporterExited = 2
    /// This importer missed an invalidation deadline, so its grants on the segment were revoked.
    case deadlineMissed = 3
    /// The segment moved to a fresh file the broker could not send this importer (it ran out of
    /// descriptors), so its grants on the segment were revoked rather than leave it on the old file.
    case fileNotDelivered = 4

    public var description: String {
        switch self {
        case .removed: "removed"
        case .exporterExited: "exporter exited"
        case .deadlineMissed: "deadline missed"
        case .fileNotDelivered: "new file not delivered"
        }
    }
}

/// How one importer took part in an invalidation.
public enum ImporterOutcome: UInt8, Sendable, CustomStringConvertible {
    /// It stopped access and acknowledged.
    case acknowledged = 1
    /// Its process or connection ended before it acknowledged (counted as acknowledged).
    case exited = 2
    /// It did not acknowledge before the deadline; its grants on the segment were revoked.
    case missedDeadline = 3
    /// It maps the range but never opened an event channel, so it could not be told.
    case notSubscribed = 4

    public var description: String {
        switch self {
        case .acknowledged: "acked"
        case .exited: "exited"
        case .missedDeadline: "missed deadline"
        case .notSubscribed: "not subscribed"
        }
    }
}

/// One importer's line in an invalidation report.
public struct ImporterAcknowledgement: Equatable, Sendable, Codable {
    public var client: UInt64
    public var pid: Int32
    public var outcome: ImporterOutcome
    /// From begin to the acknowledgement (or to the deadline, or to the exit).
    public var elapsedMicroseconds: UInt64

    public init(client: UInt64, pid: Int32, outcome: ImporterOutcome, elapsedMicroseconds: UInt64) {
        self.client = client
        self.pid = pid
        self.outcome = outcome
        self.elapsedMicroseconds = elapsedMicroseconds
    }
}

/// What an invalidation's begin phase achieved: who acknowledged, how long each took, who missed.
public struct InvalidationReport: Equatable, Sendable, Codable {
    public var segmentID: SegmentID
    /// The segment's id as printed (16 hex digits), as the JSON form carries it.
    public var segment: String { segmentID.description }
    /// The segment's sequence number while the invalidation is in flight (odd).
    public var sequence: UInt64
    public var offset: UInt64
    public var length: UInt64
    /// From the request's arrival at the broker to the last acknowledgement or the deadline.
    public var elapsedMicroseconds: UInt64
    public var importers: [ImporterAcknowledgement]

    public init(segment: SegmentID, sequence: UInt64, offset: UInt64, length: UInt64, elapsedMicroseconds: UInt64,
                importers: [ImporterAcknowledgement]) {
        self.segmentID = segment
        self.sequence = sequence
        self.offset = offset
        self.length = length
        self.elapsedMicroseconds = elapsedMicroseconds
        self.importers = importers
    }

    /// Whether some importer failed to acknowledge in time.
    public var anyMissedDeadline: Bool { importers.contains { $0.outcome == .missedDeadline } }

    // The id is kept typed (the broker builds a report per invalidation and the wire carries the
    // number: printing it and parsing it back cost more than the rest of the encoding); JSON shows
    // the printed form under "segment".
    private enum CodingKeys: String, CodingKey {
        case segment, sequence, offset, length, elapsedMicroseconds, importers
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let text = try container.decode(String.self, forKey: .segment)
        guard let id = SegmentID(text) else {
            throw Swift.DecodingError.dataCorruptedError(forKey: .segment, in: container, debugDescription: "not a segment id: \(text)")
        }
        self.init(segment: id, sequence: try container.decode(UInt64.self, forKey: .sequence),
                  offset: try container.decode(UInt64.self, forKey: .offset),
                  length: try container.decode(UInt64.self, forKey: .length),
                  elapsedMicroseconds: try container.decode(UInt64.self, forKey: .elapsedMicroseconds),
                  importers: try container.decode([ImporterAcknowledgement].self, forKey: .importers))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(segment, forKey: .segment)
        try container.encode(sequence, forKey: .sequence)
        try container.encode(offset, forKey: .offset)
        try container.encode(length, forKey: .length)
        try container.encode(elapsedMicroseconds, forKey: .elapsedMicroseconds)
        try container.encode(importers, forKey: .importers)
    }
}

extension ImporterOutcome: Codable {
    /// JSON carries the words (`"acked"`), not the wire number.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        let all: [ImporterOutcome] = [.acknowledged, .exited, .missedDeadline, .notSubscribed]
        guard let match = all.first(where: { $0.description == text }) else {
            throw Swift.DecodingError.dataCorruptedError(in: container, debugDescription: "unknown outcome \(text)")
        }
        self = match
    }
}
