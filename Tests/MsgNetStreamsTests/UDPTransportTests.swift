import MsgNetCore
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import MsgNetTransportPosix

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
        // The server answers the first ping with a pong, which the client echoes back. The
        // echo may overtake later pings (the writing thread can be descheduled between them),
        // so the server reads until it has all ten pings and the echo, in any order.
        var pings: [String] = []
        var echoes = 0
        var iterator = stream.makeAsyncIterator()
        while pings.count < 10 || echoes == 0, let (data, from) = await iterator.next() {
            let text = String(buffer: data)
            if text == "pong" {
                echoes += 1
                continue
            }
            pings.append(text)
            if pings.count == 1 {
                server.write(ByteBuffer(string: "pong"), to: from)
                server.flush()
            }
        }
        #expect(pings.count == 10)
        #expect(Set(pings) == Set((0..<10).map { "ping \($0)" }))
        #expect(echoes == 1)
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

    @Test("/ip4/0.0.0.0 and /ip6/:: on the same UDP port: two sockets, each gets its own family")
    func bothFamiliesOnOnePort() async throws {
        let transport = UDPTransport(group: MultiThreadedEventLoopGroup.singleton)
        let (stream, continuation) = AsyncStream.makeStream(of: String.self)
        let v4 = try await transport.bind(
            try Multiaddr("/ip4/0.0.0.0/udp/0"), handler: { d, _ in continuation.yield("v4 " + String(buffer: d)) },
            flush: {})
        let port = try #require(v4.localAddress.port)
        let v6 = try await transport.bind(
            try Multiaddr("/ip6/::/udp/\(port)"), handler: { d, _ in continuation.yield("v6 " + String(buffer: d)) },
            flush: {})
        let client4 = try await transport.bind(try Multiaddr("/ip4/127.0.0.1/udp/0"), handler: { _, _ in }, flush: {})
        let client6 = try await transport.bind(try Multiaddr("/ip6/::1/udp/0"), handler: { _, _ in }, flush: {})
        try client4.write(ByteBuffer(string: "a"), to: try Multiaddr("/ip4/127.0.0.1/udp/\(port)"))
        client4.flush()
        try client6.write(ByteBuffer(string: "b"), to: try Multiaddr("/ip6/::1/udp/\(port)"))
        client6.flush()
        var got: Set<String> = []
        for await line in stream {
            got.insert(line)
            if got.count == 2 { break }
        }
        #expect(got == ["v4 a", "v6 b"])
        for socket in [v4, v6, client4, client6] { await socket.close() }
    }

    @Test(
        "a send the kernel refuses (broadcast) closes NIO's channel; the socket binds again on its port and carries on")
    func survivesARefusedSend() async throws {
        let transport = UDPTransport(group: MultiThreadedEventLoopGroup.singleton)
        let (aStream, aIn) = AsyncStream.makeStream(of: String.self)
        let (bStream, bIn) = AsyncStream.makeStream(of: String.self)
        let a = try await transport.bind(
            try Multiaddr("/ip4/127.0.0.1/udp/0"), handler: { d, _ in aIn.yield(String(buffer: d)) }, flush: {})
        let b = try await transport.bind(
            try Multiaddr("/ip4/127.0.0.1/udp/0"), handler: { d, _ in bIn.yield(String(buffer: d)) }, flush: {})
        // EACCES (no SO_BROADCAST): nothing leaves the machine.
        try a.write(ByteBuffer(string: "x"), to: try Multiaddr("/ip4/255.255.255.255/udp/9"))
        a.flush()
        // Until the socket is bound again, sends are lost; keep sending (bounded) until one arrives.
        let sender = Task {
            // However it ends, the readers below stop waiting.
            defer {
                aIn.finish()
                bIn.finish()
            }
            for i in 0..<250 {
                try a.write(ByteBuffer(string: "a\(i)"), to: b.localAddress)
                a.flush()
                try b.write(ByteBuffer(string: "b\(i)"), to: a.localAddress)
                b.flush()
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        var bIterator = bStream.makeAsyncIterator()
        var aIterator = aStream.makeAsyncIterator()
        let atB = await bIterator.next()
        let atA = await aIterator.next()
        sender.cancel()
        #expect(atB?.hasPrefix("a") == true)
        // The same port: b's datagrams to a's old address reach the new channel.
        #expect(atA?.hasPrefix("b") == true)
        #expect((a as? UDPSocket)?.recoveries ?? 0 >= 1)
        await a.close()
        await b.close()
    }

    @Test(
        "a destination the network refuses is reported with its error, then dropped without reaching the kernel; others are unaffected"
    )
    func refusedDestinationIsRememberedAndReported() async throws {
        var transport = UDPTransport(group: MultiThreadedEventLoopGroup.singleton)
        transport.refusalTTL = .seconds(60)
        let (reports, reported) = AsyncStream.makeStream(of: (SocketAddress, any Error).self)
        let (bStream, bIn) = AsyncStream.makeStream(of: String.self)
        let a = try await transport.bind(
            try Multiaddr("/ip4/127.0.0.1/udp/0"), handler: { _, _ in }, flush: {},
            refused: { reported.yield(($0, $1)) })
        let b = try await transport.bind(
            try Multiaddr("/ip4/127.0.0.1/udp/0"), handler: { d, _ in bIn.yield(String(buffer: d)) }, flush: {})
        let socket = try #require(a as? UDPSocket)
        // From a socket bound to loopback, the kernel refuses any other destination at once
        // (EINVAL, or ENETUNREACH without a route); nothing leaves the machine.
        let unreachable = try SocketAddress(ipAddress: "10.255.255.1", port: 9)
        a.write(ByteBuffer(string: "x"), to: unreachable)
        a.flush()
        var reportIterator = reports.makeAsyncIterator()
        let first = try #require(await reportIterator.next())
        #expect(first.0 == unreachable)
        #expect(first.1 is IOError)
        #expect(socket.refusal(of: unreachable) is IOError)
        #expect(socket.refusal(of: try b.localAddress.socketAddress()) == nil)

        // The socket still reaches b (bound again on its port if NIO closed it); bounded retries
        // cover the rebind.
        let sender = Task {
            for i in 0..<250 {
                try a.write(ByteBuffer(string: "a\(i)"), to: b.localAddress)
                a.flush()
                try await Task.sleep(for: .milliseconds(20))
            }
            bIn.finish()  // nothing arrived: the reader below stops waiting
        }
        var bIterator = bStream.makeAsyncIterator()
        #expect(await bIterator.next()?.hasPrefix("a") == true)
        sender.cancel()
        let recoveries = socket.recoveries
        #expect(recoveries <= 1)

        // Further sends to it are dropped here: no error, no rebind, nothing lost for others.
        for _ in 0..<20 {
            a.write(ByteBuffer(string: "x"), to: unreachable)
            a.flush()
        }
        try a.write(ByteBuffer(string: "done"), to: b.localAddress)
        a.flush()
        var next = await bIterator.next()
        while let n = next, n.hasPrefix("a") { next = await bIterator.next() }
        #expect(next == "done")
        #expect(socket.refusedDrops == 20)
        #expect(socket.recoveries == recoveries)
        await a.close()
        await b.close()
        reported.finish()
    }

    @Test("confirmed destinations are bounded: past the bound one makes room for each new one")
    func confirmedDestinationsAreBounded() async throws {
        let transport = UDPTransport(group: MultiThreadedEventLoopGroup.singleton)
        let a = try await transport.bind(try Multiaddr("/ip4/127.0.0.1/udp/0"), handler: { _, _ in }, flush: {})
        let socket = try #require(a as? UDPSocket)
        // Loopback ports nobody listens on: the sends succeed (an unconnected UDP socket is not
        // told about the ICMP answer).
        let count = UDPSocket.maxConfirmed + 100
        for i in 0..<count {
            a.write(ByteBuffer(string: "x"), to: try SocketAddress(ipAddress: "127.0.0.1", port: 20_000 + i))
        }
        a.flush()
        // Bounded wait for the probes (on the socket's loop) to finish.
        let loop = socket.eventLoop
        for _ in 0..<500 where try await loop.submit({ socket.confirmedCount }).get() < UDPSocket.maxConfirmed {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(socket.confirmedCount == UDPSocket.maxConfirmed)
        #expect(socket.refusals == 0)
        await a.close()
    }

    @Test("a refused destination is tried again after refusalTTL")
    func refusalExpires() async throws {
        var transport = UDPTransport(group: MultiThreadedEventLoopGroup.singleton)
        transport.refusalTTL = .milliseconds(50)
        let reports = NIOLockedValueBox(0)
        let a = try await transport.bind(
            try Multiaddr("/ip4/127.0.0.1/udp/0"), handler: { _, _ in }, flush: {},
            refused: { _, _ in reports.withLockedValue { $0 += 1 } })
        let socket = try #require(a as? UDPSocket)
        let unreachable = try SocketAddress(ipAddress: "10.255.255.2", port: 9)
        // Sends until the network has refused `count` sends in all (bounded; a send while NIO's
        // channel is being bound again is lost, so it may take more than one).
        func sendUntilRefused(_ count: Int) async throws {
            for _ in 0..<250 where socket.refusals < count {
                a.write(ByteBuffer(string: "x"), to: unreachable)
                a.flush()
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        try await sendUntilRefused(1)
        let first = socket.refusals
        #expect(first >= 1)
        // Bounded wait for the refusal to end.
        for _ in 0..<250 where socket.refusal(of: unreachable) != nil { try await Task.sleep(for: .milliseconds(10)) }
        #expect(socket.refusal(of: unreachable) == nil)
        // Tried again: the kernel refuses it once more (while refused, a send is dropped here and
        // does not count).
        try await sendUntilRefused(first + 1)
        #expect(socket.refusals > first)
        #expect(reports.withLockedValue { $0 } == socket.refusals)
        await a.close()
    }

    @Test("DNS names are resolved for sending (dns4 / dns6 pick the family); a socket binds only to an IP address")
    func dnsNames() async throws {
        let transport = UDPTransport(group: MultiThreadedEventLoopGroup.singleton)
        #expect(transport.canHandle(try Multiaddr("/dns4/localhost/udp/7")))
        #expect(!transport.canHandle(try Multiaddr("/dns4/localhost/tcp/7")))
        let v4 = try await transport.resolve(try Multiaddr("/dns4/localhost/udp/7"))
        #expect(!v4.isEmpty)
        #expect(v4.allSatisfy { $0.protocol == .inet && $0.port == 7 })
        #expect(v4.contains(try SocketAddress(ipAddress: "127.0.0.1", port: 7)))
        let ip = try await transport.resolve(try Multiaddr("/ip6/::1/udp/9"))
        #expect(ip == [try SocketAddress(ipAddress: "::1", port: 9)])
        await #expect(throws: (any Error).self) {
            _ = try await transport.bind(try Multiaddr("/dns4/localhost/udp/0"), handler: { _, _ in }, flush: {})
        }
    }
}
