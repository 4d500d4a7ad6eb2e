import Testing
import XPMEMBrokerCore
import XPMEMWire

/// One row of the permission table: who asks for what on a segment of which mode.
struct PermissionCase: Sendable, CustomTestStringConvertible {
    var who: String
    var requester: Credentials
    var permit: UInt32
    var access: AccessMode
    var allowed: Bool

    var testDescription: String {
        "\(who) \(access) on \(Permit(rawValue: permit)): \(allowed ? "allowed" : "denied")"
    }

    init(_ who: String, _ requester: Credentials, _ permit: UInt32, _ access: AccessMode, _ allowed: Bool) {
        (self.who, self.requester, self.permit, self.access, self.allowed) = (who, requester, permit, access, allowed)
    }
}

/// System V IPC semantics: exactly one class of bits applies (owner, else group, else other), so a
/// generous class never helps someone who falls in a stricter one; the superuser passes everything.
let permissionTable: [PermissionCase] = [
    PermissionCase("owner", People.owner, 0o600, .readOnly, true),
    PermissionCase("owner", People.owner, 0o600, .readWrite, true),
    PermissionCase("owner", People.owner, 0o400, .readOnly, true),
    PermissionCase("owner", People.owner, 0o400, .readWrite, false),
    PermissionCase("owner", People.owner, 0o200, .readOnly, false),
    PermissionCase("owner", People.owner, 0o200, .readWrite, false),
    PermissionCase("owner", People.owner, 0o000, .readOnly, false),
    PermissionCase("owner", People.owner, 0o066, .readOnly, false),
    PermissionCase("owner's uid elsewhere", People.ownerElsewhere, 0o600, .readWrite, true),
    PermissionCase("owner's uid elsewhere", People.ownerElsewhere, 0o066, .readWrite, false),
    PermissionCase("group member", People.groupMember, 0o640, .readOnly, true),
    PermissionCase("group member", People.groupMember, 0o640, .readWrite, false),
    PermissionCase("group member", People.groupMember, 0o660, .readWrite, true),
    PermissionCase("group member", People.groupMember, 0o604, .readOnly, false),
    PermissionCase("group member", People.groupMember, 0o606, .readWrite, false),
    PermissionCase("supplementary member", People.supplementaryMember, 0o640, .readOnly, true),
    PermissionCase("supplementary member", People.supplementaryMember, 0o660, .readWrite, true),
    PermissionCase("supplementary member", People.supplementaryMember, 0o620, .readOnly, false),
    PermissionCase("supplementary member", People.supplementaryMember, 0o604, .readOnly, false),
    PermissionCase("other", People.stranger, 0o604, .readOnly, true),
    PermissionCase("other", People.stranger, 0o604, .readWrite, false),
    PermissionCase("other", People.stranger, 0o606, .readWrite, true),
    PermissionCase("other", People.stranger, 0o602, .readOnly, false),
    PermissionCase("other", People.stranger, 0o660, .readOnly, false),
    PermissionCase("other", People.stranger, 0o000, .readOnly, false),
    PermissionCase("superuser", People.superuser, 0o000, .readOnly, true),
    PermissionCase("superuser", People.superuser, 0o000, .readWrite, true),
]

struct PermissionTests {
    @Test("PermissionPolicy decides each row", arguments: permissionTable)
    func policy(_ row: PermissionCase) {
        let allowed = PermissionPolicy.allows(row.requester, access: row.access, owner: People.owner,
                                              permit: Permit(rawValue: row.permit))
        #expect(allowed == row.allowed)
    }

    @Test("get grants exactly what the policy allows", arguments: permissionTable)
    func get(_ row: PermissionCase) throws {
        var registry = makeRegistry()
        let owner = registry.connect(People.owner, name: "exporter")
        let segment = try registry.make(by: owner, size: 2 * page, permit: Permit(rawValue: row.permit), name: "")
        let requester = registry.connect(row.requester, name: "importer")

        if row.allowed {
            let grant = try registry.get(segment, access: row.access, by: requester)
            #expect(grant.segment == segment)
            #expect(grant.client == requester)
            #expect(grant.access == row.access)
            #expect(registry.grants[grant.handle] == grant)
            #expect(registry.clients[requester]?.grants == [grant.handle])
        } else {
            expectRefusal(.permissionDenied) { () throws(BrokerError) in
                try registry.get(segment, access: row.access, by: requester)
            }
            #expect(registry.grants.isEmpty)
            #expect(registry.clients[requester]?.grants.isEmpty == true)
        }
    }

    @Test func getOfUnknownSegmentIsNotFound() {
        var registry = makeRegistry()
        let importer = registry.connect(People.superuser, name: "importer")
        expectRefusal(.notFound) { () throws(BrokerError) in
            try registry.get(SegmentID(rawValue: 0x1234), access: .readOnly, by: importer)
        }
    }

    @Test func getByUnknownClientMustSayHelloFirst() throws {
        var registry = makeRegistry()
        let owner = registry.connect(People.owner, name: "exporter")
        let segment = try registry.make(by: owner, size: page, permit: Permit(rawValue: 0o666), name: "")
        expectRefusal(.notConnected) { () throws(BrokerError) in
            try registry.get(segment, access: .readOnly, by: ClientID(rawValue: 99))
        }
    }

    @Test func eachGetIssuesADistinctHandle() throws {
        var registry = makeRegistry()
        let owner = registry.connect(People.owner, name: "exporter")
        let segment = try registry.make(by: owner, size: page, permit: Permit(rawValue: 0o666), name: "")
        let importer = registry.connect(People.stranger, name: "importer")
        let handles = try (0..<5).map { _ throws(BrokerError) in
            try registry.get(segment, access: .readOnly, by: importer).handle
        }
        #expect(Set(handles).count == 5)
    }
}
