import MsgNetCore
import MsgNetHost
import MsgNetStreams
import MsgNetTestSupport
import MsgNetTransportPosix
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

/// A request that crosses the peer's Close of an unused session: the Close says how long the
/// session carried nothing, so the request, which the peer never got, goes again on a new
/// session instead of failing "outcome unknown".
@Suite("Datagram requests crossing an unused-session Close", .timeLimit(.minutes(2)))
struct DatagramUnusedCloseTests {
    @Test("a request lost in the crossing goes again on a new session and is handled once")
    func requestCrossingTheCloseGoesAgain() async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        // a: never closes sessions as unused; its sends to the first session can be cut off.
        let aIdentity = PrivateKey.generate()
        let gate = SessionGate()
        var aConfiguration = DatagramTransportConfiguration()
        aConfiguration.sessionIdleTimeout = nil
        aConfiguration.connectTimeout = .seconds(10)
        let aTransport = DatagramMessageTransport(
            identity: aIdentity, datagrams: FilteredDatagrams(inner: UDPTransport(group: loop), outbound: gate.pass),
            eventLoop: loop, configuration: aConfiguration)
        var hostConfiguration = MessageHostConfiguration()
        hostConfiguration.defaultRequestTimeout = .seconds(30)
        let a = MessageHost(
            identity: aIdentity, transports: [aTransport], peerstore: Peerstore(), configuration: hostConfiguration)
        // b: closes a session unused for 1 s.
        let bIdentity = PrivateKey.generate()
        var bConfiguration = DatagramTransportConfiguration()
        bConfiguration.sessionIdleTimeout = .seconds(1)
        let bTransport = DatagramMessageTransport(
            identity: bIdentity, datagrams: UDPTransport(group: loop), eventLoop: loop, configuration: bConfiguration)
        let b = MessageHost(identity: bIdentity, transports: [bTransport], peerstore: Peerstore())
        let handled = NIOLockedValueBox<[String]>([])
        b.setMessageHandler(for: "/kv/1") { message in
            handled.withLockedValue { $0.append(String(buffer: message.data)) }
            try await message.reply(ByteBuffer(string: "re:" + String(buffer: message.data)))
        }
        try await running([a, b]) {
            let address = try await b.network.listen(on: try Multiaddr("/ip4/127.0.0.1/udp/0"))
            a.peerstore.addAddresses([address], for: b.peerID)
            let first = try await a.request(ByteBuffer(string: "1"), to: b.peerID, protocol: "/kv/1")
            #expect(String(buffer: first.data) == "re:1")
            // Nothing in progress on the session: both identify exchanges are done and every
            // reliable message is acknowledged (an unfinished one would keep b from closing it).
            let quiet = try await eventually {
                guard a.peerstore.identify(for: b.peerID) != nil, b.peerstore.identify(for: a.peerID) != nil else {
                    return false
                }
                let waiting = await aTransport.reliableSendsWaiting() + bTransport.reliableSendsWaiting()
                return waiting == 0
            }
            #expect(quiet)
            // From now on nothing a sends on this session reaches b (as if it crossed b's Close
            // and arrived after b forgot the session). b closes it as unused within 1.25 s.
            gate.cutNextSession()
            let second = try await a.request(ByteBuffer(string: "2"), to: b.peerID, protocol: "/kv/1")
            #expect(String(buffer: second.data) == "re:2")
            #expect(gate.dropped > 0)
            // It went on a second session (counters are published every 10 ms).
            #expect(try await eventually { aTransport.sessionCounters.sessionsEstablished == 2 })
        }
        #expect(handled.withLockedValue { $0 } == ["1", "2"])
    }
}

/// For ``FilteredDatagrams`` (`outbound: gate.pass`): once told, drops every datagram sent to
/// one session, the one named by the next transport packet (destination id, bytes 1–8) sent.
/// Handshakes and other sessions pass.
final class SessionGate: Sendable {
    struct State {
        var armed = false
        var cut: [UInt8]?
        var dropped = 0
    }
    let state = NIOLockedValueBox(State())
    var dropped: Int { state.withLockedValue { $0.dropped } }

    /// Cuts off the session of the next transport packet sent.
    func cutNextSession() { state.withLockedValue { $0.armed = true } }

    /// `datagram`, unless its session is cut off.
    func pass(_ datagram: ByteBuffer, to address: SocketAddress) -> [(ByteBuffer, SocketAddress)] {
        guard datagram.readableBytes >= 31, let type = datagram.getInteger(at: datagram.readerIndex, as: UInt8.self),
            (0x14...0x19).contains(type), let destination = datagram.getBytes(at: datagram.readerIndex + 1, length: 8)
        else { return [(datagram, address)] }
        return state.withLockedValue { s in
            if s.armed, s.cut == nil { s.cut = destination }
            guard destination == s.cut else { return [(datagram, address)] }
            s.dropped += 1
            return []
        }
    }
}
