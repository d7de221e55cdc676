import MsgNetCore
import MsgNetHost
import MsgNetSecurity
import MsgNetStreams
import MsgNetTestSupport
import MsgNetTransportPosix
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

/// Hosts with both paths: the same handler serves both; UDP is preferred; TCP is the fallback.
@Suite("path choice", .timeLimit(.minutes(2)))
struct PathChoiceTests {
    /// A host with both paths, given to it as the datagram path first and the stream path
    /// second (or the other way round with `streamFirst`), with `preference` as its
    /// ``MessageHostConfiguration/pathPreference``.
    static func dualHost(
        connectTimeout: TimeAmount = .seconds(2), streamFirst: Bool = false,
        preference: [MessagePath] = MessageHostConfiguration().pathPreference
    ) -> MessageHost {
        let identity = PrivateKey.generate()
        let group = MultiThreadedEventLoopGroup.singleton
        let loop = group.next()
        let peerstore = Peerstore()
        var datagram = DatagramTransportConfiguration()
        datagram.connectTimeout = connectTimeout
        let udp = DatagramMessageTransport(
            identity: identity, datagrams: UDPTransport(group: loop), eventLoop: loop, configuration: datagram)
        let tcp = StreamMessageTransport(
            identity: identity, transports: [TCPTransport(group: group)], security: [NoiseSecurity(identity: identity)],
            peerstore: peerstore)
        var configuration = MessageHostConfiguration()
        configuration.pathPreference = preference
        return MessageHost(
            identity: identity, transports: streamFirst ? [tcp, udp] : [udp, tcp], peerstore: peerstore,
            configuration: configuration)
    }

    /// Makes `host` echo `/p/1` requests and returns the paths of the messages it gets there.
    static func recordPaths(of host: MessageHost) -> NIOLockedValueBox<[MessagePath?]> {
        let paths = NIOLockedValueBox<[MessagePath?]>([])
        host.setMessageHandler(for: "/p/1") { message in
            paths.withLockedValue { $0.append(message.path) }
            try await message.reply(message.data)
        }
        return paths
    }

    /// A loopback UDP port nobody answers on: one bound and closed again.
    static func deadUDPPort() async throws -> Int {
        let dead = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(dead.localAddress?.port)
        try await dead.close()
        return port
    }

    /// A dual host that answers `/echo/1` requests with their payload.
    static func echoServer() -> MessageHost {
        let server = dualHost()
        server.setMessageHandler(for: "/echo/1") { try await $0.reply($0.data) }
        return server
    }

    @Test("one handler gets the same message over UDP and over TCP, told apart only by `path`")
    func sameHandlerBothPaths() async throws {
        let server = Self.dualHost()
        let viaUDP = TransportFactory.udp.host()
        let viaTCP = TransportFactory.tcp.host()
        let got = NIOLockedValueBox<[(String, MessagePath?)]>([])
        let count = Counter()
        server.setMessageHandler(for: "/chat/1.0.0") { message in
            got.withLockedValue { $0.append((String(buffer: message.data), message.path)) }
            count.add()
            try await message.reply(message.data)
        }
        try await running([server, viaUDP, viaTCP]) {
            let udpAddress = try await server.network.listen(on: try Multiaddr("/ip4/127.0.0.1/udp/0"))
            let tcpAddress = try await server.network.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
            viaUDP.peerstore.addAddresses([udpAddress], for: server.peerID)
            viaTCP.peerstore.addAddresses([tcpAddress], for: server.peerID)
            try await viaUDP.send(ByteBuffer(string: "hello"), to: server.peerID, protocol: "/chat/1.0.0")
            try await viaTCP.send(ByteBuffer(string: "hello"), to: server.peerID, protocol: "/chat/1.0.0")
            await count.wait(atLeast: 2)
            let r1 = try await viaUDP.request(ByteBuffer(string: "q"), to: server.peerID, protocol: "/chat/1.0.0")
            let r2 = try await viaTCP.request(ByteBuffer(string: "q"), to: server.peerID, protocol: "/chat/1.0.0")
            #expect(String(buffer: r1.data) == "q" && r1.path == .datagram)
            #expect(String(buffer: r2.data) == "q" && r2.path == .stream)
        }
        let messages = got.withLockedValue { $0 }
        #expect(messages.filter { $0.0 == "hello" }.map(\.1).sorted { "\($0!)" < "\($1!)" } == [.datagram, .stream])
    }

    @Test("UDP is preferred when the peer has both addresses")
    func prefersUDP() async throws {
        // The preference is under test, not the deadline: a generous one keeps a stalled CI
        // machine from falling back to TCP.
        let a = Self.dualHost(connectTimeout: .seconds(10))
        let b = Self.dualHost()
        let paths = Self.recordPaths(of: b)
        try await running([a, b]) {
            let addresses = try await b.network.listen(on: [
                try Multiaddr("/ip4/127.0.0.1/tcp/0"), try Multiaddr("/ip4/127.0.0.1/udp/0"),
            ])
            a.peerstore.addAddresses(addresses, for: b.peerID)
            _ = try await a.request(ByteBuffer(string: "x"), to: b.peerID, protocol: "/p/1")
        }
        #expect(paths.withLockedValue { $0 } == [.datagram])
    }

    @Test(
        "the preference decides the first path, not the order the transports were given in",
        arguments: [
            ([MessagePath.datagram, .stream], false), ([.datagram, .stream], true),
            ([.stream, .datagram], false), ([.stream], true),
        ])
    func preferenceOrdersThePaths(preference: [MessagePath], streamFirst: Bool) async throws {
        let a = Self.dualHost(connectTimeout: .seconds(10), streamFirst: streamFirst, preference: preference)
        let b = Self.dualHost()
        let expected = preference[0]
        #expect(a.transports.map(\.path) == (expected == .datagram ? [.datagram, .stream] : [.stream, .datagram]))
        let paths = Self.recordPaths(of: b)
        try await running([a, b]) {
            let addresses = try await b.network.listen(on: [
                try Multiaddr("/ip4/127.0.0.1/udp/0"), try Multiaddr("/ip4/127.0.0.1/tcp/0"),
            ])
            a.peerstore.addAddresses(addresses, for: b.peerID)
            let reply = try await a.request(ByteBuffer(string: "x"), to: b.peerID, protocol: "/p/1")
            #expect(reply.path == expected)
        }
        #expect(paths.withLockedValue { $0 } == [expected])
    }

    @Test("a live session on the less preferred path is used rather than opening the preferred one")
    func liveSessionWinsOverPreference() async throws {
        let a = Self.dualHost(connectTimeout: .seconds(10))
        let b = Self.dualHost()
        let paths = Self.recordPaths(of: b)
        try await running([a, b]) {
            let addresses = try await b.network.listen(on: [
                try Multiaddr("/ip4/127.0.0.1/udp/0"), try Multiaddr("/ip4/127.0.0.1/tcp/0"),
            ])
            let tcp = try #require(addresses.first { $0.description.contains("/tcp/") })
            a.peerstore.addAddresses(addresses, for: b.peerID)
            #expect(try await a.network.connect(to: tcp) == b.peerID)
            for i in 0..<3 {
                let reply = try await a.request(ByteBuffer(string: "x\(i)"), to: b.peerID, protocol: "/p/1")
                #expect(reply.path == .stream)
            }
            try await a.send(ByteBuffer(string: "one-way"), to: b.peerID, protocol: "/p/1")
            // No datagram session was opened on the way.
            #expect(!a.transports.contains { $0.path == .datagram && $0.isConnected(to: b.peerID) })
        }
        #expect(paths.withLockedValue { $0 }.allSatisfy { $0 == .stream })
        #expect(paths.withLockedValue { $0 }.count >= 3)
    }

    @Test(
        "TCP is the fallback when UDP gets no answer within the connect deadline, for a request and for newSession",
        arguments: [false, true])
    func fallsBackToTCP(viaNewSession: Bool) async throws {
        let a = Self.dualHost(connectTimeout: .milliseconds(300))
        let b = Self.dualHost()
        let paths = Self.recordPaths(of: b)
        let deadPort = try await Self.deadUDPPort()
        try await running([a, b]) {
            let tcp = try await b.network.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
            a.peerstore.addAddresses(
                [try Multiaddr("/ip4/127.0.0.1/udp/\(deadPort)"), tcp.withoutPeerID()], for: b.peerID)
            let reply: Message
            if viaNewSession {
                let session = try await a.network.newSession(to: b.peerID, protocol: "/p/1")
                #expect(session.path == .stream)
                reply = try await session.request(ByteBuffer(string: "x"))
            } else {
                reply = try await a.request(ByteBuffer(string: "x"), to: b.peerID, protocol: "/p/1")
            }
            #expect(String(buffer: reply.data) == "x" && reply.path == .stream)
        }
        #expect(paths.withLockedValue { $0 } == [.stream])
    }

    @Test("connect(to:) an explicit UDP address waits for the handshake, not the fallback deadline")
    func explicitConnectWaitsForHandshake() async throws {
        // A deadline no handshake meets: sends to a new peer would fall back at once, but an
        // explicit address has nothing to fall back to.
        let a = Self.dualHost(connectTimeout: .nanoseconds(1))
        let b = Self.dualHost()
        b.setMessageHandler(for: "/p/1") { message in try await message.reply(message.data) }
        try await running([a, b]) {
            let udp = try await b.network.listen(on: try Multiaddr("/ip4/127.0.0.1/udp/0"))
            let peer = try await a.network.connect(to: udp)
            #expect(peer == b.peerID)
            let reply = try await a.request(ByteBuffer(string: "x"), to: b.peerID, protocol: "/p/1")
            #expect(reply.path == .datagram)
        }
    }

    @Test("listening on an address in use fails with listenFailed, on either path", arguments: ["udp", "tcp"])
    func listenOnAddressInUse(path: String) async throws {
        let a = Self.dualHost()
        let b = Self.dualHost()
        try await running([a, b]) {
            let bound = try await a.network.listen(on: try Multiaddr("/ip4/127.0.0.1/\(path)/0"))
            await #expect {
                _ = try await b.network.listen(on: bound.withoutPeerID())
            } throws: { ($0 as? MessageError)?.code == .listenFailed }
            await #expect {
                _ = try await b.network.listen(on: try Multiaddr("/ip4/127.0.0.1/udp/1/quic-v1"))
            } throws: { ($0 as? MessageError)?.code == .listenFailed }
        }
    }

    @Test("one port on /ip4/0.0.0.0 and /ip6/:: for both paths; a request reaches each", arguments: ["udp", "tcp"])
    func bothFamiliesOnOnePort(path: String) async throws {
        let server = Self.echoServer()
        let clients = [Self.dualHost(), Self.dualHost()]
        try await running([server] + clients) {
            let v4 = try await server.network.listen(on: try Multiaddr("/ip4/0.0.0.0/\(path)/0"))
            let port = try #require(v4.port)
            _ = try await server.network.listen(on: try Multiaddr("/ip6/::/\(path)/\(port)"))
            for (client, host) in zip(clients, ["/ip4/127.0.0.1", "/ip6/::1"]) {
                let peer = try await client.network.connect(
                    to: try Multiaddr("\(host)/\(path)/\(port)/p2p/\(server.peerID)"))
                #expect(peer == server.peerID)
                let reply = try await client.request(ByteBuffer(string: host), to: peer, protocol: "/echo/1")
                #expect(String(buffer: reply.data) == host)
                #expect(reply.path == (path == "udp" ? .datagram : .stream))
            }
        }
    }

    @Test("a peer address the kernel refuses to send to (broadcast) does not break the socket or the first contact")
    func refusedAddressAmongThePeersAddresses() async throws {
        let server = Self.echoServer()
        let client = Self.dualHost()
        try await running([server, client]) {
            let udp = try await server.network.listen(on: try Multiaddr("/ip4/127.0.0.1/udp/0"))
            // sendmsg to 255.255.255.255 fails locally (EACCES: no SO_BROADCAST); nothing leaves.
            client.peerstore.addAddresses(
                [try Multiaddr("/ip4/255.255.255.255/udp/9"), udp.withoutPeerID()], for: server.peerID)
            for i in 0..<3 {
                let reply = try await client.request(ByteBuffer(string: "\(i)"), to: server.peerID, protocol: "/echo/1")
                #expect(String(buffer: reply.data) == "\(i)")
                #expect(reply.path == .datagram)
            }
        }
    }

    @Test("a UDP connect to addresses the network refuses fails at once, naming the refusal, and TCP is used instead")
    func everyUDPAddressRefused() async throws {
        let server = Self.echoServer()
        let client = Self.dualHost()
        try await running([server, client]) {
            let tcp = try await server.network.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
            // From a socket bound to loopback the kernel refuses any other destination (EINVAL,
            // or ENETUNREACH without a route); nothing leaves the machine.
            _ = try await client.network.listen(on: try Multiaddr("/ip4/127.0.0.1/udp/0"))
            let refused = try Multiaddr("/ip4/10.255.255.1/udp/9/p2p/\(server.peerID)")
            // Without the refusal, this waited for the handshake timeout (10 s) and said so.
            await #expect {
                _ = try await client.network.connect(to: refused)
            } throws: { error in
                guard let error = error as? MessageError else { return false }
                return error.code == .dialFailed && error.message.contains("refused by the network")
            }
            // Path choice: the UDP address fails, the request goes over TCP.
            client.peerstore.addAddresses([refused.withoutPeerID(), tcp.withoutPeerID()], for: server.peerID)
            let reply = try await client.request(ByteBuffer(string: "r"), to: server.peerID, protocol: "/echo/1")
            #expect(String(buffer: reply.data) == "r")
            #expect(reply.path == .stream)
        }
    }

    @Test("a UDP server under load (every first contact retried) still serves a client over real sockets")
    func retryOverRealSockets() async throws {
        let identity = PrivateKey.generate()
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        var configuration = DatagramTransportConfiguration()
        configuration.session.retryWhenHalfOpen = 0
        let udp = DatagramMessageTransport(
            identity: identity, datagrams: UDPTransport(group: loop), eventLoop: loop, configuration: configuration)
        let server = MessageHost(identity: identity, transports: [udp], peerstore: Peerstore())
        server.setMessageHandler(for: "/echo/1") { try await $0.reply($0.data) }
        let client = Self.dualHost()
        try await running([server, client]) {
            let address = try await server.network.listen(on: try Multiaddr("/ip4/127.0.0.1/udp/0"))
            let peer = try await client.network.connect(to: address)
            let reply = try await client.request(ByteBuffer(string: "r"), to: peer, protocol: "/echo/1")
            #expect(String(buffer: reply.data) == "r")
            // Counters are published every 10 ms; bounded wait.
            for _ in 0..<200 where udp.sessionCounters.retriesSent == 0 { try await Task.sleep(for: .milliseconds(10)) }
            #expect(udp.sessionCounters.retriesSent >= 1)
        }
    }

    @Test("a /dns4 UDP address is resolved and reached over UDP")
    func dnsAddressOverUDP() async throws {
        let server = Self.echoServer()
        let client = Self.dualHost()
        try await running([server, client]) {
            let udp = try await server.network.listen(on: try Multiaddr("/ip4/127.0.0.1/udp/0"))
            let port = try #require(udp.port)
            let peer = try await client.network.connect(
                to: try Multiaddr("/dns4/localhost/udp/\(port)/p2p/\(server.peerID)"))
            #expect(peer == server.peerID)
            let reply = try await client.request(ByteBuffer(string: "dns"), to: peer, protocol: "/echo/1")
            #expect(String(buffer: reply.data) == "dns")
            #expect(reply.path == .datagram)
        }
    }

    @Test(
        "a node listening on 0.0.0.0 announces its interface addresses in identify, not 0.0.0.0",
        arguments: ["udp", "tcp"])
    func wildcardAnnouncedAsInterfaces(path: String) async throws {
        let server = Self.echoServer()
        let client = Self.dualHost()
        try await running([server, client]) {
            let bound = try await server.network.listen(on: try Multiaddr("/ip4/0.0.0.0/\(path)/0"))
            let port = try #require(bound.port)
            let peer = try await client.network.connect(
                to: try Multiaddr("/ip4/127.0.0.1/\(path)/\(port)/p2p/\(server.peerID)"))
            _ = try await client.request(ByteBuffer(string: "x"), to: peer, protocol: "/echo/1")
            // Identify runs beside the first message: wait for its result, bounded.
            let clock = ContinuousClock()
            let deadline = clock.now + .seconds(10)
            while client.peerstore.identify(for: peer) == nil && clock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            let announced = try #require(client.peerstore.identify(for: peer)).listenAddresses
            #expect(announced.contains(try Multiaddr("/ip4/127.0.0.1/\(path)/\(port)")))
            #expect(!announced.contains { $0.isWildcard })
        }
    }

    @Test(
        "first contact over real sockets: every socket of ours to every address of the peer (two IPv4 ports, IPv6); one session, each message delivered once"
    )
    func consolidationOverRealSockets() async throws {
        let server = Self.dualHost()
        let client = Self.dualHost()
        let got = NIOLockedValueBox<[String]>([])
        server.setMessageHandler(for: "/echo/1") { message in
            got.withLockedValue { $0.append(String(buffer: message.data)) }
            if String(buffer: message.data) == "r" { try await message.reply(message.data) }
        }
        let serverUDP = try #require(server.transports.first { $0.path == .datagram } as? DatagramMessageTransport)
        let clientUDP = try #require(client.transports.first { $0.path == .datagram } as? DatagramMessageTransport)
        try await running([server, client]) {
            let addresses = try await server.network.listen(on: [
                try Multiaddr("/ip4/127.0.0.1/udp/0"), try Multiaddr("/ip4/127.0.0.1/udp/0"),
                try Multiaddr("/ip6/::1/udp/0"),
            ])
            _ = try await client.network.listen(on: [
                try Multiaddr("/ip4/127.0.0.1/udp/0"), try Multiaddr("/ip4/127.0.0.1/udp/0"),
            ])
            client.peerstore.addAddresses(addresses.map { $0.withoutPeerID() }, for: server.peerID)
            let reply = try await client.request(ByteBuffer(string: "r"), to: server.peerID, protocol: "/echo/1")
            #expect(String(buffer: reply.data) == "r" && reply.path == .datagram)
            for i in 0..<5 {
                try await client.send(ByteBuffer(string: "m\(i)"), to: server.peerID, protocol: "/echo/1")
            }
            // Two client sockets × two IPv4 addresses, plus one IPv6 path: five copies of
            // Handshake1; the server answers the first and counts the others as duplicates
            // (counters are published every 10 ms).
            #expect(try await eventually { serverUDP.sessionCounters.handshakeDuplicates >= 4 })
            #expect(serverUDP.connectedPeers == [client.peerID])
            #expect(clientUDP.connectedPeers == [server.peerID])
            #expect(serverUDP.sessionCounters.limitRejected == 0)
        }
        #expect(got.withLockedValue { $0 }.sorted() == ["m0", "m1", "m2", "m3", "m4", "r"])
    }

    @Test("first contact: one of the peer's addresses reaches a different node; the right one still wins")
    func oneAddressReachesAnotherNode() async throws {
        let server = Self.echoServer()
        let other = Self.dualHost()
        let client = Self.dualHost()
        try await running([server, other, client]) {
            let right = try await server.network.listen(on: try Multiaddr("/ip4/127.0.0.1/udp/0"))
            let wrong = try await other.network.listen(on: try Multiaddr("/ip4/127.0.0.1/udp/0"))
            client.peerstore.addAddresses([wrong.withoutPeerID(), right.withoutPeerID()], for: server.peerID)
            let reply = try await client.request(ByteBuffer(string: "x"), to: server.peerID, protocol: "/echo/1")
            #expect(String(buffer: reply.data) == "x")
            #expect(reply.path == .datagram)
        }
    }
}
