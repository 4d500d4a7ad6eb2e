import Glibc
import SystemPackage
import Testing
@testable import XPMEMSystem

extension SystemTests {
    /// The owned-descriptor forms that the client library uses instead of raw descriptor numbers.
    struct UnixSocketOwnedDescriptorTests {
        @Test func sendPassesBorrowedDescriptorsAndTheSenderKeepsThem() throws {
            let pair = try boundedPair()
            let file = try memoryFile(containing: Array("kept".utf8))

            try UnixSocket.send(pair.first, bytes: [7], passing: [file.fileDescriptor])
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16, alignment: 8)
            defer { buffer.deallocate() }
            let message = try UnixSocket.receive(pair.second, into: buffer, maximumDescriptors: 1)
            let byteCount = message.byteCount

            #expect(byteCount == 1 && buffer[0] == 7)
            guard let received = message.descriptors.takeFirst() else {
                Issue.record("the descriptor did not arrive")
                return
            }
            #expect(try received.status().st_ino == file.status().st_ino)
            // Passing borrowed the sender's descriptor: it is still open and usable.
            #expect(isOpen(file.rawValue))
            #expect(try MemoryFile.seals(of: file) == MemoryFile.seals(of: received))
        }

        @Test func receiveIfPendingAnswersNilInsteadOfThrowingWhenNothingWaits() throws {
            let pair = try boundedPair()
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16, alignment: 8)
            defer { buffer.deallocate() }

            // The socket blocks (with a receive timeout); the call must still return at once.
            let nothingPending = try UnixSocket.receiveIfPending(pair.second, into: buffer, maximumDescriptors: 0) == nil
            #expect(nothingPending)

            try UnixSocket.send(pair.first, bytes: [1, 2])
            guard let pending = try UnixSocket.receiveIfPending(pair.second, into: buffer, maximumDescriptors: 0) else {
                Issue.record("the message sent was not pending")
                return
            }
            let byteCount = pending.byteCount
            #expect(byteCount == 2 && Array(buffer[..<2]) == [1, 2])
        }

        @Test func receiveIfPendingStillReportsRealFailures() throws {
            let pair = try boundedPair()
            let files = try memoryFiles(count: 2)
            try UnixSocket.send(pair.first.rawValue, bytes: [9], descriptors: files.rawValues)
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16, alignment: 8)
            defer { buffer.deallocate() }
            #expect(throws: Errno.messageTooLong) {
                _ = try UnixSocket.receiveIfPending(pair.second, into: buffer, maximumDescriptors: 0)
            }
        }

        @Test func readOnlyReopeningCannotWrite() throws {
            let file = try MemoryFile.create(name: "read-only", size: pageSize)
            let readOnly = try MemoryFile.reopenReadOnly(file)
            #expect(try readOnly.statusFlags() & O_ACCMODE == O_RDONLY)
            #expect(throws: Errno.permissionDenied) {
                _ = try MemoryMapping.mapShared(readOnly, length: pageSize, protection: .readWrite)
            }
        }

        @Test func spinCarriesANoncopyableValueAndATypedError() throws {
            let policy = SpinPolicy(microseconds: 1_000)
            var attempts = 0
            let found = policy.spin { () -> OwnedDescriptor? in
                attempts += 1
                return attempts < 3 ? nil : try? MemoryFile.create(name: "spun", size: 0)
            }
            let foundOne = found != nil
            #expect(foundOne && attempts == 3)
            #expect(throws: Errno.resourceBusy) {
                _ = try policy.spin { () throws(Errno) -> OwnedDescriptor? in throw .resourceBusy }
            }
        }
    }
}
