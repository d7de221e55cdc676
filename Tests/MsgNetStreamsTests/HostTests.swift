import MsgNetCore
import MsgNetStreams
import MsgNetTransportPosix
import NIOCore
import NIOPosix
import Testing

@Suite("StreamHost over loopback TCP", .timeLimit(.minutes(2)))
struct HostTests {
    @Test("connect, identify and ping", arguments: SecurityKind.allCases)
    func identifyAndPing(security: SecurityKind) async throws {
        let a = makeHost(security)
        let b = makeHost(security)
        try await running([a, b]) {
            let bAddress = try await b.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
            #expect(bAddress.peerID == b.peerID)
            let info = try await a.identify(bAddress)
            #expect(info.peer == b.peerID)
            #expect(info.agentVersion == "msgnet/0.1.0")
            #expect(info.protocols.contains("/ipfs/ping/1.0.0"))
            #expect(info.protocols.contains("/ipfs/id/1.0.0"))
            #expect(info.listenAddresses == [bAddress.withoutPeerID()])
            #expect(info.observedAddress != nil)
            let rtts = try await a.ping(b.peerID, count: 3)
            #expect(rtts.count == 3)
            #expect(a.isConnected(to: b.peerID))
        }
    }

    @Test("IPv6 loopback")
    func ipv6() async throws {
        let a = makeHost()
        let b = makeHost()
        try await running([a, b]) {
            let bAddress = try await b.listen(on: try Multiaddr("/ip6/::1/tcp/0"))
            #expect(bAddress.description.hasPrefix("/ip6/::1/tcp/"))
            let rtts = try await a.ping(bAddress, count: 1)
            #expect(rtts.count == 1)
        }
    }

    @Test("dialing /dns4/localhost and /dns/localhost", arguments: ["dns4", "dns"])
    func dnsDial(proto: String) async throws {
        let a = makeHost()
        let b = makeHost()
        try await running([a, b]) {
            let bAddress = try await b.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
            let port = try #require(bAddress.port)
            let named = try Multiaddr("/\(proto)/localhost/tcp/\(port)/p2p/\(b.peerID)")
            #expect(try await a.ping(named, count: 1).count == 1)
        }
    }

    @Test("a custom handler echoes 1 MiB byte-exact", arguments: SecurityKind.allCases)
    func echoOneMiB(security: SecurityKind) async throws {
        let a = makeHost(security)
        let b = makeHost(security)
        b.setStreamHandler("/echo/1.0.0") { stream in
            while let chunk = try await stream.read() { try await stream.write(chunk) }
        }
        try await running([a, b]) {
            let bAddress = try await b.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
            let stream = try await a.newStream(to: bAddress, protocols: ["/echo/1.0.0"])
            #expect(stream.protocolID == "/echo/1.0.0")
            var payload = ByteBuffer()
            for i in 0..<(1 << 20) { payload.writeInteger(UInt8(truncatingIfNeeded: i &* 31 &+ i >> 8)) }
            let sent = payload
            async let echoed = stream.readToEnd(maxBytes: 2 << 20)
            try await stream.write(payload)
            try await stream.closeWrite()
            #expect(try await echoed == sent)
        }
    }

    @Test("fallback through proposals and an unsupported protocol")
    func protocolNegotiation() async throws {
        let a = makeHost()
        let b = makeHost()
        b.setStreamHandler("/kv/2.0.0") { stream in try await stream.write(Array("v2".utf8)) }
        b.setStreamHandler(matching: { $0.hasPrefix("/chat/1.") }, advertised: "/chat/1.0.0") { stream in
            try await stream.write(Array(stream.protocolID.utf8))
        }
        try await running([a, b]) {
            let bAddress = try await b.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
            let s1 = try await a.newStream(to: bAddress, protocols: ["/kv/3.0.0", "/kv/2.0.0"])
            #expect(s1.protocolID == "/kv/2.0.0")
            #expect(try await s1.readToEnd(maxBytes: 100) == ByteBuffer(string: "v2"))
            let s2 = try await a.newStream(to: b.peerID, protocols: ["/chat/1.7.0"])
            #expect(try await s2.readToEnd(maxBytes: 100) == ByteBuffer(string: "/chat/1.7.0"))
            await #expect {
                _ = try await a.newStream(to: b.peerID, protocols: ["/nope/1.0.0"])
            } throws: { error in
                (error as? StreamsError)?.code == .protocolNotSupported
            }
            // The connection survives a refused protocol.
            #expect(try await a.ping(b.peerID).count == 1)
        }
    }

    @Test("dialing the wrong peer id fails with peerIDMismatch", arguments: SecurityKind.allCases)
    func wrongPeerID(security: SecurityKind) async throws {
        let a = makeHost(security)
        let b = makeHost(security)
        let stranger = PrivateKey.generate().peerID
        try await running([a, b]) {
            let bAddress = try await b.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
            let wrong = bAddress.withoutPeerID().appending(.p2p(stranger))
            await #expect {
                try await a.connect(to: wrong)
            } throws: { error in
                (error as? StreamsError)?.code == .peerIDMismatch
            }
            #expect(!a.isConnected(to: b.peerID))
            // b keeps serving.
            #expect(try await a.ping(bAddress, count: 1).count == 1)
        }
    }

    @Test("dialing a closed port fails with dialFailed")
    func unreachable() async throws {
        let a = makeHost()
        let b = makeHost()
        let bAddress = try await running([b]) {
            try await b.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        }
        _ = try await running([a]) {
            await #expect {
                try await a.connect(to: bAddress)
            } throws: { error in
                (error as? StreamsError)?.code == .dialFailed
            }
        }
    }

    @Test("an upgrade deadline that passes before the connect completes fails the dial with timedOut")
    func upgradeDeadlineBeforeConnect() async throws {
        // The peer accepts and never speaks; the dialer's connect reports only after its channel
        // closed, as a connect slower than the upgrade timeout does on a starved machine.
        let silent = try await TCPTransport(group: MultiThreadedEventLoopGroup.singleton).listen(
            on: try Multiaddr("/ip4/127.0.0.1/tcp/0")
        ) { $0.eventLoop.makeSucceededVoidFuture() }
        let identity = PrivateKey.generate()
        var configuration = StreamHostConfiguration()
        configuration.upgradeTimeout = .milliseconds(200)
        let dialer = StreamHost(
            identity: identity, transports: [LateConnectTransport()], security: [SecurityKind.noise.make(identity)],
            configuration: configuration)
        _ = try await running([dialer]) {
            await #expect {
                try await dialer.connect(to: silent.localAddress)
            } throws: { error in
                (error as? StreamsError)?.code == .timedOut
            }
        }
        await silent.close()
    }

    @Test("identify push updates the peer's protocol list")
    func identifyPush() async throws {
        let a = makeHost()
        let b = makeHost()
        try await running([a, b]) {
            let bAddress = try await b.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
            _ = try await b.identify(try await a.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0")))
            _ = try await a.identify(bAddress)
            var events = a.events.makeAsyncIterator()
            b.setStreamHandler("/new/1.0.0") { _ in }
            while let event = await events.next() {
                if case .peerProtocolsUpdated(let peer, let protocols) = event, peer == b.peerID,
                    protocols.contains("/new/1.0.0")
                {
                    break
                }
            }
            #expect(a.peerstore.protocols(for: b.peerID).contains("/new/1.0.0"))
        }
    }
}

/// TCP whose connects report late: once the channel has closed, with the error NIO gives a
/// connect that finds its channel closed.
struct LateConnectTransport: StreamTransport {
    let inner = TCPTransport(group: MultiThreadedEventLoopGroup.singleton)

    func canHandle(_ address: Multiaddr) -> Bool { inner.canHandle(address) }

    func listen(
        on address: Multiaddr, initializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>
    ) async throws -> any StreamListener {
        try await inner.listen(on: address, initializer: initializer)
    }

    func dial(
        _ address: Multiaddr, timeout: TimeAmount,
        initializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>
    ) async throws -> any Channel {
        let channel = try await inner.dial(address, timeout: timeout, initializer: initializer)
        try? await channel.closeFuture.get()
        throw ChannelError.ioOnClosedChannel
    }
}
