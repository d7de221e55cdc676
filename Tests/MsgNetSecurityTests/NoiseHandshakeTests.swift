import Crypto
import MsgNetControl
import MsgNetCore
import MsgNetTestSupport
import NIOCore
import Testing

@testable import MsgNetSecurity

@Suite struct NoiseHandshakeTests {
    let alice = PrivateKey.generate()
    let bob = PrivateKey.generate()

    @Test func backToBackCompletesAndCiphersInteroperate() throws {
        var initiator = NoiseHandshake(role: .initiator, identity: alice, expectedRemotePeer: bob.peerID)
        var responder = NoiseHandshake(role: .responder, identity: bob)
        let run = try #require(runHandshake(&initiator, &responder))

        #expect(run.initiator.remotePeer == bob.peerID)
        #expect(run.responder.remotePeer == alice.peerID)
        #expect(run.initiator.remotePublicKey == bob.publicKey)
        #expect(run.responder.remotePublicKey == alice.publicKey)
        #expect(run.initiator.remoteStaticKey == responder.localStaticKey)
        #expect(run.responder.remoteStaticKey == initiator.localStaticKey)
        #expect(run.initiator.handshakeHash == run.responder.handshakeHash)
        #expect(run.initiator.handshakeHash.count == 32)
        #expect(initiator.isCompleted && responder.isCompleted)
        // Message sizes: e (32), e + enc s (80) + enc payload, enc s (48) + enc payload.
        #expect(run.messages[0].count == 32)
        // With Ed25519 identities the payload is 104 bytes (120 encrypted).
        #expect(run.messages[1].count == 32 + 48 + 120)
        #expect(run.messages[2].count == 48 + 120)

        var a = run.initiator
        var b = run.responder
        for i in 0..<5 {
            let message = Array("message \(i) from alice".utf8)
            let sealed = try a.sendingCipher.encrypt(message)
            #expect(sealed.count == message.count + 16)
            #expect(try b.receivingCipher.decrypt(sealed) == message)
            let reply = Array("reply \(i)".utf8)
            #expect(try a.receivingCipher.decrypt(try b.sendingCipher.encrypt(reply)) == reply)
        }
        #expect(a.sendingCipher.nonce == 5 && b.receivingCipher.nonce == 5)
        // The two directions use different keys.
        var a2 = run.initiator
        let sealed = try a2.sendingCipher.encrypt([1, 2, 3])
        var a3 = run.initiator
        #expect(throws: SecurityError.decryptFailed) { try a3.receivingCipher.decrypt(sealed) }
    }

    @Test func handshakeHashDependsOnPrologue() throws {
        var i1 = NoiseHandshake(role: .initiator, identity: alice, prologue: [1])
        var r1 = NoiseHandshake(role: .responder, identity: bob, prologue: [2])
        let m1 = try #require(sentMessage(i1.start()))
        _ = r1.start()
        let m2 = try #require(sentMessage(r1.onMessage(m1)))
        // Different prologues: the initiator cannot decrypt the responder's static key.
        #expect(failure(i1.onMessage(m2)) == .decryptFailed)
    }

    @Test func responderMayAlsoExpectAPeer() throws {
        var initiator = NoiseHandshake(role: .initiator, identity: alice)
        var responder = NoiseHandshake(role: .responder, identity: bob, expectedRemotePeer: alice.peerID)
        #expect(runHandshake(&initiator, &responder) != nil)
    }

    @Test func peerIDMismatchOnInitiator() throws {
        let other = PrivateKey.generate().peerID
        var initiator = NoiseHandshake(role: .initiator, identity: alice, expectedRemotePeer: other)
        var responder = NoiseHandshake(role: .responder, identity: bob)
        _ = responder.start()
        let m1 = try #require(sentMessage(initiator.start()))
        let m2 = try #require(sentMessage(responder.onMessage(m1)))
        #expect(failure(initiator.onMessage(m2)) == .peerIDMismatch(expected: other, actual: bob.peerID))
        #expect(failure(initiator.onMessage(m2)) == .unexpectedMessage("handshake message after the handshake failed"))
    }

    @Test func peerIDMismatchOnResponder() throws {
        let other = PrivateKey.generate().peerID
        var initiator = NoiseHandshake(role: .initiator, identity: alice)
        var responder = NoiseHandshake(role: .responder, identity: bob, expectedRemotePeer: other)
        _ = responder.start()
        let m1 = try #require(sentMessage(initiator.start()))
        let m2 = try #require(sentMessage(responder.onMessage(m1)))
        let a2 = initiator.onMessage(m2)
        guard case .send(let m3) = a2.first else {
            Issue.record("initiator did not send message 3")
            return
        }
        #expect(failure(responder.onMessage(m3)) == .peerIDMismatch(expected: other, actual: alice.peerID))
    }

    @Test func eventsOutOfOrderFail() throws {
        var initiator = NoiseHandshake(role: .initiator, identity: alice)
        #expect(failure(initiator.onMessage([UInt8](repeating: 1, count: 32))) != nil)

        var responder = NoiseHandshake(role: .responder, identity: bob)
        #expect(responder.start().isEmpty)
        #expect(failure(responder.start()) == .unexpectedMessage("handshake already started"))

        var i2 = NoiseHandshake(role: .initiator, identity: alice)
        var r2 = NoiseHandshake(role: .responder, identity: bob)
        let run = try #require(runHandshake(&i2, &r2))
        #expect(
            failure(r2.onMessage(run.messages[2]))
                == .unexpectedMessage("handshake message after the handshake completed"))
    }

    @Test func oversizeMessageIsRejected() {
        var responder = NoiseHandshake(role: .responder, identity: bob)
        _ = responder.start()
        let big = [UInt8](repeating: 7, count: NoiseHandshake.maxMessageSize + 1)
        #expect(failure(responder.onMessage(big)) == .messageTooLarge(size: 65536, limit: 65535))
        // A message of exactly the maximum size is accepted by message 1 (its payload is ignored).
        var r2 = NoiseHandshake(role: .responder, identity: bob)
        _ = r2.start()
        var max = Array(Curve25519.KeyAgreement.PrivateKey().publicKey.rawRepresentation)
        max += [UInt8](repeating: 0, count: NoiseHandshake.maxMessageSize - 32)
        #expect(sentMessage(r2.onMessage(max)) != nil)
    }

    @Test func truncatedMessage1() {
        for length in 0..<32 {
            var responder = NoiseHandshake(role: .responder, identity: bob)
            _ = responder.start()
            let error = failure(responder.onMessage([UInt8](repeating: 9, count: length)))
            #expect(error == .malformedMessage("message 1 is \(length) bytes, need at least 32"))
        }
    }

    @Test func lowOrderEphemeralIsRejected() {
        var responder = NoiseHandshake(role: .responder, identity: bob)
        _ = responder.start()
        #expect(failure(responder.onMessage([UInt8](repeating: 0, count: 32))) == .invalidDHKey)
    }

    @Test func truncatedOrTamperedMessage2() throws {
        var responder = NoiseHandshake(role: .responder, identity: bob)
        var template = NoiseHandshake(role: .initiator, identity: alice)
        _ = responder.start()
        let m1 = try #require(sentMessage(template.start()))
        let m2 = try #require(sentMessage(responder.onMessage(m1)))

        for length in 0..<m2.count {
            var initiator = template
            let error = failure(initiator.onMessage(Array(m2.prefix(length))))
            if length < 96 {
                #expect(error == .malformedMessage("message 2 is \(length) bytes, need at least 96"))
            } else {
                #expect(error == .decryptFailed)
            }
        }
        // A flipped bit anywhere breaks authentication (or, in the ephemeral key, the DH).
        for index in stride(from: 0, to: m2.count, by: 7) {
            var initiator = template
            var tampered = m2
            tampered[index] ^= 0x20
            let error = failure(initiator.onMessage(tampered))
            #expect(error == .decryptFailed || error == .invalidDHKey)
        }
        // Trailing garbage is part of the payload ciphertext: authentication fails.
        var initiator = template
        #expect(failure(initiator.onMessage(m2 + [0])) == .decryptFailed)
        // Garbage of plausible length.
        var i2 = template
        #expect(failure(i2.onMessage([UInt8](repeating: 0x5a, count: m2.count))) == .decryptFailed)
        // The untouched message still works.
        var ok = template
        #expect(completion(ok.onMessage(m2)) != nil)
    }

    @Test func truncatedOrTamperedMessage3() throws {
        var initiator = NoiseHandshake(role: .initiator, identity: alice)
        var template = NoiseHandshake(role: .responder, identity: bob)
        _ = template.start()
        let m1 = try #require(sentMessage(initiator.start()))
        let m2 = try #require(sentMessage(template.onMessage(m1)))
        guard case .send(let m3) = initiator.onMessage(m2).first else {
            Issue.record("no message 3")
            return
        }
        for length in 0..<m3.count {
            var responder = template
            let error = failure(responder.onMessage(Array(m3.prefix(length))))
            if length < 64 {
                #expect(error == .malformedMessage("message 3 is \(length) bytes, need at least 64"))
            } else {
                #expect(error == .decryptFailed)
            }
        }
        for index in 0..<m3.count {
            var responder = template
            var tampered = m3
            tampered[index] ^= 0x01
            #expect(failure(responder.onMessage(tampered)) == .decryptFailed)
        }
        var ok = template
        #expect(completion(ok.onMessage(m3)) != nil)
    }

    // MARK: Forged payloads (a scripted peer encrypts what we tell it to)

    func initiatorVerdict(onPayload payload: (ScriptedNoisePeer) -> [UInt8]) throws -> SecurityError? {
        var initiator = NoiseHandshake(role: .initiator, identity: alice)
        var evil = ScriptedNoisePeer()
        let m1 = try #require(sentMessage(initiator.start()))
        let m2 = try evil.message2(replyingTo: m1, payload: payload(evil))
        return failure(initiator.onMessage(m2))
    }

    func responderVerdict(onPayload payload: (ScriptedNoisePeer) -> [UInt8]) throws -> SecurityError? {
        var responder = NoiseHandshake(role: .responder, identity: bob)
        _ = responder.start()
        var evil = ScriptedNoisePeer()
        let m2 = try #require(sentMessage(responder.onMessage(try evil.message1())))
        let m3 = try evil.message3(replyingTo: m2, payload: payload(evil))
        return failure(responder.onMessage(m3))
    }

    @Test func scriptedPeerWithHonestPayloadSucceeds() throws {
        var initiator = NoiseHandshake(role: .initiator, identity: alice, expectedRemotePeer: bob.peerID)
        var evil = ScriptedNoisePeer()
        let m1 = try #require(sentMessage(initiator.start()))
        let m2 = try evil.message2(replyingTo: m1, payload: evil.payload(identity: bob))
        let result = try #require(completion(initiator.onMessage(m2)))
        #expect(result.remotePeer == bob.peerID)
        #expect(try initiatorVerdict { $0.payload(identity: bob) } == nil)
        #expect(try responderVerdict { $0.payload(identity: alice) } == nil)
    }

    @Test func badSignatureFails() throws {
        let forged: (ScriptedNoisePeer) -> [UInt8] = { peer in
            // Signs some other static key.
            let otherStatic = Array(Curve25519.KeyAgreement.PrivateKey().publicKey.rawRepresentation)
            return NoiseHandshakePayloadMessage(
                identityKey: self.bob.publicKey.marshaled,
                identitySignature: self.bob.signature(for: NoiseHandshake.signaturePrefix + otherStatic)
            ).encoded()
        }
        #expect(try initiatorVerdict(onPayload: forged) == .badSignature)
        #expect(try responderVerdict(onPayload: forged) == .badSignature)

        // Right data, signed by a key other than the one presented.
        let stolen: (ScriptedNoisePeer) -> [UInt8] = { peer in
            NoiseHandshakePayloadMessage(
                identityKey: self.bob.publicKey.marshaled,
                identitySignature: self.alice.signature(for: NoiseHandshake.signaturePrefix + peer.staticPublic)
            ).encoded()
        }
        #expect(try initiatorVerdict(onPayload: stolen) == .badSignature)
        // Signature without the prefix.
        let unprefixed: (ScriptedNoisePeer) -> [UInt8] = { peer in
            NoiseHandshakePayloadMessage(
                identityKey: self.bob.publicKey.marshaled,
                identitySignature: self.bob.signature(for: peer.staticPublic)
            ).encoded()
        }
        #expect(try responderVerdict(onPayload: unprefixed) == .badSignature)
        // Garbage signature bytes.
        let garbage: (ScriptedNoisePeer) -> [UInt8] = { _ in
            NoiseHandshakePayloadMessage(
                identityKey: self.bob.publicKey.marshaled,
                identitySignature: [UInt8](repeating: 1, count: 64)
            ).encoded()
        }
        #expect(try initiatorVerdict(onPayload: garbage) == .badSignature)
    }

    @Test func wrongIdentityKeyTypeFails() throws {
        for type in [KeyMessage.KeyType.rsa, .secp256k1, .ecdsa] {
            let payload: (ScriptedNoisePeer) -> [UInt8] = { _ in
                NoiseHandshakePayloadMessage(
                    identityKey: KeyMessage(type: type, data: [UInt8](repeating: 2, count: 33)).encodedPublicKey(),
                    identitySignature: [UInt8](repeating: 3, count: 64)
                ).encoded()
            }
            #expect(try initiatorVerdict(onPayload: payload) == .unsupportedKeyType(type))
            #expect(try responderVerdict(onPayload: payload) == .unsupportedKeyType(type))
        }
    }

    @Test func malformedIdentityKeyFails() throws {
        let shortKey: (ScriptedNoisePeer) -> [UInt8] = { _ in
            NoiseHandshakePayloadMessage(
                identityKey: KeyMessage(type: .ed25519, data: [UInt8](repeating: 2, count: 31)).encodedPublicKey(),
                identitySignature: [UInt8](repeating: 3, count: 64)
            ).encoded()
        }
        guard case .invalidKey = try initiatorVerdict(onPayload: shortKey) else {
            Issue.record("expected invalidKey")
            return
        }
        let notProtobuf: (ScriptedNoisePeer) -> [UInt8] = { _ in
            NoiseHandshakePayloadMessage(identityKey: [0xff, 0xff, 0xff], identitySignature: [1]).encoded()
        }
        guard case .invalidKey = try responderVerdict(onPayload: notProtobuf) else {
            Issue.record("expected invalidKey")
            return
        }
    }

    @Test func malformedPayloadFails() throws {
        #expect(try initiatorVerdict { _ in [] } == .malformedPayload("no identity_key"))
        #expect(
            try responderVerdict { _ in
                NoiseHandshakePayloadMessage(identityKey: self.alice.publicKey.marshaled).encoded()
            }
                == .malformedPayload("no identity_sig"))
        guard case .malformedPayload = try initiatorVerdict(onPayload: { _ in [0xff, 0xff, 0xff, 0xff] }) else {
            Issue.record("expected malformedPayload")
            return
        }
        guard case .malformedPayload = try responderVerdict(onPayload: { _ in [0x0a, 0x50, 0x01] }) else {
            Issue.record("expected malformedPayload")
            return
        }
    }

    @Test func extensionsInPayloadAreAccepted() throws {
        let withExtensions: (ScriptedNoisePeer) -> [UInt8] = { peer in
            NoiseHandshakePayloadMessage(
                identityKey: self.bob.publicKey.marshaled,
                identitySignature: self.bob.signature(for: NoiseHandshake.signaturePrefix + peer.staticPublic),
                streamMuxers: ["/yamux/1.0.0", "/mplex/6.7.0"],
                webtransportCerthashes: [[1, 2, 3]]
            ).encoded()
        }
        #expect(try initiatorVerdict(onPayload: withExtensions) == nil)
    }
}

@Suite struct NoiseCipherStateTests {
    func pair() -> (NoiseCipherState, NoiseCipherState) {
        let key = (0..<32).map { UInt8($0) }
        return (NoiseCipherState(key: key), NoiseCipherState(key: key))
    }

    @Test func byteBufferAndArrayAgree() throws {
        var (a, b) = pair()
        let plaintext = (0..<1000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let sealed = try a.encrypt(ByteBuffer(bytes: plaintext), ad: [9])
        #expect(sealed.readableBytes == 1016)
        #expect(try b.decrypt(Array(sealed.readableBytesView), ad: [9]) == plaintext)
        // Same nonce, same key, same input: the array path gives the same bytes.
        let (c, _) = pair()
        #expect(try c.encrypt(plaintext, nonce: 0, ad: [9]) == Array(sealed.readableBytesView))
        // Appending into an existing buffer keeps what was there.
        var out = ByteBuffer(bytes: [0xaa, 0xbb])
        try a.encrypt(ByteBuffer(bytes: plaintext), into: &out)
        #expect(out.readableBytes == 2 + 1016)
        #expect(out.getBytes(at: 0, length: 2) == [0xaa, 0xbb])
        out.moveReaderIndex(forwardBy: 2)
        let opened = try b.decrypt(out)
        #expect(Array(opened.readableBytesView) == plaintext)
    }

    @Test func emptyPlaintextIsJustATag() throws {
        var (a, b) = pair()
        let sealed = try a.encrypt([UInt8]())
        #expect(sealed.count == 16)
        #expect(try b.decrypt(sealed).isEmpty)
    }

    @Test func tamperedCiphertextFailsWithoutAdvancingNonce() throws {
        var (a, b) = pair()
        let sealed = try a.encrypt(Array("attack at dawn".utf8))
        for index in sealed.indices {
            var bad = sealed
            bad[index] ^= 0x80
            #expect(throws: SecurityError.decryptFailed) { try b.decrypt(bad) }
        }
        #expect(b.nonce == 0)
        #expect(throws: SecurityError.decryptFailed) { try b.decrypt(sealed, ad: [1]) }
        #expect(throws: SecurityError.decryptFailed) { try b.decrypt(Array(sealed.prefix(15))) }
        #expect(try b.decrypt(sealed) == Array("attack at dawn".utf8))
        #expect(b.nonce == 1)
    }

    @Test func replayedAndReorderedMessagesFail() throws {
        var (a, b) = pair()
        let first = try a.encrypt([1])
        let second = try a.encrypt([2])
        #expect(try b.decrypt(first) == [1])
        #expect(throws: SecurityError.decryptFailed) { try b.decrypt(first) }
        #expect(try b.decrypt(second) == [2])

        var (c, d) = pair()
        let m0 = try c.encrypt([0])
        let m1 = try c.encrypt([1])
        #expect(throws: SecurityError.decryptFailed) { try d.decrypt(m1) }
        #expect(try d.decrypt(m0) == [0])
    }

    @Test func nonceExhaustion() throws {
        let key = [UInt8](repeating: 4, count: 32)
        var sender = NoiseCipherState(key: key, nonce: UInt64.max - 1)
        var receiver = NoiseCipherState(key: key, nonce: UInt64.max - 1)
        let last = try sender.encrypt([42])
        #expect(sender.nonce == UInt64.max)
        #expect(throws: SecurityError.nonceExhausted) { try sender.encrypt([43]) }
        #expect(throws: SecurityError.nonceExhausted) { try sender.encrypt(ByteBuffer(bytes: [43])) }
        #expect(try receiver.decrypt(last) == [42])
        #expect(throws: SecurityError.nonceExhausted) { try receiver.decrypt(last) }
        #expect(throws: SecurityError.nonceExhausted) { try sender.encrypt([1], nonce: UInt64.max) }
    }

    @Test func aeadNonceLayoutMatchesChaChaPoly() throws {
        // Nonce 5 = 00000000 || 05 00 00 00 00 00 00 00.
        let key = SymmetricKey(data: [UInt8](repeating: 1, count: 32))
        let nonce = try ChaChaPoly.Nonce(data: [0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0])
        let box = try ChaChaPoly.seal([1, 2, 3], using: key, nonce: nonce, authenticating: [7])
        let state = NoiseCipherState(key: [UInt8](repeating: 1, count: 32))
        #expect(try state.encrypt([1, 2, 3], nonce: 5, ad: [7]) == Array(box.ciphertext) + Array(box.tag))
    }

    /// The transport AEAD runs on libcrypto; swift-crypto's ChaChaPoly (RFC 8439) is the reference.
    @Test(arguments: [0, 1, 15, 16, 17, 63, 64, 65, 1024, 8192, NoiseFrameEncoder.maxPlaintextPerFrame])
    func sealAndOpenMatchSwiftCrypto(size: Int) throws {
        var generator = SplitMix64(seed: UInt64(size))
        let keyBytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let key = SymmetricKey(data: keyBytes)
        let state = NoiseCipherState(key: keyBytes)
        let plaintext = (0..<size).map { _ in UInt8.random(in: 0...255, using: &generator) }
        for (counter, ad) in [(UInt64(0), [UInt8]()), (0x0102_0304_0506_0708, [UInt8](repeating: 0xAD, count: 32))] {
            var nonceBytes: [UInt8] = [0, 0, 0, 0]
            withUnsafeBytes(of: counter.littleEndian) { nonceBytes += $0 }
            let box = try ChaChaPoly.seal(
                plaintext, using: key, nonce: try ChaChaPoly.Nonce(data: nonceBytes), authenticating: ad)
            let reference = Array(box.ciphertext) + Array(box.tag)
            #expect(try state.encrypt(plaintext, nonce: counter, ad: ad) == reference)
            var buffer = ByteBuffer(bytes: [0xEE])
            try state.encrypt(ByteBuffer(bytes: plaintext), nonce: counter, ad: ad, into: &buffer)
            #expect(Array(buffer.readableBytesView.dropFirst()) == reference)
            #expect(try state.decrypt(reference, nonce: counter, ad: ad) == plaintext)
            #expect(
                Array(try state.decrypt(ByteBuffer(bytes: reference), nonce: counter, ad: ad).readableBytesView)
                    == plaintext)
            // Wrong nonce, wrong AD, a flipped tag bit: all refused, on both paths.
            #expect(throws: SecurityError.decryptFailed) { try state.decrypt(reference, nonce: counter + 1, ad: ad) }
            #expect(throws: SecurityError.decryptFailed) { try state.decrypt(reference, nonce: counter, ad: ad + [1]) }
            var flipped = reference
            flipped[flipped.count - 1] ^= 1
            #expect(throws: SecurityError.decryptFailed) {
                try state.decrypt(ByteBuffer(bytes: flipped), nonce: counter, ad: ad)
            }
        }
    }

    /// Ciphertexts shorter than a tag, and a bare tag that does not verify, are refused on both
    /// paths without reading past the input.
    @Test func truncatedCiphertextsAreRefused() throws {
        let state = NoiseCipherState(key: [UInt8](repeating: 3, count: 32))
        let sealed = try state.encrypt([1, 2, 3], nonce: 0)
        for length in 0..<NoiseCipherState.tagLength + 3 where length != sealed.count {
            let cut = Array(sealed.prefix(length))
            #expect(throws: SecurityError.decryptFailed) { try state.decrypt(cut, nonce: 0) }
            #expect(throws: SecurityError.decryptFailed) { try state.decrypt(ByteBuffer(bytes: cut), nonce: 0) }
        }
        // The empty plaintext's ciphertext is just the tag: accepted, and empty.
        let emptySealed = try state.encrypt([], nonce: 1)
        #expect(emptySealed.count == NoiseCipherState.tagLength)
        #expect(try state.decrypt(emptySealed, nonce: 1).isEmpty)
        #expect(try state.decrypt(ByteBuffer(bytes: emptySealed), nonce: 1).readableBytes == 0)
    }

    /// Copies of a cipher state share one libcrypto context; concurrent use must stay correct.
    @Test func sharedContextUnderConcurrentUse() async throws {
        let key = [UInt8](repeating: 9, count: 32)
        let state = NoiseCipherState(key: key)
        let plaintext = [UInt8](repeating: 0x42, count: 300)
        let expected = try (0..<64).map { try state.encrypt(plaintext, nonce: UInt64($0)) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<4 {
                group.addTask {
                    for round in 0..<200 {
                        let n = (worker * 7 + round) % 64
                        let sealed = try state.encrypt(plaintext, nonce: UInt64(n))
                        guard sealed == expected[n], try state.decrypt(sealed, nonce: UInt64(n)) == plaintext else {
                            throw SecurityError.decryptFailed
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    @Test func hkdfMatchesRFC5869Construction() {
        // Noise HKDF(ck, ikm) equals RFC 5869 HKDF-SHA256 with salt = ck, empty info, 64 bytes.
        let ck = (0..<32).map { UInt8($0) }
        let ikm = (100..<140).map { UInt8($0) }
        let (o1, o2) = NoiseSymmetricState.hkdf(chainingKey: ck, inputKeyMaterial: ikm)
        let reference = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: ikm),
            salt: ck,
            info: [UInt8](),
            outputByteCount: 64
        )
        #expect(reference.withUnsafeBytes { Array($0) } == o1 + o2)
    }
}
