@preconcurrency import Glibc
import ArgumentParser
import XPMEMSystem

extension Probe {
    /// Makes the machine's memory pressure real for tests: once told "go" (after the test moved it into
    /// a small memory cgroup), keeps `--anonymous-mib` of anonymous memory (no swap here: it cannot be
    /// reclaimed), says "pressing", then reads `--file` over and over, so that its page cache must be
    /// reclaimed within what the cgroup leaves it, and tasks stall on memory, until it is killed.
    struct MemoryPressure: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "memory-pressure")
        @Option var anonymousMib: Int
        @Option var file: String

        func run() throws {
            guard readLine() == "go" else { throw ValidationError("expected go") }
            let anonymous = try MemoryMapping.anonymous(length: anonymousMib << 20)
            anonymous.bytes.initializeMemory(as: UInt8.self, repeating: 1)
            print("pressing")
            fflush(stdout)
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: 1 << 20, alignment: 4096)
            while true {
                let descriptor = open(file, O_RDONLY | O_CLOEXEC)
                guard descriptor >= 0 else { throw ValidationError("cannot open \(file)") }
                while read(descriptor, buffer, 1 << 20) > 0 {}
                close(descriptor)
            }
        }
    }
}
