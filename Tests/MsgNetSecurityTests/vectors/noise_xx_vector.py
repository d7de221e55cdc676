#!/usr/bin/env python3
"""Prints a fixed-key libp2p Noise XX test vector (hard-coded in NoiseVectorTests.swift).

Independent implementation: the `noiseprotocol` package (Noise_XX_25519_ChaChaPoly_SHA256)
and py-libp2p 0.8.1's Ed25519 keys, payload encoding and signature rules.
Run with the interop virtualenv: /work/main/.build/interop-venv/bin/python noise_xx_vector.py
"""
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.crypto.x25519 import X25519PrivateKey
from libp2p.peer.id import ID
from libp2p.security.noise.messages import NoiseHandshakePayload, make_handshake_payload_sig
from noise.connection import Keypair, NoiseConnection

# Fixed inputs (all 32 bytes).
INIT_ID_SEED = bytes(range(0x00, 0x20))
RESP_ID_SEED = bytes(range(0x20, 0x40))
INIT_STATIC = bytes([0x11] * 32)
INIT_EPHEMERAL = bytes([0x22] * 32)
RESP_STATIC = bytes([0x33] * 32)
RESP_EPHEMERAL = bytes([0x44] * 32)


def payload(id_seed: bytes, static_priv: bytes) -> bytes:
    ident = Ed25519PrivateKey.from_bytes(id_seed)
    static_pub = X25519PrivateKey.from_bytes(static_priv).get_public_key()
    sig = make_handshake_payload_sig(ident, static_pub)
    return NoiseHandshakePayload(ident.get_public_key(), sig).serialize()


def party(initiator: bool, static: bytes, ephemeral: bytes) -> NoiseConnection:
    conn = NoiseConnection.from_name(b"Noise_XX_25519_ChaChaPoly_SHA256")
    conn.set_keypair_from_private_bytes(Keypair.STATIC, static)
    conn.set_keypair_from_private_bytes(Keypair.EPHEMERAL, ephemeral)
    conn.set_as_initiator() if initiator else conn.set_as_responder()
    conn.start_handshake()
    return conn


init = party(True, INIT_STATIC, INIT_EPHEMERAL)
resp = party(False, RESP_STATIC, RESP_EPHEMERAL)

msg1 = init.write_message(b"")
assert resp.read_message(msg1) == b""
msg2 = resp.write_message(payload(RESP_ID_SEED, RESP_STATIC))
resp_payload = init.read_message(msg2)
msg3 = init.write_message(payload(INIT_ID_SEED, INIT_STATIC))
init_payload = resp.read_message(msg3)
assert init.handshake_finished and resp.handshake_finished
assert init.get_handshake_hash() == resp.get_handshake_hash()

t1 = init.encrypt(b"hello from initiator")
t2 = init.encrypt(b"second")
t3 = resp.encrypt(b"hello from responder")
assert resp.decrypt(t1) == b"hello from initiator"

init_id = Ed25519PrivateKey.from_bytes(INIT_ID_SEED).get_public_key()
resp_id = Ed25519PrivateKey.from_bytes(RESP_ID_SEED).get_public_key()
for name, value in [
    ("msg1", msg1),
    ("msg2", msg2),
    ("msg3", msg3),
    ("respPayload", resp_payload),
    ("initPayload", init_payload),
    ("handshakeHash", init.get_handshake_hash()),
    ("initToResp0", t1),
    ("initToResp1", t2),
    ("respToInit0", t3),
]:
    print(f'{name} = "{bytes(value).hex()}"')
print(f"initiatorPeer = {ID.from_pubkey(init_id).to_base58()}")
print(f"responderPeer = {ID.from_pubkey(resp_id).to_base58()}")
