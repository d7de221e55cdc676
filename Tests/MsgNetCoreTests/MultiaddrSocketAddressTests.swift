import NIOCore
import Testing

@testable import MsgNetCore

@Suite struct MultiaddrSocketAddressTests {
    @Test func ip4AndIP6ToSocketAddress() throws {
        #expect(
            try Multiaddr("/ip4/127.0.0.1/tcp/4001").socketAddress()
                == (try SocketAddress(ipAddress: "127.0.0.1", port: 4001)))
        #expect(
            try Multiaddr("/ip4/10.1.2.3/udp/53/quic-v1").socketAddress()
                == (try SocketAddress(ipAddress: "10.1.2.3", port: 53)))
        let v6 = try Multiaddr("/ip6/2001:db8::7/udp/9/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA")
            .socketAddress()
        #expect(v6 == (try SocketAddress(ipAddress: "2001:db8::7", port: 9)))
        #expect(v6.port == 9)
    }

    @Test func dnsIsLeftToTheTransport() throws {
        for text in ["/dns/example.com/tcp/1", "/dns4/example.com/tcp/1", "/dns6/example.com/udp/1"] {
            do {
                let address = try Multiaddr(text).socketAddress()
                Issue.record("\(text) converted to \(address)")
            } catch {
                #expect(error.kind == .multiaddr)
                #expect(error.reason.contains("transport"), "\(error.reason)")
            }
        }
    }

    @Test(arguments: ["/ip4/1.2.3.4", "/ip4/1.2.3.4/quic-v1", "/p2p-circuit", "/tcp/1/ip4/1.2.3.4", "/quic"])
    func addressesWithoutIPAndPortAreRejected(_ text: String) throws {
        let address = try Multiaddr(text)
        #expect(throws: CoreError.self) { try address.socketAddress() }
    }

    @Test func emptyAddressIsRejected() {
        #expect(throws: CoreError.self) { try Multiaddr(components: []).socketAddress() }
    }

    @Test func fromSocketAddress() throws {
        let v4 = try SocketAddress(ipAddress: "192.0.2.1", port: 4001)
        #expect(try Multiaddr(socketAddress: v4, transport: .tcp).description == "/ip4/192.0.2.1/tcp/4001")
        #expect(try Multiaddr(socketAddress: v4, transport: .udp).description == "/ip4/192.0.2.1/udp/4001")
        let v6 = try SocketAddress(ipAddress: "2001:0db8:0:0:0:0:0:1", port: 0)
        #expect(try Multiaddr(socketAddress: v6, transport: .udp).description == "/ip6/2001:db8::1/udp/0")
        let mapped = try SocketAddress(ipAddress: "::ffff:10.0.0.1", port: 65535)
        #expect(try Multiaddr(socketAddress: mapped, transport: .tcp).description == "/ip6/::ffff:10.0.0.1/tcp/65535")
        let unix = try SocketAddress(unixDomainSocketPath: "/tmp/msgnet.sock")
        #expect(throws: CoreError.self) { try Multiaddr(socketAddress: unix, transport: .tcp) }
    }

    @Test func socketAddressRoundTrip() throws {
        for text in ["/ip4/0.0.0.0/tcp/0", "/ip4/255.255.255.255/udp/65535", "/ip6/::/tcp/1", "/ip6/fe80::1:2/udp/2"] {
            let address = try Multiaddr(text)
            let transport = try #require(address.transport)
            #expect(try Multiaddr(socketAddress: address.socketAddress(), transport: transport) == address)
        }
    }

    @Test func transportHelpers() throws {
        let tcp = try Multiaddr("/ip4/1.2.3.4/tcp/80/p2p-circuit")
        #expect(tcp.isTCP && !tcp.isUDP && tcp.transport == .tcp && tcp.port == 80)
        let quic = try Multiaddr("/dns/x/udp/443/quic-v1")
        #expect(quic.isUDP && !quic.isTCP && quic.port == 443)
        let none = try Multiaddr("/ip4/1.2.3.4")
        #expect(none.transport == nil && none.port == nil && !none.isTCP && !none.isUDP)
        // The first transport component decides.
        #expect(try Multiaddr("/ip4/1.2.3.4/udp/1/tcp/2").transport == .udp)
    }
}
