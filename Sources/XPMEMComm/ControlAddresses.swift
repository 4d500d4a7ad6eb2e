/// Where the parts of every rank's control segment are in this process: `ControlLayout`'s offsets
/// applied to each segment's base as mapped here (this rank's own export, peers' attachments).
struct ControlAddresses {
    let layout: ControlLayout
    /// Base of every rank's control segment, indexed by rank.
    let bases: [UnsafeMutableRawPointer]

    func word(of owner: Int, at offset: Int) -> SharedWord { SharedWord(bases[owner] + offset) }

    /// The ring carrying messages from `sender` to `receiver` (it lives in the receiver's segment).
    func ring(from sender: Int, to receiver: Int) -> MessageRing {
        MessageRing(base: bases[receiver] + layout.ringOffset(from: sender), layout: layout)
    }

    /// Where `owner` announces its buffers to a collective.
    func publicationLine(of owner: Int) -> UnsafeMutableRawPointer { bases[owner] + layout.publicationOffset }
}
