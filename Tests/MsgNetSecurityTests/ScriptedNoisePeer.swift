// Shared by MsgNetSecurityTests and (through a symlink) MsgNetStreamsTests.
import Crypto
import MsgNetControl
import MsgNetCore

@testable import MsgNetSecurity

/// A hand-driven Noise XX peer that writes arbitrary payloads (to forge hostile messages).
struct ScriptedNoisePeer {
    var symmetric = NoiseSymmetricState(protocolName: NoiseHandshake.protocolName)
    let staticKey = Curve25519.KeyAgreement.PrivateKey()
    let ephemeralKey = Curve25519.KeyAgreement.PrivateKey()
    var remoteEphemeral: [UInt8] = []
    var staticPublic: [UInt8] { Array(staticKey.publicKey.rawRepresentation) }
    var ephemeralPublic: [UInt8] { Array(ephemeralKey.publicKey.rawRepresentation) }

    init() { symmetric.mixHash([]) }

    /// Responder: reads message 1 and writes message 2 carrying `payload`.
    mutating func message2(replyingTo message1: [UInt8], payload: [UInt8]) throws -> [UInt8] {
        remoteEphemeral = Array(message1[0..<32])
        symmetric.mixHash(remoteEphemeral)
        _ = try symmetric.decryptAndHash(Array(message1[32...]))
        var out = ephemeralPublic
        symmetric.mixHash(ephemeralPublic)
        symmetric.mixKey(try NoiseHandshake.dh(Array(ephemeralKey.rawRepresentation), remoteEphemeral))
        out += try symmetric.encryptAndHash(staticPublic)
        symmetric.mixKey(try NoiseHandshake.dh(Array(staticKey.rawRepresentation), remoteEphemeral))
        out += try symmetric.encryptAndHash(payload)
        return out
    }

    /// Initiator: message 1.
    mutating func message1() throws -> [UInt8] {
        symmetric.mixHash(ephemeralPublic)
        return ephemeralPublic + (try symmetric.encryptAndHash([]))
    }

    /// Initiator: reads message 2 (payload unchecked) and writes message 3 carrying `payload`.
    mutating func message3(replyingTo message2: [UInt8], payload: [UInt8]) throws -> [UInt8] {
        remoteEphemeral = Array(message2[0..<32])
        symmetric.mixHash(remoteEphemeral)
        symmetric.mixKey(try NoiseHandshake.dh(Array(ephemeralKey.rawRepresentation), remoteEphemeral))
        let remoteStatic = try symmetric.decryptAndHash(Array(message2[32..<80]))
        symmetric.mixKey(try NoiseHandshake.dh(Array(ephemeralKey.rawRepresentation), remoteStatic))
        _ = try symmetric.decryptAndHash(Array(message2[80...]))
        var out = try symmetric.encryptAndHash(staticPublic)
        symmetric.mixKey(try NoiseHandshake.dh(Array(staticKey.rawRepresentation), remoteEphemeral))
        out += try symmetric.encryptAndHash(payload)
        return out
    }

    /// After message 3 (initiator): the transport ciphers (sending, receiving).
    func initiatorCiphers() -> (NoiseCipherState, NoiseCipherState) {
        symmetric.split()
    }

    /// A correct identity payload for `identity` signing this peer's static key.
    func payload(identity: PrivateKey) -> [UInt8] {
        NoiseHandshakePayloadMessage(
            identityKey: identity.publicKey.marshaled,
            identitySignature: identity.signature(for: NoiseHandshake.signaturePrefix + staticPublic)
        ).encoded()
    }
}
