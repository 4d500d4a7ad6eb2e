import Glibc
import SystemPackage
import Testing
@testable import XPMEMSystem

extension SystemTests {
    struct UnixSocketTests {
        @Test func pairCarriesBytesAndAMemoryFileThatMapsTheSameBytes() throws {
            let pair = try boundedPair()
            let contents = Array("segment contents".utf8)
            let file = try memoryFile(containing: contents)

            try UnixSocket.send(pair.first.rawValue, bytes: [1, 2, 3], descriptors: [file.rawValue])
            let delivery = try receive(on: pair.second, maximumDescriptors: 1)

            #expect(delivery.bytes == [1, 2, 3])
            #expect(!delivery.truncated)
            #expect(delivery.descriptors.count == 1)
            guard let received = delivery.descriptors.takeFirst() else {
                Issue.record("the descriptor did not arrive")
                return
            }
            #expect(received.rawValue != file.rawValue)
            #expect(fcntl(received.rawValue, F_GETFD) & FD_CLOEXEC != 0)
            #expect(try received.status().st_ino == file.status().st_ino)
            let mapping = try MemoryMapping.mapShared(received, length: pageSize, protection: .readWrite)
            #expect(Array(mapping.bytes[..<contents.count]) == contents)
            // Same pages, not a copy: a write through the received descriptor shows through the original.
            mapping.bytes[0] = 0xEE
            let original = try MemoryMapping.mapShared(file, length: pageSize, protection: .read)
            #expect(original.bytes[0] == 0xEE)
        }

        @Test func messagesKeepTheirBoundaries() throws {
            let pair = try boundedPair()
            try UnixSocket.send(pair.first, bytes: [1])
            try UnixSocket.send(pair.first.rawValue, bytes: [2, 2])
            #expect(try receive(on: pair.second, maximumDescriptors: 0).bytes == [1])
            #expect(try receive(on: pair.second, maximumDescriptors: 0).bytes == [2, 2])
        }

        // With one extra descriptor the kernel does not set MSG_CTRUNC (the control buffer is rounded up
        // to 8 bytes, room for two); with more it does. Both must be refused.
        @Test("More descriptors than allowed: EMSGSIZE, none of them left open", arguments: [
            (sent: 1, allowed: 0), (sent: 2, allowed: 1), (sent: 3, allowed: 1), (sent: 5, allowed: 2),
        ])
        func tooManyDescriptorsAreRefusedWithoutLeaking(sent: Int, allowed: Int) throws {
            let pair = try boundedPair()
            let files = try memoryFiles(count: sent)
            // Counted by inode, not by the process's total: other tests open and close descriptors
            // in parallel.
            #expect(openDescriptors(of: files) == sent)

            try UnixSocket.send(pair.first.rawValue, bytes: [9], descriptors: files.rawValues)
            #expect(throws: Errno.messageTooLong) { _ = try receive(on: pair.second, maximumDescriptors: allowed) }

            #expect(openDescriptors(of: files) == sent, "a received copy of a refused descriptor is still open")
            // The refused message is consumed and the connection goes on.
            try UnixSocket.send(pair.first, bytes: [10])
            let next = try receive(on: pair.second, maximumDescriptors: allowed)
            #expect(next.bytes == [10])
            #expect(next.descriptors.isEmpty)
        }

        @Test func exactlyTheAllowedNumberOfDescriptorsArrives() throws {
            let pair = try boundedPair()
            let files = try memoryFiles(count: 3)
            try UnixSocket.send(pair.first.rawValue, bytes: [3], descriptors: files.rawValues)
            let delivery = try receive(on: pair.second, maximumDescriptors: 3)
            #expect(delivery.descriptors.count == 3)
            #expect(delivery.descriptors.rawValues.allSatisfy(isOpen))
        }

        @Test func shortBufferReportsTruncation() throws {
            let pair = try boundedPair()
            let message = (0..<100).map { UInt8($0) }
            try UnixSocket.send(pair.first, bytes: message)
            let cut = try receive(on: pair.second, capacity: 10, maximumDescriptors: 0)
            #expect(cut.truncated)
            #expect(cut.bytes == Array(message[..<10]))

            try UnixSocket.send(pair.first, bytes: message)
            let whole = try receive(on: pair.second, capacity: 100, maximumDescriptors: 0)
            #expect(!whole.truncated)
            #expect(whole.bytes == message)
        }

        @Test func closedPeerReadsAsEndOfFile() throws {
            var pair = try boundedPair()
            pair.first = try MemoryFile.create(name: "placeholder", size: 0)
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16, alignment: 8)
            defer { buffer.deallocate() }
            let message = try UnixSocket.receive(pair.second.rawValue, into: buffer, maximumDescriptors: 1)
            let endOfFile = message.isEndOfFile
            #expect(endOfFile)
        }

        @Test func nonBlockingReceiveWithNothingPendingWouldBlock() throws {
            let pair = try UnixSocket.pair()
            try pair.second.setNonBlocking(true)
            #expect(throws: Errno.wouldBlock) { _ = try receive(on: pair.second, maximumDescriptors: 0) }
        }

        @Test func socketKindIsRecognized() throws {
            let pair = try UnixSocket.pair()
            let file = try MemoryFile.create(name: "not-a-socket", size: 0)
            let pairEndIsOne = UnixSocket.isSequencedPacketSocket(pair.first)
            let memoryFileIsOne = UnixSocket.isSequencedPacketSocket(file)
            #expect(pairEndIsOne)
            #expect(!memoryFileIsOne)
        }

        @Test func listenAcceptAndConnectAtAPath() throws {
            var template = Array("/tmp/xpmem-unit-XXXXXX".utf8CString)
            let directory = String(cString: try #require(mkdtemp(&template)))
            let path = directory + "/broker.sock"
            defer {
                unlink(path)
                rmdir(directory)
            }
            let listener = try UnixSocket.listen(at: path)
            #expect(FileSystem.isSocket(path))
            let nothingPending = try UnixSocket.accept(on: listener) == nil
            #expect(nothingPending)

            let client = try UnixSocket.connect(to: path)
            guard let accepted = try UnixSocket.accept(on: listener) else {
                Issue.record("the connection was not pending")
                return
            }
            #expect(try accepted.statusFlags() & O_NONBLOCK != 0)
            try UnixSocket.send(client.rawValue, bytes: [4, 2])
            try accepted.setNonBlocking(false)
            try UnixSocket.setReceiveTimeout(accepted, milliseconds: 2000)
            #expect(try receive(on: accepted, maximumDescriptors: 0).bytes == [4, 2])
            #expect(try PeerCredentials.of(accepted).pid == getpid())
        }

        @Test func overlongPathIsRefused() {
            let path = "/tmp/" + String(repeating: "x", count: UnixSocket.maximumPathLength)
            #expect(throws: Errno.fileNameTooLong) { _ = try UnixSocket.connect(to: path) }
        }
    }
}
