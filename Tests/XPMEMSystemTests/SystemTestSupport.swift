import Glibc
import SystemPackage
import Testing
@testable import XPMEMSystem

/// Every test here opens descriptors, and some count `/proc/self/fd` or depend on which descriptor
/// numbers are free, so they all run one at a time (the trait covers the nested suites).
@Suite(.serialized) struct SystemTests {}

/// The errno of a failed libc call, or nil if it succeeded. Read at once, before anything else can
/// overwrite it.
func failureErrno(_ call: () -> CInt) -> CInt? {
    call() == -1 ? errno : nil
}

func isOpen(_ descriptor: CInt) -> Bool { fcntl(descriptor, F_GETFD) != -1 }

/// Whether `descriptor` is closed: `fcntl(F_GETFD)` fails with `EBADF`.
func isClosed(_ descriptor: CInt) -> Bool { failureErrno { fcntl(descriptor, F_GETFD) } == EBADF }

/// Ends `descriptor`'s life here, so its deinit runs at a known point.
func drop(_ descriptor: consuming OwnedDescriptor) {}

/// Descriptor numbers at or above this are out of reach of other code in the test process: the kernel
/// gives the lowest free number, and nothing here keeps half the limit open. Tests that watch a number
/// after closing it take their descriptors from up here, so no other open can reuse the number meanwhile.
let quietDescriptorFloor: CInt = {
    var limit = rlimit()
    getrlimit(CInt(RLIMIT_NOFILE.rawValue), &limit)
    return CInt(min(limit.rlim_cur, 65536) / 2)
}()

/// A new, otherwise unused descriptor (a memfd) numbered at or above `quietDescriptorFloor + offset`.
func quietDescriptor(offset: CInt = 0) throws -> CInt {
    let file = try MemoryFile.create(name: "quiet", size: 0)
    let number = fcntl(file.rawValue, F_DUPFD_CLOEXEC, quietDescriptorFloor + offset)
    try #require(number >= quietDescriptorFloor + offset)
    return number
}

/// One received message with its bytes copied out.
struct Delivery {
    var bytes: [UInt8]
    var truncated: Bool
    var descriptors: OwnedDescriptorList
}

func receive(on socket: borrowing OwnedDescriptor, capacity: Int = 256, maximumDescriptors: Int) throws -> Delivery {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 8)
    defer { buffer.deallocate() }
    let message = try UnixSocket.receive(socket.rawValue, into: buffer, maximumDescriptors: maximumDescriptors)
    return Delivery(bytes: Array(buffer[..<message.byteCount]), truncated: message.truncated,
                    descriptors: message.descriptors)
}

/// A connected pair whose receive ends give up after two seconds, so a test that expects a message
/// fails instead of hanging when none comes.
func boundedPair() throws -> SocketPair {
    let pair = try UnixSocket.pair()
    try UnixSocket.setReceiveTimeout(pair.first, milliseconds: 2000)
    try UnixSocket.setReceiveTimeout(pair.second, milliseconds: 2000)
    return pair
}

/// A memfd of one page whose first bytes are `contents`.
func memoryFile(containing contents: [UInt8]) throws -> OwnedDescriptor {
    let file = try MemoryFile.create(name: "contents", size: pageSize)
    let mapping = try MemoryMapping.mapShared(file, length: pageSize, protection: .readWrite)
    mapping.bytes.copyBytes(from: contents)
    return file
}

/// `count` empty memfds, owned together (an array cannot hold `~Copyable` descriptors).
func memoryFiles(count: Int) throws -> OwnedDescriptorList {
    var numbers: [CInt] = []
    do {
        for _ in 0..<count { numbers.append(try MemoryFile.create(name: "extra", size: 0).relinquish()) }
    } catch {
        OwnedDescriptorList(adopting: numbers).closeAll()
        throw error
    }
    return OwnedDescriptorList(adopting: numbers)
}

/// How many descriptors of this process refer to the same files as `files` (the originals included),
/// found by device and inode through /proc/self/fd.
func openDescriptors(of files: OwnedDescriptorList) -> Int {
    var identities: Set<[UInt64]> = []
    for number in files.rawValues {
        var info = stat()
        if fstat(number, &info) == 0 { identities.insert([UInt64(info.st_dev), UInt64(info.st_ino)]) }
    }
    guard let directory = opendir("/proc/self/fd") else { return -1 }
    defer { closedir(directory) }
    var count = 0
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        guard Int32(name) != nil else { continue }
        var info = stat()
        if stat("/proc/self/fd/" + name, &info) == 0, identities.contains([UInt64(info.st_dev), UInt64(info.st_ino)]) {
            count += 1
        }
    }
    return count
}

/// The token of a test's `EventPoll` registration: just a number, written as a literal.
struct TestToken: RawRepresentable, Equatable, Sendable, ExpressibleByIntegerLiteral {
    var rawValue: UInt64
    init(rawValue: UInt64) { self.rawValue = rawValue }
    init(integerLiteral value: UInt64) { rawValue = value }
}
