import XPMEMWire

/// A file as the kernel names it (`st_dev`, `st_ino`), read by the daemon from a descriptor a client
/// sent: it cannot be forged, only a file the client holds can be named.
public struct FileIdentity: Hashable, Sendable {
    public var device: UInt64
    public var inode: UInt64

    public init(device: UInt64, inode: UInt64) {
        self.device = device
        self.inode = inode
    }
}

/// How many files the broker holds descriptors of, and which segments share one.
///
/// A segment made from a memfd is its own file. The windows a client exports of its address-space
/// file (every `xpmem_make` of a C program: the whole address space, a buffer, a heap) are windows of
/// one file, so the broker keeps that file's descriptors once, however many windows there are; a node
/// of ranks that each export a hundred buffers then costs the broker a file per rank, not per buffer.
/// Windows share only with windows of the same client: another client's file is another process's
/// memory, even where (after a fork) it is the same inode.
public struct HeldFiles: Equatable, Sendable {
    private struct Key: Hashable {
        var client: ClientID
        var file: FileIdentity
    }

    /// The live windows of each shared file.
    private var windows: [Key: Set<SegmentID>] = [:]
    /// Files held: one per segment with a file of its own, one per shared file.
    public private(set) var count = 0

    /// A live window of `client`'s over `file`, whose descriptors a new window over it can share; nil
    /// when the new window brings the first descriptors of its file (or has a file of its own).
    public func sharer(for file: FileIdentity?, of client: ClientID) -> SegmentID? {
        guard let file else { return nil }
        return windows[Key(client: client, file: file)]?.first
    }

    /// `segment` now exists; `file` when it is a window of a file that windows share.
    mutating func add(_ segment: SegmentID, of client: ClientID, file: FileIdentity?) {
        guard let file else {
            count += 1
            return
        }
        let key = Key(client: client, file: file)
        if windows[key, default: []].isEmpty { count += 1 }
        windows[key, default: []].insert(segment)
    }

    /// `segment` is gone; its file goes with the last window over it.
    mutating func remove(_ segment: SegmentID, of client: ClientID, file: FileIdentity?) {
        guard let file else {
            count -= 1
            return
        }
        // In place: a copy of the set out of the dictionary would make each removal cost every window
        // of the file, and a client's departure with n windows cost n² on the broker's one thread.
        guard let index = windows.index(forKey: Key(client: client, file: file)),
              windows.values[index].remove(segment) != nil else { return }
        if windows.values[index].isEmpty {
            windows.remove(at: index)
            count -= 1
        }
    }
}
