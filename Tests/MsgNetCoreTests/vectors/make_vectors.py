"""Known-answer vectors for MsgNetCore / MsgNetControl tests, computed with py-libp2p 0.8.1.

Run with the interop virtualenv (see ../shared/interop/README.md):
    .build/interop-venv/bin/python Tests/MsgNetCoreTests/vectors/make_vectors.py
The output is pasted (by hand) into KnownAnswerTests.swift and ControlInteropTests.swift.
"""

import hashlib

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.pb import crypto_pb2
from libp2p.identity.identify.pb import identify_pb2
from libp2p.peer.id import ID
from multiaddr import Multiaddr

SIGNED_DATA = b"msgnet test vector"


def key_vectors(label: str) -> None:
    seed = hashlib.sha256(label.encode()).digest()
    pair = create_new_key_pair(seed)
    pub = pair.public_key
    priv = pair.private_key
    # go-libp2p style private key: seed || public key, 64 bytes (py-libp2p writes the bare seed).
    go_style = crypto_pb2.PrivateKey(
        key_type=crypto_pb2.KeyType.Ed25519, data=seed + pub.to_bytes()
    ).SerializeToString()
    print(f"-- seed = sha256({label!r})")
    print("seed            ", seed.hex())
    print("public raw      ", pub.to_bytes().hex())
    print("public marshaled", pub.serialize().hex())
    print("private py      ", priv.serialize().hex())
    print("private go-style", go_style.hex())
    print("peer id         ", ID.from_pubkey(pub).to_base58())
    print("peer id bytes   ", ID.from_pubkey(pub).to_bytes().hex())
    print("signature       ", priv.sign(SIGNED_DATA).hex())


def multiaddr_vectors() -> None:
    print("-- multiaddrs (py-multiaddr)")
    for text in [
        "/ip4/127.0.0.1/tcp/4001",
        "/ip4/0.0.0.0/udp/4001/quic-v1",
        "/ip6/::1/tcp/443",
        "/ip6/2001:db8::1/udp/9090/quic",
        "/ip6/fe80::1:2:3:4/tcp/0",
        "/dns/example.com/tcp/80",
        "/dns4/localhost/udp/65535",
        "/dns6/ipv6.example/tcp/1",
        "/ip4/1.2.3.4/tcp/4001/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",
        "/ip4/1.2.3.4/tcp/4001/p2p/QmcgpsyWgH8Y8ajJz1Cu72KnS5uo2Aa2LpzU7kinSupNKC/p2p-circuit",
    ]:
        print(f"{text} {Multiaddr(text).to_bytes().hex()}")


def random_ip6_vectors() -> None:
    """Sparse random IPv6 addresses: binary -> text with py-multiaddr (checks RFC 5952 printing)."""
    import random

    rng = random.Random(5952)
    print("-- random ip6 (py-multiaddr, binary -> text)")
    for _ in range(12):
        groups = [0 if rng.random() < 0.5 else rng.randrange(0x10000) for _ in range(8)]
        raw = b"".join(g.to_bytes(2, "big") for g in groups)
        binary = b"\x29" + raw + b"\x06" + rng.randrange(0x10000).to_bytes(2, "big")
        print(f"{Multiaddr(binary)} {binary.hex()}")


def identify_vector() -> None:
    seed = hashlib.sha256(b"demo").digest()
    pub = create_new_key_pair(seed).public_key
    msg = identify_pb2.Identify(
        protocol_version="ipfs/0.1.0",
        agent_version="py-libp2p/0.8.1",
        public_key=pub.serialize(),
        listen_addrs=[
            Multiaddr("/ip4/127.0.0.1/tcp/4001").to_bytes(),
            Multiaddr("/ip6/::1/udp/4001/quic-v1").to_bytes(),
        ],
        observed_addr=Multiaddr("/ip4/10.0.0.2/tcp/55555").to_bytes(),
        protocols=["/ipfs/id/1.0.0", "/ipfs/ping/1.0.0", "/echo/1.0.0"],
        signedPeerRecord=b"\x01\x02opaque-envelope",
    )
    print("-- identify (libp2p.identity.identify.pb)")
    print("identify", msg.SerializeToString().hex())


if __name__ == "__main__":
    key_vectors("demo")
    key_vectors("msgnet")
    multiaddr_vectors()
    random_ip6_vectors()
    identify_vector()
