import MsgNetCore
import MsgNetTransportPosix
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@Suite("UDP transport", .timeLimit(.minutes(1)))
struct UDPTransportTests {
    @Test("datagrams both ways on IPv4 and IPv6 loopback", arguments: ["/ip4/127.0.0.1/udp/0", "/ip6/::1/udp/0"])
    func roundTrip(address: String) async throws {
        let transport = UDPTransport(group: MultiThreadedEventLoopGroup.singleton)
        #expect(transport.canHandle(try Multiaddr(address)))
        #expect(!transport.canHandle(try Multiaddr("/ip4/127.0.0.1/tcp/1")))
        let (stream, continuation) = AsyncStream.makeStream(of: (ByteBuffer, SocketAddress).self)
        let server = try await transport.bind(
            try Multiaddr(address), handler: { continuation.yield(($0, $1)) }, flush: {})
        let echoBox = NIOLockedValueBox<(any DatagramSocket)?>(nil)
        let client = try await transport.bind(
            try Multiaddr(address),
            handler: { data, from in
                // The client echoes what the server sends it.
                echoBox.withLockedValue { $0 }?.write(data, to: from)
            },
            flush: { echoBox.withLockedValue { $0 }?.flush() })
        echoBox.withLockedValue { $0 = client }
        #expect(server.localAddress.port != 0)
        let serverSocket = try server.localAddress.socketAddress()
        for i in 0..<9 { client.write(ByteBuffer(string: "ping \(i)"), to: serverSocket) }
        // Addressed by multiaddr, as the seed's Socket.WriteMessage.
        try client.write(ByteBuffer(string: "ping 9"), to: server.localAddress)
        client.flush()
        var got: [String] = []
        var iterator = stream.makeAsyncIterator()
        while got.count < 10, let (data, from) = await iterator.next() {
            got.append(String(buffer: data))
            if got.count == 1 {
                server.write(ByteBuffer(string: "pong"), to: from)
                server.flush()
            }
        }
        #expect(Set(got) == Set((0..<10).map { "ping \($0)" }))
        // The echoed pong comes back to the server.
        let echoed = await iterator.next()
        #expect(echoed.map { String(buffer: $0.0) } == "pong")
        await client.close()
        await server.close()
    }

    @Test("a UDP port in use is refused: no two sockets share a port, so none takes another's datagrams")
    func portInUseIsRefused() async throws {
        let transport = UDPTransport(group: MultiThreadedEventLoopGroup.singleton)
        let first = try await transport.bind(try Multiaddr("/ip4/127.0.0.1/udp/0"), handler: { _, _ in }, flush: {})
        await #expect(throws: (any Error).self) {
            let second = try await transport.bind(first.localAddress, handler: { _, _ in }, flush: {})
            await second.close()
        }
        // Many sockets on port 0 get as many ports.
        var sockets: [any DatagramSocket] = []
        for _ in 0..<64 {
            sockets.append(
                try await transport.bind(try Multiaddr("/ip4/127.0.0.1/udp/0"), handler: { _, _ in }, flush: {}))
        }
        let ports = Set(sockets.map(\.localAddress.port) + [first.localAddress.port])
        #expect(ports.count == 65)
        for socket in sockets { await socket.close() }
        await first.close()
    }
}
