// swift-tools-version:6.1
// MsgNet: a message-first peer-to-peer RPC framework for Swift on Linux, in the libp2p family.
// One target per layer; dependencies point down only (see docs/architecture.md).
import PackageDescription

/// Library and executable targets: a nonisolated async function runs on its caller's executor
/// (SE-0461) instead of hopping to the global executor, so the event-loop tasks that read and
/// answer messages do not switch executors on every call.
let strict: [SwiftSetting] = [.enableUpcomingFeature("NonisolatedNonsendingByDefault")]
/// Test targets: the swift-testing macros do not build with that feature yet (Swift 6.3.1).
let tests: [SwiftSetting] = []

let package = Package(
    name: "MsgNet",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "MsgNetCore", targets: ["MsgNetCore"]),
        .library(name: "MsgNetStreams", targets: ["MsgNetStreams"]),
        .library(name: "MsgNetHost", targets: ["MsgNetHost"]),
        .library(name: "MsgNetTransportPosix", targets: ["MsgNetTransportPosix"]),
        .executable(name: "msgnet", targets: ["msgnet"]),
        .executable(name: "msgnet-bench", targets: ["msgnet-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
    ],
    targets: [
        // MARK: C wall: protobuf-c and the generated code (regenerate with scripts/gen-protos.sh)
        .systemLibrary(
            name: "CProtobufC",
            pkgConfig: "libprotobuf-c",
            providers: [.apt(["libprotobuf-c-dev"])]
        ),
        .target(name: "MsgNetControlC", dependencies: ["CProtobufC"]),
        // OpenSSL's libcrypto, for the ChaCha20-Poly1305 that seals every frame and datagram
        // (MsgNetSecurity only; see Sources/MsgNetSecurity/ChaChaPolyContext.swift).
        .systemLibrary(
            name: "CLibCrypto",
            pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"])]
        ),

        // MARK: Layers, bottom to top
        .target(
            name: "MsgNetControl",
            dependencies: ["MsgNetControlC"],
            swiftSettings: strict
        ),
        .target(
            name: "MsgNetCore",
            dependencies: [
                "MsgNetControl",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "HeapModule", package: "swift-collections"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "MsgNetMultistream",
            dependencies: [
                "MsgNetCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "MsgNetSecurity",
            dependencies: [
                "CLibCrypto",
                "MsgNetCore",
                "MsgNetControl",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "MsgNetMplex",
            dependencies: [
                "MsgNetCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "MsgNetStreams",
            dependencies: [
                "MsgNetCore",
                "MsgNetControl",
                "MsgNetMultistream",
                "MsgNetSecurity",
                "MsgNetMplex",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The UDP path: secure datagram sessions and multipacket messaging (pure machines + shells).
        .target(
            name: "MsgNetMultipacket",
            dependencies: [
                "MsgNetCore",
                "MsgNetSecurity",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The public message API: MessageHost, MessageNetwork, SocketSession, Message.
        .target(
            name: "MsgNetHost",
            dependencies: [
                "MsgNetControl",
                "MsgNetCore",
                "MsgNetStreams",
                "MsgNetMultipacket",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The only target that opens sockets.
        .target(
            name: "MsgNetTransportPosix",
            dependencies: [
                "MsgNetCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),

        // MARK: Applications
        .executableTarget(
            name: "msgnet",
            dependencies: [
                "MsgNetCore",
                "MsgNetStreams",
                "MsgNetHost",
                "MsgNetTransportPosix",
                "MsgNetSecurity",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "msgnet-bench",
            dependencies: [
                "MsgNetCore",
                "MsgNetHost",
                "MsgNetMultipacket",
                "MsgNetStreams",
                "MsgNetTransportPosix",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "Demo",
            dependencies: [
                "MsgNetCore",
                "MsgNetStreams",
                "MsgNetTransportPosix",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Examples/Demo",
            swiftSettings: strict
        ),
        .executableTarget(
            name: "Chat",
            dependencies: [
                "MsgNetCore",
                "MsgNetSecurity",
                "MsgNetStreams",
                "MsgNetHost",
                "MsgNetTransportPosix",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Examples/Chat",
            swiftSettings: strict
        ),

        // MARK: Tests mirror sources
        .testTarget(
            name: "MsgNetControlTests", dependencies: ["MsgNetControl", "MsgNetTestSupport"], swiftSettings: tests),
        .testTarget(
            name: "MsgNetCoreTests",
            dependencies: [
                "MsgNetCore", "MsgNetTestSupport", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            exclude: ["vectors"],
            swiftSettings: tests
        ),
        .testTarget(
            name: "MsgNetMultistreamTests",
            dependencies: [
                "MsgNetMultistream", "MsgNetCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: tests
        ),
        .testTarget(
            name: "MsgNetSecurityTests",
            dependencies: [
                "MsgNetSecurity", "MsgNetCore", "MsgNetControl", "MsgNetTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            exclude: ["vectors"],
            swiftSettings: tests
        ),
        .testTarget(
            name: "MsgNetMplexTests",
            dependencies: [
                "MsgNetMplex", "MsgNetCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: tests
        ),
        // Helpers shared by the test targets (waiting for counts and signals, a seeded generator, hex).
        .target(
            name: "MsgNetTestSupport",
            dependencies: [.product(name: "NIOConcurrencyHelpers", package: "swift-nio")],
            path: "Tests/MsgNetTestSupport",
            swiftSettings: tests
        ),
        .testTarget(
            name: "MsgNetStreamsTests",
            dependencies: [
                "MsgNetStreams", "MsgNetCore", "MsgNetTransportPosix", "MsgNetMultistream",
                "MsgNetSecurity", "MsgNetMplex", "MsgNetTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                "MsgNetControl",
            ],
            swiftSettings: tests
        ),
        .testTarget(
            name: "MsgNetMultipacketTests",
            dependencies: [
                "MsgNetMultipacket", "MsgNetCore", "MsgNetSecurity", "MsgNetTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: tests
        ),
        .testTarget(
            name: "MsgNetHostTests",
            dependencies: [
                "MsgNetHost", "MsgNetCore", "MsgNetMultipacket", "MsgNetStreams", "MsgNetTransportPosix",
                "MsgNetSecurity",
                "MsgNetTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: tests
        ),
        .testTarget(
            name: "MsgNetInteropTests",
            dependencies: [
                "MsgNetSecurity", .product(name: "Logging", package: "swift-log"),
                "MsgNetStreams", "MsgNetCore", "MsgNetTransportPosix",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: tests
        ),
    ],
    swiftLanguageModes: [.v6]
)
