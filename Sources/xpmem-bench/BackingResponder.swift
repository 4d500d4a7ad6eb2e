import ArgumentParser
import Synchronization
import XPMEMSystem
import XPMEMWire

/// Answers every scale client's `backRange` at once with the whole range backed, from one thread
/// watching all their event channels, as each exporter's event thread would (without the copy: the
/// benchmark measures the broker, and the pages of an exporter that has them are already in its file).
final class BackingResponder: Sendable {
    private struct ClientIndex: RawRepresentable, Sendable {
        var rawValue: UInt64
    }

    private let stopping = Atomic(false)
    private let finished = Mutex<(answered: Int, failure: String?)?>(nil)

    init(serving clients: [ScaleClient]) throws {
        try DetachedThread.start { [self] in
            var answered = 0
            var failure: String?
            do {
                try serve(clients, answered: &answered)
            } catch {
                failure = "\(error)"
            }
            finished.withLock { $0 = (answered, failure) }
        }
    }

    /// Stops the thread; the number of backings it answered, or why it stopped early.
    func stop() throws -> Int {
        stopping.store(true, ordering: .releasing)
        while true {
            if let done = finished.withLock({ $0 }) {
                if let failure = done.failure { throw ValidationError("the backing responder failed: \(failure)") }
                return done.answered
            }
            ThisProcess.sleep(microseconds: 1000)
        }
    }

    private func serve(_ clients: [ScaleClient], answered: inout Int) throws {
        let poll = try EventPoll<ClientIndex>(capacity: 256)
        for (index, client) in clients.enumerated() {
            guard let events = client.events else { continue }
            try poll.add(events.socket, events: .readable, token: ClientIndex(rawValue: UInt64(index)))
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: WireProtocol.maximumReplySize, alignment: 16)
        defer { buffer.deallocate() }
        while !stopping.load(ordering: .acquiring) {
            for ready in try poll.wait(timeoutMilliseconds: 20) {
                guard let index = ready.token.map({ Int($0.rawValue) }), let events = clients[index].events else { continue }
                // Without waiting: a readiness that was not (or was taken) must not stop the responder.
                guard let received = try UnixSocket.receiveIfPending(events.socket, into: buffer, maximumDescriptors: 0)
                else { continue }
                let frame = try Frame.decode(UnsafeRawBufferPointer(rebasing: buffer[..<received.byteCount]))
                guard case .backRange(let segment, let sequence, let start, let length) = frame.message else { continue }
                let answer = Message.rangeBacked(segment, sequence: sequence, failure: nil, text: "",
                                                 extents: [BackedExtent(start: start, length: length)])
                try UnixSocket.send(events.socket, bytes: Frame(requestID: 0, message: answer).encoded())
                answered += 1
            }
        }
    }
}
