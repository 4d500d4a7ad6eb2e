import Foundation
import Synchronization
import Testing
@testable import XPMEMComm

/// Control segments of `size` ranks in this process's own memory: the parts of the communicator work
/// on any mapping, so they are tested here without a broker, every rank seeing the same addresses.
final class InMemoryControlSegments: @unchecked Sendable {
    let layout: ControlLayout
    let addresses: ControlAddresses
    let departed = PeerWatch()

    init(size: Int) {
        layout = ControlLayout(size: size)
        let layout = layout
        addresses = ControlAddresses(layout: layout, bases: (0..<size).map { _ in
            let base = UnsafeMutableRawPointer.allocate(byteCount: layout.segmentSize, alignment: 4096)
            base.initializeMemory(as: UInt8.self, repeating: 0, count: layout.segmentSize)
            return base
        })
    }

    var waiter: PeerWaiter { PeerWaiter(departed: departed) }

    func rings(of rank: Int) -> MessageRings {
        MessageRings(rank: rank, size: layout.size, addresses: addresses, waiter: waiter)
    }

    deinit { for base in addresses.bases { base.deallocate() } }
}

/// Hands a rank's part (raw pointers into shared memory, so not `Sendable`) to the thread playing
/// that rank: exactly what a separate process would own.
struct RankPart<Part>: @unchecked Sendable {
    let part: Part
}

/// Receives the next message from `source` through `rings` as the communicator does for eager ones.
func receiveEager(_ rings: MessageRings, from source: Int, capacity: Int) throws -> (tag: Int64, bytes: [UInt8]) {
    let slot = try rings.nextSlot(from: source)
    let header = SlotHeader(readingFrom: slot)
    var bytes = [UInt8](repeating: 0, count: capacity)
    try bytes.withUnsafeMutableBytes { buffer in
        try rings.receive(Int(header.totalLength), startingAt: slot, from: source, into: buffer)
    }
    return (header.tag, Array(bytes[..<Int(header.totalLength)]))
}

@Suite struct CommunicatorPartsTests {
    @Test func aMessageLongerThanASlotArrivesWholeInFragments() throws {
        let segments = InMemoryControlSegments(size: 2)
        let sender = segments.rings(of: 0), receiver = segments.rings(of: 1)
        defer { sender.deallocate(); receiver.deallocate() }
        let message = (0..<20_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }

        try message.withUnsafeBytes { try sender.send($0, to: 1, tag: 7) }
        let received = try receiveEager(receiver, from: 0, capacity: message.count)

        #expect(received.tag == 7 && received.bytes == message)
        #expect(sender.messagesSent == 1)
        // Three fragments went through three slots, all handed back to the sender.
        #expect(segments.addresses.ring(from: 0, to: 1).consumed.load() == 3)
    }

    @Test func ringsWrapAroundWhileTheSenderWaitsForFreeSlots() throws {
        let segments = InMemoryControlSegments(size: 2)
        let sender = segments.rings(of: 0), receiver = RankPart(part: segments.rings(of: 1))
        defer { sender.deallocate(); receiver.part.deallocate() }
        let count = segments.layout.slotCount * 3
        let received = Mutex<[Int]>([])
        let failure = Mutex<String?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            do {
                for _ in 0..<count {
                    let message = try receiveEager(receiver.part, from: 0, capacity: 8)
                    received.withLock { $0.append(message.bytes.withUnsafeBytes { $0.load(as: Int.self) }) }
                }
            } catch {
                failure.withLock { $0 = "\(error)" }
            }
            done.signal()
        }
        for value in 0..<count { try withUnsafeBytes(of: value) { try sender.send($0, to: 1, tag: 0) } }
        #expect(done.wait(timeout: .now() + 20) == .success)
        #expect(failure.withLock { $0 } == nil)
        #expect(received.withLock { $0 } == Array(0..<count))
    }

    @Test func aBarrierReturnsOnlyOnceEveryRankArrived() throws {
        let segments = InMemoryControlSegments(size: 3)
        let barriers = (0..<3).map {
            RankPart(part: Barrier(rank: $0, size: 3, addresses: segments.addresses, waiter: segments.waiter))
        }
        defer { for barrier in barriers { barrier.part.deallocate() } }
        let passed = Atomic<Int>(0)
        let failures = Mutex<[String]>([])
        let done = DispatchSemaphore(value: 0)
        for rank in 1..<3 {
            Thread.detachNewThread {
                do {
                    for _ in 0..<50 { try barriers[rank].part.wait() }
                    passed.add(1, ordering: .relaxed)
                } catch {
                    failures.withLock { $0.append("rank \(rank): \(error)") }
                }
                done.signal()
            }
        }
        for _ in 0..<50 { try barriers[0].part.wait() }
        for _ in 1..<3 { #expect(done.wait(timeout: .now() + 20) == .success) }
        #expect(failures.withLock { $0 } == [])
        #expect(passed.load(ordering: .relaxed) == 2)
    }

    @Test func waitingOnAPeerThatIsGoneFailsInsteadOfSpinningForEver() {
        let segments = InMemoryControlSegments(size: 2)
        segments.departed.mark(1)
        #expect(throws: CommunicatorError.self) { try segments.waiter.wait(for: 1) { false } }
        // A condition that holds is not a failure, gone peer or not.
        #expect(throws: Never.self) { try segments.waiter.wait(for: 1) { true } }
    }
}
