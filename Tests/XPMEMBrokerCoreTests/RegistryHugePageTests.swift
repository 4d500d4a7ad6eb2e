import Testing
import XPMEMBrokerCore
import XPMEMWire

/// A segment whose file has huge pages (a hugetlb memfd): everything that maps or stops part of it
/// must be aligned to its pages, not to the base page size.
struct RegistryHugePageTests {
    static let huge: UInt64 = 2 << 20

    @Test("a hugetlb segment takes attaches and invalidations aligned to its pages and refuses others")
    func alignmentFollowsTheSegmentsPages() throws {
        var registry = makeRegistry()
        let owner = registry.connect(People.owner, name: "exporter")
        let segment = try registry.make(by: owner, size: 4 * Self.huge, permit: Permit(rawValue: 0o606), name: "huge",
                                        pageSize: Self.huge)
        #expect(registry.segments[segment]?.pageSize == Self.huge)
        let importer = registry.connect(People.stranger, name: "importer")
        let handle = try registry.get(segment, access: .readWrite, by: importer).handle

        let record = try registry.attach(handle, offset: Self.huge, length: 2 * Self.huge, by: importer)
        #expect(record.offset == Self.huge && record.length == 2 * Self.huge)
        for (offset, length) in [(page, Self.huge), (0, page), (Self.huge, Self.huge + page), (Self.huge / 2, Self.huge)] {
            #expect {
                try registry.attach(handle, offset: offset, length: length, by: importer)
            } throws: { error in
                let error = error as? BrokerError
                return error?.code == .invalidArgument && error?.message.contains("page size \(Self.huge)") == true
            }
            #expect(throws: BrokerError.self) {
                try registry.authorizeInvalidation(of: segment, offset: offset, length: length, by: owner)
            }
        }
        try registry.authorizeInvalidation(of: segment, offset: 0, length: Self.huge, by: owner)
    }

    @Test("a hugetlb segment's size must be whole huge pages, and an address space cannot have them")
    func sizesAndAddressSpaces() throws {
        var registry = makeRegistry()
        let owner = registry.connect(People.owner, name: "exporter")
        #expect(throws: BrokerError.self) {
            try registry.make(by: owner, size: Self.huge + page, permit: Permit(rawValue: 0o600), name: "", pageSize: Self.huge)
        }
        // Not a power of two, or smaller than a base page: no kernel file has such pages.
        for bogus: UInt64 in [3 << 20, 1024] {
            #expect(throws: BrokerError.self) {
                try registry.make(by: owner, size: 6 << 20, permit: Permit(rawValue: 0o600), name: "", pageSize: bogus)
            }
        }
        let plain = try registry.make(by: owner, size: page, permit: Permit(rawValue: 0o600), name: "plain")
        #expect(registry.segments[plain]?.pageSize == page)
        #expect(registry.segments.count == 1)
    }

    @Test("a make through the core records the page size the daemon read from the file")
    func coreRecordsTheFilesPageSize() throws {
        var harness = BrokerCoreHarness()
        let (exporter, _) = harness.join(People.owner)
        let reply = harness.request(.make(size: 2 * Self.huge, permit: Permit(rawValue: 0o600), name: "huge"),
                                    from: exporter, filePageSize: Self.huge)
        guard case .made(let id) = reply else {
            Issue.record("make was answered \(String(describing: reply))")
            return
        }
        #expect(harness.core.registry.segments[id]?.pageSize == Self.huge)
        let refused = harness.request(.makeAddressSpace(base: 0, size: Self.huge, permit: Permit(rawValue: 0o600), name: ""),
                                      from: exporter, filePageSize: Self.huge)
        guard case .failure(let code, let text) = refused else {
            Issue.record("an address space with huge pages was answered \(String(describing: refused))")
            return
        }
        #expect(code == .invalidArgument && text.contains("address space"), "\(text)")
    }
}
