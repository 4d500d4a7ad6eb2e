/// Where things live in a rank's control segment. Every rank exports one; all have the same layout
/// for a given job size.
///
/// Rule that keeps shutdown safe: a rank **polls only its own segment** and only *writes* into
/// peers' (ring slots, barrier arrivals, acknowledgements). A peer that has finished and exited is
/// then never read through a mapping that the broker has already revoked.
///
/// ```
/// line 0                     magic
/// lines 1 ..< 1+size         arrivals[p]: barrier epoch rank p reached (written by p)
/// lines 1+size ..< 1+2*size  acknowledged[p]: single-copy messages from this rank p has copied (written by p)
/// line 1+2*size              publication: this rank's buffers for a collective (written by this rank)
/// lines 2+2*size ..< 2+3*size  helpRequest[p]: rank p, receiving a large single-copy message from
///                            this rank, asks it to copy part of it (written by p; `CooperativeCopy`)
/// lines 2+3*size ..< 2+4*size  helpDone[p]: rank p copied the part this rank asked of it (written by p)
/// rings, from ringsOffset:   ring[s] holds messages from rank s to this rank
///   ring line 0              consumed: messages the receiver has taken out (written by the receiver)
///   slots                    slotCount × slotSize; slot header (32 bytes) then payload
/// ```
/// Lines are 128 bytes: adjacent 64-byte lines are prefetched in pairs, so 128 keeps two writers'
/// words from sharing a transfer.
struct ControlLayout: Sendable {
    static let line = 128
    static let magic: UInt64 = 0x5850_4D45_4D43_4F4D  // "XPMEMCOM"
    /// Slot header: sequence (8), kind (4), fragment bytes (4), tag (8), total length (8).
    static let slotHeader = 32

    let size: Int
    let slotCount: Int
    let slotSize: Int

    init(size: Int, slotCount: Int = 32, slotSize: Int = 8192) {
        self.size = size
        self.slotCount = slotCount
        self.slotSize = slotSize
    }

    var slotPayload: Int { slotSize - ControlLayout.slotHeader }
    func arrivalOffset(of rank: Int) -> Int { ControlLayout.line * (1 + rank) }
    func acknowledgedOffset(of rank: Int) -> Int { ControlLayout.line * (1 + size + rank) }
    var publicationOffset: Int { ControlLayout.line * (1 + 2 * size) }
    func helpRequestOffset(of rank: Int) -> Int { ControlLayout.line * (2 + 2 * size + rank) }
    func helpDoneOffset(of rank: Int) -> Int { ControlLayout.line * (2 + 3 * size + rank) }
    /// Header lines rounded up to a page, so rings start page-aligned.
    var ringsOffset: Int { (ControlLayout.line * (2 + 4 * size) + 4095) & ~4095 }
    var ringStride: Int { ControlLayout.line + slotCount * slotSize }
    func ringOffset(from sender: Int) -> Int { ringsOffset + sender * ringStride }
    var segmentSize: Int { ringsOffset + size * ringStride }
}

/// What a slot carries.
enum SlotKind: UInt32 {
    /// Bytes, the first (or only) fragment of a message.
    case eager = 1
    /// More bytes of the message the previous slot started.
    case continuation = 2
    /// No bytes: a descriptor (segment id, offset) of the sender's exported buffer to copy from.
    case singleCopy = 3
}

/// One sender→receiver ring inside the receiver's segment, as seen through some mapping of it.
struct MessageRing {
    let base: UnsafeMutableRawPointer
    let layout: ControlLayout

    var consumed: SharedWord { SharedWord(base) }

    func slot(_ number: UInt64) -> UnsafeMutableRawPointer {
        base + ControlLayout.line + Int(number % UInt64(layout.slotCount)) * layout.slotSize
    }

    /// The slot's sequence word: message number + 1 once the slot holds that message.
    func sequence(of slot: UnsafeMutableRawPointer) -> SharedWord { SharedWord(slot) }
}

/// A slot's header fields beyond the sequence word.
struct SlotHeader {
    var kind: UInt32
    var fragmentBytes: UInt32
    var tag: Int64
    var totalLength: UInt64

    init(kind: SlotKind, fragmentBytes: Int, tag: Int, totalLength: Int) {
        self.kind = kind.rawValue
        self.fragmentBytes = UInt32(fragmentBytes)
        self.tag = Int64(tag)
        self.totalLength = UInt64(totalLength)
    }

    init(readingFrom slot: UnsafeRawPointer) {
        kind = slot.load(fromByteOffset: 8, as: UInt32.self)
        fragmentBytes = slot.load(fromByteOffset: 12, as: UInt32.self)
        tag = slot.load(fromByteOffset: 16, as: Int64.self)
        totalLength = slot.load(fromByteOffset: 24, as: UInt64.self)
    }

    /// Just the fragment length, for the receive loop that needs nothing else from later slots.
    static func fragmentBytes(in slot: UnsafeRawPointer) -> Int { Int(slot.load(fromByteOffset: 12, as: UInt32.self)) }

    func write(to slot: UnsafeMutableRawPointer) {
        slot.storeBytes(of: kind, toByteOffset: 8, as: UInt32.self)
        slot.storeBytes(of: fragmentBytes, toByteOffset: 12, as: UInt32.self)
        slot.storeBytes(of: tag, toByteOffset: 16, as: Int64.self)
        slot.storeBytes(of: totalLength, toByteOffset: 24, as: UInt64.self)
    }
}
