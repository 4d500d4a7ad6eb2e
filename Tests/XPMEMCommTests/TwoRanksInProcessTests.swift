import Foundation
import Synchronization
import Testing
import XPMEM
import XPMEMSystem
@testable import XPMEMComm

/// A real xpmemd for these tests, started from the built products beside the test bundle.
final class PrivateBroker: @unchecked Sendable {
    let directory: String
    let socketPath: String
    private let process = Process()

    init() throws {
        directory = NSTemporaryDirectory() + "xpmemcomm-test-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        socketPath = directory + "/xpmemd.sock"
        process.executableURL = URL(fileURLWithPath: FileSystem.executableDirectory() + "/xpmemd")
        process.arguments = ["--socket", socketPath, "--log-level", "error"]
        try process.run()
        for _ in 0..<500 {
            if (try? XPMEMBroker.connect(socketPath: socketPath, name: "probe")) != nil { return }
            usleep(10_000)
        }
        throw XPMEMError(.brokerUnavailable, "xpmemd did not start")
    }

    deinit {
        process.terminate()
        process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// Runs `body` as ranks 0..<size of one job, each on its own thread with its own broker
/// connection, and returns what each returned (or the error it threw).
func runRanks<Result: Sendable>(_ size: Int, broker: PrivateBroker, copier: MessageCopy = .fromEnvironment(),
                                _ body: @escaping @Sendable (Communicator) throws -> Result) -> [Swift.Result<Result, any Error>] {
    let results = Mutex<[Int: Swift.Result<Result, any Error>]>([:])
    let done = DispatchGroup()
    let jobDirectory = broker.directory + "/job-\(UUID().uuidString.prefix(8))"
    // The rank threads may outlive this call by a moment: they must not hold the broker, whose deinit
    // stops xpmemd (a broker left running at exit keeps `swift test`'s output pipe open for ever).
    let socketPath = broker.socketPath
    for rank in 0..<size {
        done.enter()
        Thread.detachNewThread {
            let outcome = Swift.Result { () throws -> Result in
                let comm = try Communicator(
                    environment: JobEnvironment(rank: rank, size: size, rendezvousDirectory: jobDirectory, launcher: "test"),
                    socketPath: socketPath, timeout: .seconds(20), copier: copier)
                let value = try body(comm)
                try comm.finish()
                return value
            }
            results.withLock { $0[rank] = outcome }
            done.leave()
        }
    }
    _ = done.wait(timeout: .now() + 60)
    return results.withLock { all in (0..<size).map { all[$0] ?? .failure(CommunicatorError.peerGone(rank: $0)) } }
}

@Suite(.serialized) struct TwoRanksInProcessTests {
    @Test func messagesOfEverySizeArriveIntactAndInOrder() throws {
        let broker = try PrivateBroker()
        // 0 and 8 bytes (one slot), 20 000 (fragments), 100 000 from plain memory (fragments), and
        // 100 000 from a shared buffer (single-copy).
        let results = runRanks(2, broker: broker) { comm -> [Int] in
            let sizes = [0, 8, 20_000, 100_000]
            let shared = try comm.allocate(byteCount: 100_000)
            var plain = [UInt8](repeating: 0, count: 100_000)
            var lengths: [Int] = []
            if comm.rank == 0 {
                for (index, size) in sizes.enumerated() {
                    for byte in 0..<size { plain[byte] = UInt8(truncatingIfNeeded: byte &+ index) }
                    try plain.withUnsafeBytes { try comm.send(UnsafeRawBufferPointer(rebasing: $0[0..<size]), to: 1, tag: index) }
                }
                for byte in 0..<100_000 { shared.bytes[byte] = UInt8(truncatingIfNeeded: byte &* 7) }
                try comm.send(UnsafeRawBufferPointer(rebasing: shared.bytes[0..<100_000]), to: 1, tag: 99)
                #expect(comm.singleCopyMessages == 1 && comm.eagerMessages == sizes.count)
            } else {
                for (index, size) in sizes.enumerated() {
                    let length = try plain.withUnsafeMutableBytes { try comm.receive(into: $0, from: 0, tag: index) }
                    lengths.append(length)
                    #expect((0..<size).allSatisfy { plain[$0] == UInt8(truncatingIfNeeded: $0 &+ index) })
                }
                lengths.append(try comm.receive(into: shared.bytes, from: 0, tag: 99))
                #expect((0..<100_000).allSatisfy { shared.bytes[$0] == UInt8(truncatingIfNeeded: $0 &* 7) })
                #expect(comm.attachmentCache.misses == 1)
            }
            return lengths
        }
        #expect(try results[0].get() == [])
        #expect(try results[1].get() == [0, 8, 20_000, 100_000, 100_000])
    }

    /// Also with every copy streamed (a threshold of one byte, as messages larger than the cache
    /// are): both ranks' parts, and the receiver's copy alone.
    @Test(arguments: [MessageCopy(streamingThreshold: 0), MessageCopy(streamingThreshold: 1)])
    func aLargeMessageIntoASharedBufferIsCopiedByBothRanksAndArrivesIntact(copier: MessageCopy) throws {
        let broker = try PrivateBroker()
        // Odd lengths, so that the split falls inside a page; into a shared buffer at an offset (split),
        // then into plain memory (the sender cannot reach it: the receiver copies it all).
        let length = (3 << 20) + 37
        let results = runRanks(2, broker: broker, copier: copier) { comm -> [Int] in
            let shared = try comm.allocate(byteCount: length + 8192)
            var plain = [UInt8](repeating: 0, count: length)
            if comm.rank == 0 {
                for byte in 0..<length { shared.bytes[byte] = UInt8(truncatingIfNeeded: byte &* 13 &+ byte >> 12) }
                let message = UnsafeRawBufferPointer(rebasing: shared.bytes[0..<length])
                try comm.send(message, to: 1, tag: 1)
                try comm.send(message, to: 1, tag: 2)
                return []
            }
            let target = UnsafeMutableRawBufferPointer(rebasing: shared.bytes[4100..<(4100 + length)])
            let first = try comm.receive(into: target, from: 0, tag: 1)
            let intoShared = (0..<length).allSatisfy { target[$0] == UInt8(truncatingIfNeeded: $0 &* 13 &+ $0 >> 12) }
            let helpedAfterFirst = comm.cooperativelyCopiedMessages
            let second = try plain.withUnsafeMutableBytes { try comm.receive(into: $0, from: 0, tag: 2) }
            let intoPlain = (0..<length).allSatisfy { plain[$0] == UInt8(truncatingIfNeeded: $0 &* 13 &+ $0 >> 12) }
            return [first, second, intoShared ? 1 : 0, intoPlain ? 1 : 0, helpedAfterFirst, comm.cooperativelyCopiedMessages]
        }
        _ = try results[0].get()
        #expect(try results[1].get() == [length, length, 1, 1, 1, 1])
    }

    @Test func aWrongTagOrATooSmallBufferIsReportedAndTheMessageStaysQueued() throws {
        let broker = try PrivateBroker()
        let results = runRanks(2, broker: broker) { comm -> String in
            if comm.rank == 0 {
                try withUnsafeBytes(of: 42) { try comm.send($0, to: 1, tag: 5) }
                return ""
            }
            var small: UInt8 = 0
            var value = 0
            var seen: [String] = []
            do { try withUnsafeMutableBytes(of: &value) { _ = try comm.receive(into: $0, from: 0, tag: 6) } }
            catch CommunicatorError.tagMismatch(_, _, let found) { seen.append("tag \(found)") }
            do { try withUnsafeMutableBytes(of: &small) { _ = try comm.receive(into: $0, from: 0, tag: 5) } }
            catch CommunicatorError.truncated(_, let length, _) { seen.append("length \(length)") }
            try withUnsafeMutableBytes(of: &value) { _ = try comm.receive(into: $0, from: 0, tag: 5) }
            seen.append("value \(value)")
            return seen.joined(separator: ", ")
        }
        #expect(try results[1].get() == "tag 5, length 8, value 42")
    }

    @Test func freeingASenderBufferInvalidatesTheReceiversCachedAttachment() throws {
        let broker = try PrivateBroker()
        let results = runRanks(2, broker: broker) { comm -> AttachmentCacheStatistics? in
            let size = 256 << 10
            if comm.rank == 0 {
                var buffer = try comm.allocate(byteCount: size)
                for round in 0..<3 {
                    buffer.bytes.initializeMemory(as: UInt8.self, repeating: UInt8(round + 1))
                    try comm.send(UnsafeRawBufferPointer(buffer.bytes), to: 1)
                    try comm.send(UnsafeRawBufferPointer(buffer.bytes), to: 1)  // same buffer again: a cache hit
                    try comm.barrier()
                    try buffer.free()  // the receiver's cached attachment must go
                    buffer = try comm.allocate(byteCount: size)
                    try comm.barrier()
                }
                return nil
            }
            let target = try comm.allocate(byteCount: size)
            for round in 0..<3 {
                for _ in 0..<2 {
                    try comm.receive(into: target.bytes, from: 0)
                    #expect(target.bytes.allSatisfy { $0 == UInt8(round + 1) }, "round \(round)")
                }
                try comm.barrier()
                try comm.barrier()
            }
            return comm.attachmentCache
        }
        let statistics = try #require(try results[1].get())
        #expect(statistics.misses == 3 && statistics.hits == 3)
        #expect(statistics.invalidated == 3)
    }

    @Test(arguments: [MessageCopy(streamingThreshold: 0), MessageCopy(streamingThreshold: 1)])
    func allreduceOfThreeRanksSumsInRankOrder(copier: MessageCopy) throws {
        let broker = try PrivateBroker()
        let results = runRanks(3, broker: broker, copier: copier) { comm -> Bool in
            let count = 1001  // not a multiple of the 8-element slice granularity
            let input = try comm.allocate(byteCount: count * 8), output = try comm.allocate(byteCount: count * 8)
            let values = input.elements(Double.self, count: count)
            for index in 0..<count { values[index] = Double(comm.rank * 1000 + index) }
            try comm.allreduceSum(input, into: output, count: count)
            let sums = output.elements(Double.self, count: count)
            return (0..<count).allSatisfy { sums[$0] == Double(3000 + 3 * $0) }
        }
        for (rank, result) in results.enumerated() { #expect(try result.get(), "rank \(rank)") }
    }
}
