import XPMEM

/// A large single-copy message copied by both ranks at once. One core's memcpy from DRAM caps a
/// single-copy receive; but both ranks are inside the transfer anyway (the sender waits for the
/// acknowledgement), and both have both buffers mapped (the receiver the sender's, through its
/// attachment; the sender the receiver's, when it is a `SharedBuffer` too). So the receiver asks the
/// sender to copy the upper part of the message straight into the receiver's buffer while it copies
/// the lower part itself.
///
/// Words, keeping `ControlLayout`'s rule (a rank polls only its own segment):
/// - the receiver writes its request into the **sender's** segment, line `helpRequest[receiver]`:
///   destination segment, offset of the receive buffer in it, start and length of the sender's part,
///   then the request's sequence number (last, released);
/// - the sender, polling its own segment while it waits for the acknowledgement, copies that part and
///   writes `sequence << 1 | declined` into the **receiver's** segment, line `helpDone[sender]`;
///   `declined` (it could not map the receiver's buffer) leaves the part to the receiver.
struct CooperativeCopy {
    /// Messages at least this long are split (`XPMEM_COMM_COOPERATIVE_COPY_BYTES`, 64 KiB by default;
    /// 0 turns it off).
    let threshold: Int
    private let copier: MessageCopy
    private let rank: Int
    private let addresses: ControlAddresses
    private let buffers: SharedBuffers
    private let waiter: PeerWaiter
    /// Per sender: requests this rank made of it. Per receiver: the last of its requests served.
    private let requested: PeerCounters
    private let served: PeerCounters
    /// Messages received here whose upper part the sender copied.
    private let helped = PeerCounters(peers: 1)

    var messagesHelped: Int { Int(helped[0]) }

    init(rank: Int, size: Int, addresses: ControlAddresses, buffers: SharedBuffers, waiter: PeerWaiter, threshold: Int,
         copier: MessageCopy) {
        self.copier = copier
        self.rank = rank
        self.addresses = addresses
        self.buffers = buffers
        self.waiter = waiter
        self.threshold = threshold
        requested = PeerCounters(peers: size)
        served = PeerCounters(peers: size)
    }

    /// Receiver: copies `length` bytes from `source` (the sender's buffer, mapped here) into `buffer`
    /// with the sender's help, when the message is long enough and `buffer` is one the sender can
    /// map; returns false (nothing copied) otherwise.
    func receive(_ length: Int, from source: UnsafeRawPointer, of sender: Int,
                 into buffer: UnsafeMutableRawBufferPointer) throws(CommunicatorError) -> Bool {
        guard threshold > 0, length >= threshold,
              let destination = buffers.exports.locate(UnsafeRawBufferPointer(rebasing: buffer[0..<length]))
        else { return false }
        // The sender takes the upper half, from a cache-line boundary.
        let split = (length / 2) & ~63
        requested[sender] += 1
        let sequence = requested[sender]
        let request = addresses.bases[sender] + addresses.layout.helpRequestOffset(of: rank)
        request.storeBytes(of: destination.id.rawValue, toByteOffset: 8, as: UInt64.self)
        request.storeBytes(of: UInt64(destination.offset), toByteOffset: 16, as: UInt64.self)
        request.storeBytes(of: UInt64(split), toByteOffset: 24, as: UInt64.self)
        request.storeBytes(of: UInt64(length - split), toByteOffset: 32, as: UInt64.self)
        SharedWord(request).store(sequence)
        copier.copy(to: buffer.baseAddress!, from: source, byteCount: split, ofMessage: length)
        let done = addresses.word(of: rank, at: addresses.layout.helpDoneOffset(of: sender))
        try waiter.wait(for: sender) { done.load() >> 1 >= sequence }
        if done.load() & 1 != 0 {
            copier.copy(to: buffer.baseAddress! + split, from: source + split, byteCount: length - split, ofMessage: length)
        } else {
            helped[0] += 1
        }
        return true
    }

    /// Sender, while it waits for `receiver` to acknowledge the message at `bytes`: copies the part
    /// the receiver asked for, if it asked. Returns whether it served a request.
    @discardableResult
    func serve(_ receiver: Int, sending bytes: UnsafeRawBufferPointer) -> Bool {
        let request = addresses.bases[rank] + addresses.layout.helpRequestOffset(of: receiver)
        let sequence = SharedWord(request).load()
        guard sequence > served[receiver] else { return false }
        served[receiver] = sequence
        let segment = SegmentID(rawValue: request.load(fromByteOffset: 8, as: UInt64.self))
        let offset = Int(truncatingIfNeeded: request.load(fromByteOffset: 16, as: UInt64.self))
        let start = Int(truncatingIfNeeded: request.load(fromByteOffset: 24, as: UInt64.self))
        let count = Int(truncatingIfNeeded: request.load(fromByteOffset: 32, as: UInt64.self))
        var declined: UInt64 = 1
        if start >= 0, count >= 0, start <= bytes.count - count, offset >= 0,
           let target = try? buffers.peerBytes(of: segment), offset <= target.count - start - count {
            copier.copy(to: target.baseAddress! + offset + start, from: bytes.baseAddress! + start, byteCount: count,
                        ofMessage: bytes.count)
            declined = 0
        }
        addresses.word(of: receiver, at: addresses.layout.helpDoneOffset(of: rank)).store(sequence << 1 | declined)
        return true
    }

    /// Frees the counters; call once, when the communicator goes.
    func deallocate() {
        helped.deallocate()
        requested.deallocate()
        served.deallocate()
    }
}
