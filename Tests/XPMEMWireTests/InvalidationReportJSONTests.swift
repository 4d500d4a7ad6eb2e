import Foundation
import Testing
import XPMEMWire

/// `xpmemctl invalidate --json` prints an `InvalidationReport`: its JSON keeps the segment's printed
/// id under "segment", although the report keeps the id typed.
struct InvalidationReportJSONTests {
    static let report = InvalidationReport(
        segment: SegmentID(rawValue: 0x0102_0304_0506_0708), sequence: 3, offset: 4096, length: 8192,
        elapsedMicroseconds: 17,
        importers: [ImporterAcknowledgement(client: 5, pid: 42, outcome: .acknowledged, elapsedMicroseconds: 9)])

    @Test func theSegmentIsPrintedUnderItsKeyAndReadBack() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let text = String(decoding: try encoder.encode(Self.report), as: UTF8.self)
        #expect(text == #"{"elapsedMicroseconds":17,"importers":[{"client":5,"elapsedMicroseconds":9,"outcome":"acked","pid":42}],"length":8192,"offset":4096,"segment":"0102030405060708","sequence":3}"#)
        #expect(try JSONDecoder().decode(InvalidationReport.self, from: Data(text.utf8)) == Self.report)
        #expect(Self.report.segment == "0102030405060708")
    }

    @Test func aSegmentThatIsNoIDIsRefused() throws {
        let text = #"{"elapsedMicroseconds":17,"importers":[],"length":8192,"offset":4096,"segment":"not-an-id","sequence":3}"#
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(InvalidationReport.self, from: Data(text.utf8)) }
    }
}
