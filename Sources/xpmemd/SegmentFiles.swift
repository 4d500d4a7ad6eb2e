@preconcurrency import Glibc
import XPMEMBrokerCore
import XPMEMSystem
import XPMEMWire

/// The two descriptors of one segment's memfd that the broker keeps while the segment exists: a
/// read-write one for read-write grants and a read-only one for read-only grants.
final class SegmentFiles {
    let readWrite: OwnedDescriptor
    let readOnly: OwnedDescriptor

    private init(readWrite: consuming OwnedDescriptor, readOnly: consuming OwnedDescriptor) {
        self.readWrite = readWrite
        self.readOnly = readOnly
    }

    /// Checks the descriptors an exporter sent with `make` and seals the file against resizing.
    ///
    /// Both must be the same memfd of exactly `size` bytes; the first open read-write, the second
    /// read-only; and its mode must deny group and other, so that a read-only importer of another uid
    /// cannot reopen it writable through `/proc/self/fd` (a memfd is created with mode 0777).
    static func validate(
        readWrite: consuming OwnedDescriptor, readOnly: consuming OwnedDescriptor, size: UInt64
    ) throws(BrokerError) -> SegmentFiles {
        let files = SegmentFiles(readWrite: readWrite, readOnly: readOnly)
        do {
            _ = try MemoryFile.seals(of: files.readWrite)
        } catch {
            throw BrokerError(.invalidArgument, "the descriptor sent with make is not a memfd (F_GET_SEALS: \(error))")
        }
        let writable: stat
        let readable: stat
        let writableFlags: CInt
        let readableFlags: CInt
        do {
            writable = try files.readWrite.status()
            readable = try files.readOnly.status()
            writableFlags = try files.readWrite.statusFlags()
            readableFlags = try files.readOnly.statusFlags()
        } catch {
            throw BrokerError(.invalidArgument, "cannot inspect the descriptors sent with make: \(error)")
        }
        guard writable.st_dev == readable.st_dev, writable.st_ino == readable.st_ino else {
            throw BrokerError(.invalidArgument, "the two descriptors sent with make are different files")
        }
        guard writable.st_size == off_t(clamping: size) else {
            throw BrokerError(.invalidArgument, "the memfd holds \(writable.st_size) bytes, not the \(size) declared")
        }
        guard writableFlags & O_ACCMODE == O_RDWR, readableFlags & O_ACCMODE == O_RDONLY else {
            throw BrokerError(.invalidArgument, "make needs a read-write descriptor followed by a read-only one")
        }
        guard writable.st_mode & 0o077 == 0 else {
            throw BrokerError(.invalidArgument,
                "the memfd's mode \(String(writable.st_mode & 0o777, radix: 8)) lets other users reopen it; fchmod it 0600 first")
        }
        do {
            try MemoryFile.addSeals(.fixedSize, to: files.readWrite)
        } catch {
            throw BrokerError(.invalidArgument, "cannot seal the memfd against resizing (F_ADD_SEALS: \(error))")
        }
        return files
    }

    /// The descriptor an importer with `access` receives.
    func descriptor(for access: AccessMode) -> CInt {
        access == .readWrite ? readWrite.rawValue : readOnly.rawValue
    }
}
