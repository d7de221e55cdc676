import MsgNetTestSupport
import Testing

@testable import MsgNetCore

/// Property-style tests: arbitrary input never crashes the parsers, and whatever they accept
/// round-trips through both forms.
@Suite struct MultiaddrPropertyTests {
    static let seedAddresses: [[UInt8]] = [
        "/ip4/127.0.0.1/tcp/4001",
        "/ip6/2001:db8::1/udp/9090/quic-v1",
        "/dns4/example.com/tcp/443/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",
        "/ip4/1.2.3.4/tcp/1/p2p/QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N/p2p-circuit",
        "/dns/a.b/udp/1/quic",
    ].map { try! Multiaddr($0).bytes }

    /// Checks the round-trip properties of an accepted address.
    static func checkAccepted(_ address: Multiaddr, from input: [UInt8]? = nil) throws {
        #expect(!address.components.isEmpty)
        let bytes = address.bytes
        #expect(bytes.count <= Multiaddr.maxEncodedLength)
        if let input {
            // The binary form is canonical: accepted bytes re-encode identically.
            #expect(bytes == input)
        }
        #expect(try Multiaddr(bytes: bytes) == address)
        #expect(try Multiaddr(address.description) == address)
    }

    @Test func randomBytes() throws {
        var rng = SplitMix64(seed: 0xB17E5)
        var accepted = 0
        for round in 0..<5_000 {
            var input: [UInt8]
            switch round % 3 {
            case 0:
                // Pure noise.
                input = rng.bytes(Int.random(in: 0...64, using: &rng))
            case 1:
                // A valid address with a few bytes flipped, inserted or removed.
                input = Self.seedAddresses.randomElement(using: &rng)!
                for _ in 0..<Int.random(in: 1...3, using: &rng) {
                    let i = Int.random(in: 0..<input.count, using: &rng)
                    switch Int.random(in: 0..<3, using: &rng) {
                    case 0: input[i] = UInt8.random(in: 0...255, using: &rng)
                    case 1: input.insert(UInt8.random(in: 0...255, using: &rng), at: i)
                    default: if input.count > 1 { input.remove(at: i) }
                    }
                }
            default:
                // Concatenated valid pieces, sometimes truncated.
                input = []
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    input += Self.seedAddresses.randomElement(using: &rng)!
                }
                if Bool.random(using: &rng) {
                    input = Array(input.prefix(Int.random(in: 0...input.count, using: &rng)))
                }
            }
            do {
                let address = try Multiaddr(bytes: input)
                accepted += 1
                try Self.checkAccepted(address, from: input)
            } catch let error as CoreError {
                #expect(error.kind == .multiaddr)
                #expect(!error.reason.isEmpty)
            }
        }
        // The generator must exercise the accepting path too, not only rejections.
        #expect(accepted > 500)
    }

    static let textTokens = [
        "/", "/", "/", "ip4", "ip6", "tcp", "udp", "dns", "dns4", "dns6", "p2p", "ipfs", "p2p-circuit", "quic",
        "quic-v1", "1", "80", "65535", "65536", "0", "-", "1.2.3.4", "255.255.255.255", "::", ":", "::1", "fe80::1",
        "::ffff:1.2.3.4", ".", "a", "example.com", "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",
        "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N", "é", "%", " ", "\u{0}",
    ]

    @Test func randomText() throws {
        var rng = SplitMix64(seed: 0x7E47)
        var accepted = 0
        for round in 0..<5_000 {
            var text = ""
            if round % 2 == 0 {
                // Token soup.
                for _ in 0..<Int.random(in: 0...10, using: &rng) { text += Self.textTokens.randomElement(using: &rng)! }
            } else {
                // Well-formed shapes: /name/value pairs from the token list.
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    text += "/" + Self.textTokens[3..<15].randomElement(using: &rng)!
                    text += "/" + Self.textTokens[15...].randomElement(using: &rng)!
                }
            }
            do {
                let address = try Multiaddr(text)
                accepted += 1
                try Self.checkAccepted(address)
            } catch let error as CoreError {
                #expect(error.kind == .multiaddr)
                #expect(!error.reason.isEmpty)
            }
        }
        #expect(accepted > 100)
    }

    @Test func randomComponentsRoundTrip() throws {
        var rng = SplitMix64(seed: 0xC0FFEE)
        let id = try PeerID("12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA")
        for _ in 0..<1_000 {
            var components: [Multiaddr.Component] = []
            for _ in 0..<Int.random(in: 1...6, using: &rng) {
                let component: Multiaddr.Component
                switch Int.random(in: 0..<11, using: &rng) {
                case 0: component = .ip4(.init(value: UInt32.random(in: 0...UInt32.max, using: &rng)))
                case 1:
                    // Sparse groups so the "::" compression is exercised.
                    let g = (0..<8).map { _ in Bool.random(using: &rng) ? 0 : UInt64.random(in: 0...0xFFFF, using: &rng)
                    }
                    component = .ip6(
                        .init(
                            high: g[0] << 48 | g[1] << 32 | g[2] << 16 | g[3],
                            low: g[4] << 48 | g[5] << 32 | g[6] << 16 | g[7]))
                case 2: component = .tcp(UInt16.random(in: 0...UInt16.max, using: &rng))
                case 3: component = .udp(UInt16.random(in: 0...UInt16.max, using: &rng))
                case 4:
                    component = .dns(String(repeating: "x", count: Int.random(in: 1...40, using: &rng)) + ".example")
                case 5: component = .dns4("h\(rng.next()).test")
                case 6: component = .dns6("é\(rng.next() % 1000)")
                case 7: component = .p2p(Bool.random(using: &rng) ? id : PrivateKey.generate().peerID)
                case 8: component = .p2pCircuit
                case 9: component = .quic
                default: component = .quicV1
                }
                components.append(component)
            }
            let address = Multiaddr(components: components)
            try Self.checkAccepted(address)
            #expect(try Multiaddr(bytes: address.bytes).components == components)
        }
    }
}
