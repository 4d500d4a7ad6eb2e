import Testing
import XPMEMBrokerCore
import XPMEMWire

struct RegistryLimitTests {
    static let smallLimits: RegistryLimits = {
        var limits = RegistryLimits()
        limits.segmentsPerClient = 2
        limits.grantsPerClient = 2
        limits.attachmentsPerClient = 3
        return limits
    }()

    @Test func segmentsPerClientIsEnforcedAndFreedByRemove() throws {
        var registry = makeRegistry(limits: Self.smallLimits)
        let client = registry.connect(People.owner, name: "exporter")
        let neighbour = registry.connect(People.owner, name: "neighbour")
        let first = try registry.make(by: client, size: page, permit: Permit(rawValue: 0o600), name: "")
        _ = try registry.make(by: client, size: page, permit: Permit(rawValue: 0o600), name: "")

        expectRefusal(.resourceExhausted) { () throws(BrokerError) in
            try registry.make(by: client, size: page, permit: Permit(rawValue: 0o600), name: "")
        }
        // The cap is per client...
        _ = try registry.make(by: neighbour, size: page, permit: Permit(rawValue: 0o600), name: "")
        // ...and counts what is held now, not what was ever made.
        try registry.remove(first, by: client)
        _ = try registry.make(by: client, size: page, permit: Permit(rawValue: 0o600), name: "")
    }

    @Test func grantsPerClientIsEnforcedAndFreedByRelease() throws {
        var registry = makeRegistry(limits: Self.smallLimits)
        let owner = registry.connect(People.owner, name: "exporter")
        let segment = try registry.make(by: owner, size: page, permit: Permit(rawValue: 0o666), name: "")
        let importer = registry.connect(People.stranger, name: "importer")
        let first = try registry.get(segment, access: .readOnly, by: importer).handle
        _ = try registry.get(segment, access: .readOnly, by: importer)

        expectRefusal(.resourceExhausted) { () throws(BrokerError) in
            try registry.get(segment, access: .readOnly, by: importer)
        }
        #expect(registry.grants.count == 2)
        _ = try registry.get(segment, access: .readOnly, by: owner)
        try registry.release(first, by: importer)
        _ = try registry.get(segment, access: .readOnly, by: importer)
    }

    @Test func attachmentsPerClientIsEnforcedAndFreedByDetach() throws {
        var registry = makeRegistry(limits: Self.smallLimits)
        let owner = registry.connect(People.owner, name: "exporter")
        let segment = try registry.make(by: owner, size: page, permit: Permit(rawValue: 0o666), name: "")
        let importer = registry.connect(People.stranger, name: "importer")
        let handle = try registry.get(segment, access: .readOnly, by: importer).handle
        let first = try registry.attach(handle, offset: 0, length: page, by: importer)
        for _ in 0..<2 { _ = try registry.attach(handle, offset: 0, length: page, by: importer) }

        expectRefusal(.resourceExhausted) { () throws(BrokerError) in
            try registry.attach(handle, offset: 0, length: page, by: importer)
        }
        #expect(registry.attachments.count == 3)
        try registry.detach(first.id, by: importer)
        _ = try registry.attach(handle, offset: 0, length: page, by: importer)
    }
}
