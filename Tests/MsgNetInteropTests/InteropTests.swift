import Foundation
import MsgNetCore
import MsgNetStreams
import NIOCore
import Testing

/// Every test here spawns processes; they run one at a time so the two shared cores are not
/// swamped by several Python interpreters at once.
@Suite("interop and command line", .serialized)
struct InteropTests {}

extension InteropTests {
    @Suite(
        "MsgNet dials py-libp2p",
        .enabled(if: Interop.enabled, "set MSGNET_INTEROP_PYTHON and MSGNET_INTEROP_PEER (or run make test)"),
        .timeLimit(.minutes(2))
    )
    struct DialPy {
        @Test("ping: several round trips on one stream", arguments: SecurityKind.allCases)
        func ping(security: SecurityKind) async throws {
            try await Interop.withPyServer(security: security.rawValue) { address, _ in
                let host = makeHost(security)
                try await running(host) {
                    let rtts = try await host.ping(address, count: 10)
                    #expect(rtts.count == 10)
                    #expect(rtts.allSatisfy { $0 > .zero })
                    // A second ping stream on the same connection works too.
                    let again = try await host.ping(address, count: 3)
                    #expect(again.count == 3)
                    #expect(host.connectedPeers == [address.peerID!])
                }
            }
        }

        @Test("identify: py's key, agent and protocols", arguments: SecurityKind.allCases)
        func identify(security: SecurityKind) async throws {
            try await Interop.withPyServer(security: security.rawValue) { address, _ in
                let host = makeHost(security)
                try await running(host) {
                    let info = try await host.identify(address)
                    #expect(info.peer == address.peerID)
                    #expect(info.publicKey.peerID == address.peerID)
                    let agent = try #require(info.agentVersion)
                    #expect(agent.contains("py-libp2p"), "agent version \(agent.debugDescription)")
                    for id in [PingProtocol.id, IdentifyProtocol.id, PyProtocols.echo, PyProtocols.msgEcho] {
                        #expect(info.protocols.contains(id), "\(id) missing from \(info.protocols)")
                    }
                    #expect(
                        info.listenAddresses.contains(address.withoutPeerID()),
                        "\(address) missing from \(info.listenAddresses)")
                    // The connection's security is the one we offered, and the peerstore has it.
                    #expect(host.peerstore.identify(for: address.peerID!)?.agentVersion == agent)
                    #expect(host.peerstore.protocols(for: address.peerID!).contains(PyProtocols.echo))
                }
            }
        }

        @Test("echo 1 MiB byte-exact on /echo/1.0.0, then the stream ends", arguments: SecurityKind.allCases)
        func echo(security: SecurityKind) async throws {
            try await Interop.withPyServer(security: security.rawValue) { address, _ in
                let host = makeHost(security)
                try await running(host) {
                    let stream = try await host.newStream(to: address, protocols: [PyProtocols.echo])
                    #expect(stream.protocolID == PyProtocols.echo)
                    #expect(stream.connection.remotePeer == address.peerID)
                    #expect(stream.connection.securityProtocol == security.protocolID)
                    #expect(stream.connection.direction == .outbound)
                    let payload = patternBytes(count: 1 << 20)
                    let (echoed, sawEOF) = try await echoWindowed(stream, payload: payload)
                    #expect(echoed.count == payload.count)
                    #expect(echoed == payload, "first difference at \(firstDifference(echoed, payload))")
                    #expect(sawEOF)
                }
            }
        }

        @Test("four concurrent echo streams on one connection stay separate", arguments: SecurityKind.allCases)
        func concurrentStreams(security: SecurityKind) async throws {
            try await Interop.withPyServer(security: security.rawValue) { address, _ in
                let host = makeHost(security)
                try await running(host) {
                    try await host.connect(to: address)
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        for i in 0..<4 {
                            group.addTask {
                                let stream = try await host.newStream(to: address, protocols: [PyProtocols.echo])
                                let payload = patternBytes(count: 256 * 1024, seed: UInt64(i) + 100)
                                let (echoed, sawEOF) = try await echoWindowed(
                                    stream, payload: payload, chunk: 16 * 1024, window: 64 * 1024)
                                #expect(
                                    echoed == payload,
                                    "stream \(i): first difference at \(firstDifference(echoed, payload))")
                                #expect(sawEOF, "stream \(i)")
                            }
                        }
                        try await group.waitForAll()
                    }
                    // All four ran on the one connection.
                    #expect(host.connectedPeers == [address.peerID!])
                }
            }
        }

        @Test("length-prefixed messages on /msg-echo/1.0.0", arguments: SecurityKind.allCases)
        func messageEcho(security: SecurityKind) async throws {
            try await Interop.withPyServer(security: security.rawValue) { address, _ in
                let host = makeHost(security)
                try await running(host) {
                    let stream = try await host.newStream(to: address, protocols: [PyProtocols.msgEcho])
                    // Sizes around the uvarint boundaries and one larger message (< 256 KiB).
                    for size in [0, 1, 127, 128, 16383, 16384, 100_000] {
                        let payload = patternBytes(count: size, seed: UInt64(size) + 1)
                        try await stream.writeLengthPrefixed(ByteBuffer(bytes: payload))
                        let reply = try await stream.readLengthPrefixed(maxSize: 1 << 20)
                        #expect(reply.map { Array($0.readableBytesView) } == payload, "message of \(size) bytes")
                    }
                    try await stream.closeWrite()
                    #expect(try await stream.readLengthPrefixed(maxSize: 1 << 20) == nil)
                }
            }
        }

        @Test("the wrong /p2p id fails the dial with peerIDMismatch", arguments: SecurityKind.allCases)
        func wrongPeerID(security: SecurityKind) async throws {
            try await Interop.withPyServer(security: security.rawValue) { address, _ in
                let host = makeHost(security)
                try await running(host) {
                    let impostor = address.withoutPeerID().appending(.p2p(PrivateKey.generate().peerID))
                    let error = await #expect(throws: StreamsError.self) {
                        try await host.ping(impostor, count: 1)
                    }
                    #expect(error?.code == .peerIDMismatch, "\(String(describing: error))")
                    // The real id still works afterwards.
                    let pings = try await host.ping(address, count: 1)
                    #expect(pings.count == 1)
                }
            }
        }
    }
}

/// The index of the first differing byte (or the shorter length), for failure messages.
func firstDifference(_ a: [UInt8], _ b: [UInt8]) -> Int {
    zip(a, b).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset ?? min(a.count, b.count)
}
