import Foundation

/// One benchmark group's results: rows for the table, and the ratios the targets are stated in.
struct FigureGroup: Encodable {
    var name: String
    var note: String
    var columns: [String]
    var rows: [[String]]
    /// Ours divided by the reference (time for latencies, bandwidth for bandwidths): the median of
    /// interleaved pairs where `spreads` has the key.
    var ratios: [String: Double]
    /// The targets, as text, for the table.
    var targets: [String]
    /// How each interleaved ratio spread over its pairs (`InterleavedRatio`).
    var spreads: [String: RatioFigure] = [:]

    init(name: String, note: String, columns: [String], rows: [[String]], ratios: [String: Double], targets: [String],
         spreads: [String: RatioFigure] = [:]) {
        self.name = name
        self.note = note
        self.columns = columns
        self.rows = rows
        self.ratios = ratios.merging(spreads.mapValues(\.median)) { _, interleaved in interleaved }
        self.targets = targets
        self.spreads = spreads
    }

    func printTable() {
        print("== \(name): \(note)")
        let widths = columns.indices.map { column in ([columns] + rows).map { $0[column].count }.max() ?? 0 }
        for row in [columns] + rows {
            print(row.enumerated().map { $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }
                .joined(separator: "  "))
        }
        for (key, value) in ratios.sorted(by: { $0.key < $1.key }) {
            print("ratio \(key) = \(spreads[key]?.summary ?? String(format: "%.3f", value))")
        }
        for target in targets { print("target: \(target)") }
        print("")
    }

    /// Prints the groups as tables, or as one JSON object `{groups: {...}, ratios: {...}}`.
    static func emit(_ groups: [FigureGroup], json: Bool) {
        let load = MachineLoad.atStart
        guard json else {
            if let warning = load.warning { print("warning: \(warning)\n") }
            groups.forEach { $0.printTable() }
            return
        }
        struct Document: Encodable {
            var groups: [String: FigureGroup]
            var ratios: [String: Double]
            /// Per interleaved ratio: median, minimum, maximum, pairs, settled.
            var spread: [String: RatioFigure]
            var load: MachineLoad
        }
        var ratios: [String: Double] = [:]
        var spreads: [String: RatioFigure] = [:]
        for group in groups {
            ratios.merge(group.ratios) { first, _ in first }
            spreads.merge(group.spreads) { first, _ in first }
        }
        let document = Document(groups: Dictionary(uniqueKeysWithValues: groups.map { ($0.name, $0) }), ratios: ratios,
                                spread: spreads, load: load)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        // A figure that has no value (no pairs, or a side that did not run) is NaN, which JSON has
        // no number for: it is written as the string "nan" rather than failing the whole document.
        encoder.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        do {
            print(String(decoding: try encoder.encode(document), as: UTF8.self))
        } catch {
            FileHandle.standardError.write(Data("xpmem-bench: cannot write the figures as JSON: \(error)\n".utf8))
        }
    }
}

/// Medians and 90th percentiles of samples.
struct Samples {
    private(set) var values: [Double] = []

    mutating func add(_ value: Double) { values.append(value) }
    mutating func add(contentsOf other: Samples) { values += other.values }

    var median: Double { percentile(0.5) }
    var p90: Double { percentile(0.9) }

    func percentile(_ fraction: Double) -> Double {
        guard !values.isEmpty else { return .nan }
        let sorted = values.sorted()
        return sorted[min(sorted.count - 1, Int(Double(sorted.count - 1) * fraction + 0.5))]
    }
}

/// Formats microseconds and bandwidths for tables.
enum Format {
    static func micros(_ value: Double) -> String { String(format: "%.1f", value) }
    static func gigabytesPerSecond(_ value: Double) -> String { String(format: "%.2f", value) }
    static func ratio(_ value: Double) -> String { String(format: "%.2fx", value) }
    static func ratioValue(_ value: Double) -> String { String(format: "%.2f", value) }
}
