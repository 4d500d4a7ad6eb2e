import XPMEM
import XPMEMSystem

/// How ranks find each other's control segments: each writes its segment id, as 16 hex digits, to
/// `DIR/rank-N.segment` (written to a temporary name and renamed, so a reader never sees half of
/// it), and reads the others' files, retrying until they appear. A file left by an earlier job under
/// the same name names a removed segment: `get` refuses it, and the reader keeps retrying until the
/// new rank's rename replaces it.
struct Rendezvous {
    let directory: String

    func path(of rank: Int) -> String { "\(directory)/rank-\(rank).segment" }

    /// Creates the directory (mode 0700; fine if it exists and is ours) and publishes this rank's id.
    func publish(_ segment: SegmentID, rank: Int) throws(CommunicatorError) {
        do {
            try FileSystem.ensurePrivateDirectory(directory)
            try FileSystem.writeAtomically("\(segment)\n", to: path(of: rank))
        } catch {
            throw .broker(XPMEMError(.systemCallFailed, "publishing \(path(of: rank)): \(error)"))
        }
    }

    /// The id rank `rank` published, or nil if its file is not there yet.
    func read(rank: Int) -> SegmentID? {
        FileSystem.readSmallFile(path(of: rank), limit: 64).flatMap { SegmentID($0.trimmingSpaces) }
    }

    /// Removes this rank's file once every peer has attached (after the job's first barrier).
    func withdraw(rank: Int) { FileSystem.removeQuietly(path(of: rank)) }
}

extension String {
    fileprivate var trimmingSpaces: String {
        String(unicodeScalars.filter { !$0.properties.isWhitespace })
    }
}
