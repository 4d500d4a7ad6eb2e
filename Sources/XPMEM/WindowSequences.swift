/// The invalidation windows that cover one cut part of an attachment, by sequence number: almost
/// always exactly one, so the first is kept inline and only a second or later one allocates. Every
/// importer opens and closes a window on every invalidation; with an array per part, each did an
/// allocation and a release.
struct WindowSequences: Equatable, ExpressibleByArrayLiteral {
    private var first: UInt64?
    private var others: [UInt64] = []

    init(_ sequence: UInt64) { first = sequence }

    init(arrayLiteral sequences: UInt64...) {
        for sequence in sequences { insert(sequence) }
    }

    var count: Int { first == nil ? 0 : 1 + others.count }
    var isEmpty: Bool { first == nil }

    func contains(_ sequence: UInt64) -> Bool { first == sequence || others.contains(sequence) }

    mutating func insert(_ sequence: UInt64) {
        guard !contains(sequence) else { return }
        if first == nil { first = sequence } else { others.append(sequence) }
    }

    mutating func remove(_ sequence: UInt64) {
        if first == sequence {
            first = others.popLast()
        } else if let index = others.firstIndex(of: sequence) {
            others.remove(at: index)
        }
    }

    /// The same windows, in whatever order they were inserted.
    static func == (lhs: WindowSequences, rhs: WindowSequences) -> Bool {
        lhs.count == rhs.count && (lhs.first.map { rhs.contains($0) } ?? true) && lhs.others.allSatisfy(rhs.contains)
    }
}
