import Glibc
import SystemPackage
import Testing
@testable import XPMEMSystem

extension SystemTests {
    struct EventPollTests {
        @Test func reportsReadabilityOfOneEndOfAPair() throws {
            let pair = try UnixSocket.pair()
            let poll = try EventPoll<TestToken>()
            try poll.add(pair.second, events: .readable, token: 42)

            #expect(try poll.wait(timeoutMilliseconds: 0).isEmpty)

            try UnixSocket.send(pair.first, bytes: [1])
            let ready = try poll.wait(timeoutMilliseconds: 2000)
            #expect(ready.count == 1)
            #expect(ready.first?.token == 42)
            #expect(ready.first?.events.contains(.readable) == true)

            _ = try receive(on: pair.second, maximumDescriptors: 0)
            #expect(try poll.wait(timeoutMilliseconds: 0).isEmpty)
        }

        @Test func reportsThePeerClosing() throws {
            var pair = try UnixSocket.pair()
            let poll = try EventPoll<TestToken>()
            try poll.add(pair.second, events: [.readable, .peerClosed], token: 7)
            pair.first = try MemoryFile.create(name: "placeholder", size: 0)

            let ready = try poll.wait(timeoutMilliseconds: 2000)
            #expect(ready.map(\.token) == [7])
            #expect(ready.first?.events.contains(.peerClosed) == true)
        }

        @Test func removedDescriptorIsNoLongerReported() throws {
            let pair = try UnixSocket.pair()
            let poll = try EventPoll<TestToken>()
            try poll.add(pair.second, events: .readable, token: 1)
            try poll.modify(pair.second, events: .readable, token: 2)
            try UnixSocket.send(pair.first, bytes: [1])
            #expect(try poll.wait(timeoutMilliseconds: 2000).map(\.token) == [2])

            try poll.remove(pair.second)
            #expect(try poll.wait(timeoutMilliseconds: 0).isEmpty)
            #expect(throws: Errno.noSuchFileOrDirectory) { try poll.remove(pair.second) }
        }
    }

    struct PeerCredentialsTests {
        @Test func socketPairEndReportsThisProcess() throws {
            let pair = try UnixSocket.pair()
            for credentials in [try PeerCredentials.of(pair.first), try PeerCredentials.of(pair.second)] {
                #expect(credentials.pid == getpid())
                #expect(credentials.uid == getuid())
                #expect(credentials.gid == getgid())
            }
        }

        @Test func supplementaryGroupsAreThoseOfThisProcess() throws {
            let pair = try UnixSocket.pair()
            var groups = [gid_t](repeating: 0, count: Int(getgroups(0, nil)))
            let count = getgroups(CInt(groups.count), &groups)
            try #require(count >= 0)
            #expect(Set(try PeerCredentials.of(pair.first).groups) == Set(groups.prefix(Int(count))))
        }

        @Test func notASocketIsRefused() throws {
            let file = try MemoryFile.create(name: "not-a-socket", size: 0)
            #expect(throws: Errno.notSocket) { _ = try PeerCredentials.of(file) }
        }
    }

    struct ProcessHandleTests {
        @Test func randomValuesDiffer() throws {
            let values = try (0..<8).map { _ in try ProcessHandle.randomUInt64() }
            // Eight equal draws from 2^64 values would mean the source is broken, not unlucky.
            #expect(Set(values).count == values.count)
        }

        /// A pidfd is not readable while its process runs and becomes readable when it exits: checked on
        /// a child that exits when told to (a pidfd of this process alone could never show the second half).
        @Test func pidfdOfThisProcessIsNotReadyWhileItRuns() throws {
            let poll = try EventPoll<TestToken>()
            let own = try ProcessHandle.open(pid: getpid())
            try poll.add(own, events: .readable, token: 1)
            #expect(try poll.wait(timeoutMilliseconds: 0).isEmpty, "this process runs: its pidfd must not be ready")

            // `read` waits for a line on the pipe, so the child runs until it is sent one.
            let child = try PipedChild(path: "/bin/sh", ["-c", "read line"])
            let pidfd = try ProcessHandle.open(pid: child.pid)
            try poll.add(pidfd, events: .readable, token: 2)
            #expect(try poll.wait(timeoutMilliseconds: 0).isEmpty, "the child runs: neither pidfd may be ready")

            child.send("exit")
            // Generous, for a busy machine; the wait ends as soon as the child exits. An interrupted
            // wait returns no events, so it is retried until the deadline.
            let clock = ContinuousClock()
            let deadline = clock.now + .seconds(20)
            var ready: [PollEvent<TestToken>] = []
            while ready.isEmpty && clock.now < deadline { ready = try poll.wait(timeoutMilliseconds: 1000) }
            #expect(ready.map(\.token) == [2], "only the child's pidfd becomes ready, once the child exits")
            #expect(ready.first?.events.contains(.readable) == true)
            #expect(child.wait() == 0)
        }

        @Test func readMemoryOfThisProcessCopiesTheBytes() throws {
            let source: [UInt8] = [3, 1, 4, 1, 5, 9, 2, 6]
            var copy = [UInt8](repeating: 0, count: source.count)
            let count = try source.withUnsafeBytes { from in
                try copy.withUnsafeMutableBytes { to in
                    try ProcessHandle.readMemory(of: getpid(), at: UInt(bitPattern: from.baseAddress), into: to)
                }
            }
            #expect(count == source.count)
            #expect(copy == source)
        }
    }
}
