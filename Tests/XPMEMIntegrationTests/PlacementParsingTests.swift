import Testing
import XPMEM

/// Placements print and parse alike (xpmemctl shows them; scripts pass them back).
@Suite struct PlacementParsingTests {
    @Test(arguments: [Placement.firstTouch, .local, .node(3), .interleave([0, 2]), .preferred(1), .nearImporters])
    func roundTrips(_ placement: Placement) {
        #expect(Placement(placement.description) == placement)
    }

    @Test(arguments: ["", "node", "node x", "interleave", "interleave 0,,1", "everywhere", "local 1"])
    func refusesNonsense(_ text: String) {
        #expect(Placement(text) == nil)
    }
}
