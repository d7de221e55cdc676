import MsgNetControl
import MsgNetCore

/// Why a security handshake or a secured connection failed (Noise and plaintext alike).
public enum SecurityError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The remote identity key's signature over its Noise static key does not verify.
    case badSignature
    /// The remote peer is not the one we expected to reach.
    case peerIDMismatch(expected: PeerID, actual: PeerID)
    /// A plaintext `Exchange` names a peer id that its own public key does not derive.
    case peerIDKeyMismatch(claimed: [UInt8], derived: PeerID)
    /// An AEAD ciphertext failed to authenticate (tampered, replayed, reordered or wrong key).
    case decryptFailed
    /// A message or frame is larger than the protocol allows.
    case messageTooLarge(size: Int, limit: Int)
    /// A handshake message has the wrong shape (too short, wrong length).
    case malformedMessage(String)
    /// A handshake payload (protobuf) does not decode or lacks a required field.
    case malformedPayload(String)
    /// The remote identity key does not decode.
    case invalidKey(String)
    /// The remote identity key is of a type MsgNet cannot verify signatures for.
    case unsupportedKeyType(KeyMessage.KeyType)
    /// A remote X25519 key is unusable (e.g. a low-order point giving an all-zero shared secret).
    case invalidDHKey
    /// A cipher state used its last nonce; the connection must end rather than reuse one.
    case nonceExhausted
    /// An event arrived in a state that does not accept it (e.g. input after failure).
    case unexpectedMessage(String)
    /// Too many bytes were written before the handshake completed.
    case pendingWritesLimitExceeded(limit: Int)
    /// The connection closed (or the handler was removed) before the handshake completed.
    case connectionClosed

    /// A human-readable explanation.
    public var description: String {
        switch self {
        case .badSignature:
            return "remote identity signature over the Noise static key does not verify"
        case .peerIDMismatch(let expected, let actual):
            return "remote peer is \(actual), expected \(expected)"
        case .peerIDKeyMismatch(let claimed, let derived):
            let hex = claimed.prefix(48).map { String($0, radix: 16) }.joined(separator: " ")
            return "remote claims peer id bytes [\(hex)] but its public key derives \(derived)"
        case .decryptFailed:
            return "ciphertext failed to authenticate"
        case .messageTooLarge(let size, let limit):
            return "message of \(size) bytes exceeds the limit of \(limit)"
        case .malformedMessage(let reason):
            return "malformed handshake message: \(reason)"
        case .malformedPayload(let reason):
            return "malformed handshake payload: \(reason)"
        case .invalidKey(let reason):
            return "invalid remote identity key: \(reason)"
        case .unsupportedKeyType(let type):
            return "unsupported remote identity key type \(type)"
        case .invalidDHKey:
            return "remote X25519 key is invalid (all-zero shared secret)"
        case .nonceExhausted:
            return "cipher nonce space exhausted; the connection must be closed"
        case .unexpectedMessage(let reason):
            return "unexpected input: \(reason)"
        case .pendingWritesLimitExceeded(let limit):
            return "more than \(limit) bytes written before the security handshake completed"
        case .connectionClosed:
            return "connection closed before the security handshake completed"
        }
    }
}

/// The Noise layer's errors are ``SecurityError``s (one error type per module).
public typealias NoiseError = SecurityError
