import MsgNetControlC

/// The libp2p Noise handshake payload (`Schemas/noise.proto`).
public struct NoiseHandshakePayloadMessage: Hashable, Sendable {
    /// The sender's libp2p identity key, protobuf-encoded `PublicKey`.
    public var identityKey: [UInt8]?
    /// Signature by the identity key over `"noise-libp2p-static-key:" || static DH public key`.
    public var identitySignature: [UInt8]?
    /// Muxers the sender supports (early muxer negotiation), when sent.
    public var streamMuxers: [String]
    /// WebTransport certificate hashes, when sent.
    public var webtransportCerthashes: [[UInt8]]

    /// Creates a payload.
    public init(
        identityKey: [UInt8]? = nil,
        identitySignature: [UInt8]? = nil,
        streamMuxers: [String] = [],
        webtransportCerthashes: [[UInt8]] = []
    ) {
        self.identityKey = identityKey
        self.identitySignature = identitySignature
        self.streamMuxers = streamMuxers
        self.webtransportCerthashes = webtransportCerthashes
    }

    /// Payloads larger than this are refused when decoding.
    public static let maxEncodedSize = 16 * 1024

    /// The protobuf encoding.
    public func encoded() -> [UInt8] {
        let arena = CArena()
        let m = arena.object(Msgnet__Noise__NoiseHandshakePayload.self)
        msgnet__noise__noise_handshake_payload__init(m)
        if let identityKey {
            m.pointee.has_identity_key = 1
            m.pointee.identity_key = arena.binary(identityKey)
        }
        if let identitySignature {
            m.pointee.has_identity_sig = 1
            m.pointee.identity_sig = arena.binary(identitySignature)
        }
        if !streamMuxers.isEmpty || !webtransportCerthashes.isEmpty {
            let ext = arena.object(Msgnet__Noise__NoiseExtensions.self)
            msgnet__noise__noise_extensions__init(ext)
            if let hashes = arena.array(of: ProtobufCBinaryData.self, count: webtransportCerthashes.count) {
                for (i, h) in webtransportCerthashes.enumerated() { hashes[i] = arena.binary(h) }
                ext.pointee.n_webtransport_certhashes = webtransportCerthashes.count
                ext.pointee.webtransport_certhashes = hashes
            }
            if let muxers = arena.array(of: UnsafeMutablePointer<CChar>?.self, count: streamMuxers.count) {
                for (i, s) in streamMuxers.enumerated() { muxers[i] = arena.cString(s) }
                ext.pointee.n_stream_muxers = streamMuxers.count
                ext.pointee.stream_muxers = muxers
            }
            m.pointee.extensions = ext
        }
        return pack(m)
    }

    /// Decodes a payload.
    public init(bytes: some Collection<UInt8>) throws(ControlError) {
        self = try withUnpacked(
            bytes, message: "NoiseHandshakePayload", maxSize: Self.maxEncodedSize,
            unpack: { msgnet__noise__noise_handshake_payload__unpack(nil, $0, $1) },
            free: { msgnet__noise__noise_handshake_payload__free_unpacked($0, nil) }
        ) { (m) throws(ControlError) in
            var out = NoiseHandshakePayloadMessage()
            if m.pointee.has_identity_key != 0 { out.identityKey = m.pointee.identity_key.bytes }
            if m.pointee.has_identity_sig != 0 { out.identitySignature = m.pointee.identity_sig.bytes }
            if let ext = m.pointee.extensions {
                for i in 0..<ext.pointee.n_webtransport_certhashes {
                    out.webtransportCerthashes.append(ext.pointee.webtransport_certhashes[i].bytes)
                }
                for i in 0..<ext.pointee.n_stream_muxers {
                    if let s = try swiftString(ext.pointee.stream_muxers[i], message: "NoiseExtensions") {
                        out.streamMuxers.append(s)
                    }
                }
            }
            return out
        }
    }
}
