/// A property the fuzz target checks. A failure must stop the fuzzer with a crash, so that libFuzzer
/// writes the input as a reproducer; `fatalError` does (a thrown error or a log line would not).
func check(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
           file: StaticString = #fileID, line: UInt = #line) {
    if !condition() { fatalError("invariant broken: \(message())", file: file, line: line) }
}
