@preconcurrency import Glibc
import SystemPackage

/// One line of `/proc/self/maps`.
public struct MappedRegion: Equatable, Sendable {
    public var start: UInt
    public var end: UInt
    public var permissions: String
    /// The file or pseudo-name (`[heap]`, `[stack]`); empty for anonymous memory.
    public var path: String

    /// Private anonymous memory (including the heap): what `exportRange` can take over.
    public var isPrivateAnonymous: Bool {
        permissions.count == 4 && permissions.last == "p" && (path.isEmpty || path == "[heap]")
    }
}

extension MappedRegion {
    /// The region of a mapping's first line in `/proc/self/smaps` (`start-end perms offset dev inode
    /// path`), its path left out; nil for the `Key: value` lines under it.
    init?(smapsHeader line: Substring) {
        let fields = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true)
        guard fields.count >= 2, !fields[0].hasSuffix(":") else { return nil }
        let bounds = fields[0].split(separator: "-")
        guard bounds.count == 2, let low = UInt(bounds[0], radix: 16), let high = UInt(bounds[1], radix: 16) else {
            return nil
        }
        self.init(start: low, end: high, permissions: String(fields[1]), path: "")
    }
}

/// This process's memory map.
public enum AddressSpace {
    /// Parses `/proc/self/maps`.
    public static func regions() throws(Errno) -> [MappedRegion] {
        let text = try readWholeFile("/proc/self/maps")
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
            guard fields.count >= 5 else { return nil }
            let bounds = fields[0].split(separator: "-")
            guard bounds.count == 2, let start = UInt(bounds[0], radix: 16), let end = UInt(bounds[1], radix: 16) else {
                return nil
            }
            let path = fields.count == 6 ? fields[5].trimmingLeadingSpaces() : ""
            return MappedRegion(start: start, end: end, permissions: String(fields[1]), path: path)
        }
    }

    /// Whether every byte of `start..<start+length` lies in private anonymous read-write memory.
    public static func isPrivateAnonymous(start: UInt, length: Int) throws(Errno) -> Bool {
        var cursor = start
        let end = start + UInt(length)
        for region in try regions() where region.end > cursor && region.start <= cursor {
            guard region.isPrivateAnonymous, region.permissions.hasPrefix("rw") else { return false }
            cursor = region.end
            if cursor >= end { return true }
        }
        return cursor >= end
    }

    static func readWholeFile(_ path: String) throws(Errno) -> String {
        let descriptor = OwnedDescriptor(adopting: try valueOrErrno { open(path, O_RDONLY | O_CLOEXEC) })
        var bytes: [UInt8] = []
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 8)
        defer { chunk.deallocate() }
        while true {
            let count = try valueOrErrno { read(descriptor.rawValue, chunk.baseAddress, chunk.count) }
            if count == 0 { break }
            bytes.append(contentsOf: chunk[..<count])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension Substring {
    fileprivate func trimmingLeadingSpaces() -> String { String(drop(while: { $0 == " " })) }
}

extension AddressSpace {
    /// This process's command name (`/proc/self/comm`).
    public static func commandName() throws(Errno) -> String {
        try readWholeFile("/proc/self/comm").split(separator: "\n").first.map(String.init) ?? ""
    }
}
