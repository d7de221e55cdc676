import NIOCore
import Testing

@testable import MsgNetHost

/// Which peer addresses the datagram path opens sessions to.
@Suite("Dialable UDP addresses")
struct DialableAddressTests {
    @Test(
        "unicast addresses with a port are dialable",
        arguments: ["127.0.0.1", "10.1.2.3", "192.0.2.7", "223.255.255.254", "::1", "2001:db8::1", "fe80::1"])
    func unicast(ip: String) throws {
        #expect(DatagramMessageTransport.isDialable(try SocketAddress(ipAddress: ip, port: 4001)))
    }

    @Test(
        "broadcast, multicast, unspecified, reserved and IPv4-mapped addresses are not",
        arguments: [
            "255.255.255.255", "224.0.0.1", "239.255.255.250", "240.0.0.1", "0.0.0.0", "0.1.2.3", "::", "ff02::1",
            "ff05::2", "::ffff:127.0.0.1",
        ])
    func refused(ip: String) throws {
        #expect(!DatagramMessageTransport.isDialable(try SocketAddress(ipAddress: ip, port: 4001)))
    }

    @Test("port 0 is not")
    func portZero() throws {
        #expect(!DatagramMessageTransport.isDialable(try SocketAddress(ipAddress: "127.0.0.1", port: 0)))
        #expect(!DatagramMessageTransport.isDialable(try SocketAddress(ipAddress: "::1", port: 0)))
    }
}
