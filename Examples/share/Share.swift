// The smallest program that uses XPMEM: one process exports a segment filled with a byte pattern,
// others import it, check every byte and optionally write a new pattern the exporter will see.
//
//   share export --size 64M --pattern 7          # prints the segment id, then waits
//   share import SEGID --verify 7 --write 9      # checks all bytes are 7, then writes 9
@preconcurrency import Glibc
import ArgumentParser
import XPMEM

@main
struct Share: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Export a segment filled with a pattern, or import one and verify it.",
        subcommands: [Export.self, Import.self])
}

extension ByteCount: ExpressibleByArgument {
    public init?(argument: String) { self.init(argument) }
}

/// Prints a line at once, even when standard output is a pipe.
func say(_ line: String) {
    print(line)
    fflush(stdout)
}

enum PolicyArgument: String, ExpressibleByArgument, CaseIterable {
    case block, revoke
    var policy: AccessPolicy { self == .block ? .block : .revoke }
}

struct BrokerOptions: ParsableArguments {
    @Option(name: .long, help: "Broker socket (default: $XPMEM_SOCKET, else the per-user default).")
    var socket: String?
}

extension Share {
    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a segment, fill every byte with PATTERN, print its id on the first line, wait until killed.")

        @OptionGroup var broker: BrokerOptions
        @Option(help: "Segment size, such as 4096, 64K, 64M or 1G.") var size: ByteCount
        @Option(help: "The byte (0-255) every byte is set to.") var pattern: UInt8
        @Option(help: "Who may get it, as octal IPC mode bits (0600: you only; 0644: others read-only).")
        var mode: String = "0600"

        func run() throws {
            guard let permit = Permit(octal: mode) else {
                throw ValidationError("--mode takes octal read/write bits such as 0600, 0640 or 0666")
            }
            let connection = try XPMEMBroker.connect(socketPath: broker.socket, name: "share export")
            let segment = try connection.makeSegment(size: size.value, permit: permit, name: "share")
            segment.bytes.initializeMemory(as: UInt8.self, repeating: pattern)
            print(segment.id)
            fflush(stdout)
            while true { pause() }
        }
    }

    struct Import: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Get and attach a segment, check every byte equals --verify, optionally write --write.",
            discussion: "Exits 0 only if every byte matched.")

        @OptionGroup var broker: BrokerOptions
        @Argument(help: "The segment id printed by `share export`.") var segment: String
        @Option(help: "The byte every attached byte must hold.") var verify: UInt8
        @Option(help: "After verifying, set every byte to this value.") var write: UInt8?
        @Flag(help: "Ask for read-only access (XPMEM_RDONLY).") var readonly = false
        @Option(help: "Attach from this page-aligned offset.") var offset: ByteCount = ByteCount(0)
        @Option(help: "Attach this many bytes (default: to the end).") var length: ByteCount?
        @Flag(help: "After verifying, keep the attachment and print each invalidation event until killed.")
        var hold = false
        @Option(help: "With --hold: how long the invalidation callback sleeps, in milliseconds.")
        var callbackSleep: Int = 0
        @Option(help: "With --hold: what touches do during an invalidation (block: sleep until it ends; revoke: fault).")
        var policy: PolicyArgument = .block

        func validate() throws {
            if readonly && write != nil { throw ValidationError("--write needs read-write access; drop --readonly") }
            if SegmentID(segment) == nil { throw ValidationError("'\(segment)' is not a segment id (16 hex digits)") }
        }

        func run() throws {
            let connection = try XPMEMBroker.connect(socketPath: broker.socket, name: "share import")
            let grant = try connection.get(SegmentID(segment)!, access: readonly ? .readOnly : .readWrite)
            let sleepMilliseconds = callbackSleep
            let handlers = InvalidationHandlers(
                willInvalidate: { notice in
                    say("begin \(notice.sequence) \(notice.offset) \(notice.length)")
                    if sleepMilliseconds > 0 { usleep(UInt32(sleepMilliseconds) * 1000) }
                },
                didInvalidate: { notice in say("end \(notice.sequence)") },
                released: { _, reason in say("release \(reason)") })
            let attachment = try grant.attach(offset: offset.value, length: length?.value, policy: policy.policy,
                                              handlers: handlers)
            let bytes = UnsafeRawBufferPointer(attachment.bytes)
            var mismatches = 0
            var firstMismatch: Int?
            for index in bytes.indices where bytes[index] != verify {
                mismatches += 1
                if firstMismatch == nil { firstMismatch = index }
            }
            if let firstMismatch {
                print("MISMATCH: \(mismatches) of \(bytes.count) bytes differ from \(verify); first at offset \(offset.value + firstMismatch) holds \(bytes[firstMismatch])")
                throw ExitCode.failure
            }
            say("OK: \(bytes.count) bytes at offset \(offset.value) all hold \(verify)")
            if let write {
                attachment.bytes.initializeMemory(as: UInt8.self, repeating: write)
                print("wrote \(write) to \(bytes.count) bytes")
            }
            if hold {
                say("holding with policy \(attachment.policy)")
                while true { pause() }
            }
            try attachment.detach()
            try grant.release()
        }
    }
}
