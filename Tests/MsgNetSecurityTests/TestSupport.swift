import Crypto
import MsgNetControl
import MsgNetCore
import NIOCore

@testable import MsgNetSecurity

/// Hex string → bytes (test vectors).
func hex(_ string: String) -> [UInt8] {
    var out: [UInt8] = []
    var index = string.startIndex
    while index < string.endIndex {
        let next = string.index(index, offsetBy: 2)
        out.append(UInt8(string[index..<next], radix: 16)!)
        index = next
    }
    return out
}

/// The single `.send` in `actions`, if that is all they hold.
func sentMessage(_ actions: [NoiseHandshake.Action]) -> [UInt8]? {
    guard actions.count == 1, case .send(let bytes) = actions[0] else { return nil }
    return bytes
}

/// The failure in `actions`, if they end with one.
func failure(_ actions: [NoiseHandshake.Action]) -> SecurityError? {
    guard case .failed(let error) = actions.last else { return nil }
    return error
}

/// The result in `actions`, if they complete.
func completion(_ actions: [NoiseHandshake.Action]) -> NoiseHandshakeResult? {
    guard case .completed(let result) = actions.last else { return nil }
    return result
}

/// The three messages and both results of a handshake between two machines.
struct HandshakeRun {
    var messages: [[UInt8]]
    var initiator: NoiseHandshakeResult
    var responder: NoiseHandshakeResult
}

/// Runs `initiator` and `responder` back to back; nil if anything other than success happens.
func runHandshake(_ initiator: inout NoiseHandshake, _ responder: inout NoiseHandshake) -> HandshakeRun? {
    guard responder.start().isEmpty, let m1 = sentMessage(initiator.start()),
        let m2 = sentMessage(responder.onMessage(m1))
    else { return nil }
    let a2 = initiator.onMessage(m2)
    guard a2.count == 2, case .send(let m3) = a2[0], let initiatorResult = completion(a2) else { return nil }
    let a3 = responder.onMessage(m3)
    guard a3.count == 1, let responderResult = completion(a3) else { return nil }
    return HandshakeRun(messages: [m1, m2, m3], initiator: initiatorResult, responder: responderResult)
}

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

    /// A correct identity payload for `identity` signing this peer's static key.
    func payload(identity: PrivateKey) -> [UInt8] {
        NoiseHandshakePayloadMessage(
            identityKey: identity.publicKey.marshaled,
            identitySignature: identity.signature(for: NoiseHandshake.signaturePrefix + staticPublic)
        ).encoded()
    }
}

/// Collects a future's result (EmbeddedEventLoop completes futures synchronously).
final class ResultBox<Value: Sendable>: @unchecked Sendable {
    var result: Result<Value, any Error>?

    init(_ future: EventLoopFuture<Value>) {
        future.whenComplete { self.result = $0 }
    }

    var value: Value? { try? result?.get() }
    var error: (any Error)? {
        if case .failure(let error) = result { return error }
        return nil
    }
}
