import Crypto

/// The Noise `SymmetricState` for SHA256 (Noise Protocol Framework rev 34, section 5.2):
/// chaining key `ck`, handshake hash `h`, and the handshake cipher (absent until the first MixKey).
struct NoiseSymmetricState: Sendable {
    static let hashLength = 32

    private(set) var chainingKey: [UInt8]
    private(set) var handshakeHash: [UInt8]
    private var cipher: NoiseCipherState?

    /// InitializeSymmetric(protocolName): `h` = name zero-padded to 32 bytes (or its SHA256 when
    /// longer), `ck = h`, no key.
    init(protocolName: String) {
        let name = Array(protocolName.utf8)
        if name.count <= Self.hashLength {
            handshakeHash = name + [UInt8](repeating: 0, count: Self.hashLength - name.count)
        } else {
            handshakeHash = Array(SHA256.hash(data: name))
        }
        chainingKey = handshakeHash
        cipher = nil
    }

    /// MixHash(data): `h = SHA256(h || data)`.
    mutating func mixHash(_ data: [UInt8]) {
        var hasher = SHA256()
        hasher.update(data: handshakeHash)
        hasher.update(data: data)
        handshakeHash = Array(hasher.finalize())
    }

    /// MixKey(ikm): `ck, k = HKDF(ck, ikm)`; the cipher restarts at nonce 0.
    mutating func mixKey(_ inputKeyMaterial: [UInt8]) {
        let (ck, k) = Self.hkdf(chainingKey: chainingKey, inputKeyMaterial: inputKeyMaterial)
        chainingKey = ck
        cipher = NoiseCipherState(key: k)
    }

    /// EncryptAndHash(plaintext): encrypts with `h` as associated data when a key is set
    /// (else passes through), then mixes the result into `h`.
    mutating func encryptAndHash(_ plaintext: [UInt8]) throws(SecurityError) -> [UInt8] {
        let output: [UInt8]
        if cipher != nil {
            output = try cipher!.encrypt(plaintext, ad: handshakeHash)
        } else {
            output = plaintext
        }
        mixHash(output)
        return output
    }

    /// DecryptAndHash(ciphertext): the inverse of ``encryptAndHash(_:)``; mixes the ciphertext.
    mutating func decryptAndHash(_ ciphertext: [UInt8]) throws(SecurityError) -> [UInt8] {
        let output: [UInt8]
        if cipher != nil {
            output = try cipher!.decrypt(ciphertext, ad: handshakeHash)
        } else {
            output = ciphertext
        }
        mixHash(ciphertext)
        return output
    }

    /// Whether a key has been mixed in (so payloads and static keys are encrypted).
    var hasKey: Bool { cipher != nil }

    /// Split(): the initiator-to-responder and responder-to-initiator cipher states.
    func split() -> (NoiseCipherState, NoiseCipherState) {
        let (k1, k2) = Self.hkdf(chainingKey: chainingKey, inputKeyMaterial: [])
        return (NoiseCipherState(key: k1), NoiseCipherState(key: k2))
    }

    /// Noise HKDF with two outputs (HMAC-SHA256):
    /// `t = HMAC(ck, ikm)`, `o1 = HMAC(t, 0x01)`, `o2 = HMAC(t, o1 || 0x02)`.
    static func hkdf(chainingKey: [UInt8], inputKeyMaterial: [UInt8]) -> ([UInt8], [UInt8]) {
        let temp = SymmetricKey(
            data: HMAC<SHA256>.authenticationCode(for: inputKeyMaterial, using: SymmetricKey(data: chainingKey)))
        let out1 = Array(HMAC<SHA256>.authenticationCode(for: [0x01], using: temp))
        var mac = HMAC<SHA256>(key: temp)
        mac.update(data: out1)
        mac.update(data: [0x02])
        let out2 = Array(mac.finalize())
        return (out1, out2)
    }
}
