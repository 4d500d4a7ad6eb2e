import Testing
import XPMEMWire

struct FrameRoundTripTests {
    @Test("The samples include every message type, so the round trip covers the whole protocol")
    func samplesCoverEveryMessageType() {
        let sampled = Set(WireSamples.messages.map(\.type.rawValue))
        #expect(sampled == WireSamples.allMessageTypes)
    }

    @Test("A message decodes to itself, header included", arguments: WireSamples.messages)
    func roundTrip(_ message: Message) throws {
        let frame = Frame(requestID: 0xDEAD_BEEF, message: message)
        let bytes = frame.encoded()

        let header = try decodeHeader(bytes)
        #expect(header.version == WireProtocol.version)
        #expect(header.type == message.type.rawValue)
        #expect(header.requestID == 0xDEAD_BEEF)
        #expect(Int(header.payloadLength) == bytes.count - FrameHeader.size)

        #expect(try decodeFrame(bytes) == frame)
    }

    @Test("Every message fits in the largest frame its receiver accepts", arguments: WireSamples.messages)
    func encodedSizeWithinLimit(_ message: Message) {
        let limit = message.isRequest || message.isClientEvent
            ? WireProtocol.maximumRequestSize : WireProtocol.maximumReplySize
        #expect(Frame(requestID: 1, message: message).encoded().count <= limit)
    }

    @Test("Cutting a frame anywhere gives a FrameDecodingError, never a crash or a different message",
          arguments: WireSamples.messages)
    func everyTruncationFails(_ message: Message) {
        let bytes = Frame(requestID: 9, message: message).encoded()
        for length in 0..<bytes.count {
            #expect(throws: FrameDecodingError.self, "first \(length) of \(bytes.count) bytes") {
                try decodeFrame(Array(bytes[..<length]))
            }
        }
    }

    @Test("A cut payload whose header agrees with it still fails inside the message decoder",
          arguments: WireSamples.messages)
    func everyConsistentTruncationFails(_ message: Message) {
        // Fixing up the header's length gets past the length check, so this reaches each field's bounds check.
        let body = payload(of: Frame(requestID: 9, message: message).encoded())
        for length in 0..<body.count {
            let frame = handmadeFrame(type: message.type.rawValue, payload: Array(body[..<length]))
            #expect(throws: FrameDecodingError.self, "first \(length) of \(body.count) payload bytes") {
                try decodeFrame(frame)
            }
        }
    }

    @Test("The version is carried, not checked, so the receiver can answer a mismatch in words")
    func otherVersionStillDecodes() throws {
        let bytes = Frame(requestID: 2, message: .hello(clientName: "old")).encoded(version: 9)
        #expect(try decodeHeader(bytes).version == 9)
        #expect(try decodeFrame(bytes) == Frame(requestID: 2, message: .hello(clientName: "old")))
    }

    @Test("A string longer than its field is cut on a character boundary, so it still decodes")
    func longStringIsCutOnCharacterBoundary() throws {
        // "a" shifts the two-byte "é"s so that byte 256 falls inside one of them.
        let name = "a" + String(repeating: "é", count: 200)
        let decoded = try decodeFrame(Frame(requestID: 1, message: .hello(clientName: name)).encoded())
        #expect(decoded.message == .hello(clientName: "a" + String(repeating: "é", count: 127)))
    }
}
