import Crypto

/// A libp2p peer id: the multihash of a node's protobuf-encoded public key.
///
/// Keys whose encoding is at most 42 bytes (Ed25519) use the identity multihash, so the key can
/// be recovered from the id; larger keys use SHA2-256. Text form is base58btc (`12D3KooW…` for
/// Ed25519 keys).
public struct PeerID: Hashable, Sendable, CustomStringConvertible, Comparable {
    /// The multihash bytes.
    public let bytes: [UInt8]

    static let identityCode: UInt64 = 0x00
    static let sha256Code: UInt64 = 0x12
    static let maxInlineKeyLength = 42
    /// Peer ids longer than this are rejected (an identity multihash of a large key is not valid).
    public static let maxLength = 128

    /// The peer id of `publicKey`.
    public init(publicKey: PublicKey) {
        let encoded = publicKey.marshaled
        var out: [UInt8] = []
        if encoded.count <= Self.maxInlineKeyLength {
            UVarint.write(Self.identityCode, to: &out)
            UVarint.write(UInt64(encoded.count), to: &out)
            out += encoded
        } else {
            UVarint.write(Self.sha256Code, to: &out)
            UVarint.write(32, to: &out)
            out += Array(SHA256.hash(data: encoded))
        }
        bytes = out
    }

    /// Parses binary peer id bytes (a multihash), checking its structure.
    public init(bytes: some Collection<UInt8>) throws(CoreError) {
        // Copy at most one byte past the limit, whatever the caller hands in.
        let b = Array(bytes.prefix(Self.maxLength + 1))
        guard b.count <= Self.maxLength else { throw CoreError(.peerID, "longer than \(Self.maxLength) bytes") }
        let code: (value: UInt64, length: Int)
        let len: (value: UInt64, length: Int)
        do {
            guard let c = try UVarint.decode(b) else { throw CoreError(.peerID, "truncated multihash code") }
            code = c
            guard let l = try UVarint.decode(b[c.length...]) else {
                throw CoreError(.peerID, "truncated multihash length")
            }
            len = l
        } catch let e as CoreError {
            throw e
        } catch {
            throw CoreError(.peerID, "malformed multihash varint")
        }
        let digest = b.count - code.length - len.length
        guard UInt64(digest) == len.value else {
            throw CoreError(.peerID, "multihash length \(len.value) does not match \(digest) digest bytes")
        }
        switch code.value {
        case Self.identityCode:
            // The digest must be a decodable public key.
            _ = try PublicKey(marshaled: b[(code.length + len.length)...])
        case Self.sha256Code:
            guard len.value == 32 else { throw CoreError(.peerID, "sha2-256 digest must be 32 bytes") }
        default:
            throw CoreError(.peerID, "unsupported multihash code 0x\(String(code.value, radix: 16))")
        }
        self.bytes = b
    }

    /// Parses the base58btc text form (`12D3KooW…`, `Qm…`).
    public init(_ text: String) throws(CoreError) {
        guard !text.isEmpty else { throw CoreError(.peerID, "empty") }
        guard let decoded = Base58.decode(text) else { throw CoreError(.peerID, "not base58btc: \(text.prefix(64))") }
        try self.init(bytes: decoded)
    }

    /// The public key, when the id inlines it (identity multihash, e.g. Ed25519).
    public var publicKey: PublicKey? {
        guard bytes.first == 0x00, let len = try? UVarint.decode(bytes.dropFirst()) else { return nil }
        return try? PublicKey(marshaled: bytes[(1 + len.length)...])
    }

    /// Whether this id is derived from `key`.
    public func matches(_ key: PublicKey) -> Bool { PeerID(publicKey: key) == self }

    /// base58btc text.
    public var description: String { Base58.encode(bytes) }

    public static func < (lhs: PeerID, rhs: PeerID) -> Bool { lhs.bytes.lexicographicallyPrecedes(rhs.bytes) }

    /// Hashes the id's bytes in one block (the synthesized `Array` hashing feeds the hasher one
    /// byte at a time, which made peer-keyed lookups on the send path expensive).
    public func hash(into hasher: inout Hasher) {
        bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
    }

    public static func == (lhs: PeerID, rhs: PeerID) -> Bool { lhs.bytes == rhs.bytes }
}
