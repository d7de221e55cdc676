import MsgNetTestSupport
import Testing

@testable import MsgNetControl

/// Decoding `bytes` with `decode` either succeeds or throws a `ControlError` (anything else
/// is a test failure); returns the result.
func decodeOrError<T>(_ bytes: [UInt8], _ decode: ([UInt8]) throws(ControlError) -> T) -> Result<T, ControlError> {
    do {
        return .success(try decode(bytes))
    } catch {
        #expect(!error.reason.isEmpty)
        return .failure(error)
    }
}

@Suite struct KeyMessageTests {
    static let ed25519Public = hex("08011220a5e9e2d4733e643d6a6e19b749e283951e564c1de4f3b39c55611686a0ddda8a")

    @Test func publicKeyRoundTripsForEveryType() throws {
        for type in [KeyMessage.KeyType.rsa, .ed25519, .secp256k1, .ecdsa] {
            let message = KeyMessage(type: type, data: Array(0..<33))
            let encoded = message.encodedPublicKey()
            #expect(try KeyMessage(publicKeyBytes: encoded) == message)
            #expect(try KeyMessage(privateKeyBytes: message.encodedPrivateKey()) == message)
        }
    }

    @Test func publicKeyEncodingIsDeterministicAndMatchesLibp2p() throws {
        let message = try KeyMessage(publicKeyBytes: Self.ed25519Public)
        #expect(message.type == .ed25519)
        #expect(message.data == Array(Self.ed25519Public.dropFirst(4)))
        #expect(message.encodedPublicKey() == Self.ed25519Public)
        // Type 0 (RSA) is still written: the field is required.
        #expect(KeyMessage(type: .rsa, data: [0xAA]).encodedPublicKey() == hex("08001201aa"))
    }

    @Test func malformedKeysAreRejected() {
        let cases: [(String, [UInt8])] = [
            ("unknown key type 7", hex("08071201aa")),
            ("unknown key type 0xFFFFFFFF", hex("08ffffffff0f1201aa")),
            ("missing data", hex("0801")),
            ("missing type", hex("1201aa")),
            ("truncated data", Array(Self.ed25519Public.dropLast())),
            ("garbage", [0xFF, 0xFF, 0xFF, 0xFF]),
            ("wrong wire type", hex("0a0101")),
            ("oversize", [UInt8](repeating: 0, count: KeyMessage.maxEncodedSize + 1)),
        ]
        for (name, bytes) in cases {
            #expect(throws: ControlError.self, "\(name)") { try KeyMessage(publicKeyBytes: bytes) }
            #expect(throws: ControlError.self, "\(name)") { try KeyMessage(privateKeyBytes: bytes) }
        }
        do {
            _ = try KeyMessage(publicKeyBytes: hex("08071201aa"))
        } catch {
            #expect(error.message == "PublicKey")
            #expect(error.reason.contains("unknown key type 7"))
        }
    }
}

@Suite struct NoiseHandshakePayloadTests {
    @Test func roundTripWithExtensions() throws {
        let message = NoiseHandshakePayloadMessage(
            identityKey: KeyMessageTests.ed25519Public,
            identitySignature: Array(repeating: 0x5A, count: 64),
            streamMuxers: ["/yamux/1.0.0", "/mplex/6.7.0"],
            webtransportCerthashes: [[0x12, 0x20] + Array(repeating: 1, count: 32), [0x01]]
        )
        let decoded = try NoiseHandshakePayloadMessage(bytes: message.encoded())
        #expect(decoded == message)
    }

    @Test func roundTripWithoutOptionalFields() throws {
        let empty = NoiseHandshakePayloadMessage()
        #expect(empty.encoded() == [])
        #expect(try NoiseHandshakePayloadMessage(bytes: []) == empty)
        let keyOnly = NoiseHandshakePayloadMessage(identityKey: [1, 2, 3])
        #expect(try NoiseHandshakePayloadMessage(bytes: keyOnly.encoded()) == keyOnly)
        // Present-but-empty differs from absent.
        let emptyKey = NoiseHandshakePayloadMessage(identityKey: [], identitySignature: [])
        #expect(try NoiseHandshakePayloadMessage(bytes: emptyKey.encoded()) == emptyKey)
    }

    @Test func knownEncoding() throws {
        // identity_key = 01 02, identity_sig = 03, extensions { stream_muxers: "/m" }
        let bytes = hex("0a020102 120103 2204 1202 2f6d")
        let decoded = try NoiseHandshakePayloadMessage(bytes: bytes)
        #expect(
            decoded == NoiseHandshakePayloadMessage(identityKey: [1, 2], identitySignature: [3], streamMuxers: ["/m"]))
        #expect(decoded.encoded() == bytes)
    }

    @Test func everyTruncationDecodesToAPrefixOrFails() {
        let bytes = NoiseHandshakePayloadMessage(
            identityKey: KeyMessageTests.ed25519Public,
            identitySignature: Array(repeating: 0x5A, count: 64),
            streamMuxers: ["/mplex/6.7.0"]
        ).encoded()
        var failures = 0
        for cut in 0..<bytes.count {
            let prefix = Array(bytes.prefix(cut))
            switch decodeOrError(prefix, { (b) throws(ControlError) in try NoiseHandshakePayloadMessage(bytes: b) }) {
            case .success(let message): #expect(message.encoded() == prefix, "cut at \(cut)")
            case .failure: failures += 1
            }
        }
        #expect(failures > bytes.count / 2)
    }

    @Test func malformedPayloadsAreRejected() {
        let cases: [(String, [UInt8])] = [
            ("invalid UTF-8 muxer", hex("2204 1202 fffe")),
            ("truncated key", hex("0a0501")),
            ("truncated extensions", hex("2205 1202")),
            ("length varint overflow", hex("0affffffffffffffffffff01")),
            ("garbage", [0xFF, 0x00, 0xFF]),
            ("oversize", [UInt8](repeating: 0, count: NoiseHandshakePayloadMessage.maxEncodedSize + 1)),
        ]
        for (name, bytes) in cases {
            #expect(throws: ControlError.self, "\(name)") { try NoiseHandshakePayloadMessage(bytes: bytes) }
        }
    }
}

@Suite struct PlaintextExchangeTests {
    @Test func roundTrips() throws {
        let key = KeyMessage(type: .ed25519, data: Array(KeyMessageTests.ed25519Public.dropFirst(4)))
        let full = PlaintextExchangeMessage(id: [0x00, 0x24] + KeyMessageTests.ed25519Public, publicKey: key)
        #expect(try PlaintextExchangeMessage(bytes: full.encoded()) == full)
        let empty = PlaintextExchangeMessage(id: nil, publicKey: nil)
        #expect(try PlaintextExchangeMessage(bytes: empty.encoded()) == empty)
        let idOnly = PlaintextExchangeMessage(id: [1], publicKey: nil)
        #expect(try PlaintextExchangeMessage(bytes: idOnly.encoded()) == idOnly)
    }

    @Test func everyTruncationOfAnExchangeFailsOrIsAPrefix() {
        let key = KeyMessage(type: .ed25519, data: Array(KeyMessageTests.ed25519Public.dropFirst(4)))
        let bytes = PlaintextExchangeMessage(id: [0x00, 0x24] + KeyMessageTests.ed25519Public, publicKey: key).encoded()
        for cut in 0..<bytes.count {
            let prefix = Array(bytes.prefix(cut))
            if case .success(let message) = decodeOrError(
                prefix, { (b) throws(ControlError) in try PlaintextExchangeMessage(bytes: b) })
            {
                #expect(message.encoded() == prefix, "cut at \(cut)")
            }
        }
        // Cutting inside the embedded key always fails (its fields are required or truncated).
        #expect(throws: ControlError.self) { try PlaintextExchangeMessage(bytes: bytes.dropLast()) }
    }

    @Test func malformedExchangesAreRejected() {
        let cases: [(String, [UInt8])] = [
            ("unknown key type", hex("1205 0809 1201aa")),
            ("key missing data", hex("1202 0801")),
            ("truncated id", hex("0a03 0102")),
            ("garbage", [0x0F]),
            ("oversize", [UInt8](repeating: 0, count: PlaintextExchangeMessage.maxEncodedSize + 1)),
        ]
        for (name, bytes) in cases {
            #expect(throws: ControlError.self, "\(name)") { try PlaintextExchangeMessage(bytes: bytes) }
        }
    }
}

@Suite struct IdentifyMessageTests {
    static let full = IdentifyMessage(
        protocolVersion: "ipfs/0.1.0",
        agentVersion: "msgnet/0.1.0 (ünïcode)",
        publicKey: KeyMessageTests.ed25519Public,
        listenAddrs: [hex("047f000001060fa1"), hex("2900000000000000000000000000000001910204d2cd03")],
        observedAddr: hex("040a00000206d903"),
        protocols: ["/ipfs/id/1.0.0", "/ipfs/ping/1.0.0", "/chat/1.0.0", ""],
        signedPeerRecord: [0x01, 0x02, 0x03]
    )

    @Test func roundTripWithAllFields() throws {
        #expect(try IdentifyMessage(bytes: Self.full.encoded()) == Self.full)
    }

    @Test func roundTripEmpty() throws {
        let empty = IdentifyMessage()
        #expect(empty.encoded() == [])
        #expect(try IdentifyMessage(bytes: []) == empty)
    }

    @Test func invalidUTF8IsRejected() {
        // protocolVersion (field 5), agentVersion (6), protocols (3) with a bad sequence.
        for bytes in [hex("2a02c328"), hex("3201ff"), hex("1a03612fff")] {
            do {
                _ = try IdentifyMessage(bytes: bytes)
                Issue.record("accepted \(bytes)")
            } catch {
                #expect(error.message == "Identify")
                #expect(error.reason.contains("UTF-8"))
            }
        }
    }

    @Test func oversizeIsRejectedBeforeParsing() {
        let big = [UInt8](repeating: 0, count: IdentifyMessage.maxEncodedSize + 1)
        do {
            _ = try IdentifyMessage(bytes: big)
            Issue.record("accepted oversize")
        } catch {
            #expect(error.reason.contains("exceeds the limit"))
        }
    }

    @Test func everyTruncationDecodesToAPrefixOrFails() {
        let bytes = Self.full.encoded()
        var failures = 0
        for cut in 0..<bytes.count {
            let prefix = Array(bytes.prefix(cut))
            switch decodeOrError(prefix, { (b) throws(ControlError) in try IdentifyMessage(bytes: b) }) {
            case .success(let message):
                // Only cuts at field boundaries decode, and then to exactly those fields.
                #expect(message.encoded() == prefix, "cut at \(cut)")
            case .failure:
                failures += 1
            }
        }
        #expect(failures > bytes.count / 2)
    }

    @Test func randomBytesNeverCrash() throws {
        var rng = SplitMix64(seed: 0x1D)
        let valid = Self.full.encoded()
        for round in 0..<3_000 {
            var input: [UInt8]
            if round % 2 == 0 {
                input = (0..<Int.random(in: 0...80, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            } else {
                input = valid
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    input[Int.random(in: 0..<input.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                }
            }
            let result = decodeOrError(input, { (b) throws(ControlError) in try IdentifyMessage(bytes: b) })
            if case .success(let message) = result {
                // Whatever decodes re-encodes to something that decodes to the same value.
                #expect(try IdentifyMessage(bytes: message.encoded()) == message)
            }
            _ = decodeOrError(input, { (b) throws(ControlError) in try NoiseHandshakePayloadMessage(bytes: b) })
            _ = decodeOrError(input, { (b) throws(ControlError) in try PlaintextExchangeMessage(bytes: b) })
            _ = decodeOrError(input, { (b) throws(ControlError) in try KeyMessage(publicKeyBytes: b) })
        }
    }
}

@Suite struct PyLibp2pIdentifyTests {
    /// An Identify message built with py-libp2p 0.8.1's generated protobuf module
    /// (`Tests/MsgNetCoreTests/vectors/make_vectors.py`).
    static let pyIdentify = hex(
        "0a2408011220a5e9e2d4733e643d6a6e19b749e283951e564c1de4f3b39c55611686a0ddda8a1208047f000001060fa1121729"
            + "0000000000000000000000000000000191020fa1cd031a0e2f697066732f69642f312e302e301a102f697066732f70696e67"
            + "2f312e302e301a0b2f6563686f2f312e302e302208040a00000206d9032a0a697066732f302e312e30320f70792d6c6962"
            + "7032702f302e382e31421101026f70617175652d656e76656c6f7065"
    )

    @Test func decodesToTheExpectedFields() throws {
        let message = try IdentifyMessage(bytes: Self.pyIdentify)
        #expect(message.protocolVersion == "ipfs/0.1.0")
        #expect(message.agentVersion == "py-libp2p/0.8.1")
        #expect(message.publicKey == KeyMessageTests.ed25519Public)
        #expect(
            message.listenAddrs == [hex("047f000001060fa1"), hex("290000000000000000000000000000000191020fa1cd03")])
        #expect(message.observedAddr == hex("040a00000206d903"))
        #expect(message.protocols == ["/ipfs/id/1.0.0", "/ipfs/ping/1.0.0", "/echo/1.0.0"])
        #expect(message.signedPeerRecord == Array("\u{01}\u{02}opaque-envelope".utf8))
        let key = try KeyMessage(publicKeyBytes: try #require(message.publicKey))
        #expect(key.type == .ed25519 && key.data.count == 32)
    }

    @Test func reEncodesToTheSameBytes() throws {
        // Both sides write fields in field-number order, so the encodings agree byte for byte.
        #expect(try IdentifyMessage(bytes: Self.pyIdentify).encoded() == Self.pyIdentify)
    }
}
