import MsgNetControl
import MsgNetTestSupport
import Testing

@testable import MsgNetCore

/// The identify message py-libp2p builds (`vectors/make_vectors.py`), read through Core types.
@Suite struct IdentifyInteropTests {
    static let pyIdentify = hex(
        "0a2408011220a5e9e2d4733e643d6a6e19b749e283951e564c1de4f3b39c55611686a0ddda8a1208047f000001060fa1121729"
            + "0000000000000000000000000000000191020fa1cd031a0e2f697066732f69642f312e302e301a102f697066732f70696e67"
            + "2f312e302e301a0b2f6563686f2f312e302e302208040a00000206d9032a0a697066732f302e312e30320f70792d6c6962"
            + "7032702f302e382e31421101026f70617175652d656e76656c6f7065"
    )

    @Test func addressesAndKeyParse() throws {
        let message = try IdentifyMessage(bytes: Self.pyIdentify)
        let listen = try message.listenAddrs.map { (bytes) throws(CoreError) in try Multiaddr(bytes: bytes) }
        #expect(listen.map(\.description) == ["/ip4/127.0.0.1/tcp/4001", "/ip6/::1/udp/4001/quic-v1"])
        let observed = try Multiaddr(bytes: try #require(message.observedAddr))
        #expect(observed.description == "/ip4/10.0.0.2/tcp/55555")
        #expect(try observed.socketAddress().port == 55555)
        let key = try PublicKey(marshaled: try #require(message.publicKey))
        #expect(key.peerID.description == KeyVector.all[0].peerID)
    }
}
