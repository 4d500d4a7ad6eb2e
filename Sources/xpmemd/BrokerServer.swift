import Logging
import SystemPackage
import XPMEMBrokerCore
import XPMEMSystem
import XPMEMWire

/// The broker's event loop: one thread, one epoll set, non-blocking sockets. It decodes what arrives,
/// hands it to the `BrokerCore`, and carries out the effects the core returns on descriptors and
/// sockets; it makes no decision about clients, segments or invalidations of its own. No client can
/// block it: sends never wait (a full socket buffer queues the frame), a client that stops reading is
/// no longer read from and is dropped if it stays stuck, and invalidations wait as state, never in a call.
final class BrokerServer {
    /// Frames a channel may leave unread before the peer stops being read from, and before it is dropped.
    static let outboundPauseThreshold = 64
    static let outboundDropThreshold = 1024
    /// Refused frames (malformed, or with descriptors the broker could not take) read from one peer
    /// per wake-up before the others get their turn: one hostile peer cannot starve them.
    static let framesPerWakeUp = 32

    let socketPath: String
    let logger: Logger
    let poll: EventPoll<PollToken>
    private let lock: ExclusiveFileLock
    private let listener: OwnedDescriptor
    private let signals: OwnedDescriptor
    /// Polls `.priority` while the machine stalls on memory; nil where the kernel has no PSI.
    private let memoryPressure: OwnedDescriptor?
    /// A pidfd of the process this broker stops with (`--exit-with`), and that process's id.
    private let owner: OwnedDescriptor?
    private let ownerPID: Int32?
    /// `--private-directory`: the socket's directory goes when the owner does.
    private let removesDirectoryWhenOwnerExits: Bool
    private var ownerExited = false
    /// Closed to make room when `accept` fails for lack of descriptors (see `acceptPending`).
    private var spareDescriptor: OwnedDescriptor?
    private var listenerWatched = true
    var core: BrokerCore
    var connections: [PeerID: PeerConnection] = [:]
    var segmentFiles: [SegmentID: SegmentFiles] = [:]
    /// Peers whose output is stuck past the pause threshold; dropped once stuck for `stallLimit`.
    var stalled: Set<PeerID> = []
    let stallLimit: UInt64
    private var nextPeer = PollToken.firstPeerNumber
    let receiveBuffer: UnsafeMutableRawBufferPointer
    let startTime = ContinuousClock.now
    let spinPolicy: SpinPolicy
    var acceptFailures = LogThrottle()
    var refusals = LogThrottle()
    var encodedFrames = EncodedFrameCache()
    private var running = true

    /// Whether the listening socket came from a service manager, which then owns the socket file.
    let socketActivated: Bool

    /// Takes the lock beside the socket (refusing if another broker holds it) and listens: on the
    /// socket a service manager passed (socket activation), else on a new one at `socketPath` with
    /// `mode` and optionally `group`.
    /// With `exitWith`, the broker stops, as on SIGTERM, once that process has exited; then, with
    /// `removesDirectoryWhenOwnerExits`, it also removes the socket's directory and the lock in it.
    init(socketPath requestedPath: String, mode: UInt32, group: UInt32?, quotas: BrokerQuotas, stallSeconds: Int,
         spinPolicy: SpinPolicy, exitWith: Int32? = nil, removesDirectoryWhenOwnerExits: Bool = false,
         logger: Logger) throws {
        self.removesDirectoryWhenOwnerExits = removesDirectoryWhenOwnerExits
        self.spinPolicy = spinPolicy
        self.logger = logger
        stallLimit = UInt64(stallSeconds) * 1_000_000
        // Before the lock and the socket: a refused --exit-with must leave no file behind.
        var ownerProcess: OwnedDescriptor? = nil
        if let exitWith {
            do {
                ownerProcess = .some(try ProcessHandle.open(pid: exitWith))
            } catch {
                // Gone before the broker looked: so is the directory's reason to be.
                if removesDirectoryWhenOwnerExits && error == .noSuchProcess {
                    Self.removeSocketDirectory(of: requestedPath)
                }
                throw BrokerStartError("--exit-with \(exitWith): \(error == .noSuchProcess ? "no such process" : "\(error)") to stop with")
            }
            // A launcher's private broker follows the launcher, its parent. Still its parent now, the
            // pidfd opened above is that very process: a parent's pid cannot pass to another process
            // while the child lives. Not its parent, the launcher has gone already (and the pid may be
            // another process's by now): its directory goes, and so does the broker.
            if removesDirectoryWhenOwnerExits && ThisProcess.parentID != Int(exitWith) {
                Self.removeSocketDirectory(of: requestedPath)
                throw BrokerStartError("--private-directory: process \(exitWith) is not this broker's parent (the launcher that started it has exited)")
            }
        }
        ownerPID = exitWith
        let activated: OwnedDescriptor?
        do {
            activated = try SocketActivation.listener()
        } catch {
            throw BrokerStartError("the socket passed by the service manager (descriptor 3) is not a listening SOCK_SEQPACKET Unix socket: \(error)")
        }
        switch consume activated {
        case .some(let socket):
            socketActivated = true
            socketPath = try SocketActivation.boundPath(of: socket)
            lock = try Self.lock(socketPath)
            listener = socket
        case .none:
            socketActivated = false
            socketPath = requestedPath
            lock = try Self.lock(socketPath)
            listener = try Self.bind(socketPath, mode: mode, group: group)
        }
        signals = try ProcessHandle.signalDescriptor(for: ProcessSettings.terminationSignals + [Self.dropFreePagesSignal.rawValue])
        ProcessSettings.ignoreBrokenPipes()
        poll = try EventPoll()
        try poll.add(listener, events: .readable, token: .listener)
        try poll.add(signals, events: .readable, token: .signals)
        switch consume ownerProcess {
        case .some(let process):
            try poll.add(process, events: .readable, token: .owner)
            owner = .some(process)
        case .none:
            owner = nil
        }
        do {
            let trigger = try MemoryPressureTrigger.arm()
            try poll.add(trigger, events: .priority, token: .memoryPressure)
            memoryPressure = .some(trigger)
        } catch {
            logger.info("no memory pressure trigger (\(error)): pages hinted free are dropped only on request or SIGUSR1")
            memoryPressure = nil
        }
        spareDescriptor = try? DescriptorLimit.reserve()
        let registry = Registry(randomSource: {
            // getrandom on a machine with an initialised pool does not fail; if it did, ids would
            // become guessable, which is worse than stopping.
            do { return try ProcessHandle.randomUInt64() } catch { fatalError("getrandom failed: \(error)") }
        })
        let facts = BrokerFacts(brokerPID: Int32(ThisProcess.processID), numaNodes: UInt32(NUMA.configuredNodes),
                                openDescriptorCount: { FileSystem.openDescriptorCount() })
        core = BrokerCore(registry: registry, quotas: quotas, facts: facts)
        receiveBuffer = .allocate(byteCount: WireProtocol.maximumRequestSize, alignment: 16)
    }

    deinit { receiveBuffer.deallocate() }

    /// Microseconds since the broker started, on the monotonic clock.
    var now: UInt64 {
        let elapsed = ContinuousClock.now - startTime
        return UInt64(elapsed.components.seconds) * 1_000_000 + UInt64(elapsed.components.attoseconds / 1_000_000_000_000)
    }

    /// Asks the broker to drop every page hinted free, as memory pressure does (for operators and tests).
    static let dropFreePagesSignal = ProcessSignal.user1

    /// Serves until SIGTERM or SIGINT, then removes the socket file.
    func run() throws {
        logger.info("xpmemd listening", metadata: [
            "socket": "\(socketPath)", "pid": "\(ThisProcess.processID)", "activated": "\(socketActivated)",
            "descriptorBudget": "\(core.quotas.descriptorBudget)",
        ])
        while running {
            for event in try nextEvents() {
                handle(event)
            }
            apply(core.tick(now: now))
            dropStalledPeers()
        }
        logger.info("xpmemd stopping", metadata: [
            "clients": "\(connections.count)", "segments": "\(core.registry.segments.count)",
        ])
        for peer in Array(connections.keys) { drop(peer, reason: "broker stopping") }
        // An activated socket belongs to the service manager, which keeps it for the next start.
        if !socketActivated { try? FileSystem.unlinkIfPresent(socketPath) }
        // The launcher that made the directory is gone and cannot remove it, and no broker will start
        // in it again: the lock file can go while held. Only an empty directory is removed.
        if ownerExited && removesDirectoryWhenOwnerExits && !socketActivated {
            try? FileSystem.unlinkIfPresent(socketPath + ".lock")
            Self.removeSocketDirectory(of: socketPath)
        }
    }

    /// `--private-directory`'s: only an empty directory is removed.
    private static func removeSocketDirectory(of socketPath: String) {
        if let directory = FileSystem.directory(of: socketPath), !directory.isEmpty {
            FileSystem.removeEmptyDirectory(directory)
        }
    }

    /// The lock beside the socket. The lock, not the socket file, says which broker owns the path: two
    /// brokers started at once both see no socket, but only one gets the lock; and a broker stopping
    /// removes the socket only while it holds the lock, so it never removes a live broker's.
    private static func lock(_ socketPath: String) throws -> ExclusiveFileLock {
        do {
            return try ExclusiveFileLock(path: socketPath + ".lock")
        } catch .wouldBlock {
            throw BrokerStartError("a broker is already running at \(socketPath) (it holds \(socketPath).lock)")
        } catch {
            throw BrokerStartError("cannot take the lock \(socketPath).lock: \(error)")
        }
    }

    /// A new listening socket at `path`, replacing a stale socket file but never a live broker's.
    private static func bind(_ path: String, mode: UInt32, group: UInt32?) throws -> OwnedDescriptor {
        if FileSystem.isSocket(path) {
            if (try? UnixSocket.connect(to: path)) != nil {
                throw BrokerStartError("a broker is already listening at \(path)")
            }
            try FileSystem.unlinkIfPresent(path)
        }
        // Bind under a restrictive umask so no other user can connect before the mode is set.
        let previousMask = ProcessSettings.setFileCreationMask(0o177)
        defer { ProcessSettings.setFileCreationMask(previousMask) }
        let listener = try UnixSocket.listen(at: path)
        try FileSystem.setMode(path, mode)
        if let group { try FileSystem.setGroup(path, group) }
        return listener
    }

    /// Ready descriptors: polled for a short while first (a client that just got a reply often sends its
    /// next request within microseconds), then waited for in the kernel.
    private func nextEvents() throws -> [PollEvent<PollToken>] {
        let ready = try poll.wait(timeoutMilliseconds: 0)
        if !ready.isEmpty { return ready }
        // Polling pays for itself when a core is spare. While as many importers as there are cores
        // (or more) must run to acknowledge an invalidation, it would take a core from them and delay
        // the very acknowledgements awaited.
        if SpinPolicy.pollingPays(whileWaitingFor: core.coordinator.acknowledgementsAwaited), let polled = spinPolicy.spin({ () -> [PollEvent<PollToken>]? in
            let events = (try? poll.wait(timeoutMilliseconds: 0)) ?? []
            return events.isEmpty ? nil : events
        }) {
            return polled
        }
        return try poll.wait(timeoutMilliseconds: waitTimeout())
    }

    /// How long epoll may sleep: until the next invalidation deadline or stall limit, or forever.
    private func waitTimeout() -> Int32 {
        let stallDeadlines = stalled.compactMap { peer in
            connections[peer]?.stalledSince.map { $0 + stallLimit }
        }
        guard let deadline = (stallDeadlines + [core.nextDeadline].compactMap { $0 }).min() else { return -1 }
        let current = now
        guard deadline > current else { return 0 }
        return Int32(clamping: (deadline - current + 999) / 1000)
    }

    private func handle(_ event: PollEvent<PollToken>) {
        switch event.token {
        case .listener:
            acceptPending()
        case .signals:
            while let signal = try? ProcessHandle.nextSignal(on: signals) {
                if signal == Self.dropFreePagesSignal.rawValue {
                    logger.notice("SIGUSR1: dropping the pages hinted free")
                    // All of them, a pressure event's worth at a time (each takes a bounded amount).
                    var effects = core.memoryPressure()
                    while !effects.isEmpty {
                        apply(effects)
                        effects = core.memoryPressure()
                    }
                    continue
                }
                logger.notice("received signal \(signal)")
                running = false
            }
        case .memoryPressure:
            apply(core.memoryPressure())
        case .owner:
            logger.notice("process \(ownerPID ?? 0) (--exit-with) exited: stopping")
            ownerExited = true
            running = false
        case .peer(let peer, let descriptor):
            guard let connection = connections[peer] else { return }
            switch descriptor {
            case .process:
                drop(peer, reason: "process \(connection.credentials.pid) exited")
            case .events:
                guard let channel = connection.events else { return }
                serve(channel, of: connection, events: event.events)
            case .main:
                serve(connection.main, of: connection, events: event.events)
            }
        case nil:
            logger.error("epoll reported user data that is no registration's token")
        }
    }

    private func serve(_ channel: Channel, of connection: PeerConnection, events: PollEvents) {
        if events.contains(.writable) { flush(channel, of: connection) }
        guard connections[connection.peer] != nil else { return }
        if events.contains(.readable) {
            readFrames(from: channel, of: connection)
        } else if !events.isDisjoint(with: [.hangUp, .error]) {
            drop(connection.peer, reason: channel.kind == .main ? "connection closed" : "event channel closed")
        }
    }

    private func acceptPending() {
        while true {
            let accepted: OwnedDescriptor?
            do {
                accepted = try UnixSocket.accept(on: listener)
            } catch .tooManyOpenFiles, .tooManyOpenFilesInSystem {
                shedPendingConnection()
                return
            } catch {
                logThrottled(&acceptFailures, "accept failed: \(error)")
                return
            }
            guard let socket = accepted else { return }
            let credentials: PeerCredentials
            do {
                credentials = try PeerCredentials.of(socket)
            } catch {
                logger.debug("dropping a connection without peer credentials: \(error)")
                continue
            }
            let peer = PeerID(rawValue: nextPeer)
            nextPeer += 1
            let connection = PeerConnection(peer: peer, socket: socket, credentials: credentials)
            do {
                try poll.add(connection.main.socket, events: .readable, token: connection.token(for: connection.main))
            } catch {
                logThrottled(&acceptFailures, "cannot watch a new connection: \(error)")
                continue
            }
            connections[peer] = connection
            let node = ProcessHandle.lastCPU(of: credentials.pid).flatMap(NUMA.node(ofCPU:))
            apply(core.peerConnected(peer, credentials: Credentials(credentials), node: node))
        }
    }

    /// `accept` failed for lack of descriptors: the waiting connection would keep the listener
    /// readable and the loop spinning. Close the spare descriptor, accept the connection and close it
    /// (its client sees the connection end), and take the spare back. Without a spare, stop watching
    /// the listener until a connection or segment goes.
    private func shedPendingConnection() {
        logThrottled(&acceptFailures, "out of descriptors: refusing new connections until some close")
        if let spare = spareDescriptor.take() {
            spare.close()
            if let socket = try? UnixSocket.accept(on: listener) { socket.close() }
            spareDescriptor = try? DescriptorLimit.reserve()
            if spareDescriptor != nil { return }
        }
        if listenerWatched, (try? poll.modify(listener, events: [], token: .listener)) != nil {
            listenerWatched = false
        }
    }

    /// Watches the listener again (and retakes the spare) once descriptors were freed.
    func resumeAcceptingIfPaused() {
        if spareDescriptor == nil { spareDescriptor = try? DescriptorLimit.reserve() }
        guard !listenerWatched else { return }
        if (try? poll.modify(listener, events: .readable, token: .listener)) != nil {
            listenerWatched = true
        }
    }

    /// Forgets a connection; closing its descriptors removes them from epoll. The core then lets go of
    /// everything its client held.
    func drop(_ peer: PeerID, reason: String) {
        guard connections.removeValue(forKey: peer) != nil else { return }
        stalled.remove(peer)
        apply(core.peerDeparted(peer, reason: reason, now: now))
        resumeAcceptingIfPaused()
    }

    /// Drops peers whose output has been stuck past the pause threshold for longer than `stallLimit`.
    private func dropStalledPeers() {
        guard !stalled.isEmpty else { return }
        let current = now
        for peer in stalled {
            guard let connection = connections[peer] else { stalled.remove(peer); continue }
            guard let since = connection.stalledSince else { stalled.remove(peer); continue }
            if current - since >= stallLimit {
                drop(peer, reason: "did not read what the broker sent for \(stallLimit / 1_000_000) s")
            }
        }
    }

    func logThrottled(_ throttle: inout LogThrottle, _ message: String) {
        let verdict = throttle.admit(now: now)
        if verdict.suppressedBefore > 0 {
            logger.warning("\(verdict.suppressedBefore) similar messages were suppressed in the last minute")
        }
        if verdict.log { logger.warning("\(message)") }
    }
}

extension Credentials {
    init(_ peer: PeerCredentials) {
        self.init(pid: peer.pid, uid: peer.uid, gid: peer.gid, supplementaryGroups: peer.groups)
    }
}

/// A reason the broker could not start, worded for the operator.
struct BrokerStartError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
