import Glibc
import Synchronization
import SystemPackage
import Testing
@testable import XPMEMSystem

/// What a reader thread read (-1 until it has).
final class SeenByte: Sendable {
    let value = Atomic<Int>(-1)
}

/// Whether this kernel lets this process open a user-mode-only userfaultfd with minor faults on shmem.
let userFaultAvailable: Bool = (try? UserFaultDescriptor()) != nil

extension SystemTests {
    @Suite(.enabled(if: userFaultAvailable, "userfaultfd with UFFD_FEATURE_MINOR_SHMEM is not available here"))
    struct UserFaultDescriptorTests {
        static let length = 4 * pageSize

        @Test("A shared mapping of a file opened read-only cannot be registered for minor faults: EPERM")
        func readOnlySharedMappingIsRefused() throws {
            let uffd = try UserFaultDescriptor()
            let file = try MemoryFile.create(name: "refused", size: Self.length)
            let readOnly = try MemoryFile.reopen(file, flags: O_RDONLY)
            let mapping = try MemoryMapping.mapShared(readOnly, length: Self.length, protection: .read)
            #expect(throws: Errno.notPermitted) { try uffd.suspendAccess(at: mapping.base, length: Self.length) }
            let privateViewWorks = uffd.canSuspendReadOnlyAccess(to: readOnly, fileOffset: 0)
            #expect(privateViewWorks, "a private read-only mapping of the same file can be registered")
        }

        @Test("suspendReadOnlyAccess puts a reader to sleep; resumeReadOnlyAccess wakes it onto the file's new bytes")
        func readOnlySuspensionSleepsAndResumes() throws {
            let uffd = try UserFaultDescriptor()
            let file = try MemoryFile.create(name: "read-only window", size: Self.length)
            let writer = try MemoryMapping.mapShared(file, length: Self.length, protection: .readWrite)
            writer.bytes.initializeMemory(as: UInt8.self, repeating: 7)
            let readOnly = try MemoryFile.reopen(file, flags: O_RDONLY)
            let mapping = try MemoryMapping.mapShared(readOnly, length: Self.length, protection: .read)
            #expect(mapping.bytes[pageSize + 5] == 7)

            try uffd.suspendReadOnlyAccess(at: mapping.base, length: Self.length, file: readOnly, fileOffset: 0)
            var resumed = false
            defer {
                // Never leave the reader asleep, whatever failed.
                if !resumed { try? uffd.resumeReadOnlyAccess(at: mapping.base, length: Self.length, file: readOnly, fileOffset: 0) }
            }
            let seen = SeenByte()
            let address = UInt(bitPattern: mapping.base) + UInt(pageSize)
            try DetachedThread.start {
                let byte = SharedMemoryAccess.load(UnsafeRawPointer(bitPattern: address)!) & 0xFF
                seen.value.store(Int(byte), ordering: .releasing)
            }
            usleep(200_000)
            #expect(seen.value.load(ordering: .acquiring) == -1, "the reader must sleep while the range is suspended")

            writer.bytes.initializeMemory(as: UInt8.self, repeating: 9)
            try uffd.resumeReadOnlyAccess(at: mapping.base, length: Self.length, file: readOnly, fileOffset: 0)
            resumed = true
            var waited = 0
            while seen.value.load(ordering: .acquiring) == -1 && waited < 20_000 {
                usleep(1000)
                waited += 1
            }
            #expect(seen.value.load(ordering: .acquiring) == 9, "woken, the reader sees the file's current bytes")
            // The range is the file's shared mapping again, not a private copy.
            let region = try AddressSpace.regions().first { $0.start <= UInt(bitPattern: mapping.base) && $0.end > address }
            #expect(region?.permissions == "r--s")
        }
    }
}
