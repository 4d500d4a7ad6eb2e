import XPMEMWire

/// Property (a): whatever bytes arrive, the decoder answers with a frame or a `FrameDecodingError`
/// (typed throws make any other error impossible; a trap or a sanitizer report fails the run), and
/// what it decodes survives being encoded and decoded again.
enum WireDecodingProperty {
    /// Every message type, in a fixed order, so that one input byte can name one.
    static let allTypes = MessageType.allCases

    /// Untrusted bytes as a whole frame, the way the daemon receives one.
    static func checkWholeFrame(_ bytes: [UInt8]) {
        guard let frame = decode(bytes) else { return }
        checkRoundTrip(frame)
    }

    /// A well-formed header around a payload of a chosen type, so that the fuzzer spends its time in
    /// the payload decoders. (Fake descriptors matter only where a frame reaches the core, so they are
    /// part of `BrokerCoreScenario`'s raw requests.)
    static func checkTypedPayload(_ input: inout FuzzBytes) {
        let typeChoice = Int(input.byte())
        let rawType = typeChoice < allTypes.count ? allTypes[typeChoice].rawValue : input.integer(UInt16.self)
        let requestID = input.integer(UInt32.self)
        let payload = input.rest()
        let bytes = frameBytes(type: rawType, requestID: requestID, payload: payload)
        guard let frame = decode(bytes) else { return }
        check(frame.requestID == requestID, "the decoded request id \(frame.requestID) is not the header's \(requestID)")
        check(frame.message.type.rawValue == rawType, "a frame of type \(rawType) decoded as \(frame.message.type)")
        check((0...2).contains(frame.message.descriptorCount), "\(frame.message.type) claims \(frame.message.descriptorCount) descriptors")
        check(!(frame.message.isRequest && frame.message.isClientEvent), "\(frame.message.type) is both a request and an event")
        checkRoundTrip(frame)
    }

    /// A frame with a correct header (magic, this protocol version, the payload's length).
    static func frameBytes(type: UInt16, requestID: UInt32, payload: [UInt8]) -> [UInt8] {
        var bytes: [UInt8] = []
        func append<T: FixedWidthInteger>(_ value: T) {
            withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
        }
        append(WireProtocol.magic)
        append(WireProtocol.version)
        append(type)
        append(requestID)
        append(UInt32(truncatingIfNeeded: payload.count))
        return bytes + payload
    }

    /// The frame, or nil when the decoder refused it (which is fine: refusing is its job).
    static func decode(_ bytes: [UInt8]) -> Frame? {
        bytes.withUnsafeBytes { raw -> Frame? in
            do throws(FrameDecodingError) {
                return try Frame.decode(raw)
            } catch {
                return nil
            }
        }
    }

    /// Encoding a decoded frame gives bytes that decode to the same frame, and encoding that again gives
    /// the same bytes. (The input's own bytes need not come back: an unknown error code decodes as
    /// `internalError`, and that is what is encoded.)
    static func checkRoundTrip(_ frame: Frame) {
        let encoded = frame.encoded()
        guard let again = decode(encoded) else {
            fatalError("invariant broken: the encoding of a decoded \(frame.message.type) does not decode: \(encoded)")
        }
        check(again.encoded() == encoded, "encoding \(frame.message.type) is not stable across a round trip")
        check(promisesRoundTrip(frame.message) ? again == frame : true,
              "\(frame.message.type) changed in a round trip: \(frame) became \(again)")
    }

    /// Whether the protocol promises that this value comes back unchanged. Listings keep a segment's
    /// permit as text ("0644") and encode it back through `Permit(octal:)`, which takes only the read
    /// and write bits: a permit with other bits, which the broker never lets a segment have, comes back
    /// as 0. Everything else must come back as it was.
    static func promisesRoundTrip(_ message: Message) -> Bool {
        guard case .segments(let list, _) = message else { return true }
        return list.allSatisfy { Permit(octal: $0.mode) != nil }
    }
}
