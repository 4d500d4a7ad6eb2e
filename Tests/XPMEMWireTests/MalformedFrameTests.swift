import Testing
import XPMEMWire

/// Every byte from a socket is untrusted: each kind of damage must be refused with the error that
/// names it.
struct MalformedFrameTests {
    /// `.get(0x0102030405060708, .readOnly)`, request id 5, as `GoldenFrameTests` spells it out.
    static let getPayload: [UInt8] = [0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, 0x01]
    static let getType = MessageType.get.rawValue

    @Test func wellFormedHandmadeFrameDecodes() throws {
        // The baseline the damaged variants below start from.
        let frame = try decodeFrame(handmadeFrame(type: Self.getType, requestID: 5, payload: Self.getPayload))
        #expect(frame == Frame(requestID: 5, message: .get(SegmentID(rawValue: 0x0102_0304_0506_0708), .readOnly)))
    }

    @Test func trailingBytesAreRejected() {
        #expect(throws: FrameDecodingError.trailingBytes(1)) {
            try decodeFrame(handmadeFrame(type: Self.getType, payload: Self.getPayload + [0]))
        }
        #expect(throws: FrameDecodingError.trailingBytes(3)) {
            try decodeFrame(handmadeFrame(type: MessageType.done.rawValue, payload: [1, 2, 3]))
        }
    }

    @Test func badMagicIsRejected() {
        #expect(throws: FrameDecodingError.badMagic(0x4D4D_5059)) {
            try decodeFrame(handmadeFrame(type: Self.getType, payload: Self.getPayload, magic: 0x4D4D_5059))
        }
        // The magic is checked first: a short, foreign frame names the magic, not the length.
        #expect(throws: FrameDecodingError.badMagic(0x5454_4547)) {
            try decodeFrame(Array("GETT".utf8))
        }
    }

    @Test func payloadLengthMustMatchTheFrame() {
        #expect(throws: FrameDecodingError.lengthMismatch(declared: 10, actual: 9)) {
            try decodeFrame(handmadeFrame(type: Self.getType, payload: Self.getPayload, declaredLength: 10))
        }
        #expect(throws: FrameDecodingError.lengthMismatch(declared: 8, actual: 9)) {
            try decodeFrame(handmadeFrame(type: Self.getType, payload: Self.getPayload, declaredLength: 8))
        }
        #expect(throws: FrameDecodingError.lengthMismatch(declared: UInt32.max, actual: 9)) {
            try decodeFrame(handmadeFrame(type: Self.getType, payload: Self.getPayload, declaredLength: UInt32.max))
        }
    }

    @Test func headerShorterThanSixteenBytesIsTruncated() {
        let header = handmadeFrame(type: MessageType.done.rawValue, payload: [])
        #expect(throws: FrameDecodingError.truncated(field: "payloadLength")) {
            try decodeFrame(Array(header[..<15]))
        }
        #expect(throws: FrameDecodingError.truncated(field: "magic")) { try decodeFrame([]) }
    }

    @Test("Type numbers the protocol does not define are refused",
          arguments: [UInt16(0), 0x0019, 0x2000, 0x2003, 0x4007, 0x8000, 0x800E, 0x7777, 0xFFFF])
    func unknownTypeIsRejected(_ type: UInt16) {
        #expect(!WireSamples.allMessageTypes.contains(type))
        #expect(throws: FrameDecodingError.unknownType(type)) {
            try decodeFrame(handmadeFrame(type: type, payload: []))
        }
    }

    @Test("An access mode byte other than 1 or 2 is refused", arguments: [UInt8(0), 3, 0x80, 0xFF])
    func invalidAccessModeIsRejected(_ access: UInt8) {
        #expect(throws: FrameDecodingError.invalidValue(field: "access")) {
            try decodeFrame(handmadeFrame(type: Self.getType, payload: Array(Self.getPayload.dropLast()) + [access]))
        }
        let granted = 7.littleEndianBytes + UInt64(4096).littleEndianBytes + [access]
        #expect(throws: FrameDecodingError.invalidValue(field: "access")) {
            try decodeFrame(handmadeFrame(type: MessageType.granted.rawValue, payload: granted))
        }
    }

    @Test("Bytes that are not UTF-8 are refused as a string", arguments: [
        [UInt8(0xFF)], [0xC3], [0xC3, 0x28], [0xED, 0xA0, 0x80], [0x61, 0x80, 0x62],
    ])
    func invalidUTF8IsRejected(_ text: [UInt8]) {
        let body = UInt16(text.count).littleEndianBytes + text
        #expect(throws: FrameDecodingError.invalidValue(field: "clientName")) {
            try decodeFrame(handmadeFrame(type: MessageType.hello.rawValue, payload: body))
        }
    }

    @Test func stringLongerThanItsFieldIsRejected() {
        let name = [UInt8](repeating: 0x61, count: 257)
        #expect(throws: FrameDecodingError.invalidValue(field: "clientName")) {
            try decodeFrame(handmadeFrame(type: MessageType.hello.rawValue,
                                          payload: UInt16(257).littleEndianBytes + name))
        }
    }

    @Test func stringLengthBeyondTheFrameIsTruncated() {
        #expect(throws: FrameDecodingError.truncated(field: "clientName")) {
            try decodeFrame(handmadeFrame(type: MessageType.hello.rawValue,
                                          payload: UInt16(10).littleEndianBytes + Array("abc".utf8)))
        }
    }

    @Test func countClaimingMoreRecordsThanBytesRemainIsRejected() {
        // Refused from the count alone, before any allocation sized by it.
        #expect(throws: FrameDecodingError.invalidValue(field: "clients")) {
            try decodeFrame(handmadeFrame(type: MessageType.clients.rawValue, payload: UInt32.max.littleEndianBytes))
        }
        let oneShortRecord = [0] + UInt32(1).littleEndianBytes + [UInt8](repeating: 0, count: 20)
        #expect(throws: FrameDecodingError.invalidValue(field: "segments")) {
            try decodeFrame(handmadeFrame(type: MessageType.segments.rawValue, payload: oneShortRecord))
        }
        var report = WireSamples.report
        report.importers = []
        let reportBody = payload(of: Frame(requestID: 1, message: .invalidated(report)).encoded())
        // The report's importer count is the four bytes before its (empty) list.
        let claimingTwo = Array(reportBody.dropLast(4)) + UInt32(2).littleEndianBytes + [UInt8](repeating: 1, count: 21)
        #expect(throws: FrameDecodingError.invalidValue(field: "importers")) {
            try decodeFrame(handmadeFrame(type: MessageType.invalidated.rawValue, payload: claimingTwo))
        }
    }

    @Test func boolOtherThanZeroOrOneIsRejected() {
        #expect(throws: FrameDecodingError.invalidValue(field: "more")) {
            try decodeFrame(handmadeFrame(type: MessageType.segments.rawValue,
                                          payload: [2] + UInt32(0).littleEndianBytes))
        }
    }

    @Test func unknownEnumerationValuesAreRejected() {
        let segment = WireSamples.segment.rawValue.littleEndianBytes
        #expect(throws: FrameDecodingError.invalidValue(field: "reason")) {
            try decodeFrame(handmadeFrame(type: MessageType.released.rawValue, payload: segment + [0]))
        }
        let begin = segment + UInt64(0).littleEndianBytes + UInt64(4096).littleEndianBytes + UInt64(1).littleEndianBytes
        #expect(throws: FrameDecodingError.invalidValue(field: "reason")) {
            try decodeFrame(handmadeFrame(type: MessageType.invalidateBegin.rawValue, payload: begin + [8]))
        }
    }

    @Test func unknownErrorCodeBecomesInternalError() throws {
        let body = UInt16(0xBEEF).littleEndianBytes + UInt16(0).littleEndianBytes
        let frame = try decodeFrame(handmadeFrame(type: MessageType.failure.rawValue, payload: body))
        #expect(frame.message == .failure(.internalError, ""))
    }
}
