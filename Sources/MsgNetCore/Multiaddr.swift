/// A libp2p multiaddress: a path of protocol components such as `/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW…`.
///
/// MsgNet implements the subset listed in ``Component`` (see `docs/multiaddr.md`), in both the
/// text form and the binary form (per component: `uvarint(protocol code)` then the value). Parsing
/// never trusts a length it has not checked: text is at most ``maxTextLength`` bytes, binary at
/// most ``maxEncodedLength`` bytes, and every malformed input throws a ``CoreError`` of kind
/// `.multiaddr` naming the problem.
public struct Multiaddr: Hashable, Sendable, CustomStringConvertible {
    /// One protocol of a multiaddress and its value.
    public enum Component: Hashable, Sendable {
        /// `/ip4/<dotted decimal>` (code 0x04, 4 bytes).
        case ip4(IPv4Address)
        /// `/ip6/<RFC 4291 text>` (code 0x29, 16 bytes).
        case ip6(IPv6Address)
        /// `/tcp/<port>` (code 0x06, 2 bytes big-endian).
        case tcp(UInt16)
        /// `/udp/<port>` (code 0x0111, 2 bytes big-endian).
        case udp(UInt16)
        /// `/dns/<name>` (code 0x35, length-prefixed UTF-8), resolved to IPv4 or IPv6.
        case dns(String)
        /// `/dns4/<name>` (code 0x36), resolved to IPv4 only.
        case dns4(String)
        /// `/dns6/<name>` (code 0x37), resolved to IPv6 only.
        case dns6(String)
        /// `/p2p/<peer id>` (code 0x01A5, length-prefixed multihash); `/ipfs/<peer id>` is read as this.
        case p2p(PeerID)
        /// `/p2p-circuit` (code 0x0122, no value): a circuit relay hop.
        case p2pCircuit
        /// `/quic-v1` (code 0x01CD, no value): QUIC version 1 (RFC 9000).
        case quicV1
        /// `/quic` (code 0x01CC, no value): the draft-29 QUIC used by older libp2p nodes.
        case quic
    }

    /// The components, outermost (network) first.
    public var components: [Component]

    /// Binary encodings longer than this are rejected when parsing.
    public static let maxEncodedLength = 1024
    /// Text longer than this (in UTF-8 bytes) is rejected when parsing.
    public static let maxTextLength = 2048
    /// The longest DNS name accepted, in UTF-8 bytes.
    public static let maxDNSNameLength = 255

    /// A multiaddress made of `components`. No limits are checked here; an address built this
    /// way may be longer than a parser accepts.
    public init(components: [Component]) {
        self.components = components
    }

    /// Parses the text form, e.g. `/ip4/127.0.0.1/tcp/4001`. One trailing `/` is allowed.
    public init(_ text: String) throws(CoreError) {
        guard !text.isEmpty else { throw CoreError(.multiaddr, "empty address") }
        guard text.utf8.count <= Self.maxTextLength else {
            throw CoreError(.multiaddr, "text longer than \(Self.maxTextLength) bytes")
        }
        guard text.utf8.first == UInt8(ascii: "/") else {
            throw CoreError(.multiaddr, "must start with '/': \(Self.quoted(text))")
        }
        var parts = text.utf8.dropFirst().split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        if parts.last?.isEmpty == true { parts.removeLast() }
        guard !parts.isEmpty else { throw CoreError(.multiaddr, "empty address") }
        var components: [Component] = []
        var index = 0
        while index < parts.count {
            let name = String(decoding: parts[index], as: UTF8.self)
            index += 1
            guard !name.isEmpty else { throw CoreError(.multiaddr, "empty protocol name in \(Self.quoted(text))") }
            guard let proto = ProtocolCode(name: name) else {
                if Self.unsupportedNames.contains(name) {
                    throw CoreError(.multiaddr, "protocol /\(name) is not supported by MsgNet")
                }
                throw CoreError(.multiaddr, "unknown protocol name \(Self.quoted(name))")
            }
            guard proto.takesValue else {
                components.append(try proto.component(text: ""))
                continue
            }
            guard index < parts.count else { throw CoreError(.multiaddr, "/\(name) needs a value") }
            components.append(try proto.component(text: Substring(parts[index])))
            index += 1
        }
        guard !components.isEmpty else { throw CoreError(.multiaddr, "empty address") }
        let address = Multiaddr(components: components)
        guard address.encodedLength <= Self.maxEncodedLength else {
            throw CoreError(.multiaddr, "binary form longer than \(Self.maxEncodedLength) bytes")
        }
        self = address
    }

    /// Parses the binary form.
    public init(bytes: some Collection<UInt8>) throws(CoreError) {
        // Never copy more than the limit (plus one byte to notice it is exceeded).
        let input = Array(bytes.prefix(Self.maxEncodedLength + 1))
        guard input.count <= Self.maxEncodedLength else {
            throw CoreError(.multiaddr, "binary form longer than \(Self.maxEncodedLength) bytes")
        }
        guard !input.isEmpty else { throw CoreError(.multiaddr, "empty address") }
        var reader = Reader(bytes: input)
        var components: [Component] = []
        while !reader.isAtEnd {
            let code = try reader.varint("protocol code")
            guard let proto = ProtocolCode(rawValue: code) else {
                throw CoreError(.multiaddr, "unknown or unsupported protocol code 0x\(String(code, radix: 16))")
            }
            components.append(try proto.component(reading: &reader))
        }
        self.components = components
    }

    /// The binary form.
    public var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(encodedLength)
        for component in components { component.write(to: &out) }
        return out
    }

    /// The length of ``bytes``.
    var encodedLength: Int {
        components.reduce(0) { $0 + $1.encodedLength }
    }

    /// The text form (empty for an address without components).
    public var description: String {
        components.map(\.description).joined()
    }

    /// This address with `component` added at the end.
    public func appending(_ component: Component) -> Multiaddr {
        Multiaddr(components: components + [component])
    }

    /// This address followed by the components of `other` (encapsulation).
    public func appending(_ other: Multiaddr) -> Multiaddr {
        Multiaddr(components: components + other.components)
    }

    /// The peer id in a trailing `/p2p` component, if the address ends in one.
    ///
    /// Only the final component counts: in a relay address such as
    /// `/ip4/…/p2p/<relay>/p2p-circuit` the `/p2p` component names the relay, not the peer.
    public var peerID: PeerID? {
        guard case .p2p(let id) = components.last else { return nil }
        return id
    }

    /// This address without a trailing `/p2p` component (unchanged if there is none).
    public func withoutPeerID() -> Multiaddr {
        guard case .p2p = components.last else { return self }
        return Multiaddr(components: Array(components.dropLast()))
    }

    /// Text names of well-known protocols MsgNet does not implement, for a clearer error.
    static let unsupportedNames: Set<String> = [
        "dnsaddr", "ip6zone", "ipcidr", "unix", "ws", "wss", "tls", "sni", "noise", "http", "https",
        "webtransport", "certhash", "webrtc", "webrtc-direct", "onion", "onion3", "garlic32", "garlic64",
        "sctp", "dccp", "utp", "udt", "quic-v2", "memory",
    ]

    /// Untrusted text shortened for an error message.
    static func quoted(_ text: some StringProtocol) -> String {
        text.count > 64 ? "'\(text.prefix(64))…'" : "'\(text)'"
    }
}

// MARK: - Protocol table

/// Multicodec codes of the protocols MsgNet implements (multiformats/multicodec table.csv).
enum ProtocolCode: UInt64 {
    case ip4 = 0x04
    case tcp = 0x06
    case ip6 = 0x29
    case dns = 0x35
    case dns4 = 0x36
    case dns6 = 0x37
    case udp = 0x0111
    case p2pCircuit = 0x0122
    case p2p = 0x01A5
    case quic = 0x01CC
    case quicV1 = 0x01CD

    init?(name: String) {
        switch name {
        case "ip4": self = .ip4
        case "tcp": self = .tcp
        case "ip6": self = .ip6
        case "dns": self = .dns
        case "dns4": self = .dns4
        case "dns6": self = .dns6
        case "udp": self = .udp
        case "p2p-circuit": self = .p2pCircuit
        case "p2p", "ipfs": self = .p2p
        case "quic": self = .quic
        case "quic-v1": self = .quicV1
        default: return nil
        }
    }

    var name: String {
        switch self {
        case .ip4: "ip4"
        case .tcp: "tcp"
        case .ip6: "ip6"
        case .dns: "dns"
        case .dns4: "dns4"
        case .dns6: "dns6"
        case .udp: "udp"
        case .p2pCircuit: "p2p-circuit"
        case .p2p: "p2p"
        case .quic: "quic"
        case .quicV1: "quic-v1"
        }
    }

    var takesValue: Bool {
        switch self {
        case .p2pCircuit, .quic, .quicV1: false
        default: true
        }
    }

    /// The component for a text value (ignored for protocols without a value).
    func component(text: Substring) throws(CoreError) -> Multiaddr.Component {
        switch self {
        case .ip4:
            guard let ip = Multiaddr.IPv4Address(text) else {
                throw CoreError(.multiaddr, "bad IPv4 address \(Multiaddr.quoted(text))")
            }
            return .ip4(ip)
        case .ip6:
            guard let ip = Multiaddr.IPv6Address(text) else {
                throw CoreError(.multiaddr, "bad IPv6 address \(Multiaddr.quoted(text))")
            }
            return .ip6(ip)
        case .tcp: return .tcp(try Self.port(text, name))
        case .udp: return .udp(try Self.port(text, name))
        case .dns: return .dns(try Self.dnsName(String(text), name))
        case .dns4: return .dns4(try Self.dnsName(String(text), name))
        case .dns6: return .dns6(try Self.dnsName(String(text), name))
        case .p2p:
            do {
                return .p2p(try PeerID(String(text)))
            } catch {
                throw CoreError(.multiaddr, "bad /p2p peer id: \(error.reason)")
            }
        case .p2pCircuit: return .p2pCircuit
        case .quic: return .quic
        case .quicV1: return .quicV1
        }
    }

    /// The component whose value follows in `reader` (its code has been read).
    func component(reading reader: inout Multiaddr.Reader) throws(CoreError) -> Multiaddr.Component {
        switch self {
        case .ip4: return .ip4(Multiaddr.IPv4Address(bytes: try reader.take(4, for: name))!)
        case .ip6: return .ip6(Multiaddr.IPv6Address(bytes: try reader.take(16, for: name))!)
        case .tcp: return .tcp(try reader.port(for: name))
        case .udp: return .udp(try reader.port(for: name))
        case .dns: return .dns(try reader.dnsName(for: name))
        case .dns4: return .dns4(try reader.dnsName(for: name))
        case .dns6: return .dns6(try reader.dnsName(for: name))
        case .p2p:
            let value = try reader.lengthPrefixed(for: name, max: PeerID.maxLength)
            do {
                return .p2p(try PeerID(bytes: value))
            } catch {
                throw CoreError(.multiaddr, "bad /p2p peer id: \(error.reason)")
            }
        case .p2pCircuit: return .p2pCircuit
        case .quic: return .quic
        case .quicV1: return .quicV1
        }
    }

    static func port(_ text: Substring, _ name: String) throws(CoreError) -> UInt16 {
        let digits = text.utf8
        guard !digits.isEmpty, digits.count <= 5, digits.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
            let value = UInt32(text), value <= UInt32(UInt16.max)
        else {
            throw CoreError(.multiaddr, "bad /\(name) port \(Multiaddr.quoted(text)) (want 0–65535)")
        }
        return UInt16(value)
    }

    static func dnsName(_ name: String, _ proto: String) throws(CoreError) -> String {
        guard !name.isEmpty else { throw CoreError(.multiaddr, "empty /\(proto) name") }
        guard name.utf8.count <= Multiaddr.maxDNSNameLength else {
            throw CoreError(.multiaddr, "/\(proto) name longer than \(Multiaddr.maxDNSNameLength) bytes")
        }
        guard !name.utf8.contains(UInt8(ascii: "/")) else {
            throw CoreError(.multiaddr, "/\(proto) name contains '/'")
        }
        return name
    }
}

// MARK: - Binary encoding

extension Multiaddr.Component {
    var code: ProtocolCode {
        switch self {
        case .ip4: .ip4
        case .ip6: .ip6
        case .tcp: .tcp
        case .udp: .udp
        case .dns: .dns
        case .dns4: .dns4
        case .dns6: .dns6
        case .p2p: .p2p
        case .p2pCircuit: .p2pCircuit
        case .quic: .quic
        case .quicV1: .quicV1
        }
    }

    /// The value's text form, `nil` for protocols without a value.
    var valueText: String? {
        switch self {
        case .ip4(let ip): ip.description
        case .ip6(let ip): ip.description
        case .tcp(let port), .udp(let port): String(port)
        case .dns(let name), .dns4(let name), .dns6(let name): name
        case .p2p(let id): id.description
        case .p2pCircuit, .quic, .quicV1: nil
        }
    }

    /// `/name` or `/name/value`.
    public var description: String {
        guard let value = valueText else { return "/\(code.name)" }
        return "/\(code.name)/\(value)"
    }

    var encodedLength: Int {
        let codeLength = UVarint.encodedLength(code.rawValue)
        switch self {
        case .ip4: return codeLength + 4
        case .ip6: return codeLength + 16
        case .tcp, .udp: return codeLength + 2
        case .dns(let name), .dns4(let name), .dns6(let name):
            let n = name.utf8.count
            return codeLength + UVarint.encodedLength(UInt64(n)) + n
        case .p2p(let id):
            return codeLength + UVarint.encodedLength(UInt64(id.bytes.count)) + id.bytes.count
        case .p2pCircuit, .quic, .quicV1: return codeLength
        }
    }

    func write(to out: inout [UInt8]) {
        UVarint.write(code.rawValue, to: &out)
        switch self {
        case .ip4(let ip): out += ip.bytes
        case .ip6(let ip): out += ip.bytes
        case .tcp(let port), .udp(let port):
            out.append(UInt8(truncatingIfNeeded: port >> 8))
            out.append(UInt8(truncatingIfNeeded: port))
        case .dns(let name), .dns4(let name), .dns6(let name):
            UVarint.write(UInt64(name.utf8.count), to: &out)
            out += name.utf8
        case .p2p(let id):
            UVarint.write(UInt64(id.bytes.count), to: &out)
            out += id.bytes
        case .p2pCircuit, .quic, .quicV1: break
        }
    }
}

extension Multiaddr.Component: CustomStringConvertible {}

extension Multiaddr {
    /// A bounds-checked cursor over untrusted binary input.
    struct Reader {
        let bytes: [UInt8]
        var offset = 0

        var isAtEnd: Bool { offset == bytes.count }
        var remaining: Int { bytes.count - offset }

        mutating func varint(_ what: String) throws(CoreError) -> UInt64 {
            let decoded: (value: UInt64, length: Int)?
            do {
                decoded = try UVarint.decode(bytes[offset...])
            } catch {
                throw CoreError(.multiaddr, "malformed \(what) varint (\(error))")
            }
            guard let decoded else { throw CoreError(.multiaddr, "truncated \(what) varint") }
            offset += decoded.length
            return decoded.value
        }

        mutating func take(_ count: Int, for name: String) throws(CoreError) -> ArraySlice<UInt8> {
            guard count <= remaining else {
                throw CoreError(.multiaddr, "truncated /\(name) value: need \(count) bytes, \(remaining) left")
            }
            defer { offset += count }
            return bytes[offset..<(offset + count)]
        }

        mutating func port(for name: String) throws(CoreError) -> UInt16 {
            let b = try take(2, for: name)
            return UInt16(b[b.startIndex]) << 8 | UInt16(b[b.startIndex + 1])
        }

        /// A `uvarint(length) || value` field, the length checked before anything is sliced.
        mutating func lengthPrefixed(for name: String, max: Int) throws(CoreError) -> ArraySlice<UInt8> {
            let length = try varint("/\(name) length")
            guard length <= UInt64(remaining) else {
                throw CoreError(.multiaddr, "/\(name) length \(length) exceeds the \(remaining) bytes left")
            }
            guard length <= UInt64(max) else {
                throw CoreError(.multiaddr, "/\(name) value longer than \(max) bytes")
            }
            return try take(Int(length), for: name)
        }

        mutating func dnsName(for name: String) throws(CoreError) -> String {
            let value = try lengthPrefixed(for: name, max: Multiaddr.maxDNSNameLength)
            guard let text = String(validating: value, as: UTF8.self) else {
                throw CoreError(.multiaddr, "/\(name) name is not valid UTF-8")
            }
            return try ProtocolCode.dnsName(text, name)
        }
    }
}
