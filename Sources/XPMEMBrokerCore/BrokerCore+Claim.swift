import XPMEMWire

/// `claim`: an export under the id a reclaim token stands for, so that an exporter can register its
/// segments again, with the same ids, after the broker restarted.
///
/// The threat: the broker keeps nothing across a restart, so between its new start and the owner's
/// return nothing it remembers says who owned an id. Whoever registered a known id first would have
/// importers that `get` it by that id map *their* memory (reading forged data, writing secrets into
/// it). The defence needs no memory: an id is `ReclaimToken.segmentID(ownerUID:)`, a one-way function
/// of 128 secret bits only the exporter holds and of the kernel-verified uid of the connection that
/// claims it. Without the token an id cannot be produced (a 63-bit preimage); with a stolen token,
/// another uid still derives another id.
extension BrokerCore {
    /// What a claim registers: a memfd of `size` bytes (`claim`), or the window `base..<base+size` of
    /// the claimant's address-space file (`claimAddressSpace`).
    enum ClaimedSegment {
        case memoryFile(size: UInt64, pageSize: UInt64?)
        case addressSpace(base: UInt64, size: UInt64, pageSize: UInt64?, file: FileIdentity?)
    }

    mutating func claim(
        _ requested: SegmentID?, token: ReclaimToken, _ claimed: ClaimedSegment, permit: Permit, name: String,
        requestID: UInt32, from peer: PeerID, client: ClientID, credentials: Credentials
    ) throws(BrokerError) -> [BrokerEffect] {
        guard let derived = token.segmentID(ownerUID: credentials.uid) else {
            throw BrokerError(.invalidArgument, "this reclaim token stands for no segment id; draw another")
        }
        if let requested, requested != derived {
            throw BrokerError(.permissionDenied,
                "uid \(credentials.uid) does not hold the reclaim token of segment \(requested): only the uid that made it, with the token it chose then, may register it again")
        }
        let id: SegmentID
        // Only a memfd's pages are the broker's to count; an address-space window is the exporter's own
        // memory, as with `makeAddressSpace`.
        let pinnedBytes: UInt64
        var sharer: SegmentID? = nil
        switch claimed {
        case .memoryFile(let size, let pageSize):
            guard size <= registry.limits.maximumSegmentSize else {
                throw BrokerError(.invalidArgument, "segment size \(size) exceeds the limit of \(registry.limits.maximumSegmentSize) bytes")
            }
            try admitSegment(size: size, by: credentials)
            id = try registry.register(by: client, size: size, permit: permit, name: name, addressSpaceBase: nil,
                                       pageSize: pageSize, id: derived)
            pinnedBytes = size
        case .addressSpace(let base, let size, let pageSize, let file):
            sharer = registry.heldFiles.sharer(for: file, of: client)
            try admitSegment(size: 0, by: credentials, bringsAFile: sharer == nil)
            id = try registry.makeAddressSpace(by: client, base: base, size: size, permit: permit, name: name,
                                               pageSize: pageSize, file: file, id: derived,
                                               reregistration: requested != nil)
            pinnedBytes = 0
        }
        // Grants left over from an earlier life of this id in this broker (its exporter's connection was
        // dropped, and importers have not released yet) were given for a segment that is gone; they
        // must not attach the new one, whose mode may differ.
        for holder in registry.grantHolders(of: id) { registry.revokeGrants(of: holder, on: id) }
        // Importers of its earlier life may still map its file read-write (across a restart of the
        // broker, or ignoring `released`), writing where no hint can see: none is trusted until the
        // file is replaced.
        if requested != nil { registry.writableFileHandedOut(of: id) }
        usageOfUID[credentials.uid, default: Usage()].segments += 1
        usageOfUID[credentials.uid, default: Usage()].bytes += pinnedBytes
        let size = registry.segments[id]?.size ?? 0
        let note: BrokerNote = requested == nil
            ? .segmentMade(id, size: size, permit: permit, pid: credentials.pid)
            : .segmentReclaimed(id, size: size, permit: permit, pid: credentials.pid, uid: credentials.uid)
        return [.keepSegmentFiles(id, sharing: sharer), .send(peer, .main, requestID: requestID, .made(id)), .note(note)]
    }
}
