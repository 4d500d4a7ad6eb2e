// swift-tools-version: 6.1
import PackageDescription

/// Every Swift target builds in Swift 6 mode with the same upcoming features, so the rules are one.
let strictSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

/// What every MPI-like example (Examples/pingpong, ring, allreduce, halo2d, mpi-hybrid) links.
let exampleDependencies: [Target.Dependency] = [
    "XPMEMComm", "XPMEM", .product(name: "ArgumentParser", package: "swift-argument-parser"),
]

let package = Package(
    name: "xpmem-userspace",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "XPMEM", targets: ["XPMEM"]),
        .executable(name: "xpmemd", targets: ["xpmemd"]),
        .executable(name: "xpmemctl", targets: ["xpmemctl"]),
        .executable(name: "xpmem-bench", targets: ["xpmem-bench"]),
        .executable(name: "share", targets: ["share"]),
        .library(name: "XPMEMComm", targets: ["XPMEMComm"]),
        .executable(name: "xprun", targets: ["xprun"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // C declarations that `import Glibc` lacks (memfd, seals, CMSG_*, ucred, epoll, pidfd, getrandom...).
        .target(name: "CXPMEMShim"),
        // libnuma, found through the numa.pc that libnuma-dev ships.
        .systemLibrary(name: "CNuma", pkgConfig: "numa", providers: [.apt(["libnuma-dev"])]),
        // The only layer that calls libc: owned descriptors and mappings, errno as typed errors.
        .target(
            name: "XPMEMSystem",
            dependencies: ["CXPMEMShim", "CNuma", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: strictSettings
        ),
        // Messages and their bounds-checked encoding; no I/O.
        .target(name: "XPMEMWire", swiftSettings: strictSettings),
        // The broker's decisions: registry, grants, attachments, permissions. No sockets.
        .target(name: "XPMEMBrokerCore", dependencies: ["XPMEMWire"], swiftSettings: strictSettings),
        // The client library applications link.
        .target(name: "XPMEM", dependencies: ["XPMEMSystem", "XPMEMWire"], swiftSettings: strictSettings),
        // What launchers, benchmarks and checks share and applications do not: a private broker.
        .target(name: "XPMEMRunKit", dependencies: ["XPMEM", "XPMEMSystem"], swiftSettings: strictSettings),
        .executableTarget(
            name: "xpmemd",
            dependencies: [
                "XPMEMSystem", "XPMEMWire", "XPMEMBrokerCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "xpmemctl",
            dependencies: ["XPMEM", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "xpmem-bench",
            dependencies: [
                "XPMEM", "XPMEMSystem", "XPMEMRunKit", .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "share",
            dependencies: ["XPMEM", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Examples/share",
            swiftSettings: strictSettings
        ),
        // A test-only program: runs as another uid and tries what an importer should not be able to do.
        .executableTarget(
            name: "xpmem-probe",
            dependencies: [
                "XPMEM", "XPMEMSystem", "XPMEMWire", .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Tests/Probe",
            swiftSettings: strictSettings
        ),
        // The NUMA integration checks, run inside an emulated multi-node machine by `make numa-test`.
        .executableTarget(
            name: "xpmem-numa-check",
            dependencies: ["XPMEM", "XPMEMSystem", "XPMEMRunKit", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Tests/NUMACheck",
            swiftSettings: strictSettings
        ),
        // MPI-like examples: a communicator over the client library, the launcher, and the examples.
        .target(name: "XPMEMComm", dependencies: ["XPMEM", "XPMEMSystem", "XPMEMWire"], swiftSettings: strictSettings),
        .executableTarget(
            name: "xprun",
            dependencies: ["XPMEM", "XPMEMSystem", "XPMEMRunKit", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strictSettings
        ),
        .executableTarget(name: "pingpong", dependencies: exampleDependencies, path: "Examples/pingpong",
                          swiftSettings: strictSettings),
        .executableTarget(name: "ring", dependencies: exampleDependencies, path: "Examples/ring",
                          swiftSettings: strictSettings),
        .executableTarget(name: "allreduce", dependencies: exampleDependencies, path: "Examples/allreduce",
                          swiftSettings: strictSettings),
        .executableTarget(name: "halo2d", dependencies: exampleDependencies, path: "Examples/halo2d",
                          swiftSettings: strictSettings),
        .executableTarget(name: "migrate", dependencies: exampleDependencies + ["XPMEMSystem"], path: "Examples/migrate",
                          swiftSettings: strictSettings),
        .executableTarget(name: "mpi-hybrid", dependencies: exampleDependencies, path: "Examples/mpi-hybrid",
                          swiftSettings: strictSettings),
        .testTarget(name: "XPMEMCommTests", dependencies: ["XPMEMComm", "XPMEMSystem"], swiftSettings: strictSettings),
        .testTarget(name: "XPMEMWireTests", dependencies: ["XPMEMWire"], swiftSettings: strictSettings),
        .testTarget(
            name: "XPMEMBrokerCoreTests", dependencies: ["XPMEMBrokerCore"], swiftSettings: strictSettings
        ),
        .testTarget(
            name: "XPMEMSystemTests", dependencies: ["XPMEMSystem"], swiftSettings: strictSettings
        ),
        .testTarget(
            name: "XPMEMIntegrationTests",
            dependencies: ["XPMEM", "XPMEMSystem", "XPMEMWire", "XPMEMRunKit"],
            swiftSettings: strictSettings
        ),
    ]
)
