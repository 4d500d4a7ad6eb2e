/// Appends little-endian fields to a growing byte array.
public struct WireWriter {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int = 64) { bytes.reserveCapacity(capacity) }

    public mutating func write<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    public mutating func write(_ value: Bool) { write(UInt8(value ? 1 : 0)) }

    /// Writes a 16-bit length and the UTF-8 bytes, cut at `maximumLength` bytes on a character boundary.
    public mutating func write(_ string: String, maximumLength: Int = 1024) {
        var utf8 = Array(string.utf8)
        if utf8.count > maximumLength {
            var cut = maximumLength
            while cut > 0 && (utf8[cut] & 0xC0) == 0x80 { cut -= 1 }
            utf8 = Array(utf8[..<cut])
        }
        write(UInt16(utf8.count))
        bytes.append(contentsOf: utf8)
    }

    /// Overwrites a 32-bit field written earlier (used for the frame's payload length).
    mutating func patch(_ value: UInt32, at offset: Int) {
        withUnsafeBytes(of: value.littleEndian) { raw in
            for index in 0..<4 { bytes[offset + index] = raw[index] }
        }
    }
}
