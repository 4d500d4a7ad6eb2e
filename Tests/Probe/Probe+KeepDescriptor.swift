@preconcurrency import Glibc
import ArgumentParser
import XPMEMSystem
import XPMEMWire

extension Probe {
    /// An importer that ignores `released`: gets the segment's memfd through the raw protocol, maps it
    /// itself, and keeps it. Prints "mapped first-byte N", then answers "read" with "first-byte N" and
    /// "write V" (the first byte) with "wrote", to show what the kept descriptor still reaches.
    struct KeepDescriptor: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "keep-descriptor")
        @OptionGroup var options: ProbeOptions
        @Argument var segment: String

        func run() throws {
            try options.becomeRequestedUser()
            let grant = try rawGrant(socket: options.socket, segment: SegmentID(segment)!, access: .readWrite)
            let mapping = try MemoryMapping.mapShared(grant.file, length: Int(grant.size), protection: .readWrite)
            report("mapped first-byte \(mapping.bytes[0])")
            try serveFirstByte(of: mapping.bytes)
        }
    }
}

/// Answers "read" with "first-byte N" and "write V" (into the first byte) with "wrote" until standard
/// input ends: what a mapping reaches. Other lines go to `other`, which says whether it knew them.
func serveFirstByte(of bytes: UnsafeMutableRawBufferPointer, other: (String) throws -> Bool = { _ in false }) rethrows {
    while let line = readLine() {
        if line == "read" {
            report("first-byte \(bytes[0])")
        } else if line.hasPrefix("write "), let value = UInt8(line.dropFirst(6)) {
            bytes[0] = value
            report("wrote")
        } else if try !other(line) {
            report("unknown \(line)")
        }
    }
}
