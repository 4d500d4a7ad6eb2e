import Testing
import XPMEMWire

struct SegmentIDTextTests {
    @Test("Printed as exactly 16 lower-case hex digits", arguments: [
        (UInt64(0), "0000000000000000"),
        (0xFF, "00000000000000ff"),
        (0x0102_0304_0506_0708, "0102030405060708"),
        (UInt64.max, "ffffffffffffffff"),
    ])
    func printing(_ raw: UInt64, _ text: String) {
        #expect(SegmentID(rawValue: raw).description == text)
        #expect(SegmentID(text) == SegmentID(rawValue: raw))
    }

    @Test("Parsed with or without 0x, upper or lower case, with or without leading zeros", arguments: [
        ("0102030405060708", UInt64(0x0102_0304_0506_0708)),
        ("0x0102030405060708", 0x0102_0304_0506_0708),
        ("0xABCDEF0123456789", 0xABCD_EF01_2345_6789),
        ("ff", 0xFF),
        ("0x1", 1),
    ])
    func parsing(_ text: String, _ raw: UInt64) {
        #expect(SegmentID(text) == SegmentID(rawValue: raw))
    }

    @Test("Garbage is refused", arguments: [
        "", "0x", "xyz", "0x0x12", "12345678901234567", "0x12345678901234567", " 12", "12 ", "12\n", "1_000",
        "+1", "-1", "-0", "0x+1", "0x-0", "ｆｆ",
    ])
    func garbageIsRefused(_ text: String) {
        #expect(SegmentID(text) == nil)
    }

    @Test func everyPrintedIDParsesBack() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<1000 {
            let id = SegmentID(rawValue: generator.next())
            #expect(SegmentID(id.description) == id)
            #expect(SegmentID("0x" + id.description) == id)
        }
    }
}

struct PermitTextTests {
    @Test("Octal read/write bits are accepted", arguments: [
        ("0600", UInt32(0o600)), ("644", 0o644), ("0666", 0o666), ("0", 0), ("000", 0), ("040", 0o40),
    ])
    func accepted(_ text: String, _ raw: UInt32) {
        #expect(Permit(octal: text) == Permit(rawValue: raw))
    }

    @Test("Execute and special bits, non-octal digits and other text are refused", arguments: [
        "0700", "0777", "0601", "1666", "4600", "0800", "9", "0o600", "0x180", "", " 600", "600 ", "6 4", "abc",
        "+644", "-0", "-600",
    ])
    func refused(_ text: String) {
        #expect(Permit(octal: text) == nil)
    }

    @Test func printsAsOctalWithLeadingZero() {
        #expect(Permit(rawValue: 0o640).description == "0640")
        #expect(Permit(octal: Permit(rawValue: 0o604).description) == Permit(rawValue: 0o604))
    }
}
