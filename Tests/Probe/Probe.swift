// xpmem-probe: a program the integration tests run as a separate process (often as another uid) to
// act as an importer or exporter and report, one line at a time, what the system let it do.
@preconcurrency import Glibc
import ArgumentParser
import SystemPackage
import XPMEM
import XPMEMSystem
import XPMEMWire

@main
struct Probe: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "xpmem-probe",
        abstract: "Test helper: acts as an importer or exporter and reports what it could do.",
        subcommands: [
            ReadOnlyEscape.self, Truncate.self, Get.self, Hold.self, ExportRange.self, Watch.self, ExportAndInvalidate.self,
            NUMAImporter.self, ReadLoop.self, Flood.self, Supervise.self, KeepDescriptor.self, RestartExporter.self,
            RestartImporter.self, Squat.self, LateImporter.self, ExportAndRevoke.self, PageReader.self, MemoryPressure.self,
        ])
}

struct ProbeOptions: ParsableArguments {
    @Option var socket: String
    @Option(help: "Switch to this uid (and --as-gid) before connecting; needs root.") var asUID: UInt32?
    @Option var asGID: UInt32?

    /// Drops to the requested identity, for testing permissions as a real other user.
    func becomeRequestedUser() throws {
        guard let uid = asUID else { return }
        let gid = asGID ?? uid
        guard setgroups(0, nil) == 0, setgid(gid) == 0, setuid(uid) == 0 else {
            throw ValidationError("cannot become uid \(uid) gid \(gid): \(Errno(rawValue: errno))")
        }
    }
}

/// Prints a line and flushes, so the test reading the pipe sees it at once.
func report(_ line: String) {
    print(line)
    fflush(stdout)
}

/// The name of what a failed call's errno was, or "allowed".
func outcome(_ call: () -> CInt) -> String {
    call() == -1 ? "denied:\(Errno(rawValue: errno))" : "allowed"
}

/// A segment's descriptor obtained by speaking the protocol directly, and the connection that holds
/// its grant (the broker keeps the grant while the connection stays open).
struct RawGrant: ~Copyable {
    let connection: OwnedDescriptor
    let file: OwnedDescriptor
    let size: UInt64

    /// The file's number, for the libc calls an attacker would try on it.
    var number: CInt { file.fileDescriptor.rawValue }
}

/// Speaks the protocol directly (not through the library) to get a segment's descriptor, as an
/// attacker would.
func rawGrant(socket path: String, segment: SegmentID, access: AccessMode) throws -> RawGrant {
    let socket = try UnixSocket.connect(to: path)
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: WireProtocol.maximumReplySize, alignment: 16)
    defer { buffer.deallocate() }
    func exchange(_ message: Message, on socket: borrowing OwnedDescriptor) throws -> (Message, OwnedDescriptorList) {
        try UnixSocket.send(socket, bytes: Frame(requestID: 1, message: message).encoded())
        let received = try UnixSocket.receive(socket, into: buffer, maximumDescriptors: 4)
        let frame = try Frame.decode(UnsafeRawBufferPointer(rebasing: buffer[..<received.byteCount]))
        return (frame.message, received.descriptors)
    }
    _ = try exchange(.hello(clientName: "probe"), on: socket)
    let (granted, _) = try exchange(.get(segment, access), on: socket)
    guard case .granted(let handle, let size, _) = granted else { throw ValidationError("get: \(granted)") }
    let (attached, descriptors) = try exchange(.attach(handle, offset: 0, length: size), on: socket)
    guard case .attached = attached, let file = descriptors.takeFirst() else {
        throw ValidationError("attach: \(attached)")
    }
    return RawGrant(connection: socket, file: file, size: size)
}

extension Probe {
    /// Gets read-only access and tries every way to write: a writable mapping, mprotect, and reopening
    /// the descriptor read-write through /proc/self/fd.
    struct ReadOnlyEscape: ParsableCommand {
        @OptionGroup var options: ProbeOptions
        @Argument var segment: String

        func run() throws {
            try options.becomeRequestedUser()
            let grant = try rawGrant(socket: options.socket, segment: SegmentID(segment)!, access: .readOnly)
            let (descriptor, length) = (grant.number, Int(grant.size))
            report("access-mode \(fcntl(descriptor, F_GETFL) & O_ACCMODE == O_RDONLY ? "read-only" : "writable")")
            let writable = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, descriptor, 0)
            report("mmap-write \(writable == MAP_FAILED ? "denied:\(Errno(rawValue: errno))" : "allowed")")
            let readable = mmap(nil, length, PROT_READ, MAP_SHARED, descriptor, 0)!
            report("first-byte \(readable.load(as: UInt8.self))")
            report("mprotect-write \(outcome { mprotect(readable, length, PROT_READ | PROT_WRITE) })")
            report("reopen-write \(outcome { open("/proc/self/fd/\(descriptor)", O_RDWR) })")
            report("truncate \(outcome { ftruncate(descriptor, 0) })")
        }
    }

    /// Gets read-write access and tries to change the segment's size.
    struct Truncate: ParsableCommand {
        @OptionGroup var options: ProbeOptions
        @Argument var segment: String

        func run() throws {
            try options.becomeRequestedUser()
            let grant = try rawGrant(socket: options.socket, segment: SegmentID(segment)!, access: .readWrite)
            report("shrink \(outcome { ftruncate(grant.number, 0) })")
            report("grow \(outcome { ftruncate(grant.number, off_t(grant.size) * 2) })")
        }
    }

    /// Tries `get` through the library and prints `granted` or the error code.
    struct Get: ParsableCommand {
        @OptionGroup var options: ProbeOptions
        @Argument var segment: String
        @Flag var readonly = false
        @Option(help: "After a grant, write this byte to every byte of the segment.") var write: UInt8?

        func run() throws {
            try options.becomeRequestedUser()
            do throws(XPMEMError) {
                let broker = try XPMEMBroker.connect(socketPath: options.socket)
                let grant = try broker.get(SegmentID(segment)!, access: readonly ? .readOnly : .readWrite)
                let attachment = try grant.attach()
                if let write { attachment.bytes.initializeMemory(as: UInt8.self, repeating: write) }
                report("granted first-byte \(attachment.bytes.load(as: UInt8.self))")
            } catch {
                report("error \(error.code)")
            }
        }
    }

    /// Attaches a segment, reports, and waits to be killed (to test what dying importers leave).
    struct Hold: ParsableCommand {
        @OptionGroup var options: ProbeOptions
        @Argument var segment: String

        func run() throws {
            try options.becomeRequestedUser()
            let broker = try XPMEMBroker.connect(socketPath: options.socket)
            let grant = try broker.get(SegmentID(segment)!)
            let attachment = try grant.attach()
            report("attached first-byte \(attachment.bytes.load(as: UInt8.self))")
            while true { pause() }
        }
    }

    /// Fills an ordinary anonymous mapping, exports that very range, and checks address and contents
    /// survived; then prints the id and waits, and finally reports what the range holds on SIGUSR1.
    struct ExportRange: ParsableCommand {
        @OptionGroup var options: ProbeOptions
        @Option var size: Int
        @Option var pattern: UInt8

        func run() throws {
            let range = try MemoryMapping.anonymous(length: size).relinquish()
            range.initializeMemory(as: UInt8.self, repeating: pattern)
            let broker = try XPMEMBroker.connect(socketPath: options.socket)
            let segment = try broker.exportRange(range, permit: Permit(rawValue: 0o600))
            let sameAddress = segment.bytes.baseAddress == range.baseAddress
            let intact = range.allSatisfy { $0 == pattern }
            report("\(segment.id)")
            report("same-address \(sameAddress) intact \(intact)")
            // Wait for the test to let an importer write, then report what this process sees.
            var signals = sigset_t()
            sigemptyset(&signals)
            sigaddset(&signals, SIGUSR1)
            pthread_sigmask(SIG_BLOCK, &signals, nil)
            var received: CInt = 0
            sigwait(&signals, &received)
            report("first-byte \(range[0]) last-byte \(range[range.count - 1])")
            while true { pause() }
        }
    }
}
