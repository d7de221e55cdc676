import MsgNetCore
import MsgNetMplex
import MsgNetStreams
import MsgNetTransportPosix
import NIOCore
import NIOPosix
import Testing

/// "Dial as listener" (hole punching): the dialer runs the responder side of security and muxer
/// negotiation; the peer that accepted the socket runs the initiator side.
@Suite("role override", .timeLimit(.minutes(2)))
struct RoleOverrideTests {
    @Test("dialer as listener against an acceptor as dialer", arguments: SecurityKind.allCases)
    func dialAsListener(security: SecurityKind) async throws {
        let acceptorIdentity = PrivateKey.generate()
        let upgrader = ConnectionUpgrader(security: [security.make(acceptorIdentity)], timeout: .seconds(5))
        let transport = TCPTransport(group: MultiThreadedEventLoopGroup.singleton)
        let upgraded = AsyncStream.makeStream(of: Result<UpgradedConnection, any Error>.self)
        let dialer = makeHost(security)
        // The acceptor upgrades the accepted socket as the INITIATOR, expecting the dialer's id.
        let listener = try await transport.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0")) { channel in
            upgrader.upgrade(channel: channel, initiator: true, expectedPeer: dialer.peerID) { stream in
                // Echo one message on the first inbound stream, raw (no protocol negotiation).
                Task {
                    while let chunk = try? await stream.read() { try? await stream.write(chunk) }
                    try? await stream.closeWrite()
                }
            }.whenComplete { upgraded.continuation.yield($0) }
            return channel.eventLoop.makeSucceededVoidFuture()
        }
        defer { Task { await listener.close() } }
        let address = listener.localAddress.appending(.p2p(acceptorIdentity.peerID))
        try await running([dialer]) {
            let peer = try await dialer.connect(to: address, dialAsListener: true)
            #expect(peer == acceptorIdentity.peerID)
            var results = upgraded.stream.makeAsyncIterator()
            let acceptorSide = try #require(await results.next()).get()
            #expect(acceptorSide.security.remotePeer == dialer.peerID)
            #expect(acceptorSide.ranInitiatorSide)
            // The connection works: the acceptor opens a stream to the dialer's ping service.
            let stream = try await acceptorSide.muxer.openStream()
            var frames = ByteBuffer()
            frames.writeBytes(msFrame("/multistream/1.0.0") + msFrame("/ipfs/ping/1.0.0"))
            try await stream.write(frames)
            var reply = ByteBuffer()
            let expected = msFrame("/multistream/1.0.0") + msFrame("/ipfs/ping/1.0.0")
            while reply.readableBytes < expected.count, var chunk = try await stream.read() {
                reply.writeBuffer(&chunk)
            }
            #expect(Array(reply.readableBytesView) == expected)
            let ping = ByteBuffer(repeating: 7, count: 32)
            try await stream.write(ping)
            var pong = ByteBuffer()
            while pong.readableBytes < 32, var chunk = try await stream.read() { pong.writeBuffer(&chunk) }
            #expect(pong == ping)
            try await acceptorSide.channel.close()
        }
    }

    @Test("both sides as responder never complete: the upgrade times out cleanly")
    func bothResponders() async throws {
        let identity = PrivateKey.generate()
        // The listener waits much longer than the dialer, so the dialer's own deadline is what
        // ends the upgrade (with equal ones, a loaded machine could fire the listener's first and
        // the dialer would see the connection closed instead of its timeout).
        let upgrader = ConnectionUpgrader(security: [SecurityKind.noise.make(identity)], timeout: .seconds(30))
        let transport = TCPTransport(group: MultiThreadedEventLoopGroup.singleton)
        let listener = try await transport.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0")) { channel in
            _ = upgrader.upgrade(channel: channel, initiator: false, expectedPeer: nil) { _ in }
            return channel.eventLoop.makeSucceededVoidFuture()
        }
        defer { Task { await listener.close() } }
        let dialer = makeHost(configure: { $0.upgradeTimeout = .milliseconds(300) })
        _ = try await running([dialer]) {
            await #expect {
                try await dialer.connect(
                    to: listener.localAddress.appending(.p2p(identity.peerID)), dialAsListener: true)
            } throws: { error in
                (error as? StreamsError)?.code == .timedOut
            }
        }
    }
}
