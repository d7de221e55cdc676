import Crypto
import NIOCore

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// A Noise `CipherState` for ChaChaPoly: a 32-byte key and a 64-bit nonce counter.
///
/// Each ``encrypt(_:ad:)`` / ``decrypt(_:ad:)`` uses the current nonce and then increments it,
/// so a nonce is never used twice. The nonce `2^64 - 1` is reserved by the Noise spec; once the
/// counter reaches it every call throws ``SecurityError/nonceExhausted``. A failed decryption
/// does not advance the nonce.
///
/// The AEAD nonce is 4 zero bytes followed by the counter as a 64-bit little-endian integer.
/// Ciphertexts are `encrypted payload || 16-byte Poly1305 tag`.
public struct NoiseCipherState: Sendable {
    /// Bytes a ciphertext adds to its plaintext (the Poly1305 tag).
    public static let tagLength = 16
    /// The largest nonce that may be used; the next one (`2^64 - 1`) is reserved.
    static let maxNonce = UInt64.max - 1
    /// ChaChaPoly nonce bytes: 4 zero bytes and a little-endian UInt64.
    static let aeadNonceLength = 12

    private let key: NoiseKey
    /// The nonce the next operation will use.
    public private(set) var nonce: UInt64

    /// A cipher state with a 32-byte key, starting at `nonce`.
    init(key: [UInt8], nonce: UInt64 = 0) {
        precondition(key.count == 32, "ChaChaPoly keys are 32 bytes")
        self.key = NoiseKey(SymmetricKey(data: key))
        self.nonce = nonce
    }

    // MARK: Counter-based (stream) use

    /// Encrypts `plaintext` with the current nonce, then advances the nonce.
    public mutating func encrypt(_ plaintext: [UInt8], ad: [UInt8] = []) throws(SecurityError) -> [UInt8] {
        let result = try encrypt(plaintext, nonce: nonce, ad: ad)
        nonce += 1
        return result
    }

    /// Encrypts the readable bytes of `plaintext` with the current nonce and appends
    /// `ciphertext || tag` to `output`, then advances the nonce.
    public mutating func encrypt(
        _ plaintext: ByteBuffer,
        ad: [UInt8] = [],
        into output: inout ByteBuffer
    ) throws(SecurityError) {
        try encrypt(plaintext, nonce: nonce, ad: ad, into: &output)
        nonce += 1
    }

    /// Encrypts the readable bytes of `plaintext` with the current nonce, then advances the nonce.
    public mutating func encrypt(_ plaintext: ByteBuffer, ad: [UInt8] = []) throws(SecurityError) -> ByteBuffer {
        var output = ByteBuffer()
        output.reserveCapacity(plaintext.readableBytes + Self.tagLength)
        try encrypt(plaintext, ad: ad, into: &output)
        return output
    }

    /// Decrypts and authenticates `ciphertext` (payload and tag) with the current nonce; advances
    /// the nonce only on success.
    public mutating func decrypt(_ ciphertext: [UInt8], ad: [UInt8] = []) throws(SecurityError) -> [UInt8] {
        let result = try decrypt(ciphertext, nonce: nonce, ad: ad)
        nonce += 1
        return result
    }

    /// Decrypts and authenticates the readable bytes of `ciphertext` with the current nonce;
    /// advances the nonce only on success.
    public mutating func decrypt(_ ciphertext: ByteBuffer, ad: [UInt8] = []) throws(SecurityError) -> ByteBuffer {
        let result = try decrypt(ciphertext, nonce: nonce, ad: ad)
        nonce += 1
        return result
    }

    // MARK: Explicit-nonce (datagram) use

    /// Encrypts `plaintext` with an explicit `nonce` (for datagram transports that carry their
    /// own packet counter). The caller must never reuse a nonce with the same key.
    public func encrypt(_ plaintext: [UInt8], nonce: UInt64, ad: [UInt8] = []) throws(SecurityError) -> [UInt8] {
        guard nonce <= Self.maxNonce else { throw .nonceExhausted }
        let box = seal(plaintext, checkedNonce: nonce, ad: ad)
        return box.combined.withUnsafeBytes { Array(UnsafeRawBufferPointer(rebasing: $0[Self.aeadNonceLength...])) }
    }

    /// Encrypts the readable bytes of `plaintext` with an explicit `nonce`, appending
    /// `ciphertext || tag` to `output`.
    public func encrypt(
        _ plaintext: ByteBuffer,
        nonce: UInt64,
        ad: [UInt8] = [],
        into output: inout ByteBuffer
    ) throws(SecurityError) {
        guard nonce <= Self.maxNonce else { throw .nonceExhausted }
        let box = plaintext.withUnsafeReadableBytes { bytes in seal(bytes, checkedNonce: nonce, ad: ad) }
        _ = box.combined.withUnsafeBytes {
            output.writeBytes(UnsafeRawBufferPointer(rebasing: $0[Self.aeadNonceLength...]))
        }
    }

    /// Decrypts `ciphertext` with an explicit `nonce`.
    public func decrypt(_ ciphertext: [UInt8], nonce: UInt64, ad: [UInt8] = []) throws(SecurityError) -> [UInt8] {
        let plaintext = try open(ciphertext.count, nonce: nonce, ad: ad) { data in
            ciphertext.withUnsafeBufferPointer { data.append($0) }
        }
        return Array(plaintext)
    }

    /// Decrypts the readable bytes of `ciphertext` with an explicit `nonce`.
    public func decrypt(_ ciphertext: ByteBuffer, nonce: UInt64, ad: [UInt8] = []) throws(SecurityError) -> ByteBuffer {
        let plaintext = try open(ciphertext.readableBytes, nonce: nonce, ad: ad) { data in
            ciphertext.withUnsafeReadableBytes { data.append($0.assumingMemoryBound(to: UInt8.self)) }
        }
        return plaintext.withUnsafeBytes { ByteBuffer(bytes: $0) }
    }

    // MARK: Internals

    /// Seals with a nonce the caller has checked against ``maxNonce``.
    private func seal(_ plaintext: some DataProtocol, checkedNonce nonce: UInt64, ad: [UInt8]) -> ChaChaPoly.SealedBox {
        do {
            return try ChaChaPoly.seal(plaintext, using: key.key, nonce: Self.aeadNonce(nonce), authenticating: ad)
        } catch {
            // Sealing only fails on a wrong key size, which init rules out.
            preconditionFailure("ChaChaPoly.seal failed: \(error)")
        }
    }

    /// Builds `nonce || ciphertext || tag` with `fill` appending the ciphertext, and opens it.
    private func open(
        _ count: Int,
        nonce: UInt64,
        ad: [UInt8],
        fill: (inout Data) -> Void
    ) throws(SecurityError) -> Data {
        guard nonce <= Self.maxNonce else { throw .nonceExhausted }
        guard count >= Self.tagLength else { throw .decryptFailed }
        var combined = Data(capacity: Self.aeadNonceLength + count)
        Self.appendAEADNonce(nonce, to: &combined)
        fill(&combined)
        do {
            let box = try ChaChaPoly.SealedBox(combined: combined)
            return try ChaChaPoly.open(box, using: key.key, authenticating: ad)
        } catch {
            throw .decryptFailed
        }
    }

    private static func appendAEADNonce(_ nonce: UInt64, to data: inout Data) {
        // 4 zero bytes, then the counter as a little-endian UInt64.
        let zero = UInt32(0)
        let counter = nonce.littleEndian
        withUnsafePointer(to: zero) { data.append(UnsafeBufferPointer(start: $0, count: 1)) }
        withUnsafePointer(to: counter) { data.append(UnsafeBufferPointer(start: $0, count: 1)) }
    }

    private static func aeadNonce(_ nonce: UInt64) -> ChaChaPoly.Nonce {
        var bytes = Data(capacity: Self.aeadNonceLength)
        appendAEADNonce(nonce, to: &bytes)
        // 12 bytes is always a valid ChaChaPoly nonce.
        return try! ChaChaPoly.Nonce(data: bytes)
    }
}

/// swift-crypto's `SymmetricKey` is an immutable value (copy-on-write storage that is never
/// mutated after creation) but is not declared `Sendable`; this box asserts what it is.
private struct NoiseKey: @unchecked Sendable {
    let key: SymmetricKey
    init(_ key: SymmetricKey) { self.key = key }
}
