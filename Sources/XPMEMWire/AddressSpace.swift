/// A piece of an exporter's address-space file that is backed: the exporter's memory at these
/// addresses *is* the file's pages there (file offset == virtual address). The rest of a range an
/// importer attaches are holes: nothing was mapped there, and touching them faults.
public struct BackedExtent: Equatable, Sendable {
    public var start: UInt64
    public var length: UInt64

    public init(start: UInt64, length: UInt64) {
        self.start = start
        self.length = length
    }

    /// At most this many extents travel in one frame (a `rangeBacked` must fit a request frame).
    public static let maximumPerFrame = 240
}

/// Constants of address-space export (XPMEM's `xpmem_make(0, XPMEM_MAXADDR_SIZE, ...)`).
public enum AddressSpace {
    /// The largest address-space file: x86-64's user address space with 4-level page tables.
    public static let maximumSize: UInt64 = 1 << 47
}

extension WireWriter {
    mutating func write(_ extents: [BackedExtent]) {
        write(UInt32(extents.count))
        for extent in extents {
            write(extent.start)
            write(extent.length)
        }
    }
}

extension WireReader {
    mutating func readExtents() throws(FrameDecodingError) -> [BackedExtent] {
        let count = try readCount("extents", minimumRecordSize: 16)
        guard count <= BackedExtent.maximumPerFrame else { throw .invalidValue(field: "extents") }
        var extents: [BackedExtent] = []
        extents.reserveCapacity(count)
        for _ in 0..<count {
            let start = try read(UInt64.self, "extent start")
            extents.append(BackedExtent(start: start, length: try read(UInt64.self, "extent length")))
        }
        return extents
    }
}
