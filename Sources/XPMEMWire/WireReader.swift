/// Why a frame could not be decoded. Every byte from a socket is untrusted, so decoding never traps:
/// it throws one of these, and the broker answers with an error or drops the client.
public enum FrameDecodingError: Error, Equatable, Sendable {
    /// The frame ended before a field did.
    case truncated(field: String)
    /// Bytes were left after the last field.
    case trailingBytes(Int)
    /// The header's magic number is not ours: the peer does not speak this protocol.
    case badMagic(UInt32)
    /// The header's payload length does not match the frame's length.
    case lengthMismatch(declared: UInt32, actual: Int)
    /// The frame is larger than any message may be.
    case oversized(Int)
    /// The message type is not one this version knows.
    case unknownType(UInt16)
    /// A field holds a value outside its range.
    case invalidValue(field: String)
}

/// Reads little-endian fields from a byte buffer, checking every bound.
public struct WireReader: ~Copyable {
    private let bytes: UnsafeRawBufferPointer
    private var position = 0

    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    public var remaining: Int { bytes.count - position }

    public mutating func read<T: FixedWidthInteger>(_: T.Type, _ field: String) throws(FrameDecodingError) -> T {
        let size = MemoryLayout<T>.size
        guard remaining >= size else { throw .truncated(field: field) }
        let value = bytes.loadUnaligned(fromByteOffset: position, as: T.self)
        position += size
        return T(littleEndian: value)
    }

    public mutating func readBool(_ field: String) throws(FrameDecodingError) -> Bool {
        switch try read(UInt8.self, field) {
        case 0: return false
        case 1: return true
        default: throw .invalidValue(field: field)
        }
    }

    /// A string of at most `maximumLength` UTF-8 bytes behind a 16-bit length.
    public mutating func readString(_ field: String, maximumLength: Int = 1024) throws(FrameDecodingError) -> String {
        let length = Int(try read(UInt16.self, field))
        guard length <= maximumLength else { throw .invalidValue(field: field) }
        guard remaining >= length else { throw .truncated(field: field) }
        let slice = UnsafeRawBufferPointer(rebasing: bytes[position..<(position + length)])
        position += length
        guard let string = String(validating: slice, as: UTF8.self) else { throw .invalidValue(field: field) }
        return string
    }

    /// A count of following records, refused if it could not possibly fit in what is left.
    public mutating func readCount(_ field: String, minimumRecordSize: Int) throws(FrameDecodingError) -> Int {
        let count = Int(try read(UInt32.self, field))
        guard count <= remaining / max(minimumRecordSize, 1) else { throw .invalidValue(field: field) }
        return count
    }

    /// Checks that every byte was consumed.
    public func finish() throws(FrameDecodingError) {
        guard remaining == 0 else { throw .trailingBytes(remaining) }
    }
}
