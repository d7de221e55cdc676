import MsgNetControlC

/// The identify message (`/ipfs/id/1.0.0`, `/ipfs/id/push/1.0.0`; `Schemas/identify.proto`).
///
/// Addresses are kept as raw multiaddr bytes here; `MsgNetCore` parses them.
public struct IdentifyMessage: Hashable, Sendable {
    /// E.g. `"ipfs/0.1.0"`.
    public var protocolVersion: String?
    /// E.g. `"msgnet/0.1.0"`.
    public var agentVersion: String?
    /// The sender's protobuf-encoded `PublicKey`.
    public var publicKey: [UInt8]?
    /// The sender's listen addresses, binary multiaddrs.
    public var listenAddrs: [[UInt8]]
    /// The address the sender sees us at, binary multiaddr.
    public var observedAddr: [UInt8]?
    /// Protocol ids the sender supports.
    public var protocols: [String]
    /// A signed peer record envelope, passed through unparsed.
    public var signedPeerRecord: [UInt8]?

    /// Creates an identify message.
    public init(
        protocolVersion: String? = nil,
        agentVersion: String? = nil,
        publicKey: [UInt8]? = nil,
        listenAddrs: [[UInt8]] = [],
        observedAddr: [UInt8]? = nil,
        protocols: [String] = [],
        signedPeerRecord: [UInt8]? = nil
    ) {
        self.protocolVersion = protocolVersion
        self.agentVersion = agentVersion
        self.publicKey = publicKey
        self.listenAddrs = listenAddrs
        self.observedAddr = observedAddr
        self.protocols = protocols
        self.signedPeerRecord = signedPeerRecord
    }

    /// Messages larger than this are refused when decoding (go-libp2p uses 8 KiB per message;
    /// we allow more room for long protocol lists).
    public static let maxEncodedSize = 64 * 1024

    /// The protobuf encoding.
    public func encoded() -> [UInt8] {
        let arena = CArena()
        let m = arena.object(Msgnet__Identify__Identify.self)
        msgnet__identify__identify__init(m)
        if let protocolVersion { m.pointee.protocolversion = arena.cString(protocolVersion) }
        if let agentVersion { m.pointee.agentversion = arena.cString(agentVersion) }
        if let publicKey {
            m.pointee.has_publickey = 1
            m.pointee.publickey = arena.binary(publicKey)
        }
        if let addrs = arena.array(of: ProtobufCBinaryData.self, count: listenAddrs.count) {
            for (i, a) in listenAddrs.enumerated() { addrs[i] = arena.binary(a) }
            m.pointee.n_listenaddrs = listenAddrs.count
            m.pointee.listenaddrs = addrs
        }
        if let observedAddr {
            m.pointee.has_observedaddr = 1
            m.pointee.observedaddr = arena.binary(observedAddr)
        }
        if let protos = arena.array(of: UnsafeMutablePointer<CChar>?.self, count: protocols.count) {
            for (i, p) in protocols.enumerated() { protos[i] = arena.cString(p) }
            m.pointee.n_protocols = protocols.count
            m.pointee.protocols = protos
        }
        if let signedPeerRecord {
            m.pointee.has_signedpeerrecord = 1
            m.pointee.signedpeerrecord = arena.binary(signedPeerRecord)
        }
        return pack(m)
    }

    /// Decodes an identify message.
    public init(bytes: some Collection<UInt8>) throws(ControlError) {
        self = try withUnpacked(
            bytes, message: "Identify", maxSize: Self.maxEncodedSize,
            unpack: { msgnet__identify__identify__unpack(nil, $0, $1) },
            free: { msgnet__identify__identify__free_unpacked($0, nil) }
        ) { (m) throws(ControlError) in
            let p = m.pointee
            var out = IdentifyMessage()
            out.protocolVersion = try swiftString(p.protocolversion, message: "Identify")
            out.agentVersion = try swiftString(p.agentversion, message: "Identify")
            if p.has_publickey != 0 { out.publicKey = p.publickey.bytes }
            for i in 0..<p.n_listenaddrs { out.listenAddrs.append(p.listenaddrs[i].bytes) }
            if p.has_observedaddr != 0 { out.observedAddr = p.observedaddr.bytes }
            for i in 0..<p.n_protocols {
                if let s = try swiftString(p.protocols[i], message: "Identify") { out.protocols.append(s) }
            }
            if p.has_signedpeerrecord != 0 { out.signedPeerRecord = p.signedpeerrecord.bytes }
            return out
        }
    }
}
