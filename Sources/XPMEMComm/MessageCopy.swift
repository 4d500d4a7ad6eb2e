import XPMEMSystem

/// How the communicator copies a message's bytes: an ordinary memcpy, or, for messages at least as
/// large as the last-level cache, non-temporal stores (`StreamingCopy`), which leave out the read
/// of each destination line an ordinary store makes and so move a third less through DRAM. Smaller
/// buffers stay in the cache from one message to the next, and streaming stores would push them
/// out. Pingpong, 2 ranks, 2026-12-02 (`xprun -n 2 --bind core pingpong --sizes 4M,8M,16M,32M,64M`,
/// three interleaved pairs, 32 MiB last-level cache): streaming 19–20 GB/s at every size; ordinary
/// stores 56–67 GB/s at 4 and 8 MiB, 26–35 at 16 MiB, 16–17 at 32 MiB, 12.6–14.7 at 64 MiB.
struct MessageCopy: Sendable {
    /// Messages at least this long are copied with streaming stores
    /// (`XPMEM_COMM_STREAMING_COPY_BYTES`; by default the last-level cache's size; 0 turns it off).
    let streamingThreshold: Int

    init(streamingThreshold: Int) { self.streamingThreshold = streamingThreshold }

    /// The threshold from the environment, or the last-level cache's size (0, never, when that is
    /// unknown).
    static func fromEnvironment() -> MessageCopy {
        let configured = ThisProcess.environment("XPMEM_COMM_STREAMING_COPY_BYTES").flatMap { Int($0) }
        return MessageCopy(streamingThreshold: configured ?? StreamingCopy.lastLevelCacheBytes)
    }

    /// Copies `byteCount` bytes, part (or all) of a message `messageLength` bytes long (with memcpy
    /// where memcpy streams by itself: `StreamingCopy.memcpyStreams`).
    func copy(to destination: UnsafeMutableRawPointer, from source: UnsafeRawPointer, byteCount: Int,
              ofMessage messageLength: Int) {
        if streamingThreshold > 0, messageLength >= streamingThreshold, !StreamingCopy.memcpyStreams(byteCount) {
            StreamingCopy.copy(to: destination, from: source, byteCount: byteCount)
        } else {
            destination.copyMemory(from: source, byteCount: byteCount)
        }
    }
}
