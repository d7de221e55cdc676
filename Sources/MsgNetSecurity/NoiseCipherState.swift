import NIOCore

/// A Noise `CipherState` for ChaChaPoly: a 32-byte key and a 64-bit nonce counter.
///
/// Each ``encrypt(_:ad:)`` / ``decrypt(_:ad:)`` uses the current nonce and then increments it,
/// so a nonce is never used twice. The nonce `2^64 - 1` is reserved by the Noise spec; once the
/// counter reaches it every call throws ``SecurityError/nonceExhausted``. A failed decryption
/// does not advance the nonce.
///
/// The AEAD nonce is 4 zero bytes followed by the counter as a 64-bit little-endian integer.
/// Ciphertexts are `encrypted payload || 16-byte Poly1305 tag`. The AEAD itself runs on
/// OpenSSL's libcrypto through one reusable context per key (see `ChaChaPolyContext`).
public struct NoiseCipherState: Sendable {
    /// Bytes a ciphertext adds to its plaintext (the Poly1305 tag).
    public static let tagLength = 16
    /// The largest nonce that may be used; the next one (`2^64 - 1`) is reserved.
    static let maxNonce = UInt64.max - 1

    private let context: ChaChaPolyContext
    /// The nonce the next operation will use.
    public private(set) var nonce: UInt64

    /// A cipher state with a 32-byte key, starting at `nonce`.
    package init(key: [UInt8], nonce: UInt64 = 0) {
        precondition(key.count == 32, "ChaChaPoly keys are 32 bytes")
        self.context = ChaChaPolyContext(key: key)
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
        var output = ByteBufferAllocator().buffer(capacity: plaintext.readableBytes + Self.tagLength)
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
        return [UInt8](unsafeUninitializedCapacity: plaintext.count + Self.tagLength) { output, count in
            plaintext.withUnsafeBytes { input in
                ad.withUnsafeBytes { ad in
                    context.seal(input, nonce: nonce, ad: ad, into: UnsafeMutableRawBufferPointer(output))
                }
            }
            count = plaintext.count + Self.tagLength
        }
    }

    /// Encrypts the readable bytes of `plaintext` with an explicit `nonce`, appending
    /// `ciphertext || tag` to `output`.
    public func encrypt(
        _ plaintext: ByteBuffer,
        nonce: UInt64,
        ad: [UInt8] = [],
        into output: inout ByteBuffer
    ) throws(SecurityError) {
        let result = ad.withUnsafeBytes { ad in
            Result { () throws(SecurityError) in try encrypt(plaintext, nonce: nonce, adBytes: ad, into: &output) }
        }
        try result.get()
    }

    /// Like ``encrypt(_:nonce:ad:into:)-(ByteBuffer,_,_,_)``, with the associated data given as
    /// raw bytes (a header kept on the stack, without an array).
    public func encrypt(
        _ plaintext: ByteBuffer,
        nonce: UInt64,
        adBytes ad: UnsafeRawBufferPointer,
        into output: inout ByteBuffer
    ) throws(SecurityError) {
        guard nonce <= Self.maxNonce else { throw .nonceExhausted }
        let size = plaintext.readableBytes + Self.tagLength
        output.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { out in
            plaintext.withUnsafeReadableBytes { input in
                context.seal(input, nonce: nonce, ad: ad, into: UnsafeMutableRawBufferPointer(rebasing: out[..<size]))
            }
            return size
        }
    }

    /// Decrypts `ciphertext` with an explicit `nonce`.
    public func decrypt(_ ciphertext: [UInt8], nonce: UInt64, ad: [UInt8] = []) throws(SecurityError) -> [UInt8] {
        guard nonce <= Self.maxNonce else { throw .nonceExhausted }
        guard ciphertext.count >= Self.tagLength else { throw .decryptFailed }
        var verified = false
        let plaintext = [UInt8](unsafeUninitializedCapacity: ciphertext.count - Self.tagLength) { output, count in
            verified = ciphertext.withUnsafeBytes { input in
                ad.withUnsafeBytes { ad in
                    context.open(input, nonce: nonce, ad: ad, into: UnsafeMutableRawBufferPointer(output))
                }
            }
            // Unverified bytes never leave: the array is empty on failure.
            count = verified ? ciphertext.count - Self.tagLength : 0
        }
        guard verified else { throw .decryptFailed }
        return plaintext
    }

    /// Decrypts the readable bytes of `ciphertext` with an explicit `nonce`.
    public func decrypt(_ ciphertext: ByteBuffer, nonce: UInt64, ad: [UInt8] = []) throws(SecurityError) -> ByteBuffer {
        let result = ad.withUnsafeBytes { ad in
            Result { () throws(SecurityError) in try decrypt(ciphertext, nonce: nonce, adBytes: ad) }
        }
        return try result.get()
    }

    /// Like ``decrypt(_:nonce:ad:)-(ByteBuffer,_,_)``, with the associated data given as raw bytes
    /// (a slice of the received datagram, without an array).
    public func decrypt(
        _ ciphertext: ByteBuffer, nonce: UInt64, adBytes ad: UnsafeRawBufferPointer
    ) throws(SecurityError) -> ByteBuffer {
        guard nonce <= Self.maxNonce else { throw .nonceExhausted }
        guard ciphertext.readableBytes >= Self.tagLength else { throw .decryptFailed }
        let size = ciphertext.readableBytes - Self.tagLength
        // Allocated at its size (an empty buffer grown by `reserveCapacity` is allocated twice).
        var plaintext = ByteBufferAllocator().buffer(capacity: size)
        var verified = false
        plaintext.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { out in
            verified = ciphertext.withUnsafeReadableBytes { input in
                context.open(input, nonce: nonce, ad: ad, into: UnsafeMutableRawBufferPointer(rebasing: out[..<size]))
            }
            // Unverified bytes never become readable.
            return verified ? size : 0
        }
        guard verified else { throw .decryptFailed }
        return plaintext
    }
}
