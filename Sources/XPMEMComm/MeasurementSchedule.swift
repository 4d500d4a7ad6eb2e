import XPMEM
import XPMEMSystem

/// How the examples time themselves — the same schedule as the MPI reference programs in
/// Examples/mpi-c (common.h), so that both print figures measured alike.
public enum MeasurementSchedule {
    /// Round trips (or operations) per timed batch for messages of `size` bytes: enough work per
    /// batch to dwarf the clock's cost, few enough that 64 MiB finishes quickly; `scale` shrinks it
    /// for tests.
    public static func repetitions(size: Int, scale: Double) -> Int {
        let base = size <= 8192 ? 2000 : (256 << 20) / size
        return max(2, Int(Double(base) * scale))
    }

    /// The median of `values` (the upper one of the middle two, as in common.h).
    public static func median(_ values: [Double]) -> Double {
        guard !values.isEmpty else { return .nan }
        return values.sorted()[values.count / 2]
    }

    /// Seconds on the monotonic clock.
    public static func now() -> Double { Double(SharedMemoryAccess.monotonicNanoseconds()) / 1e9 }

    /// "0,8,1M" → [0, 8, 1048576]; nil if any item is not a size.
    public static func sizes(_ list: String) -> [Int]? {
        let values = list.split(separator: ",").map { ByteCount(String($0))?.value }
        guard !values.isEmpty, values.allSatisfy({ $0 != nil }) else { return nil }
        return values.compactMap { $0 }
    }

    /// 0 and the powers of two up to `maxSize`, like the OSU benchmarks.
    public static func powersOfTwo(upTo maxSize: Int) -> [Int] {
        var sizes = [0]
        var size = 1
        while size <= maxSize {
            sizes.append(size)
            size *= 2
        }
        return sizes
    }

    /// `value` with `places` decimals, as C's "%.Nf" prints it (no Foundation needed).
    public static func fixed(_ value: Double, places: Int) -> String {
        guard value.isFinite else { return "nan" }
        var scale = 1.0
        for _ in 0..<places { scale *= 10 }
        let scaled = Int64((abs(value) * scale).rounded())
        var digits = String(scaled)
        while digits.count <= places { digits = "0" + digits }
        let point = digits.index(digits.endIndex, offsetBy: -places)
        let sign = value < 0 && scaled != 0 ? "-" : ""
        return places == 0 ? sign + digits : sign + digits[..<point] + "." + digits[point...]
    }

    /// `text` padded with spaces to `width`, like C's "%-Ns".
    public static func column(_ text: String, width: Int) -> String {
        text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
    }
}
