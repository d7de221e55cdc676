// The one place MsgNet calls OpenSSL's libcrypto: ChaCha20-Poly1305 (RFC 8439) with a reusable
// context per key. Only MsgNetSecurity imports this module (see ChaChaPolyContext.swift).
#ifndef MSGNET_CLIBCRYPTO_SHIM_H
#define MSGNET_CLIBCRYPTO_SHIM_H

#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

/// A context keyed for sealing (`encrypt != 0`) or opening with `key` (32 bytes); NULL on failure.
static inline EVP_CIPHER_CTX *msgnet_chachapoly_new(const uint8_t *key, int encrypt) {
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL) return NULL;
    if (EVP_CipherInit_ex(ctx, EVP_chacha20_poly1305(), NULL, key, NULL, encrypt ? 1 : 0) != 1) {
        EVP_CIPHER_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static inline void msgnet_chachapoly_free(EVP_CIPHER_CTX *ctx) { EVP_CIPHER_CTX_free(ctx); }

/// Seals `in` (`in_len` bytes) under the 12-byte `nonce` and `ad`, writing `in_len` ciphertext
/// bytes and then the 16-byte tag to `out`. `in` and `ad` may be NULL when their length is 0.
/// Returns 1 on success.
static inline int msgnet_chachapoly_seal(
    EVP_CIPHER_CTX *ctx, const uint8_t *nonce, const uint8_t *ad, size_t ad_len,
    const uint8_t *in, size_t in_len, uint8_t *out) {
    int len = 0;
    if (in_len > INT32_MAX || ad_len > INT32_MAX) return 0;
    if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1) return 0;
    if (ad_len > 0 && EVP_EncryptUpdate(ctx, NULL, &len, ad, (int)ad_len) != 1) return 0;
    if (in_len > 0) {
        if (EVP_EncryptUpdate(ctx, out, &len, in, (int)in_len) != 1 || (size_t)len != in_len) return 0;
    }
    if (EVP_EncryptFinal_ex(ctx, out + in_len, &len) != 1 || len != 0) return 0;
    return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, out + in_len) == 1;
}

/// Opens `in` (`in_len` bytes: ciphertext then the 16-byte tag) under `nonce` and `ad`, writing
/// `in_len - 16` plaintext bytes to `out`. Returns 1 only when the tag verifies; on 0 the bytes
/// written to `out` must be discarded.
static inline int msgnet_chachapoly_open(
    EVP_CIPHER_CTX *ctx, const uint8_t *nonce, const uint8_t *ad, size_t ad_len,
    const uint8_t *in, size_t in_len, uint8_t *out) {
    int len = 0;
    uint8_t tag[16];
    if (in_len < 16 || in_len > INT32_MAX || ad_len > INT32_MAX) return 0;
    size_t body = in_len - 16;
    for (int i = 0; i < 16; i++) tag[i] = in[body + i];
    if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1) return 0;
    if (ad_len > 0 && EVP_DecryptUpdate(ctx, NULL, &len, ad, (int)ad_len) != 1) return 0;
    if (body > 0) {
        if (EVP_DecryptUpdate(ctx, out, &len, in, (int)body) != 1 || (size_t)len != body) return 0;
    }
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, 16, tag) != 1) return 0;
    return EVP_DecryptFinal_ex(ctx, out + body, &len) == 1;
}

#endif
