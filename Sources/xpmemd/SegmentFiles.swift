import SystemPackage
import XPMEMBrokerCore
import XPMEMSystem
import XPMEMWire

/// The two descriptors of one segment's memfd that the broker keeps while the segment exists: a
/// read-write one for read-write grants and a read-only one for read-only grants.
final class SegmentFiles {
    let readWrite: OwnedDescriptor
    let readOnly: OwnedDescriptor
    /// The file's page size: the base page size, or the huge page size of a hugetlb memfd.
    private(set) var pageSize = UInt64(XPMEMSystem.pageSize)
    /// Which file it is, for the core to see windows of one address-space file as one file.
    private(set) var identity = FileIdentity(device: 0, inode: 0)
    /// Whether `/proc/self/fd` reopening works for this file: it stops when the kernel refuses it
    /// (another uid's 0600 memfd), not for a passing failure such as a full descriptor table.
    private var canReopen = true

    private init(readWrite: consuming OwnedDescriptor, readOnly: consuming OwnedDescriptor) {
        self.readWrite = readWrite
        self.readOnly = readOnly
    }

    /// Checks the descriptors an exporter sent with `make` and seals the file against resizing.
    ///
    /// Both must be the same memfd of exactly `size` bytes; the first open read-write, the second
    /// read-only; and its mode must deny group and other, so that a read-only importer of another uid
    /// cannot reopen it writable through `/proc/self/fd` (a memfd is created with mode 0777).
    /// The size a file must have: a segment's exactly, an address-space file's at least its window's end.
    enum ExpectedSize {
        case exactly(UInt64)
        case atLeast(UInt64)
    }

    /// The pages a file may have: any size (a segment's memfd: base or hugetlb pages), or exactly
    /// `bytes` (an address-space file, whose offsets are addresses; a replacement, whose importers'
    /// windows are aligned to the pages of the file it replaces).
    enum ExpectedPages {
        case any
        case exactly(UInt64)
    }

    static func validate(
        readWrite: consuming OwnedDescriptor, readOnly: consuming OwnedDescriptor, size: ExpectedSize,
        pages: ExpectedPages = .any
    ) throws(BrokerError) -> SegmentFiles {
        let files = SegmentFiles(readWrite: readWrite, readOnly: readOnly)
        do {
            _ = try MemoryFile.seals(of: files.readWrite)
        } catch {
            throw BrokerError(.invalidArgument, "the descriptor sent with make is not a memfd (F_GET_SEALS: \(error))")
        }
        let writable: FileFacts
        let readable: FileFacts
        do {
            writable = try FileFacts(of: files.readWrite)
            readable = try FileFacts(of: files.readOnly)
        } catch {
            throw BrokerError(.invalidArgument, "cannot inspect the descriptors sent with make: \(error)")
        }
        guard writable.isSameFile(as: readable) else {
            throw BrokerError(.invalidArgument, "the two descriptors sent with make are different files")
        }
        switch size {
        case .exactly(let declared):
            guard writable.size == declared else {
                throw BrokerError(.invalidArgument, "the memfd holds \(writable.size) bytes, not the \(declared) declared")
            }
        case .atLeast(let end):
            guard writable.size >= end else {
                throw BrokerError(.invalidArgument, "the address-space file holds \(writable.size) bytes, less than the window's end \(end)")
            }
        }
        if case .exactly(let expected) = pages, writable.pageSize != expected {
            throw BrokerError(.invalidArgument, "the memfd has \(writable.pageSize)-byte pages, not \(expected)-byte ones")
        }
        files.pageSize = writable.pageSize
        files.identity = FileIdentity(device: writable.device, inode: writable.inode)
        guard writable.access == .readWrite, readable.access == .readOnly else {
            throw BrokerError(.invalidArgument, "make needs a read-write descriptor followed by a read-only one")
        }
        guard writable.permissions & 0o077 == 0 else {
            throw BrokerError(.invalidArgument,
                "the memfd's mode \(String(writable.permissions, radix: 8)) lets other users reopen it; fchmod it 0600 first")
        }
        try files.sealForSharing()
        return files
    }

    /// Seals the file so that nobody can truncate it under the processes mapping it, and then seals
    /// the seals: an importer holding a read-write descriptor could otherwise add
    /// `F_SEAL_FUTURE_WRITE` and break every later writable mapping, the owner's included.
    private func sealForSharing() throws(BrokerError) {
        let present: FileSeals
        do {
            present = try MemoryFile.seals(of: readWrite)
        } catch {
            throw BrokerError(.invalidArgument, "cannot read the memfd's seals (F_GET_SEALS: \(error))")
        }
        guard present.isDisjoint(with: [.write, .futureWrite]) else {
            throw BrokerError(.invalidArgument, "the memfd is sealed against writing; importers could not map it writable")
        }
        if present.contains(.seal) {
            guard present.isSuperset(of: .fixedSize) else {
                throw BrokerError(.invalidArgument,
                    "the memfd's seals are sealed without F_SEAL_SHRINK and F_SEAL_GROW; a truncation would crash importers")
            }
            return
        }
        do {
            try MemoryFile.addSeals(FileSeals.fixedSize.union(.seal), to: readWrite)
        } catch {
            throw BrokerError(.invalidArgument, "cannot seal the memfd (F_ADD_SEALS: \(error))")
        }
    }

    /// A descriptor for one importer with `access`: a fresh open of the file (its own open file
    /// description, so that its `F_SETFL` flags and `flock` locks are its own), or, where the broker may
    /// not reopen the file (another uid's 0600 memfd, for a broker that is neither that uid nor root),
    /// a duplicate of the broker's.
    func descriptor(for access: AccessMode) throws(Errno) -> OwnedDescriptor {
        if canReopen {
            do {
                if access == .readWrite { return try MemoryFile.reopenReadWrite(readWrite) }
                return try MemoryFile.reopenReadOnly(readOnly)
            } catch {
                guard error == .permissionDenied || error == .notPermitted else { throw error }
                canReopen = false
            }
        }
        return access == .readWrite ? try readWrite.duplicate() : try readOnly.duplicate()
    }
}
