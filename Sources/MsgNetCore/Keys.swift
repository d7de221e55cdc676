import Crypto
import MsgNetControl

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// A libp2p public key. MsgNet creates and verifies Ed25519 keys; keys of other types can be
/// carried (and hashed into peer ids) but not used to verify.
public struct PublicKey: Hashable, Sendable {
    /// The key algorithm.
    public let type: KeyMessage.KeyType
    /// The raw key bytes (Ed25519: 32 bytes).
    public let rawBytes: [UInt8]

    /// Wraps raw key bytes; Ed25519 keys are checked to be 32 bytes.
    public init(type: KeyMessage.KeyType, rawBytes: [UInt8]) throws(CoreError) {
        if type == .ed25519 {
            guard rawBytes.count == 32 else { throw CoreError(.key, "Ed25519 public key must be 32 bytes") }
            guard (try? Curve25519.Signing.PublicKey(rawRepresentation: rawBytes)) != nil else {
                throw CoreError(.key, "Ed25519 public key is not a valid point encoding")
            }
        }
        guard !rawBytes.isEmpty else { throw CoreError(.key, "empty key") }
        self.type = type
        self.rawBytes = rawBytes
    }

    /// Decodes libp2p's protobuf `PublicKey` encoding.
    public init(marshaled bytes: some Collection<UInt8>) throws(CoreError) {
        let message: KeyMessage
        do {
            message = try KeyMessage(publicKeyBytes: bytes)
        } catch {
            throw CoreError(.key, error.description)
        }
        try self.init(type: message.type, rawBytes: message.data)
    }

    /// libp2p's protobuf `PublicKey` encoding (what peer ids hash and handshakes carry).
    public var marshaled: [UInt8] {
        KeyMessage(type: type, data: rawBytes).encodedPublicKey()
    }

    /// Whether `signature` is a valid signature by this key over `data`.
    /// Always `false` for key types MsgNet cannot verify.
    public func isValidSignature(_ signature: some DataProtocol, for data: some DataProtocol) -> Bool {
        switch type {
        case .ed25519:
            guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: rawBytes) else { return false }
            return key.isValidSignature(signature, for: data)
        case .rsa, .secp256k1, .ecdsa:
            return false
        }
    }

    /// The peer id this key derives.
    public var peerID: PeerID { PeerID(publicKey: self) }
}

/// A node's Ed25519 identity key.
public struct PrivateKey: Sendable {
    /// The 32-byte seed.
    public let seed: [UInt8]
    /// The public half.
    public let publicKey: PublicKey

    // Crypto's key type is not Sendable; keep bytes and rebuild it to sign.
    var key: Curve25519.Signing.PrivateKey {
        // The seed was validated at init.
        try! Curve25519.Signing.PrivateKey(rawRepresentation: seed)
    }

    /// A fresh random identity.
    public static func generate() -> PrivateKey { PrivateKey(key: Curve25519.Signing.PrivateKey()) }

    /// An identity from a 32-byte Ed25519 seed.
    public init(seed: some ContiguousBytes) throws(CoreError) {
        do {
            self.init(key: try Curve25519.Signing.PrivateKey(rawRepresentation: seed))
        } catch {
            throw CoreError(.key, "Ed25519 seed must be 32 bytes")
        }
    }

    init(key: Curve25519.Signing.PrivateKey) {
        seed = Array(key.rawRepresentation)
        // A valid private key always yields a valid 32-byte public key.
        publicKey = try! PublicKey(type: .ed25519, rawBytes: Array(key.publicKey.rawRepresentation))
    }

    /// Decodes libp2p's protobuf `PrivateKey` encoding (Ed25519: 64 bytes seed ‖ public key,
    /// or a bare 32-byte seed).
    public init(marshaled bytes: some Collection<UInt8>) throws(CoreError) {
        let message: KeyMessage
        do {
            message = try KeyMessage(privateKeyBytes: bytes)
        } catch {
            throw CoreError(.key, error.description)
        }
        guard message.type == .ed25519 else { throw CoreError(.key, "only Ed25519 private keys are supported") }
        guard message.data.count == 64 || message.data.count == 32 else {
            throw CoreError(.key, "Ed25519 private key must be 32 or 64 bytes")
        }
        try self.init(seed: Array(message.data.prefix(32)))
        if message.data.count == 64 && Array(message.data.suffix(32)) != publicKey.rawBytes {
            throw CoreError(.key, "Ed25519 private key's public half does not match its seed")
        }
    }

    /// libp2p's protobuf `PrivateKey` encoding (64-byte seed ‖ public key, as go-libp2p writes it).
    public var marshaled: [UInt8] {
        let data = seed + publicKey.rawBytes
        return KeyMessage(type: .ed25519, data: data).encodedPrivateKey()
    }

    /// The peer id of this identity.
    public var peerID: PeerID { publicKey.peerID }

    /// An Ed25519 signature over `data`.
    public func signature(for data: some DataProtocol) -> [UInt8] {
        // Curve25519 signing only throws on internal failure.
        Array(try! key.signature(for: data))
    }
}
