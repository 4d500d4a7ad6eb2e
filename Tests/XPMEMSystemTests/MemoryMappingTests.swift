import Glibc
import SystemPackage
import Testing
@testable import XPMEMSystem

extension SystemTests {
    struct MemoryMappingTests {
        @Test func exactlyIfFreeRefusesAnOccupiedAddress() throws {
            let occupant = try MemoryMapping.anonymous(length: 2 * pageSize)
            occupant.bytes[0] = 0x5A
            let file = try MemoryFile.create(name: "intruder", size: pageSize)

            #expect(throws: Errno.fileExists) {
                _ = try MemoryMapping.reserve(length: pageSize, placement: .exactlyIfFree(occupant.base))
            }
            #expect(throws: Errno.fileExists) {
                _ = try MemoryMapping.mapShared(file, length: pageSize, protection: .read,
                                                placement: .exactlyIfFree(occupant.base + pageSize))
            }
            // The occupant was left alone.
            #expect(occupant.bytes[0] == 0x5A)
            #expect(try AddressSpace.isPrivateAnonymous(start: UInt(bitPattern: occupant.base), length: 2 * pageSize))
        }

        @Test func replacingMapsAFileOverAReservation() throws {
            let reservation = try MemoryMapping.reserve(length: 2 * pageSize)
            let file = try memoryFile(containing: [1, 2, 3, 4])
            let mapping = try MemoryMapping.mapShared(file, length: pageSize, protection: .read,
                                                      placement: .replacing(reservation.base))
            #expect(mapping.base == reservation.base)
            #expect(Array(mapping.bytes[..<4]) == [1, 2, 3, 4])
            // The reservation still spans both pages and unmaps them together.
            _ = mapping.relinquish()
        }

        @Test func anonymousMemoryIsZeroFilledAndWritable() throws {
            let mapping = try MemoryMapping.anonymous(length: 3 * pageSize)
            #expect(mapping.length == 3 * pageSize)
            #expect(mapping.bytes.allSatisfy { $0 == 0 })
            mapping.bytes[3 * pageSize - 1] = 1
            #expect(mapping.bytes[3 * pageSize - 1] == 1)
        }

        @Test func emptyMappingIsRefused() {
            #expect(throws: Errno.invalidArgument) { _ = try MemoryMapping.anonymous(length: 0) }
        }
    }

    struct AddressSpaceTests {
        @Test func anonymousMappingIsPrivateAnonymous() throws {
            let mapping = try MemoryMapping.anonymous(length: 4 * pageSize)
            let start = UInt(bitPattern: mapping.base)
            #expect(try AddressSpace.isPrivateAnonymous(start: start, length: 4 * pageSize))
            #expect(try AddressSpace.isPrivateAnonymous(start: start + UInt(pageSize), length: pageSize))

            let region = try #require(try AddressSpace.regions().first { $0.start <= start && start < $0.end })
            #expect(region.permissions == "rw-p")
            #expect(region.path.isEmpty)
            #expect(region.isPrivateAnonymous)
        }

        @Test func memoryFileMappingIsNotPrivateAnonymous() throws {
            let file = try MemoryFile.create(name: "not-anonymous", size: 2 * pageSize)
            let mapping = try MemoryMapping.mapShared(file, length: 2 * pageSize, protection: .readWrite)
            let start = UInt(bitPattern: mapping.base)
            #expect(try !AddressSpace.isPrivateAnonymous(start: start, length: 2 * pageSize))

            let region = try #require(try AddressSpace.regions().first { $0.start <= start && start < $0.end })
            #expect(region.path.hasPrefix("/memfd:not-anonymous"))
            #expect(region.permissions == "rw-s")
            #expect(!region.isPrivateAnonymous)
        }

        @Test func inaccessibleReservationIsNotUsableMemory() throws {
            let reservation = try MemoryMapping.reserve(length: pageSize)
            #expect(try !AddressSpace.isPrivateAnonymous(start: UInt(bitPattern: reservation.base), length: pageSize))
        }

        @Test func rangeRunningIntoInaccessibleMemoryIsNotPrivateAnonymous() throws {
            // One read-write page followed by one inaccessible page, both anonymous and private.
            let reservation = try MemoryMapping.reserve(length: 2 * pageSize)
            try #require(mprotect(reservation.base, pageSize, PROT_READ | PROT_WRITE) == 0)
            let start = UInt(bitPattern: reservation.base)
            #expect(try AddressSpace.isPrivateAnonymous(start: start, length: pageSize))
            #expect(try !AddressSpace.isPrivateAnonymous(start: start, length: 2 * pageSize))
        }

        @Test func commandNameIsThisProcess() throws {
            let name = try AddressSpace.commandName()
            #expect(!name.isEmpty)
            #expect(!name.contains("\n"))
        }
    }
}
