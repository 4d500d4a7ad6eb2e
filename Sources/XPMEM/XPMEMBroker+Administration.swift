import XPMEMWire

extension XPMEMBroker {
    /// The broker's counters (what `xpmemctl status` prints).
    public func status() throws(XPMEMError) -> BrokerStatus {
        let reply = try channel.request(.queryStatus)
        guard case .status(let status) = reply.message else { throw BrokerChannel.unexpected(reply.message, for: .queryStatus) }
        return status
    }

    /// Every segment the broker holds, in id order (fetched page by page).
    public func segments() throws(XPMEMError) -> [SegmentSummary] {
        var all: [SegmentSummary] = []
        var cursor: SegmentID? = nil
        while true {
            let message = Message.listSegments(after: cursor)
            let reply = try channel.request(message)
            guard case .segments(let page, let more) = reply.message else {
                throw BrokerChannel.unexpected(reply.message, for: message)
            }
            all += page
            guard more, let last = page.last.flatMap({ SegmentID($0.id) }) else { return all }
            cursor = last
        }
    }

    /// The connected clients.
    public func clients() throws(XPMEMError) -> [ClientSummary] {
        let reply = try channel.request(.listClients)
        guard case .clients(let list) = reply.message else { throw BrokerChannel.unexpected(reply.message, for: .listClients) }
        return list
    }
}

extension XPMEMBroker {
    /// Tells the broker what this client's attachment cache did, for `xpmemctl clients`; the broker
    /// keeps it until the next report or the end of the connection.
    public func reportAttachCache(_ counters: AttachCacheCounters) throws(XPMEMError) {
        try channel.requestDone(.reportAttachCache(counters))
    }
}
