import MsgNetTestSupport
import Testing

@testable import MsgNetCore

@Suite struct MultiaddrVectorTests {
    /// Text and binary forms; binary computed independently with py-multiaddr 0.2.0
    /// (`vectors/make_vectors.py`); the first also appears in the multiaddr spec.
    static let vectors: [(String, String)] = [
        ("/ip4/127.0.0.1/tcp/4001", "047f000001060fa1"),
        ("/ip4/0.0.0.0/udp/4001/quic-v1", "040000000091020fa1cd03"),
        ("/ip6/::1/tcp/443", "29000000000000000000000000000000010601bb"),
        ("/ip6/2001:db8::1/udp/9090/quic", "2920010db800000000000000000000000191022382cc03"),
        ("/ip6/fe80::1:2:3:4/tcp/0", "29fe800000000000000001000200030004060000"),
        ("/dns/example.com/tcp/80", "350b6578616d706c652e636f6d060050"),
        ("/dns4/localhost/udp/65535", "36096c6f63616c686f73749102ffff"),
        ("/dns6/ipv6.example/tcp/1", "370c697076362e6578616d706c65060001"),
        (
            "/ip4/1.2.3.4/tcp/4001/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",
            "0401020304060fa1a503260024080112202ffa35a99d3a3cfbb17bb7c1dc5561b18a8dcca4df38dc613ea859c37eb1336b"
        ),
        (
            "/ip4/1.2.3.4/tcp/4001/p2p/QmcgpsyWgH8Y8ajJz1Cu72KnS5uo2Aa2LpzU7kinSupNKC/p2p-circuit",
            "0401020304060fa1a503221220d52ebb89d85b02a284948203a62ff28389c57c9f42beec4ec20db76a68911c0ba202"
        ),
        ("/p2p-circuit", "a202"),
        ("/ip4/1.2.3.4/udp/1/quic", "040102030491020001cc03"),
        ("/dns/a.b/tcp/1", "3503612e62060001"),
    ]

    @Test func textToBinary() throws {
        for (text, binary) in Self.vectors {
            let address = try Multiaddr(text)
            #expect(hexString(address.bytes) == binary, "\(text)")
            #expect(address.description == text)
        }
    }

    @Test func binaryToText() throws {
        for (text, binary) in Self.vectors {
            let address = try Multiaddr(bytes: hex(binary))
            #expect(address.description == text)
            #expect(address.bytes == hex(binary))
        }
    }

    /// Sparse random IPv6 addresses printed by py-multiaddr from their binary form.
    static let randomIPv6: [(String, String)] = [
        ("/ip6/::e5e4:9a63:a23b:0:a781/tcp/37665", "29000000000000e5e49a63a23b0000a781069321"),
        ("/ip6/18d9:8ec5:0:af37:ac6d:0:206:63f2/tcp/5623", "2918d98ec50000af37ac6d0000020663f20615f7"),
        ("/ip6/::3ae2:0:ded5:0:eed9:6040/tcp/62116", "29000000003ae20000ded50000eed9604006f2a4"),
        ("/ip6/b09f:5423:0:e428::c0d5:562a/tcp/48766", "29b09f54230000e42800000000c0d5562a06be7e"),
        ("/ip6/642f:0:53a8:0:b58:a365:0:c9c/tcp/35967", "29642f000053a800000b58a36500000c9c068c7f"),
        ("/ip6/::5f6b:f1c1:897b:118a/tcp/29224", "2900000000000000005f6bf1c1897b118a067228"),
        ("/ip6/8d6e:ffde::880:0:0/tcp/35644", "298d6effde000000000000088000000000068b3c"),
        ("/ip6/ce97:3d1c:0:58b6:b3b9:888::/tcp/64874", "29ce973d1c000058b6b3b908880000000006fd6a"),
        ("/ip6/1380:6c70:0:11d5::c4f6:2348/tcp/64326", "2913806c70000011d500000000c4f6234806fb46"),
        ("/ip6/a66b:f877:0:8b97:f000:5ecd::/tcp/3962", "29a66bf87700008b97f0005ecd00000000060f7a"),
        ("/ip6/0:22d6:0:e125::ca41/tcp/11141", "29000022d60000e125000000000000ca41062b85"),
        ("/ip6/0:0:9e28::/tcp/38876", "29000000009e28000000000000000000000697dc"),
    ]

    @Test func randomIPv6MatchesPyMultiaddr() throws {
        for (text, binary) in Self.randomIPv6 {
            #expect(try Multiaddr(bytes: hex(binary)).description == text)
            #expect(try Multiaddr(text).bytes == hex(binary))
        }
    }

    @Test func componentsAreTyped() throws {
        let address = try Multiaddr("/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA")
        let id = try PeerID("12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA")
        #expect(address.components == [.ip4(.init(127, 0, 0, 1)), .tcp(4001), .p2p(id)])
        #expect(Multiaddr(components: address.components) == address)
        let quic = try Multiaddr("/ip6/::/udp/1/quic-v1/p2p-circuit/quic")
        #expect(quic.components == [.ip6(.init(high: 0, low: 0)), .udp(1), .quicV1, .p2pCircuit, .quic])
        #expect(try Multiaddr("/dns4/x.org").components == [.dns4("x.org")])
        #expect(try Multiaddr("/dns6/x.org").components == [.dns6("x.org")])
        #expect(try Multiaddr("/dns/x.org").components == [.dns("x.org")])
    }

    @Test func ipfsIsAnAliasForP2P() throws {
        let id = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
        let a = try Multiaddr("/ip4/1.2.3.4/tcp/1/ipfs/\(id)")
        #expect(a == (try Multiaddr("/ip4/1.2.3.4/tcp/1/p2p/\(id)")))
        #expect(a.description == "/ip4/1.2.3.4/tcp/1/p2p/\(id)")
    }

    @Test func trailingSlashAndCanonicalPortText() throws {
        #expect(try Multiaddr("/ip4/1.2.3.4/tcp/80/").description == "/ip4/1.2.3.4/tcp/80")
        #expect(try Multiaddr("/ip4/1.2.3.4/tcp/0080").description == "/ip4/1.2.3.4/tcp/80")
        #expect(try Multiaddr("/ip6/2001:DB8:0:0:0:0:0:1/tcp/1").description == "/ip6/2001:db8::1/tcp/1")
    }

    @Test func encapsulationAndPeerID() throws {
        let id = try PeerID("12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA")
        let relay = try PeerID("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N")
        let base = try Multiaddr("/ip4/10.0.0.1/tcp/4001")
        #expect(base.peerID == nil)
        #expect(base.withoutPeerID() == base)
        let full = base.appending(.p2p(id))
        #expect(full.description == "/ip4/10.0.0.1/tcp/4001/p2p/\(id)")
        #expect(full.peerID == id)
        #expect(full.withoutPeerID() == base)
        // Relay address: the /p2p before /p2p-circuit names the relay, not the peer.
        let viaRelay = full.appending(.p2pCircuit)
        #expect(viaRelay.peerID == nil)
        #expect(viaRelay.withoutPeerID() == viaRelay)
        let circuit = base.appending(.p2p(relay)).appending(Multiaddr(components: [.p2pCircuit, .p2p(id)]))
        #expect(circuit.description == "/ip4/10.0.0.1/tcp/4001/p2p/\(relay)/p2p-circuit/p2p/\(id)")
        #expect(circuit.peerID == id)
        #expect(circuit.withoutPeerID().components.last == .p2pCircuit)
    }

    @Test func emptyAddressFromComponents() {
        let empty = Multiaddr(components: [])
        #expect(empty.description == "")
        #expect(empty.bytes == [])
        #expect(empty.peerID == nil)
    }

    @Test func hashableValues() throws {
        let set: Set<Multiaddr> = [
            try Multiaddr("/ip4/1.2.3.4/tcp/1"), try Multiaddr("/ip4/1.2.3.4/tcp/1/"),
            try Multiaddr("/ip4/1.2.3.4/udp/1"), try Multiaddr(bytes: hex("04010203040600 01")),
        ]
        #expect(set.count == 2)
    }
}

@Suite struct IPAddressTests {
    static let canonical: [(String, String)] = [
        ("::", "::"),
        ("0:0:0:0:0:0:0:0", "::"),
        ("::1", "::1"),
        ("1::", "1::"),
        ("2001:db8:0:0:0:0:2:1", "2001:db8::2:1"),
        ("2001:0db8:0000:0000:0000:ff00:0042:8329", "2001:db8::ff00:42:8329"),
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),  // first of two equal runs
        ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),  // longest run
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),  // one zero group stays
        ("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"),
        ("::2:3:4:5:6:7:8", "0:2:3:4:5:6:7:8"),
        ("2001:DB8::A", "2001:db8::a"),
        ("fe80::1:2:3:4", "fe80::1:2:3:4"),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("::ffff:192.0.2.1", "::ffff:192.0.2.1"),
        ("::ffff:c000:0201", "::ffff:192.0.2.1"),
        ("0:0:0:0:0:ffff:1.2.3.4", "::ffff:1.2.3.4"),
        ("64:ff9b::192.0.2.33", "64:ff9b::c000:221"),
        ("1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304"),
        ("::1.2.3.4", "::102:304"),
        ("1:0:0:0:0:0:0:0", "1::"),
        ("0:0:1:0:0:0:0:0", "0:0:1::"),
    ]

    @Test func ipv6CanonicalText() throws {
        for (input, output) in Self.canonical {
            let ip = try #require(Multiaddr.IPv6Address(input), "\(input)")
            #expect(ip.description == output, "\(input)")
            #expect(Multiaddr.IPv6Address(output) == ip)
            #expect(Multiaddr.IPv6Address(bytes: ip.bytes) == ip)
            #expect(try Multiaddr("/ip6/\(input)").description == "/ip6/\(output)")
        }
    }

    @Test func ipv6Bytes() throws {
        let ip = try #require(Multiaddr.IPv6Address("2001:db8::ff00:42:8329"))
        #expect(ip.bytes == hex("20010db8000000000000ff0000428329"))
        #expect(ip.high == 0x2001_0db8_0000_0000 && ip.low == 0x0000_ff00_0042_8329)
        #expect(Multiaddr.IPv6Address(bytes: [UInt8](repeating: 0, count: 15)) == nil)
        let mapped = Multiaddr.IPv6Address(mapping: .init(10, 1, 2, 3))
        #expect(mapped.description == "::ffff:10.1.2.3")
        #expect(mapped.mappedIPv4 == .init(10, 1, 2, 3))
    }

    @Test(arguments: [
        "", ":", ":::", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9", "1::2::3", "12345::", "g::", "1:2:3:4:5:6:7:8::",
        "::1:2:3:4:5:6:7:8", "::ffff:1.2.3", "::1.2.3.4:5", "fe80::1%eth0", ":1::", "1::2:", "1.2.3.4", " ::1", "::1 ",
        "1:2:3:4:5:6:7:1.2.3.4", "::ffff:256.1.1.1", "[::1]", "1:2:3:4:5:6:7:8:", "::-1", "+1::",
        "0000000000000000000000000000000000000000000001",
    ])
    func badIPv6Text(_ text: String) {
        #expect(Multiaddr.IPv6Address(text) == nil)
        #expect(throws: CoreError.self) { try Multiaddr("/ip6/\(text)") }
    }

    @Test func ipv4TextAndBytes() throws {
        let ip = try #require(Multiaddr.IPv4Address("192.0.2.255"))
        #expect(ip.bytes == [192, 0, 2, 255])
        #expect(ip.value == 0xC000_02FF)
        #expect(ip.description == "192.0.2.255")
        #expect(Multiaddr.IPv4Address(bytes: [192, 0, 2, 255]) == ip)
        #expect(Multiaddr.IPv4Address(bytes: [1, 2, 3]) == nil)
        #expect(Multiaddr.IPv4Address("0.0.0.0")?.value == 0)
        #expect(Multiaddr.IPv4Address("255.255.255.255")?.value == .max)
    }

    @Test(arguments: [
        "", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1..2.3", "a.b.c.d", " 1.2.3.4", "1.2.3.4 ", "1.2.3.-4",
        "1.2.3.+4", "1.2.3.0x1", "1000.1.1.1", "::1", "1.2.3.٤",
    ])
    func badIPv4Text(_ text: String) {
        #expect(Multiaddr.IPv4Address(text) == nil)
        #expect(throws: CoreError.self) { try Multiaddr("/ip4/\(text)") }
    }
}

@Suite struct MultiaddrMalformedTests {
    static let tooLongDNS = String(repeating: "a", count: 256)
    static let maxDNS = String(repeating: "a", count: 255)

    /// Malformed text and a phrase its error must contain.
    static let badText: [(String, String)] = [
        ("", "empty"),
        ("/", "empty"),
        ("//", "empty protocol name"),
        ("ip4/1.2.3.4", "must start with '/'"),
        ("//ip4/1.2.3.4", "empty protocol name"),
        ("/ip4", "needs a value"),
        ("/ip4/", "needs a value"),
        ("/ip4/1.2.3.4/tcp", "needs a value"),
        ("/ip4/1.2.3.4//tcp/1", "empty protocol name"),
        ("/ip4/1.2.3.4/tcp/65536", "port"),
        ("/ip4/1.2.3.4/tcp/-1", "port"),
        ("/ip4/1.2.3.4/tcp/+1", "port"),
        ("/ip4/1.2.3.4/tcp/0x10", "port"),
        ("/ip4/1.2.3.4/tcp/ 80", "port"),
        ("/ip4/1.2.3.4/udp/99999999999999999999", "port"),
        ("/ip4/1.2.3.4/udp/", "needs a value"),
        ("/ip4/1.2.3.4/tcp/1/tcp", "needs a value"),
        ("/ip4/999.1.1.1", "bad IPv4"),
        ("/ip6/::1::", "bad IPv6"),
        ("/ip6/fe80::1%eth0/tcp/1", "bad IPv6"),
        ("/foo/bar", "unknown protocol name"),
        ("/IP4/1.2.3.4", "unknown protocol name"),
        ("/ws", "not supported"),
        ("/dnsaddr/bootstrap.libp2p.io", "not supported"),
        ("/dns4//tcp/1", "empty /dns4 name"),
        ("/dns/\(tooLongDNS)", "longer than 255"),
        ("/p2p/notbase58!", "bad /p2p peer id"),
        ("/p2p/QmInvalid", "bad /p2p peer id"),
        ("/p2p/1", "bad /p2p peer id"),
        ("/ipfs/", "needs a value"),
        ("/udp/1/quic-v1/1", "unknown protocol name"),
        ("/p2p-circuit/x", "unknown protocol name"),
        ("/\(String(repeating: "x", count: 3000))", "text longer than"),
        // Each dns component is within limits but the address is not.
        (String(repeating: "/dns/\(maxDNS)", count: 5), "binary form longer than"),
    ]

    @Test func malformedTextIsRejected() {
        for (text, phrase) in Self.badText {
            do {
                let address = try Multiaddr(text)
                Issue.record("accepted \(text.prefix(80)) as \(address)")
            } catch {
                #expect(error.kind == .multiaddr)
                #expect(error.reason.contains(phrase), "\(text.prefix(80)): \(error.reason)")
            }
        }
    }

    @Test func limitsAreInclusive() throws {
        let name = try Multiaddr("/dns/\(Self.maxDNS)/tcp/1")
        #expect(try Multiaddr(bytes: name.bytes) == name)
        // 341 tcp components: 1023 bytes.
        let many = Multiaddr(components: Array(repeating: .tcp(1), count: 341))
        #expect(many.bytes.count == 1023)
        #expect(try Multiaddr(bytes: many.bytes) == many)
        #expect(try Multiaddr(many.description) == many)
        let tooMany = many.appending(.tcp(1))
        #expect(throws: CoreError.self) { try Multiaddr(bytes: tooMany.bytes) }
        #expect(throws: CoreError.self) { try Multiaddr(tooMany.description) }
    }

    static let peerIDBytes = hex("0024080112202ffa35a99d3a3cfbb17bb7c1dc5561b18a8dcca4df38dc613ea859c37eb1336b")

    /// Malformed binary and a phrase its error must contain.
    static let badBinary: [(String, [UInt8], String)] = [
        ("empty", [], "empty"),
        ("truncated ip4", [0x04, 1, 2, 3], "truncated /ip4"),
        ("truncated ip6", [0x29] + [UInt8](repeating: 0, count: 15), "truncated /ip6"),
        ("truncated tcp", [0x06, 0x0F], "truncated /tcp"),
        ("truncated udp", hex("047f000001 9102 0f"), "truncated /udp"),
        ("missing udp value", [0x91, 0x02], "truncated /udp"),
        ("truncated code", [0x91], "truncated protocol code"),
        ("truncated code after component", hex("047f000001 06 0fa1 a5"), "truncated protocol code"),
        ("non-minimal code", [0x84, 0x00, 1, 2, 3, 4], "malformed protocol code"),
        ("overlong code", [UInt8](repeating: 0xFF, count: 9) + [0x01], "malformed protocol code"),
        ("unknown code 5", [0x05, 0x00], "unknown or unsupported protocol code 0x5"),
        ("ws", [0xDD, 0x03], "unknown or unsupported protocol code 0x1dd"),
        ("dns length past end", [0x35, 0x05, 0x61], "exceeds the 1 bytes left"),
        ("dns truncated length", [0x35, 0x80], "truncated /dns length"),
        ("dns empty", [0x35, 0x00], "empty /dns name"),
        ("dns with slash", [0x36, 0x03, 0x61, 0x2F, 0x62], "contains '/'"),
        ("dns invalid UTF-8", [0x37, 0x02, 0xFF, 0xFE], "not valid UTF-8"),
        ("dns 256 bytes", [0x35, 0x80, 0x02] + [UInt8](repeating: 0x61, count: 256), "longer than 255"),
        ("p2p huge length", [0xA5, 0x03, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F], "exceeds"),
        ("p2p overlong length varint", [0xA5, 0x03] + [UInt8](repeating: 0xFF, count: 10), "malformed /p2p length"),
        ("p2p identity of garbage", [0xA5, 0x03, 0x04, 0x00, 0x02, 0x01, 0x02], "bad /p2p peer id"),
        ("p2p unknown multihash", [0xA5, 0x03, 0x04, 0x13, 0x02, 0x01, 0x02], "bad /p2p peer id"),
        ("p2p empty", [0xA5, 0x03, 0x00], "bad /p2p peer id"),
        ("p2p length one short", [0xA5, 0x03, 0x25] + peerIDBytes, "bad /p2p peer id"),
        ("p2p length one long", [0xA5, 0x03, 0x27] + peerIDBytes, "exceeds"),
        ("p2p over 128 bytes", [0xA5, 0x03, 0x81, 0x01] + [UInt8](repeating: 0, count: 129), "longer than 128"),
        ("too long", [UInt8](repeating: 0xA2, count: 2000), "binary form longer than 1024"),
    ]

    @Test func malformedBinaryIsRejected() {
        for (name, bytes, phrase) in Self.badBinary {
            do {
                let address = try Multiaddr(bytes: bytes)
                Issue.record("\(name): accepted as \(address)")
            } catch {
                #expect(error.kind == .multiaddr, "\(name)")
                #expect(error.reason.contains(phrase), "\(name): \(error.reason)")
            }
        }
    }

    @Test func everyTruncationOfAValidAddressIsRejectedOrShorter() throws {
        let full = try Multiaddr(
            "/ip6/2001:db8::1/udp/4001/quic-v1/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA/p2p-circuit"
        )
        let bytes = full.bytes
        // Component boundaries: where a prefix is itself a valid address.
        var boundaries: Set<Int> = []
        var offset = 0
        for component in full.components {
            offset += Multiaddr(components: [component]).bytes.count
            boundaries.insert(offset)
        }
        for cut in 0..<bytes.count {
            let prefix = Array(bytes.prefix(cut))
            if boundaries.contains(cut) {
                let parsed = try Multiaddr(bytes: prefix)
                #expect(parsed.bytes == prefix)
            } else {
                #expect(throws: CoreError.self, "cut at \(cut)") { try Multiaddr(bytes: prefix) }
            }
        }
    }

    @Test func inputIsNotCopiedBeyondTheLimit() {
        // A lazily generated collection far larger than the limit is rejected without
        // materializing it.
        let huge = (0..<Int.max).lazy.map { _ in UInt8(0xA2) }
        #expect(throws: CoreError.self) { try Multiaddr(bytes: huge) }
    }
}
