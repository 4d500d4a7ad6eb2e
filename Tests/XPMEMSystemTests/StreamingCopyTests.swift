import Testing
@testable import XPMEMSystem

extension SystemTests {
    struct StreamingCopyTests {
        /// Every alignment of both ends, lengths around the 64-byte lines the loop streams (the head
        /// before the destination's first line boundary and the tail after the last one go through
        /// memcpy), and nothing written outside the destination.
        @Test(arguments: [0, 1, 15, 63, 64, 65, 127, 128, 1000, 4096 + 17, 1 << 20])
        func copiesEveryByteAndNothingElse(length: Int) throws {
            let padding = 128
            let source = try MemoryMapping.anonymous(length: length + 2 * padding)
            let destination = try MemoryMapping.anonymous(length: length + 2 * padding)
            for index in 0..<source.length { source.bytes[index] = UInt8(truncatingIfNeeded: index &* 131 &+ 7) }
            for (sourceShift, destinationShift) in [(0, 0), (1, 0), (0, 1), (3, 61), (64, 13), (17, 64)] {
                for index in 0..<destination.length { destination.bytes[index] = 0xEE }
                StreamingCopy.copy(to: destination.base + padding + destinationShift,
                                   from: source.base + padding + sourceShift, byteCount: length)
                let copied = (0..<length).allSatisfy {
                    destination.bytes[padding + destinationShift + $0] == source.bytes[padding + sourceShift + $0]
                }
                let untouched = (0..<destination.length).allSatisfy {
                    (padding + destinationShift..<padding + destinationShift + length).contains($0)
                        || destination.bytes[$0] == 0xEE
                }
                #expect(copied, "length \(length), shifts \(sourceShift)/\(destinationShift): bytes differ")
                #expect(untouched, "length \(length), shifts \(sourceShift)/\(destinationShift): wrote outside")
            }
        }

        @Test func readsCacheSizesInSysfsForm() {
            #expect(StreamingCopy.cacheSize("32768K") == 32 << 20)
            #expect(StreamingCopy.cacheSize("8M") == 8 << 20)
            #expect(StreamingCopy.cacheSize("1048576") == 1 << 20)
            #expect(StreamingCopy.cacheSize("K") == nil)
            #expect(StreamingCopy.cacheSize("lots") == nil)
        }

        @Test(.enabled(if: FileSystem.exists("/sys/devices/system/cpu/cpu0/cache/index0/size"),
                       "this machine's sysfs does not describe its caches"))
        func knowsTheLastLevelCache() {
            #expect(StreamingCopy.lastLevelCacheBytes >= 256 << 10)
        }
    }
}
