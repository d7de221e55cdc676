// The one place MsgNet calls OpenSSL's libcrypto: ChaCha20-Poly1305 (RFC 8439) with a reusable
// context per key. Only MsgNetSecurity imports this module (see ChaChaPolyContext.swift).
#ifndef MSGNET_CLIBCRYPTO_SHIM_H
#define MSGNET_CLIBCRYPTO_SHIM_H

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stddef.h>
#include <stdint.h>

/// A context keyed for sealing (`encrypt != 0`) or opening with `key` (32 bytes); NULL on failure.
/// The cipher is fetched from the default provider explicitly (OpenSSL 3): a context keyed with a
/// fetched cipher skips the legacy-object lookups on every later `EVP_CipherInit_ex2`.
static inline EVP_CIPHER_CTX *msgnet_chachapoly_new(const uint8_t *key, int encrypt) {
    EVP_CIPHER *cipher = EVP_CIPHER_fetch(NULL, "ChaCha20-Poly1305", NULL);
    if (cipher == NULL) return NULL;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int ok = ctx != NULL && EVP_CipherInit_ex2(ctx, cipher, key, NULL, encrypt ? 1 : 0, NULL) == 1;
    EVP_CIPHER_free(cipher);  // the context holds its own reference
    if (!ok) {
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
    if (EVP_CipherInit_ex2(ctx, NULL, NULL, nonce, 1, NULL) != 1) return 0;
    if (ad_len > 0 && EVP_EncryptUpdate(ctx, NULL, &len, ad, (int)ad_len) != 1) return 0;
    if (in_len > 0) {
        if (EVP_EncryptUpdate(ctx, out, &len, in, (int)in_len) != 1 || (size_t)len != in_len) return 0;
    }
    if (EVP_EncryptFinal_ex(ctx, out + in_len, &len) != 1 || len != 0) return 0;
    // The tag through the provider's parameters directly (the ctrl call builds them first).
    OSSL_PARAM params[2] = {
        OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, out + in_len, 16),
        OSSL_PARAM_construct_end(),
    };
    return EVP_CIPHER_CTX_get_params(ctx, params) == 1;
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
    if (EVP_CipherInit_ex2(ctx, NULL, NULL, nonce, 0, NULL) != 1) return 0;
    if (ad_len > 0 && EVP_DecryptUpdate(ctx, NULL, &len, ad, (int)ad_len) != 1) return 0;
    if (body > 0) {
        if (EVP_DecryptUpdate(ctx, out, &len, in, (int)body) != 1 || (size_t)len != body) return 0;
    }
    OSSL_PARAM params[2] = {
        OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag, 16),
        OSSL_PARAM_construct_end(),
    };
    if (EVP_CIPHER_CTX_set_params(ctx, params) != 1) return 0;
    return EVP_DecryptFinal_ex(ctx, out + body, &len) == 1;
}

#endif
