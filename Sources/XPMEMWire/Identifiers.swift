/// A segment's id: random 64 bits chosen by the broker, never reused while it runs, so that ids
/// cannot be guessed or replayed. Written as 16 hex digits.
public struct SegmentID: RawRepresentable, Hashable, Sendable, Comparable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// Parses the printed form, with or without a `0x` prefix.
    public init?(_ text: String) {
        let digits = text.hasPrefix("0x") ? String(text.dropFirst(2)) : text
        guard !digits.isEmpty, digits.count <= 16, digits.allSatisfy(\.isHexDigit),
              let value = UInt64(digits, radix: 16) else { return nil }
        rawValue = value
    }

    public var description: String {
        let hex = String(rawValue, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    public static func < (lhs: SegmentID, rhs: SegmentID) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// An access handle (XPMEM's `apid`): the right, won by `get`, to attach one segment. Valid only on
/// the connection that obtained it.
public struct AccessHandle: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public var description: String { "apid \(rawValue)" }
}

/// One mapping of (part of) a segment made by `attach`; valid only on the connection that made it.
public struct AttachmentID: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public var description: String { "attachment \(rawValue)" }
}

/// A broker-assigned connection number, for listings and logs.
public struct ClientID: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public var description: String { "client \(rawValue)" }
}

/// What an importer asks to do with a segment (XPMEM's `XPMEM_RDONLY` / `XPMEM_RDWR`).
public enum AccessMode: UInt8, Sendable, CustomStringConvertible {
    case readOnly = 1
    case readWrite = 2
    public var description: String { self == .readOnly ? "read-only" : "read-write" }
}

/// IPC-style permission bits of a segment (owner, group, other; read 4, write 2), such as 0o600.
public struct Permit: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    /// Only the read and write bits mean anything; others are refused.
    public static let validBits: UInt32 = 0o666

    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Parses an octal string such as "0600" or "644".
    public init?(octal text: String) {
        // `UInt32(_:radix:)` alone would also take a leading sign ("+644", "-0").
        guard text.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "7")).contains($0) }),
              let value = UInt32(text, radix: 8), value & ~Permit.validBits == 0 else { return nil }
        rawValue = value
    }

    public var description: String { "0" + String(rawValue, radix: 8) }
}
