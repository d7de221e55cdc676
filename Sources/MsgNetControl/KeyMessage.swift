import MsgNetControlC

/// libp2p's `PublicKey` / `PrivateKey` protobuf (`Schemas/crypto.proto`): a key type and its bytes.
public struct KeyMessage: Hashable, Sendable {
    /// libp2p `KeyType` values.
    public enum KeyType: Int32, Sendable {
        case rsa = 0
        case ed25519 = 1
        case secp256k1 = 2
        case ecdsa = 3
    }

    /// The key algorithm.
    public var type: KeyType
    /// The key bytes in the algorithm's libp2p encoding (Ed25519: 32-byte public, 64-byte private).
    public var data: [UInt8]

    /// Creates a key message.
    public init(type: KeyType, data: [UInt8]) {
        self.type = type
        self.data = data
    }

    /// Keys larger than this are refused when decoding (RSA-8192 public keys fit).
    public static let maxEncodedSize = 8 * 1024

    /// The deterministic protobuf encoding of a `PublicKey`
    /// (fields in order, as the libp2p peer-id spec requires).
    public func encodedPublicKey() -> [UInt8] {
        let arena = CArena()
        let m = arena.object(Msgnet__Crypto__PublicKey.self)
        msgnet__crypto__public_key__init(m)
        m.pointee.type = Msgnet__Crypto__KeyType(rawValue: UInt32(type.rawValue))
        m.pointee.data = arena.binary(data)
        return pack(m)
    }

    /// The protobuf encoding of a `PrivateKey`.
    public func encodedPrivateKey() -> [UInt8] {
        let arena = CArena()
        let m = arena.object(Msgnet__Crypto__PrivateKey.self)
        msgnet__crypto__private_key__init(m)
        m.pointee.type = Msgnet__Crypto__KeyType(rawValue: UInt32(type.rawValue))
        m.pointee.data = arena.binary(data)
        return pack(m)
    }

    /// Decodes a protobuf `PublicKey`.
    public init(publicKeyBytes bytes: some Collection<UInt8>) throws(ControlError) {
        self = try withUnpacked(
            bytes, message: "PublicKey", maxSize: Self.maxEncodedSize,
            unpack: { msgnet__crypto__public_key__unpack(nil, $0, $1) },
            free: { msgnet__crypto__public_key__free_unpacked($0, nil) }
        ) { (m) throws(ControlError) in
            try KeyMessage(rawType: m.pointee.type.rawValue, data: m.pointee.data.bytes, message: "PublicKey")
        }
    }

    /// Decodes a protobuf `PrivateKey`.
    public init(privateKeyBytes bytes: some Collection<UInt8>) throws(ControlError) {
        self = try withUnpacked(
            bytes, message: "PrivateKey", maxSize: Self.maxEncodedSize,
            unpack: { msgnet__crypto__private_key__unpack(nil, $0, $1) },
            free: { msgnet__crypto__private_key__free_unpacked($0, nil) }
        ) { (m) throws(ControlError) in
            try KeyMessage(rawType: m.pointee.type.rawValue, data: m.pointee.data.bytes, message: "PrivateKey")
        }
    }

    init(rawType: UInt32, data: [UInt8], message: String) throws(ControlError) {
        guard let t = KeyType(rawValue: Int32(bitPattern: rawType)) else {
            throw ControlError(message: message, reason: "unknown key type \(rawType)")
        }
        self.init(type: t, data: data)
    }
}
