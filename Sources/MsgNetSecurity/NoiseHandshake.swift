import Crypto
import MsgNetControl
import MsgNetCore
import NIOCore

/// What a completed Noise handshake yields.
public struct NoiseHandshakeResult: Sendable {
    /// The authenticated remote peer.
    public let remotePeer: PeerID
    /// The remote libp2p identity key.
    public let remotePublicKey: PublicKey
    /// The remote Noise static X25519 public key (32 bytes).
    public let remoteStaticKey: [UInt8]
    /// Encrypts what we send.
    public var sendingCipher: NoiseCipherState
    /// Decrypts what we receive.
    public var receivingCipher: NoiseCipherState
    /// The final handshake hash `h` (equal on both sides; usable for channel binding).
    public let handshakeHash: [UInt8]
}

/// The libp2p Noise handshake, `Noise_XX_25519_ChaChaPoly_SHA256`, as a pure state machine.
///
/// It works on whole handshake messages: framing belongs to the caller (the TCP path prefixes each
/// message with a 2-byte big-endian length; the UDP path uses its own datagram framing).
///
/// ```
/// XX:  -> e                    (initiator, empty payload)
///      <- e, ee, s, es         (responder, identity payload)
///      -> s, se                (initiator, identity payload)
/// ```
///
/// Each identity payload is a `NoiseHandshakePayload` protobuf holding the sender's libp2p
/// public key and its signature over `"noise-libp2p-static-key:" || static X25519 public key`.
/// The machine verifies that signature and, when an expected peer is given, the peer id.
///
/// Drive it with ``start()`` and then ``onMessage(_:)-([UInt8])`` for every message received;
/// perform the returned actions in order. Any failure is final: later input yields
/// ``SecurityError/unexpectedMessage(_:)``.
public struct NoiseHandshake: Sendable {
    /// What the driver must do.
    public enum Action: Sendable {
        /// Send this handshake message to the remote.
        case send([UInt8])
        /// The handshake succeeded; switch to transport mode with these cipher states.
        case completed(NoiseHandshakeResult)
        /// The handshake failed; close the connection.
        case failed(SecurityError)
    }

    /// The Noise protocol name hashed into the initial state.
    public static let protocolName = "Noise_XX_25519_ChaChaPoly_SHA256"
    /// The largest Noise message (handshake or transport), in bytes.
    public static let maxMessageSize = 65535
    /// The prefix of the signed data in the identity payload.
    public static let signaturePrefix: [UInt8] = Array("noise-libp2p-static-key:".utf8)

    static let dhLength = 32
    static let encryptedKeyLength = dhLength + NoiseCipherState.tagLength

    private enum State {
        case idle
        /// Responder: waiting for `-> e`.
        case awaitingMessage1
        /// Initiator: waiting for `<- e, ee, s, es`.
        case awaitingMessage2
        /// Responder: waiting for `-> s, se`.
        case awaitingMessage3
        case completed
        case failed
    }

    /// Which side of the handshake this machine plays.
    public let role: SecurityRole
    private let identity: PrivateKey
    private let expectedRemotePeer: PeerID?
    private let staticPrivate: [UInt8]
    private let staticPublic: [UInt8]
    private let ephemeralPrivate: [UInt8]
    private let ephemeralPublic: [UInt8]
    private var remoteEphemeral: [UInt8] = []
    private var remoteStatic: [UInt8] = []
    private var symmetric: NoiseSymmetricState
    private var state: State = .idle

    /// Creates a handshake.
    ///
    /// - Parameters:
    ///   - role: initiator (dialer) or responder (listener).
    ///   - identity: the local libp2p identity that signs the static key.
    ///   - expectedRemotePeer: when set, the handshake fails unless the remote proves this id.
    ///   - staticKey: the Noise static key; a fresh one when `nil`.
    ///   - ephemeralKey: the ephemeral key; fresh when `nil`. Inject only for test vectors.
    ///   - prologue: data both sides must agree on (libp2p uses none).
    public init(
        role: SecurityRole,
        identity: PrivateKey,
        expectedRemotePeer: PeerID? = nil,
        staticKey: Curve25519.KeyAgreement.PrivateKey? = nil,
        ephemeralKey: Curve25519.KeyAgreement.PrivateKey? = nil,
        prologue: [UInt8] = []
    ) {
        self.role = role
        self.identity = identity
        self.expectedRemotePeer = expectedRemotePeer
        let s = staticKey ?? Curve25519.KeyAgreement.PrivateKey()
        staticPrivate = Array(s.rawRepresentation)
        staticPublic = Array(s.publicKey.rawRepresentation)
        let e = ephemeralKey ?? Curve25519.KeyAgreement.PrivateKey()
        ephemeralPrivate = Array(e.rawRepresentation)
        ephemeralPublic = Array(e.publicKey.rawRepresentation)
        symmetric = NoiseSymmetricState(protocolName: Self.protocolName)
        symmetric.mixHash(prologue)
    }

    /// The local Noise static public key (what the identity payload signs).
    public var localStaticKey: [UInt8] { staticPublic }

    /// Whether the handshake finished successfully.
    public var isCompleted: Bool {
        if case .completed = state { return true }
        return false
    }

    /// Starts the handshake: the initiator sends message 1; the responder waits.
    public mutating func start() -> [Action] {
        guard case .idle = state else {
            return fail(.unexpectedMessage("handshake already started"))
        }
        switch role {
        case .initiator:
            // -> e, then an empty payload (in the clear: no key yet).
            var message = ephemeralPublic
            symmetric.mixHash(ephemeralPublic)
            do {
                message += try symmetric.encryptAndHash([])
            } catch {
                return fail(error)
            }
            state = .awaitingMessage2
            return [.send(message)]
        case .responder:
            state = .awaitingMessage1
            return []
        }
    }

    /// Feeds one whole handshake message received from the remote.
    public mutating func onMessage(_ message: ByteBuffer) -> [Action] {
        onMessage(Array(message.readableBytesView))
    }

    /// Feeds one whole handshake message received from the remote.
    public mutating func onMessage(_ message: [UInt8]) -> [Action] {
        guard message.count <= Self.maxMessageSize else {
            return fail(.messageTooLarge(size: message.count, limit: Self.maxMessageSize))
        }
        do {
            switch state {
            case .idle:
                return fail(.unexpectedMessage("handshake message before start()"))
            case .awaitingMessage1:
                return try readMessage1(message)
            case .awaitingMessage2:
                return try readMessage2(message)
            case .awaitingMessage3:
                return try readMessage3(message)
            case .completed:
                return fail(.unexpectedMessage("handshake message after the handshake completed"))
            case .failed:
                return [.failed(.unexpectedMessage("handshake message after the handshake failed"))]
            }
        } catch {
            return fail(error)
        }
    }

    // MARK: Messages

    /// Responder reads `-> e` (plus a payload in the clear, ignored), writes `<- e, ee, s, es`.
    private mutating func readMessage1(_ message: [UInt8]) throws(SecurityError) -> [Action] {
        guard message.count >= Self.dhLength else {
            throw .malformedMessage("message 1 is \(message.count) bytes, need at least \(Self.dhLength)")
        }
        remoteEphemeral = Array(message[0..<Self.dhLength])
        symmetric.mixHash(remoteEphemeral)
        // libp2p initiators send an empty payload here; anything present is unauthenticated, so ignore it.
        _ = try symmetric.decryptAndHash(Array(message[Self.dhLength...]))

        // <- e
        var reply = ephemeralPublic
        symmetric.mixHash(ephemeralPublic)
        // ee
        symmetric.mixKey(try Self.dh(ephemeralPrivate, remoteEphemeral))
        // s
        reply += try symmetric.encryptAndHash(staticPublic)
        // es (responder: DH(s, re))
        symmetric.mixKey(try Self.dh(staticPrivate, remoteEphemeral))
        // payload
        reply += try symmetric.encryptAndHash(identityPayload())
        try checkOutgoingSize(reply)
        state = .awaitingMessage3
        return [.send(reply)]
    }

    /// Initiator reads `<- e, ee, s, es` + payload, writes `-> s, se` + payload, completes.
    private mutating func readMessage2(_ message: [UInt8]) throws(SecurityError) -> [Action] {
        let minimum = Self.dhLength + Self.encryptedKeyLength + NoiseCipherState.tagLength
        guard message.count >= minimum else {
            throw .malformedMessage("message 2 is \(message.count) bytes, need at least \(minimum)")
        }
        // e
        remoteEphemeral = Array(message[0..<Self.dhLength])
        symmetric.mixHash(remoteEphemeral)
        // ee
        symmetric.mixKey(try Self.dh(ephemeralPrivate, remoteEphemeral))
        // s
        let keyEnd = Self.dhLength + Self.encryptedKeyLength
        remoteStatic = try symmetric.decryptAndHash(Array(message[Self.dhLength..<keyEnd]))
        // es (initiator: DH(e, rs))
        symmetric.mixKey(try Self.dh(ephemeralPrivate, remoteStatic))
        // payload
        let payload = try symmetric.decryptAndHash(Array(message[keyEnd...]))
        let remoteKey = try verify(payload: payload)

        // -> s
        var reply = try symmetric.encryptAndHash(staticPublic)
        // se (initiator: DH(s, re))
        symmetric.mixKey(try Self.dh(staticPrivate, remoteEphemeral))
        reply += try symmetric.encryptAndHash(identityPayload())
        try checkOutgoingSize(reply)
        let result = finish(remoteKey: remoteKey)
        return [.send(reply), .completed(result)]
    }

    /// Responder reads `-> s, se` + payload and completes.
    private mutating func readMessage3(_ message: [UInt8]) throws(SecurityError) -> [Action] {
        let minimum = Self.encryptedKeyLength + NoiseCipherState.tagLength
        guard message.count >= minimum else {
            throw .malformedMessage("message 3 is \(message.count) bytes, need at least \(minimum)")
        }
        // s
        remoteStatic = try symmetric.decryptAndHash(Array(message[0..<Self.encryptedKeyLength]))
        // se (responder: DH(e, rs))
        symmetric.mixKey(try Self.dh(ephemeralPrivate, remoteStatic))
        let payload = try symmetric.decryptAndHash(Array(message[Self.encryptedKeyLength...]))
        let remoteKey = try verify(payload: payload)
        return [.completed(finish(remoteKey: remoteKey))]
    }

    // MARK: Helpers

    private mutating func finish(remoteKey: PublicKey) -> NoiseHandshakeResult {
        let (initiatorToResponder, responderToInitiator) = symmetric.split()
        state = .completed
        let sending = role == .initiator ? initiatorToResponder : responderToInitiator
        let receiving = role == .initiator ? responderToInitiator : initiatorToResponder
        return NoiseHandshakeResult(
            remotePeer: remoteKey.peerID,
            remotePublicKey: remoteKey,
            remoteStaticKey: remoteStatic,
            sendingCipher: sending,
            receivingCipher: receiving,
            handshakeHash: symmetric.handshakeHash
        )
    }

    private mutating func fail(_ error: SecurityError) -> [Action] {
        state = .failed
        return [.failed(error)]
    }

    private func checkOutgoingSize(_ message: [UInt8]) throws(SecurityError) {
        guard message.count <= Self.maxMessageSize else {
            throw .messageTooLarge(size: message.count, limit: Self.maxMessageSize)
        }
    }

    /// Our `NoiseHandshakePayload`: identity key and its signature over our static key.
    private func identityPayload() -> [UInt8] {
        let signature = identity.signature(for: Self.signaturePrefix + staticPublic)
        return NoiseHandshakePayloadMessage(
            identityKey: identity.publicKey.marshaled,
            identitySignature: signature
        ).encoded()
    }

    /// Checks the remote payload against the remote static key; returns the remote identity key.
    private func verify(payload bytes: [UInt8]) throws(SecurityError) -> PublicKey {
        let payload: NoiseHandshakePayloadMessage
        do {
            payload = try NoiseHandshakePayloadMessage(bytes: bytes)
        } catch {
            throw .malformedPayload(error.description)
        }
        guard let keyBytes = payload.identityKey, !keyBytes.isEmpty else {
            throw .malformedPayload("no identity_key")
        }
        guard let signature = payload.identitySignature, !signature.isEmpty else {
            throw .malformedPayload("no identity_sig")
        }
        let key: PublicKey
        do {
            key = try PublicKey(marshaled: keyBytes)
        } catch {
            throw .invalidKey(error.reason)
        }
        guard key.type == .ed25519 else { throw .unsupportedKeyType(key.type) }
        guard key.isValidSignature(signature, for: Self.signaturePrefix + remoteStatic) else {
            throw .badSignature
        }
        let peer = key.peerID
        if let expectedRemotePeer, expectedRemotePeer != peer {
            throw .peerIDMismatch(expected: expectedRemotePeer, actual: peer)
        }
        return key
    }

    /// X25519(private, public); rejects keys that give an all-zero secret.
    static func dh(_ privateKey: [UInt8], _ publicKey: [UInt8]) throws(SecurityError) -> [UInt8] {
        do {
            let priv = try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: privateKey)
            let pub = try Curve25519.KeyAgreement.PublicKey(rawRepresentation: publicKey)
            let secret = try priv.sharedSecretFromKeyAgreement(with: pub)
            let bytes = secret.withUnsafeBytes { Array($0) }
            guard bytes.contains(where: { $0 != 0 }) else { throw SecurityError.invalidDHKey }
            return bytes
        } catch {
            throw .invalidDHKey
        }
    }
}
