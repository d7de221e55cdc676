import MsgNetCore
import NIOCore
import Testing

/// What identify announces for a listen address.
@Suite("Multiaddr dialable forms")
struct MultiaddrInterfacesTests {
    let interfaces: [SocketAddress] = [
        try! SocketAddress(ipAddress: "127.0.0.1", port: 0),
        try! SocketAddress(ipAddress: "192.0.2.7", port: 0),
        try! SocketAddress(ipAddress: "::1", port: 0),
        try! SocketAddress(ipAddress: "fe80::1", port: 0),
        try! SocketAddress(ipAddress: "2001:db8::5", port: 0),
        try! SocketAddress(ipAddress: "192.0.2.7", port: 0),
    ]

    @Test("0.0.0.0 becomes each IPv4 interface address, loopback last, no duplicates")
    func ipv4Wildcard() throws {
        let wildcard = try Multiaddr("/ip4/0.0.0.0/udp/4001")
        #expect(wildcard.isWildcard)
        #expect(
            wildcard.expanding(onto: interfaces) == [
                try Multiaddr("/ip4/192.0.2.7/udp/4001"), try Multiaddr("/ip4/127.0.0.1/udp/4001"),
            ])
    }

    @Test(":: becomes each IPv6 interface address but link-local ones; later components are kept")
    func ipv6Wildcard() throws {
        let wildcard = try Multiaddr("/ip6/::/tcp/4001")
        #expect(wildcard.isWildcard)
        #expect(
            wildcard.expanding(onto: interfaces) == [
                try Multiaddr("/ip6/2001:db8::5/tcp/4001"), try Multiaddr("/ip6/::1/tcp/4001"),
            ])
    }

    @Test("other addresses stay as they are")
    func notWildcard() throws {
        for text in ["/ip4/127.0.0.1/udp/1", "/ip6/::1/tcp/2", "/dns4/localhost/udp/3"] {
            let address = try Multiaddr(text)
            #expect(!address.isWildcard)
            #expect(address.expanding(onto: interfaces) == [address])
            #expect(address.dialableForms() == [address])
        }
    }

    @Test("on this machine, 0.0.0.0 includes 127.0.0.1 and never itself")
    func thisMachine() throws {
        let forms = try Multiaddr("/ip4/0.0.0.0/udp/9").dialableForms()
        #expect(forms.contains(try Multiaddr("/ip4/127.0.0.1/udp/9")))
        #expect(!forms.contains { $0.isWildcard })
    }

    @Test("loopback addresses")
    func loopback() throws {
        for text in ["/ip4/127.0.0.1/udp/1", "/ip4/127.5.6.7/tcp/2", "/ip6/::1/udp/3"] {
            #expect(try Multiaddr(text).isLoopback)
        }
        for text in ["/ip4/10.0.0.1/udp/1", "/ip6/::2/udp/3", "/ip6/::/udp/3", "/dns4/localhost/udp/3"] {
            #expect(try !Multiaddr(text).isLoopback)
        }
    }
}
