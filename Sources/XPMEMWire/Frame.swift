/// Protocol constants shared by the broker and its clients.
public enum WireProtocol {
    /// Bumped on any incompatible change; the broker refuses other versions at `hello`.
    public static let version: UInt16 = 3
    /// "XPMM" little-endian: identifies our frames.
    public static let magic: UInt32 = 0x4D4D_5058
    /// The largest request a client may send.
    public static let maximumRequestSize = 4096
    /// The largest reply the broker sends (listings are paged to fit).
    public static let maximumReplySize = 65536
}

/// The fixed 16-byte start of every frame.
public struct FrameHeader: Equatable, Sendable {
    public static let size = 16

    public var version: UInt16
    public var type: UInt16
    public var requestID: UInt32
    public var payloadLength: UInt32

    /// Decodes and checks the header of a `frameLength`-byte frame. The version is returned, not
    /// checked, so the receiver can answer a mismatch in words.
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(FrameDecodingError) -> FrameHeader {
        var reader = WireReader(bytes)
        let magic = try reader.read(UInt32.self, "magic")
        guard magic == WireProtocol.magic else { throw .badMagic(magic) }
        let header = FrameHeader(
            version: try reader.read(UInt16.self, "version"),
            type: try reader.read(UInt16.self, "type"),
            requestID: try reader.read(UInt32.self, "requestID"),
            payloadLength: try reader.read(UInt32.self, "payloadLength"))
        guard Int(header.payloadLength) == bytes.count - FrameHeader.size else {
            throw .lengthMismatch(declared: header.payloadLength, actual: bytes.count - FrameHeader.size)
        }
        return header
    }
}

/// A message with its request id, ready to send or just received.
public struct Frame: Equatable, Sendable {
    public var requestID: UInt32
    public var message: Message

    public init(requestID: UInt32, message: Message) {
        self.requestID = requestID
        self.message = message
    }

    /// The frame's bytes, stamped with `version` (tests pass others to check the broker's answer).
    public func encoded(version: UInt16 = WireProtocol.version) -> [UInt8] {
        var writer = WireWriter(capacity: 64)
        writer.write(WireProtocol.magic)
        writer.write(version)
        writer.write(message.type.rawValue)
        writer.write(requestID)
        writer.write(UInt32(0))
        message.encodePayload(into: &writer)
        var bytes = writer
        bytes.patch(UInt32(bytes.bytes.count - FrameHeader.size), at: 12)
        return bytes.bytes
    }

    /// Decodes a whole frame whose version has already been accepted.
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(FrameDecodingError) -> Frame {
        let header = try FrameHeader.decode(bytes)
        guard let type = MessageType(rawValue: header.type) else { throw .unknownType(header.type) }
        let payload = UnsafeRawBufferPointer(rebasing: bytes[FrameHeader.size...])
        return Frame(requestID: header.requestID, message: try Message.decode(type: type, payload: payload))
    }
}
