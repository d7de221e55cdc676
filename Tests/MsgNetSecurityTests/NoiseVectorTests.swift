import Crypto
import MsgNetControl
import MsgNetCore
import MsgNetTestSupport
import NIOCore
import Testing

@testable import MsgNetSecurity

/// A fixed-key handshake checked against an independent implementation: the values below were
/// printed by `vectors/noise_xx_vector.py` (the `noiseprotocol` package with py-libp2p 0.8.1's
/// identity keys, payload encoding and signature rule).
@Suite struct NoiseVectorTests {
    static let msg1 = "0faa684ed28867b97f4a6a2dee5df8ce974e76b7018e3f22a1c4cf2678570f20"
    static let msg2 =
        "ff2ee45601ec1b67310c7790404585ae697331eee1c1f8cf2419731c1fff3e6b5cda1c2d8029877d73fad62823946ccd0c5da35c129100f43d33a59cf19ea8fcdcc0e3e57a6099ef8d8c471633442810f7b53910cdb5387961017d6f71ec6ccf66f49c07777fa311a3a71e6622df2e1c8ce94aa85c086d6c035b279355b1ac98705df65c334cbb6ecba25c859270c261b61289d7cd5f6edc15c4d8ccb0bdcb8542ab2e7ccef82173c4363c6d29e8e452978e32b8da004c579d22921533c281454f917c6844369239"
    static let msg3 =
        "f4e4988e97bdcbf0f799d02dd2242624bda72d200e97e322c4f723213896a31e7ce81446799adbce9e65b18d094e3bb8f12958cf4fae2eac93850f01b8dc66f7f3fef960d8c9582b6b95092bd956f42baeb968828f5aaff5e0b57f7903ddc416e9bf776be3c8a7b11cf804f33bfd6528bed132ac7227c1bb5fd7c7ff5628f0e780f42fd391a080957393ef76bb4ecb09980f5292df89f9e035e35cb44b7269e9f42afdc6567b446b"
    static let respPayload =
        "0a240801122029acbae141bccaf0b22e1a94d34d0bc7361e526d0bfe12c89794bc9322966dd71240227aedf280b53bf3d503ef258a296a8ccd5b15ea6d1bf3e0075831d6abb566f1382de6c0ff79af9d44baddb0a79a3da55a87b1cffcb444c3abe206cbdf36f906"
    static let initPayload =
        "0a240801122003a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b812404695b9061d4513c39d09742ba3d1d3afa851b3996f5dcc9f5dd8c80975f25b050aed2961f3f16c14392ebf4fc5c8da3354182a5afc4577faa66c2b21f794190e"
    static let handshakeHash = "d380983b05d330178926dbf67ec67a258cd2a156c1b89ce359ced220c280d21b"
    static let initToResp0 = "4f23d4ccee5bb7e52b8effdeb24b7a6bf7ddd4eeca70978197427877fd788973ba6822b6"
    static let initToResp1 = "f8a07b93159481817516f58be2ea49e1802c86351493"
    static let respToInit0 = "10fb6024c5c64ae8df3c69e55f909c29071e75a9cfb83ea88973308b5b81f6e81dad8894"
    static let initiatorPeer = "12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB"
    static let responderPeer = "12D3KooWCd3eX8r5ihRvzK7P1yPq5aakaBJhG5GNj18YTztPhoCa"

    static func x25519(_ byte: UInt8) throws -> Curve25519.KeyAgreement.PrivateKey {
        try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: [UInt8](repeating: byte, count: 32))
    }

    func machines() throws -> (NoiseHandshake, NoiseHandshake) {
        let initiatorIdentity = try PrivateKey(seed: (0x00..<0x20).map { UInt8($0) })
        let responderIdentity = try PrivateKey(seed: (0x20..<0x40).map { UInt8($0) })
        let initiator = NoiseHandshake(
            role: .initiator,
            identity: initiatorIdentity,
            expectedRemotePeer: try PeerID(Self.responderPeer),
            staticKey: try Self.x25519(0x11),
            ephemeralKey: try Self.x25519(0x22)
        )
        let responder = NoiseHandshake(
            role: .responder,
            identity: responderIdentity,
            staticKey: try Self.x25519(0x33),
            ephemeralKey: try Self.x25519(0x44)
        )
        return (initiator, responder)
    }

    @Test func messagesMatchReferenceBytes() throws {
        var (initiator, responder) = try machines()
        let run = try #require(runHandshake(&initiator, &responder))
        #expect(run.messages[0] == hex(Self.msg1))
        #expect(run.messages[1] == hex(Self.msg2))
        #expect(run.messages[2] == hex(Self.msg3))
        #expect(run.initiator.handshakeHash == hex(Self.handshakeHash))
        #expect(run.responder.handshakeHash == hex(Self.handshakeHash))
        #expect(run.initiator.remotePeer == (try PeerID(Self.responderPeer)))
        #expect(run.responder.remotePeer == (try PeerID(Self.initiatorPeer)))

        var sender = run.initiator.sendingCipher
        #expect(try sender.encrypt(Array("hello from initiator".utf8)) == hex(Self.initToResp0))
        #expect(try sender.encrypt(Array("second".utf8)) == hex(Self.initToResp1))
        var back = run.responder.sendingCipher
        #expect(try back.encrypt(Array("hello from responder".utf8)) == hex(Self.respToInit0))
    }

    @Test func referenceMessagesAreAccepted() throws {
        // Each machine alone, fed the reference implementation's messages.
        var (initiator, responder) = try machines()
        #expect(sentMessage(initiator.start()) == hex(Self.msg1))
        let actions = initiator.onMessage(hex(Self.msg2))
        var result = try #require(completion(actions))
        #expect(try result.receivingCipher.decrypt(hex(Self.respToInit0)) == Array("hello from responder".utf8))

        #expect(responder.start().isEmpty)
        #expect(sentMessage(responder.onMessage(hex(Self.msg1))) == hex(Self.msg2))
        var responded = try #require(completion(responder.onMessage(hex(Self.msg3))))
        #expect(try responded.receivingCipher.decrypt(hex(Self.initToResp0)) == Array("hello from initiator".utf8))
        #expect(try responded.receivingCipher.decrypt(hex(Self.initToResp1)) == Array("second".utf8))
    }

    @Test func referencePayloadsMatchOurEncoding() throws {
        let cases: [(seed: ClosedRange<UInt8>, staticByte: UInt8, payload: String)] = [
            (0x20...0x3f, 0x33, Self.respPayload),
            (0x00...0x1f, 0x11, Self.initPayload),
        ]
        for (seed, staticByte, reference) in cases {
            let identity = try PrivateKey(seed: Array(seed))
            let staticPublic = Array(try Self.x25519(staticByte).publicKey.rawRepresentation)
            let payload = try NoiseHandshakePayloadMessage(bytes: hex(reference))
            #expect(payload.identityKey == identity.publicKey.marshaled)
            let signature = try #require(payload.identitySignature)
            #expect(identity.publicKey.isValidSignature(signature, for: NoiseHandshake.signaturePrefix + staticPublic))
            let ours = NoiseHandshakePayloadMessage(
                identityKey: identity.publicKey.marshaled,
                identitySignature: identity.signature(for: NoiseHandshake.signaturePrefix + staticPublic)
            ).encoded()
            #expect(ours == hex(reference))
        }
    }
}
