import CLibCrypto
import Synchronization

/// ChaCha20-Poly1305 (RFC 8439) under one 32-byte key, on OpenSSL's libcrypto.
///
/// Why not swift-crypto's `ChaChaPoly` here, when the rest of the handshake uses swift-crypto:
/// every transport frame and every datagram is sealed and opened, and swift-crypto builds a
/// cipher context, a nonce, two output buffers and a sealed box per call. This context is keyed
/// once and reused; each call only sets the nonce (`msgnet-bench aead` times both). The bytes are
/// the same: the tests check this implementation against swift-crypto's byte for byte, and the
/// Noise handshake against reference vectors.
///
/// A context is safe to share: each direction's OpenSSL context is used under its own lock.
final class ChaChaPolyContext: Sendable {
    /// Bytes of a tag.
    static let tagLength = 16

    private let sealer: Mutex<CipherContext>
    private let opener: Mutex<CipherContext>

    /// A context for `key` (32 bytes).
    init(key: [UInt8]) {
        precondition(key.count == 32, "ChaCha20-Poly1305 keys are 32 bytes")
        sealer = Mutex(CipherContext(key: key, encrypt: true))
        opener = Mutex(CipherContext(key: key, encrypt: false))
    }

    /// Writes `plaintext.count` ciphertext bytes and the tag to `output`, which must hold
    /// `plaintext.count + 16` bytes.
    func seal(
        _ plaintext: UnsafeRawBufferPointer,
        nonce: UInt64,
        ad: UnsafeRawBufferPointer,
        into output: UnsafeMutableRawBufferPointer
    ) {
        precondition(output.count >= plaintext.count + Self.tagLength)
        let ok = sealer.withLock { context in
            Self.withNonce(nonce) { noncePointer in
                msgnet_chachapoly_seal(
                    context.pointer, noncePointer, Self.bytes(ad), ad.count, Self.bytes(plaintext), plaintext.count,
                    output.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        }
        // Sealing with a valid key and sizes below 2 GiB does not fail; if libcrypto says it did,
        // continuing would send unauthenticated bytes.
        precondition(ok == 1, "ChaCha20-Poly1305 seal failed in libcrypto")
    }

    /// Writes the `ciphertext.count - 16` plaintext bytes to `output` and returns whether the tag
    /// verified. On `false` the bytes in `output` are garbage and must not be used.
    func open(
        _ ciphertext: UnsafeRawBufferPointer,
        nonce: UInt64,
        ad: UnsafeRawBufferPointer,
        into output: UnsafeMutableRawBufferPointer
    ) -> Bool {
        guard ciphertext.count >= Self.tagLength else { return false }
        precondition(output.count >= ciphertext.count - Self.tagLength)
        // A zero-length output may have no address; give libcrypto a byte to point at.
        var spare: UInt8 = 0
        return opener.withLock { context in
            Self.withNonce(nonce) { noncePointer in
                if let base = output.baseAddress {
                    return msgnet_chachapoly_open(
                        context.pointer, noncePointer, Self.bytes(ad), ad.count, Self.bytes(ciphertext),
                        ciphertext.count, base.assumingMemoryBound(to: UInt8.self))
                }
                return msgnet_chachapoly_open(
                    context.pointer, noncePointer, Self.bytes(ad), ad.count, Self.bytes(ciphertext),
                    ciphertext.count, &spare)
            }
        } == 1
    }

    /// The AEAD nonce for a Noise counter: 4 zero bytes, then the counter little-endian.
    private static func withNonce<R>(_ counter: UInt64, _ body: (UnsafePointer<UInt8>) -> R) -> R {
        // Three UInt32s are 12 contiguous bytes.
        var nonce: (UInt32, UInt32, UInt32) = (
            0, UInt32(truncatingIfNeeded: counter).littleEndian, UInt32(truncatingIfNeeded: counter >> 32).littleEndian
        )
        return withUnsafeBytes(of: &nonce) { body($0.baseAddress!.assumingMemoryBound(to: UInt8.self)) }
    }

    private static func bytes(_ buffer: UnsafeRawBufferPointer) -> UnsafePointer<UInt8>? {
        buffer.count == 0 ? nil : buffer.baseAddress?.assumingMemoryBound(to: UInt8.self)
    }
}

/// One OpenSSL cipher context; freed with its owner. Only used under its `Mutex`, which is what
/// makes sharing it across threads sound.
private struct CipherContext: ~Copyable, @unchecked Sendable {
    let pointer: OpaquePointer

    init(key: [UInt8], encrypt: Bool) {
        guard let pointer = key.withUnsafeBufferPointer({ msgnet_chachapoly_new($0.baseAddress, encrypt ? 1 : 0) })
        else {
            // Only an allocation failure inside libcrypto gets here.
            fatalError("libcrypto could not create a ChaCha20-Poly1305 context")
        }
        self.pointer = pointer
    }

    deinit { msgnet_chachapoly_free(pointer) }
}
