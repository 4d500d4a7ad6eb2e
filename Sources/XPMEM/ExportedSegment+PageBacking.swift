import XPMEMSystem
import XPMEMWire

extension ExportedSegment {
    /// What backs the segment in this process now (huge pages mapped as such, from
    /// `/proc/self/smaps`), also told to the broker for `xpmemctl segments`. Pages come with first
    /// touch, so ask after the segment is written.
    @discardableResult
    public func pageBacking() throws(XPMEMError) -> PageBacking {
        let bytes: Int
        do {
            bytes = hugePages == .none ? 0 : try TransparentHugePages.pmdMappedBytes(start: baseAddress, length: size)
        } catch {
            throw XPMEMError.system("reading /proc/self/smaps", error)
        }
        let backing = PageBacking(requested: hugePages, hugePageBytes: min(bytes, size), size: size)
        try broker.channel.requestDone(.describePages(id, pages: backing.description))
        return backing
    }
}
