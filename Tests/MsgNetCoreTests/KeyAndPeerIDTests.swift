import MsgNetControl
import MsgNetTestSupport
import Testing

@testable import MsgNetCore

/// Known answers computed independently with py-libp2p 0.8.1 (`vectors/make_vectors.py`).
struct KeyVector: Sendable, CustomStringConvertible {
    var label: String
    var seed: String
    var publicRaw: String
    var publicMarshaled: String
    /// py-libp2p writes the bare 32-byte seed.
    var privatePy: String
    /// go-libp2p writes seed ‖ public key (64 bytes); so does MsgNet.
    var privateGoStyle: String
    var peerID: String
    var peerIDBytes: String
    /// Ed25519 signature over ``KeyVector/signedData``.
    var signature: String

    static let signedData = Array("msgnet test vector".utf8)

    var description: String { label }

    static let all: [KeyVector] = [
        KeyVector(
            label: "sha256(demo)",
            seed: "2a97516c354b68848cdbd8f54a226a0a55b21ed138e207ad6c5cbb9c00aa5aea",
            publicRaw: "a5e9e2d4733e643d6a6e19b749e283951e564c1de4f3b39c55611686a0ddda8a",
            publicMarshaled: "08011220a5e9e2d4733e643d6a6e19b749e283951e564c1de4f3b39c55611686a0ddda8a",
            privatePy: "080112202a97516c354b68848cdbd8f54a226a0a55b21ed138e207ad6c5cbb9c00aa5aea",
            privateGoStyle:
                "080112402a97516c354b68848cdbd8f54a226a0a55b21ed138e207ad6c5cbb9c00aa5aea"
                + "a5e9e2d4733e643d6a6e19b749e283951e564c1de4f3b39c55611686a0ddda8a",
            peerID: "12D3KooWLz2HiHrG5tMXb3yCEJiBb16ZrFu5gQWizWFudTdMHqgu",
            peerIDBytes: "002408011220a5e9e2d4733e643d6a6e19b749e283951e564c1de4f3b39c55611686a0ddda8a",
            signature:
                "2ab39315b6d6c3b0990d59638ef9cd088ddcdaa8f8409b17259d3744472011917bfc394205e9fe7cca3d4b5dbae5e6e4"
                + "45f3fd1c5f69eebcdc353486947f5d02"
        ),
        KeyVector(
            label: "sha256(msgnet)",
            seed: "befa2bad0e0920e0a0079ef1e59c6aa0939c00f764486c6567b391eb9d3716fb",
            publicRaw: "68891a3187d273acc2d4527560b437b83e501f66da123ac6abf680e2f41e84a0",
            publicMarshaled: "0801122068891a3187d273acc2d4527560b437b83e501f66da123ac6abf680e2f41e84a0",
            privatePy: "08011220befa2bad0e0920e0a0079ef1e59c6aa0939c00f764486c6567b391eb9d3716fb",
            privateGoStyle:
                "08011240befa2bad0e0920e0a0079ef1e59c6aa0939c00f764486c6567b391eb9d3716fb"
                + "68891a3187d273acc2d4527560b437b83e501f66da123ac6abf680e2f41e84a0",
            peerID: "12D3KooWGrRpi3dCYaJsF5KBeyRtbsRt3d6qFYwk759ZmXh77whh",
            peerIDBytes: "00240801122068891a3187d273acc2d4527560b437b83e501f66da123ac6abf680e2f41e84a0",
            signature:
                "a85b6be662204489b5ae13a8465ed8faad39763a337ac9340b0ca21a603c80b5ed6187b4abcf53da120a82622ac87f2a"
                + "8924e4306c84a17d20ca267f3d746803"
        ),
    ]
}

@Suite struct KeyKnownAnswerTests {
    @Test(arguments: KeyVector.all)
    func keysFromSeedMatchPyLibp2p(_ v: KeyVector) throws {
        let key = try PrivateKey(seed: hex(v.seed))
        #expect(key.seed == hex(v.seed))
        #expect(key.publicKey.type == .ed25519)
        #expect(key.publicKey.rawBytes == hex(v.publicRaw))
        #expect(key.publicKey.marshaled == hex(v.publicMarshaled))
        #expect(key.marshaled == hex(v.privateGoStyle))
        #expect(key.peerID.description == v.peerID)
        #expect(key.peerID.bytes == hex(v.peerIDBytes))
    }

    @Test(arguments: KeyVector.all)
    func signaturesMatchPyLibp2p(_ v: KeyVector) throws {
        let key = try PrivateKey(seed: hex(v.seed))
        let signature = key.signature(for: KeyVector.signedData)
        #expect(signature == hex(v.signature))
        #expect(key.publicKey.isValidSignature(hex(v.signature), for: KeyVector.signedData))
        var tampered = hex(v.signature)
        tampered[10] ^= 0x01
        #expect(!key.publicKey.isValidSignature(tampered, for: KeyVector.signedData))
        #expect(!key.publicKey.isValidSignature(hex(v.signature), for: KeyVector.signedData + [0]))
    }

    @Test(arguments: KeyVector.all)
    func marshaledKeysDecode(_ v: KeyVector) throws {
        let fromPy = try PrivateKey(marshaled: hex(v.privatePy))
        let fromGo = try PrivateKey(marshaled: hex(v.privateGoStyle))
        #expect(fromPy.seed == hex(v.seed) && fromGo.seed == hex(v.seed))
        #expect(fromPy.peerID.description == v.peerID)
        let publicKey = try PublicKey(marshaled: hex(v.publicMarshaled))
        #expect(publicKey == fromGo.publicKey)
        #expect(publicKey.peerID.description == v.peerID)
    }

    @Test(arguments: KeyVector.all)
    func peerIDTextRoundTripsAndRecoversKey(_ v: KeyVector) throws {
        let id = try PeerID(v.peerID)
        #expect(id.description == v.peerID)
        #expect(id.bytes == hex(v.peerIDBytes))
        #expect(try PeerID(bytes: hex(v.peerIDBytes)) == id)
        let key = try #require(id.publicKey)
        #expect(key.rawBytes == hex(v.publicRaw))
        #expect(id.matches(key))
        #expect(!id.matches(PrivateKey.generate().publicKey))
    }
}

@Suite struct KeyTests {
    @Test func generatedKeysSignAndVerify() throws {
        let key = PrivateKey.generate()
        let data = Array("hello".utf8)
        #expect(key.publicKey.isValidSignature(key.signature(for: data), for: data))
        let restored = try PrivateKey(marshaled: key.marshaled)
        #expect(restored.seed == key.seed && restored.publicKey == key.publicKey)
        #expect(try PublicKey(marshaled: key.publicKey.marshaled) == key.publicKey)
        #expect(PrivateKey.generate().peerID != key.peerID)
    }

    @Test func badSeedsAndKeysAreRejected() {
        #expect(throws: CoreError.self) { try PrivateKey(seed: [UInt8](repeating: 1, count: 31)) }
        #expect(throws: CoreError.self) { try PrivateKey(seed: [UInt8](repeating: 1, count: 33)) }
        #expect(throws: CoreError.self) { try PublicKey(type: .ed25519, rawBytes: [UInt8](repeating: 1, count: 31)) }
        #expect(throws: CoreError.self) { try PublicKey(type: .rsa, rawBytes: []) }
    }

    @Test func malformedMarshaledKeysAreRejected() throws {
        let v = KeyVector.all[0]
        // Not protobuf.
        #expect(throws: CoreError.self) { try PublicKey(marshaled: [0xFF, 0xFF, 0xFF]) }
        // Ed25519 key with 31 bytes.
        #expect(throws: CoreError.self) { try PublicKey(marshaled: hex("0801121f") + [UInt8](repeating: 7, count: 31)) }
        // Unknown key type 9.
        #expect(throws: CoreError.self) { try PublicKey(marshaled: hex("08091201aa")) }
        // Truncated.
        #expect(throws: CoreError.self) { try PublicKey(marshaled: hex(v.publicMarshaled).dropLast()) }
        // Private key whose public half does not belong to the seed.
        var mismatched = hex(v.privateGoStyle)
        mismatched[mismatched.count - 1] ^= 0x01
        #expect(throws: CoreError.self) { try PrivateKey(marshaled: mismatched) }
        // Non-Ed25519 private keys are not supported.
        #expect(throws: CoreError.self) { try PrivateKey(marshaled: hex("08021220") + hex(v.seed)) }
        // Wrong private key length.
        #expect(throws: CoreError.self) { try PrivateKey(marshaled: hex("08011210") + hex(v.seed).prefix(16)) }
    }

    @Test func largeKeysHashIntoSHA256PeerIDs() throws {
        let key = try PublicKey(type: .rsa, rawBytes: [UInt8](repeating: 0x42, count: 270))
        let id = key.peerID
        #expect(id.bytes.count == 34)
        #expect(id.bytes.prefix(2) == [0x12, 0x20])
        #expect(id.description.hasPrefix("Qm"))
        #expect(id.publicKey == nil)
        #expect(id.matches(key))
        #expect(try PeerID(id.description) == id)
    }
}

@Suite struct PeerIDTests {
    /// Examples from the libp2p peer-id spec.
    @Test func specExamplesParse() throws {
        let sha = try PeerID("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N")
        #expect(sha.bytes == hex("12209dff3b17d74cf4d38a50d8b6383e92d181a10395a5e73a726dcccbd21bf6f0b9"))
        #expect(sha.publicKey == nil)
        let ed = try PeerID("12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA")
        #expect(ed.bytes == hex("0024080112202ffa35a99d3a3cfbb17bb7c1dc5561b18a8dcca4df38dc613ea859c37eb1336b"))
        let key = try #require(ed.publicKey)
        #expect(key.type == .ed25519)
        #expect(key.rawBytes == hex("2ffa35a99d3a3cfbb17bb7c1dc5561b18a8dcca4df38dc613ea859c37eb1336b"))
        #expect(ed.description == "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA")
    }

    static let validBytes = hex(KeyVector.all[0].peerIDBytes)

    static let malformedBytes: [(String, [UInt8])] = [
        ("empty", []),
        ("truncated code", [0x80]),
        ("truncated length", [0x12]),
        ("non-minimal code varint", [0x80, 0x00, 0x20] + [UInt8](repeating: 0, count: 32)),
        ("wrong identity length (short)", [0x00, 0x23] + Array(validBytes.dropFirst(2))),
        ("wrong identity length (long)", [0x00, 0x25] + Array(validBytes.dropFirst(2))),
        ("sha2-256 with 31 bytes", [0x12, 0x1F] + [UInt8](repeating: 1, count: 31)),
        ("sha2-256 length mismatch", [0x12, 0x20] + [UInt8](repeating: 1, count: 31)),
        ("unknown code sha2-512", [0x13, 0x40] + [UInt8](repeating: 1, count: 64)),
        ("unknown code 0x7f", [0x7F, 0x02, 0x01, 0x02]),
        ("identity of garbage", [0x00, 0x05, 0x01, 0x02, 0x03, 0x04, 0x05]),
        ("identity of empty key", [0x00, 0x00]),
        ("identity of bad Ed25519 length", [0x00, 0x06, 0x08, 0x01, 0x12, 0x02, 0xAA, 0xBB]),
        ("too long", [0x00, 0x81, 0x01] + [UInt8](repeating: 0, count: 129)),
    ]

    @Test func malformedBytesAreRejected() {
        for (name, bytes) in Self.malformedBytes {
            #expect(throws: CoreError.self, "\(name)") { try PeerID(bytes: bytes) }
            do {
                _ = try PeerID(bytes: bytes)
            } catch {
                #expect(error.kind == .peerID || error.kind == .key, "\(name): \(error)")
            }
            // The same bytes as text.
            if !bytes.isEmpty {
                #expect(throws: CoreError.self, "\(name) as text") { try PeerID(Base58.encode(bytes)) }
            }
        }
    }

    @Test func hugeInputIsRejectedWithoutCopyingIt() {
        let huge = (0..<Int.max).lazy.map { _ in UInt8(0) }
        #expect(throws: CoreError(.peerID, "longer than 128 bytes")) { try PeerID(bytes: huge) }
        #expect(throws: CoreError.self) { try PeerID(String(repeating: "2", count: 5000)) }
    }

    @Test(arguments: [
        "", "0", "12D3KooW0000", "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5",
        "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5NN",
        "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5S", "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SAA",
        "bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqxe",
        " 12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",
    ])
    func malformedTextIsRejected(_ text: String) {
        #expect(throws: CoreError.self) { try PeerID(text) }
    }

    @Test func orderingAndHashingFollowBytes() throws {
        let a = try PeerID("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N")
        let b = try PeerID("12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA")
        #expect(b < a)  // 0x00… sorts before 0x12…
        #expect(Set([a, b, try PeerID(a.description)]).count == 2)
    }
}
