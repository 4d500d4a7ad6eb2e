import Glibc
import SystemPackage
import Testing
@testable import XPMEMSystem

extension SystemTests {
    struct MemoryFileTests {
        @Test func createGivesASealableFileOfTheRequestedSize() throws {
            let file = try MemoryFile.create(name: "sized", size: 3 * pageSize)
            #expect(try file.status().st_size == 3 * pageSize)
            #expect(try MemoryFile.seals(of: file).isEmpty)
            #expect(fcntl(file.rawValue, F_GETFD) & FD_CLOEXEC != 0)
        }

        @Test func fixedSizeSealsForbidTruncationBothWays() throws {
            let file = try MemoryFile.create(name: "sealed", size: 2 * pageSize)
            try MemoryFile.addSeals(.fixedSize, to: file)

            let seals = try MemoryFile.seals(of: file)
            #expect(seals.contains(.shrink) && seals.contains(.grow))
            #expect(failureErrno { ftruncate(file.rawValue, off_t(pageSize)) } == EPERM)
            #expect(failureErrno { ftruncate(file.rawValue, off_t(4 * pageSize)) } == EPERM)
            #expect(failureErrno { ftruncate(file.rawValue, 0) } == EPERM)
            #expect(try file.status().st_size == 2 * pageSize)
        }

        @Test func sizeSealsStillAllowWritingTheContents() throws {
            let file = try MemoryFile.create(name: "sealed", size: pageSize)
            try MemoryFile.addSeals(.fixedSize, to: file)
            let mapping = try MemoryMapping.mapShared(file, length: pageSize, protection: .readWrite)
            mapping.bytes[0] = 42
            #expect(mapping.bytes[0] == 42)
        }

        @Test func sealingTheSealsStopsFurtherSeals() throws {
            let file = try MemoryFile.create(name: "final", size: pageSize)
            try MemoryFile.addSeals([.seal], to: file)
            #expect(throws: Errno.notPermitted) { try MemoryFile.addSeals(.fixedSize, to: file) }
        }

        @Test func sealsOfAnOrdinaryDescriptorAreInvalid() throws {
            let pair = try UnixSocket.pair()
            #expect(throws: Errno.invalidArgument) { try MemoryFile.seals(of: pair.first) }
        }

        @Test func reopenReadOnlyGivesAReadOnlyDescriptorOfTheSameFile() throws {
            let file = try memoryFile(containing: [1, 2, 3])
            let readOnly = try MemoryFile.reopen(file, flags: O_RDONLY)

            #expect(try readOnly.statusFlags() & O_ACCMODE == O_RDONLY)
            #expect(try readOnly.status().st_ino == file.status().st_ino)
            #expect(fcntl(readOnly.rawValue, F_GETFD) & FD_CLOEXEC != 0)
            var byte: UInt8 = 9
            #expect(failureErrno { CInt(write(readOnly.rawValue, &byte, 1)) } == EBADF)
            #expect(pread(readOnly.rawValue, &byte, 1, 2) == 1)
            #expect(byte == 3)
            // Seals live on the file, so a read-only descriptor sees those added through the writable one.
            try MemoryFile.addSeals(.fixedSize, to: file)
            #expect(try MemoryFile.seals(of: readOnly).contains(.fixedSize))
        }

        @Test func readOnlyDescriptorCannotBeMappedWritable() throws {
            let file = try memoryFile(containing: [7])
            let readOnly = try MemoryFile.reopen(file, flags: O_RDONLY)

            let mapping = try MemoryMapping.mapShared(readOnly, length: pageSize, protection: .read)
            #expect(mapping.bytes[0] == 7)
            // The kernel remembers that a shared mapping came from a read-only file.
            #expect(throws: Errno.permissionDenied) { try mapping.protect(.readWrite) }
            #expect(throws: Errno.permissionDenied) {
                _ = try MemoryMapping.mapShared(readOnly, length: pageSize, protection: .readWrite)
            }
        }

        @Test func writesThroughOneMappingShowThroughAnother() throws {
            let file = try MemoryFile.create(name: "shared", size: pageSize)
            let readOnly = try MemoryFile.reopen(file, flags: O_RDONLY)
            let writer = try MemoryMapping.mapShared(file, length: pageSize, protection: .readWrite)
            let reader = try MemoryMapping.mapShared(readOnly, length: pageSize, protection: .read)
            #expect(writer.base != reader.base)
            writer.bytes.copyBytes(from: Array("hello".utf8))
            #expect(Array(reader.bytes[..<5]) == Array("hello".utf8))
        }
    
        @Test func dataExtentsNameThePagesWrittenAndSkipTheHoles() throws {
            let page = 4096
            let file = try MemoryFile.create(name: "extents", size: 16 * page)
            #expect(try MemoryFile.dataExtents(of: file, length: 16 * page).isEmpty)
            let mapping = try MemoryMapping.mapShared(file, length: 16 * page, protection: .readWrite)
            mapping.bytes[page + 7] = 1
            mapping.bytes[4 * page] = 2
            mapping.bytes[5 * page + 100] = 3
            #expect(try MemoryFile.dataExtents(of: file, length: 16 * page) == [page..<2 * page, 4 * page..<6 * page])
            #expect(try MemoryFile.dataExtents(of: file, length: 5 * page) == [page..<2 * page, 4 * page..<5 * page])
        }
    }
}
