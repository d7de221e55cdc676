import MsgNetCore
import MsgNetHost
import MsgNetStreams
import MsgNetTestSupport
import MsgNetTransportPosix
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

/// The whole datagram stack — sockets, sessions (handshake included), messaging, the host —
/// over real loopback sockets whose sends drop, duplicate and reorder datagrams. The machines'
/// own tests do the same on a simulated link; this one checks the layers together.
@Suite("Datagram stack over a lossy link", .timeLimit(.minutes(2)))
struct DatagramLossyStackTests {
    static func node(seed: UInt64) -> (MessageHost, LossyLink) {
        let identity = PrivateKey.generate()
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let link = LossyLink(seed: seed, loss: 0.10, duplicate: 0.05)
        let lossy = FilteredDatagrams(inner: UDPTransport(group: loop), outbound: link.plan)
        var configuration = DatagramTransportConfiguration()
        configuration.connectTimeout = .seconds(20)
        configuration.messaging.deliveryTimeout = .seconds(60)
        let transport = DatagramMessageTransport(
            identity: identity, datagrams: lossy, eventLoop: loop, configuration: configuration)
        var hostConfiguration = MessageHostConfiguration()
        hostConfiguration.defaultRequestTimeout = .seconds(60)
        let host = MessageHost(
            identity: identity, transports: [transport], peerstore: Peerstore(), configuration: hostConfiguration)
        return (host, link)
    }

    /// Message `i`: sizes from empty to several fragments; equal sizes differ in content
    /// (except the empty ones, which the multiset comparison counts).
    static func message(_ i: Int) -> ByteBuffer {
        let size = [0, 10, 1100, 3000, 20_000][i % 5]
        let tag = Array("#\(i)#".utf8)
        return ByteBuffer(bytes: (0..<size).map { j in j < tag.count ? tag[j] : UInt8(truncatingIfNeeded: i &+ j) })
    }

    @Test(
        "10% loss and 5% duplication each way: every reliable message and request arrives exactly once; no unreliable one twice"
    )
    func reliableExactlyOnceUnreliableNeverTwice() async throws {
        let (a, aLink) = Self.node(seed: 11)
        let (b, bLink) = Self.node(seed: 12)
        let got = NIOLockedValueBox<[String: [ByteBuffer: Int]]>([:])
        for p in ["/reliable/1", "/request/1", "/unreliable/1"] {
            b.setMessageHandler(for: p) { message in
                got.withLockedValue { $0[message.protocol, default: [:]][message.data, default: 0] += 1 }
                if message.protocol == "/request/1" { try await message.reply(message.data) }
            }
        }
        let senders = 4
        let perSender = 40
        try await running([a, b]) {
            let address = try await b.network.listen(on: try Multiaddr("/ip4/127.0.0.1/udp/0"))
            a.peerstore.addAddresses([address], for: b.peerID)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for s in 0..<senders {
                    group.addTask {
                        for k in 0..<perSender {
                            let i = s * perSender + k
                            if i % 4 == 3 {
                                let reply = try await a.request(Self.message(i), to: b.peerID, protocol: "/request/1")
                                #expect(reply.data == Self.message(i))
                            } else {
                                try await a.send(Self.message(i), to: b.peerID, protocol: "/reliable/1")
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            for i in 0..<200 {
                try await a.send(
                    ByteBuffer(string: "u\(i)"), to: b.peerID, protocol: "/unreliable/1", mode: .unreliable)
            }
            // A reliable send returns on its ack: the handler has the message by then, or will
            // have it once delivery (on b's loop) finishes; the unreliable ones may be lost.
            let expected = (0..<(senders * perSender)).filter { $0 % 4 != 3 }.count
            _ = try await eventually { got.withLockedValue { $0["/reliable/1"]?.values.reduce(0, +) ?? 0 } >= expected }
        }
        let received = got.withLockedValue { $0 }
        var reliable: [ByteBuffer: Int] = [:]
        var requests: [ByteBuffer: Int] = [:]
        for i in 0..<(senders * perSender) {
            if i % 4 == 3 {
                requests[Self.message(i), default: 0] += 1
            } else {
                reliable[Self.message(i), default: 0] += 1
            }
        }
        #expect(received["/reliable/1"] == reliable)
        #expect(received["/request/1"] == requests)
        let unreliable = received["/unreliable/1"] ?? [:]
        #expect(unreliable.values.allSatisfy { $0 == 1 })
        #expect(unreliable.count <= 200)
        // The link really lost and duplicated datagrams both ways, handshake included.
        for link in [aLink, bLink] {
            let stats = link.stats
            #expect(stats.dropped > 0 && stats.duplicated > 0 && stats.reordered > 0, "\(stats)")
        }
    }
}

/// A lossy link for ``FilteredDatagrams`` (`outbound: link.plan`): each datagram sent is lost
/// with probability `loss`, sent twice with probability `duplicate`, and one in ten is held back
/// and sent after the next one (on the socket that sends that one: use one socket per
/// transport). A datagram held back when nothing follows is lost.
final class LossyLink: Sendable {
    struct Stats: Sendable, CustomStringConvertible {
        var sent = 0
        var dropped = 0
        var duplicated = 0
        var reordered = 0
        var description: String { "sent \(sent), dropped \(dropped), duplicated \(duplicated), reordered \(reordered)" }
    }
    struct State {
        var rng: SplitMix64
        var stats = Stats()
        var held: (ByteBuffer, SocketAddress)?
    }
    let loss: Double
    let duplicate: Double
    let state: NIOLockedValueBox<State>
    var stats: Stats { state.withLockedValue { $0.stats } }

    init(seed: UInt64, loss: Double, duplicate: Double) {
        self.loss = loss
        self.duplicate = duplicate
        self.state = NIOLockedValueBox(State(rng: SplitMix64(seed: seed)))
    }

    /// What to send for one datagram written: nothing, it once or twice, possibly after the
    /// one held back before it.
    func plan(_ datagram: ByteBuffer, to address: SocketAddress) -> [(ByteBuffer, SocketAddress)] {
        state.withLockedValue { s in
            s.stats.sent += 1
            if s.rng.chance(loss) {
                s.stats.dropped += 1
                return []
            }
            var out: [(ByteBuffer, SocketAddress)] = [(datagram, address)]
            if s.rng.chance(duplicate) {
                s.stats.duplicated += 1
                out.append((datagram, address))
            }
            if let held = s.held {
                s.held = nil
                out.append(held)
            } else if s.rng.chance(0.1) {
                s.stats.reordered += 1
                s.held = out.removeFirst()
            }
            return out
        }
    }
}
