import MsgNetCore
import MsgNetHost
import MsgNetMultipacket
import MsgNetStreams
import MsgNetTestSupport
import MsgNetTransportPosix
import NIOCore
import NIOPosix
import Testing

/// Garbage sent to a live UDP listener over real sockets (the machines' own tests feed them
/// the same kinds of input directly): every datagram is dropped and counted, and the listener
/// keeps serving a real peer, whose session was open before the garbage and one opened after it.
@Suite("Datagram listener under hostile input", .timeLimit(.minutes(2)))
struct DatagramHostileInputTests {
    struct Node {
        let host: MessageHost
        let transport: DatagramMessageTransport
    }

    static func node() -> Node {
        let identity = PrivateKey.generate()
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        var configuration = DatagramTransportConfiguration()
        configuration.connectTimeout = .seconds(10)
        let transport = DatagramMessageTransport(
            identity: identity, datagrams: UDPTransport(group: loop), eventLoop: loop, configuration: configuration)
        let host = MessageHost(identity: identity, transports: [transport], peerstore: Peerstore())
        return Node(host: host, transport: transport)
    }

    /// The datagrams a hostile sender throws at the listener, each of which the session layer
    /// must drop without an answer.
    static func garbage() -> [[UInt8]] {
        var rng = SplitMix64(seed: 0x5eed_0004)
        func random(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) } }
        var out: [[UInt8]] = [
            [0x14],  // a transport type byte alone
            [0x14] + random(29),  // one byte short of the smallest transport packet
            [0x14] + random(3000),  // over the largest datagram accepted (1232)
            [0x99] + random(40),  // unknown version and type
            [0x11] + random(10),  // truncated Handshake1
            // Handshake1 whose noise length runs past the end
            [0x11] + [UInt8](repeating: 0, count: 8) + random(8) + [0, 0, 0, 200] + random(40),
            [0x12] + random(60),  // Handshake2 for a session nobody started
            [0x1A] + random(8) + [64] + random(3),  // Retry with a token length past the end
        ]
        // Transport packets with forged session ids, well formed otherwise.
        for _ in 0..<20 { out.append([0x14] + random(8) + random(6) + random(64)) }
        // Random datagrams of random lengths, any first byte.
        for _ in 0..<200 { out.append(random(Int.random(in: 1...1300, using: &rng))) }
        return out
    }

    @Test(
        "random, truncated, oversize and forged datagrams are counted, answered with nothing, and the listener keeps serving"
    )
    func garbageIsCountedAndServiceGoesOn() async throws {
        let server = Self.node()
        let before = Self.node()
        let after = Self.node()
        server.host.setMessageHandler(for: "/echo/1") { try await $0.reply($0.data) }
        let group = MultiThreadedEventLoopGroup.singleton
        let answers = Counter()
        let attacker = try await DatagramBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(CountingInbound(counter: answers))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let garbage = Self.garbage()
        try await running([server.host, before.host, after.host]) {
            let address = try await server.host.network.listen(on: try Multiaddr("/ip4/127.0.0.1/udp/0"))
            let target = try address.withoutPeerID().socketAddress()
            before.host.peerstore.addAddresses([address], for: server.host.peerID)
            after.host.peerstore.addAddresses([address], for: server.host.peerID)
            let first = try await before.host.request(bytes("1"), to: server.host.peerID, protocol: "/echo/1")
            #expect(String(buffer: first.data) == "1")
            let baseline = server.transport.sessionCounters

            for datagram in garbage {
                let envelope = AddressedEnvelope(remoteAddress: target, data: ByteBuffer(bytes: datagram))
                try await attacker.writeAndFlush(envelope)
            }
            // Every datagram is dropped and counted by one of the parse and lookup checks
            // (counters are published every 10 ms; bounded wait).
            func dropped(_ c: SessionCounters) -> UInt64 {
                c.malformed + c.unknownSession + c.unexpected + c.handshakeFailed + c.decryptFailed
            }
            let counted = try await eventually {
                dropped(server.transport.sessionCounters) - dropped(baseline) >= UInt64(garbage.count)
            }
            let counters = server.transport.sessionCounters
            // Each one exactly once: nothing is counted twice, nothing slips through uncounted.
            #expect(
                counted && dropped(counters) - dropped(baseline) == UInt64(garbage.count),
                "dropped \(dropped(counters) - dropped(baseline)) of \(garbage.count): \(counters)")
            #expect(counters.malformed - baseline.malformed >= 7)
            #expect(counters.unknownSession - baseline.unknownSession >= 20)
            #expect(counters.limitRejected == baseline.limitRejected)

            // The session open before the garbage still works, and a new one opens.
            let second = try await before.host.request(bytes("2"), to: server.host.peerID, protocol: "/echo/1")
            #expect(String(buffer: second.data) == "2")
            let third = try await after.host.request(bytes("3"), to: server.host.peerID, protocol: "/echo/1")
            #expect(String(buffer: third.data) == "3")
            #expect(Set(server.host.network.peers) == [before.host.peerID, after.host.peerID])
        }
        // Nothing went back to the sender of the garbage: by now the server has handled all of
        // it and answered two peers after it on the same socket and loop.
        #expect(answers.value == 0)
        try await attacker.close()
    }
}

/// Counts datagrams a channel receives.
private final class CountingInbound: ChannelInboundHandler, Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let counter: Counter
    init(counter: Counter) { self.counter = counter }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) { counter.add() }
}
