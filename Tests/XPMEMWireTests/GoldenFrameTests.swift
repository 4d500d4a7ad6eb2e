import Testing
import XPMEMWire

/// Frames written out byte by byte: they pin the wire format, so an accidental change to field order,
/// width or endianness breaks these even when encoder and decoder change together.
struct GoldenFrameTests {
    @Test func getFrame() throws {
        let frame = Frame(requestID: 5, message: .get(SegmentID(rawValue: 0x0102_0304_0506_0708), .readOnly))
        let expected: [UInt8] = [
            0x58, 0x50, 0x4D, 0x4D,  // magic "XPMM"
            0x03, 0x00,  // version 3
            0x04, 0x00,  // type get
            0x05, 0x00, 0x00, 0x00,  // request id 5
            0x09, 0x00, 0x00, 0x00,  // payload length 9
            0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,  // segment id
            0x01,  // read-only
        ]
        #expect(frame.encoded() == expected)
        #expect(try decodeFrame(expected) == frame)
    }

    @Test func failureFrame() throws {
        let frame = Frame(requestID: 0xA1B2_C3D4, message: .failure(.permissionDenied, "no"))
        let expected: [UInt8] = [
            0x58, 0x50, 0x4D, 0x4D,
            0x03, 0x00,
            0x06, 0x80,  // type failure (0x8006)
            0xD4, 0xC3, 0xB2, 0xA1,
            0x06, 0x00, 0x00, 0x00,
            0x02, 0x00,  // code permissionDenied
            0x02, 0x00, 0x6E, 0x6F,  // "no"
        ]
        #expect(frame.encoded() == expected)
        #expect(try decodeFrame(expected) == frame)
    }

    @Test func makeFrameWithMultibyteName() throws {
        let frame = Frame(requestID: 1, message: .make(size: 0x2000, permit: Permit(rawValue: 0o640), name: "é"))
        let expected: [UInt8] = [
            0x58, 0x50, 0x4D, 0x4D,
            0x03, 0x00,
            0x02, 0x00,  // type make
            0x01, 0x00, 0x00, 0x00,
            0x10, 0x00, 0x00, 0x00,  // payload length 16
            0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // size 8 KiB
            0xA0, 0x01, 0x00, 0x00,  // permit 0o640
            0x02, 0x00, 0xC3, 0xA9,  // "é" in UTF-8
        ]
        #expect(frame.encoded() == expected)
        #expect(try decodeFrame(expected) == frame)
    }

    @Test func listSegmentsFromTheStartSendsZero() throws {
        let expected: [UInt8] = [
            0x58, 0x50, 0x4D, 0x4D, 0x03, 0x00, 0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ]
        let frame = Frame(requestID: 3, message: .listSegments(after: nil))
        #expect(frame.encoded() == expected)
        #expect(try decodeFrame(expected) == frame)
    }

    /// What the C library's exporter sends after backing a range: the layout it writes by hand.
    @Test func rangeBackedFrame() throws {
        let frame = Frame(requestID: 0, message: .rangeBacked(SegmentID(rawValue: 0x11), sequence: 2, failure: nil,
                                                             text: "", extents: [BackedExtent(start: 0x1000, length: 0x2000)]))
        let expected: [UInt8] = [
            0x58, 0x50, 0x4D, 0x4D, 0x03, 0x00,
            0x02, 0x20,  // type rangeBacked
            0x00, 0x00, 0x00, 0x00,  // request id 0
            0x28, 0x00, 0x00, 0x00,  // payload length 40
            0x11, 0, 0, 0, 0, 0, 0, 0,  // segment id
            0x02, 0, 0, 0, 0, 0, 0, 0,  // sequence
            0x00, 0x00,  // code 0: backed
            0x00, 0x00,  // empty text
            0x01, 0x00, 0x00, 0x00,  // one extent
            0x00, 0x10, 0, 0, 0, 0, 0, 0,  // start
            0x00, 0x20, 0, 0, 0, 0, 0, 0,  // length
        ]
        #expect(frame.encoded() == expected)
        #expect(try decodeFrame(expected) == frame)
    }

    @Test func attachedWindowFrame() throws {
        let frame = Frame(requestID: 7, message: .attachedWindow(AttachmentID(rawValue: 3), fileOffset: 0x7000, extents: []))
        let expected: [UInt8] = [
            0x58, 0x50, 0x4D, 0x4D, 0x03, 0x00,
            0x0B, 0x80,  // type attachedWindow
            0x07, 0x00, 0x00, 0x00,
            0x14, 0x00, 0x00, 0x00,  // payload length 20
            0x03, 0, 0, 0, 0, 0, 0, 0,  // attachment
            0x00, 0x70, 0, 0, 0, 0, 0, 0,  // file offset
            0x00, 0x00, 0x00, 0x00,  // no extents: all holes
        ]
        #expect(frame.encoded() == expected)
        #expect(try decodeFrame(expected) == frame)
    }

    @Test func hintFreeAndItsAnswerFrames() throws {
        let hint = Frame(requestID: 5, message: .hintFree(SegmentID(rawValue: 0x0102_0304_0506_0708), offset: 0x2000,
                                                          length: 0x4_0000))
        let hintBytes: [UInt8] = [
            0x58, 0x50, 0x4D, 0x4D, 0x03, 0x00,
            0x15, 0x00,  // type hintFree
            0x05, 0x00, 0x00, 0x00,
            0x18, 0x00, 0x00, 0x00,  // payload length 24
            0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,  // segid
            0x00, 0x20, 0, 0, 0, 0, 0, 0,  // offset
            0x00, 0x00, 0x04, 0, 0, 0, 0, 0,  // length
        ]
        #expect(hint.encoded() == hintBytes)
        #expect(try decodeFrame(hintBytes) == hint)
        let answer = Frame(requestID: 5, message: .freePages(count: 64))
        let answerBytes: [UInt8] = [
            0x58, 0x50, 0x4D, 0x4D, 0x03, 0x00,
            0x0D, 0x80,  // type freePages
            0x05, 0x00, 0x00, 0x00,
            0x08, 0x00, 0x00, 0x00,  // payload length 8
            0x40, 0, 0, 0, 0, 0, 0, 0,  // count
        ]
        #expect(answer.encoded() == answerBytes)
        #expect(try decodeFrame(answerBytes) == answer)
    }

    /// The C library writes this frame too (libxpmem/tests/wire_tests.c holds the same bytes).
    @Test func claimAddressSpaceFrame() throws {
        let frame = Frame(requestID: 7, message: .claimAddressSpace(
            SegmentID(rawValue: 0x0102_0304_0506_0708), token: ReclaimToken(high: 0x1112_1314_1516_1718, low: 0x2122_2324_2526_2728),
            base: 0x7F00_0000_0000, size: 0x10000, permit: Permit(rawValue: 0o600), name: "x"))
        let expected: [UInt8] = [
            0x58, 0x50, 0x4D, 0x4D, 0x03, 0x00,
            0x12, 0x00,  // type claimAddressSpace
            0x07, 0x00, 0x00, 0x00,
            0x2F, 0x00, 0x00, 0x00,  // payload length 47
            0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,  // segment id
            0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11,  // token, high half
            0x28, 0x27, 0x26, 0x25, 0x24, 0x23, 0x22, 0x21,  // token, low half
            0x00, 0x00, 0x00, 0x00, 0x00, 0x7F, 0x00, 0x00,  // base
            0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,  // size
            0x80, 0x01, 0x00, 0x00,  // permit 0600
            0x01, 0x00, 0x78,  // "x"
        ]
        #expect(frame.encoded() == expected)
        #expect(try decodeFrame(expected) == frame)
    }

    /// The C library writes this frame too (libxpmem/tests/wire_tests.c holds the same bytes).
    @Test func reportAttachCacheFrame() throws {
        let frame = Frame(requestID: 9, message: .reportAttachCache(AttachCacheCounters(
            hits: 1, misses: 2, capacityEvictions: 3, pressureEvictions: 4, entries: 5, bytes: 0x0102_0304_0506_0708)))
        let expected: [UInt8] = [
            0x58, 0x50, 0x4D, 0x4D, 0x03, 0x00,
            0x14, 0x00,  // type reportAttachCache
            0x09, 0x00, 0x00, 0x00,
            0x30, 0x00, 0x00, 0x00,  // payload length 48
            0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // hits
            0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // misses
            0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // evictions by capacity
            0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // evictions by pressure
            0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // entries
            0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,  // bytes
        ]
        #expect(frame.encoded() == expected)
        #expect(try decodeFrame(expected) == frame)
    }

    /// A client that reported its attachment cache: the counters follow its name, after a presence byte.
    @Test func clientsFrameWithAttachCache() throws {
        let client = ClientSummary(id: 1, pid: 2, uid: 3, gid: 4, name: "c", segments: 0, grants: 0, attachments: 5,
                                   attachCache: AttachCacheCounters(hits: 6, misses: 7, capacityEvictions: 8,
                                                                    pressureEvictions: 9, entries: 10, bytes: 11))
        let frame = Frame(requestID: 1, message: .clients([client]))
        var expected: [UInt8] = [
            0x58, 0x50, 0x4D, 0x4D, 0x03, 0x00,
            0x08, 0x80,  // type clients (0x8008)
            0x01, 0x00, 0x00, 0x00,
            0x5C, 0x00, 0x00, 0x00,  // payload length 92
            0x01, 0x00, 0x00, 0x00,  // one client
            0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // id
            0x02, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00,  // pid, uid, gid
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00,  // segments, grants, attachments
            0xFF, 0xFF, 0xFF, 0xFF,  // node -1
            0x01, 0x00, 0x63,  // "c"
            0x01,  // attachment cache counters follow
        ]
        for counter: UInt8 in 6...11 { expected += [counter, 0, 0, 0, 0, 0, 0, 0] }
        #expect(frame.encoded() == expected)
        #expect(try decodeFrame(expected) == frame)
    }
}
