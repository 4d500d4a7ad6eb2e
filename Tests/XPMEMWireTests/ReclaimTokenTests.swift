import Testing
import XPMEMWire

@Suite("Reclaim tokens and the ids they stand for")
struct ReclaimTokenTests {
    private func hex(_ bytes: [UInt8]) -> String {
        bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }

    @Test("SHA-256 gives the FIPS 180-4 digests, across one- and two-block inputs")
    func knownDigests() {
        #expect(hex(SHA256.hash([])) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(hex(SHA256.hash(Array("abc".utf8))) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(hex(SHA256.hash(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        #expect(hex(SHA256.hash([UInt8](repeating: 0x61, count: 1000)))
                == "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
    }

    @Test("An id depends on the token and the owner's uid, stays below 2^63, and is the same every time")
    func idsBindTokenAndUID() throws {
        let token = ReclaimToken(high: 0x1122_3344_5566_7788, low: 0x99aa_bbcc_ddee_ff00)
        let id = try #require(token.segmentID(ownerUID: 1000))
        #expect(token.segmentID(ownerUID: 1000) == id, "a restarted broker derives the same id")
        #expect(token.segmentID(ownerUID: 65534) != id, "another uid holding the same token gets another id")
        #expect(ReclaimToken(high: token.high, low: token.low ^ 1).segmentID(ownerUID: 1000) != id)
        for low in UInt64(0)..<64 {
            let raw = try #require(ReclaimToken(high: 7, low: low).segmentID(ownerUID: 0)).rawValue
            #expect(raw != 0 && raw <= UInt64(Int64.max))
        }
        #expect(!"\(token)".contains(String(token.low, radix: 16)), "the secret is not printed")
    }
}
