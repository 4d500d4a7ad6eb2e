@preconcurrency import Glibc
import ArgumentParser
import XPMEMSystem

extension Probe {
    /// Makes the machine's memory pressure real for tests: once told "go" (after the test moved it into
    /// a small memory cgroup), keeps `--anonymous-mib` of anonymous memory (no swap here: it cannot be
    /// reclaimed), says "pressing", then reads `--file` over and over on `--readers` threads, so that
    /// its page cache must be reclaimed within what the cgroup leaves it, and tasks stall on memory,
    /// until it is killed.
    ///
    /// The file is meant to be sparse: its holes come into the page cache as zeros at memory speed,
    /// with no disk read, so the pressure does not depend on how fast the disk is (a cold disk made
    /// almost no stall). One reader stalls ~25 ms a second here, below any trigger's threshold;
    /// readers competing to reclaim stall several hundred.
    struct MemoryPressure: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "memory-pressure")
        @Option var anonymousMib: Int
        @Option var file: String
        @Option var readers: Int = 4

        func run() throws {
            guard readLine() == "go" else { throw ValidationError("expected go") }
            let anonymous = try MemoryMapping.anonymous(length: anonymousMib << 20)
            anonymous.bytes.initializeMemory(as: UInt8.self, repeating: 1)
            print("pressing")
            fflush(stdout)
            guard access(file, R_OK) == 0 else { throw ValidationError("cannot read \(file)") }
            for _ in 1..<max(readers, 1) {
                let file = file
                try DetachedThread.start { Self.readForever(file) }
            }
            Self.readForever(file)
        }

        private static func readForever(_ file: String) -> Never {
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: 1 << 20, alignment: 4096)
            while true {
                let descriptor = open(file, O_RDONLY | O_CLOEXEC)
                if descriptor < 0 {
                    ThisProcess.sleep(microseconds: 10_000)  // removed under it: the test is ending
                    continue
                }
                while read(descriptor, buffer, 1 << 20) > 0 {}
                close(descriptor)
            }
        }
    }
}
