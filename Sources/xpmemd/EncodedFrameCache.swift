import XPMEMWire

/// The last frame the broker encoded, kept for the next send: an invalidation's begin and end go to
/// every importer as the very same bytes, and a fan-out to 64 importers would otherwise encode them
/// 64 times.
struct EncodedFrameCache {
    private var last: (requestID: UInt32, message: Message, bytes: [UInt8])?

    mutating func bytes(of message: Message, requestID: UInt32) -> [UInt8] {
        if let last, last.requestID == requestID, last.message == message { return last.bytes }
        let bytes = Frame(requestID: requestID, message: message).encoded()
        last = (requestID, message, bytes)
        return bytes
    }
}
