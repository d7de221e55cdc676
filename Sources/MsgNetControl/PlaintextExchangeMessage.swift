import MsgNetControlC

/// The `/plaintext/2.0.0` `Exchange` message (`Schemas/plaintext.proto`).
public struct PlaintextExchangeMessage: Hashable, Sendable {
    /// The sender's peer id bytes (a multihash).
    public var id: [UInt8]?
    /// The sender's public key.
    public var publicKey: KeyMessage?

    /// Creates an exchange message.
    public init(id: [UInt8]?, publicKey: KeyMessage?) {
        self.id = id
        self.publicKey = publicKey
    }

    /// Messages larger than this are refused when decoding.
    public static let maxEncodedSize = 16 * 1024

    /// The protobuf encoding.
    public func encoded() -> [UInt8] {
        let arena = CArena()
        let m = arena.object(Msgnet__Plaintext__Exchange.self)
        msgnet__plaintext__exchange__init(m)
        if let id {
            m.pointee.has_id = 1
            m.pointee.id = arena.binary(id)
        }
        if let publicKey {
            let k = arena.object(Msgnet__Crypto__PublicKey.self)
            msgnet__crypto__public_key__init(k)
            k.pointee.type = Msgnet__Crypto__KeyType(rawValue: UInt32(publicKey.type.rawValue))
            k.pointee.data = arena.binary(publicKey.data)
            m.pointee.pubkey = k
        }
        return pack(m)
    }

    /// Decodes an exchange message.
    public init(bytes: some Collection<UInt8>) throws(ControlError) {
        self = try withUnpacked(
            bytes, message: "Exchange", maxSize: Self.maxEncodedSize,
            unpack: { msgnet__plaintext__exchange__unpack(nil, $0, $1) },
            free: { msgnet__plaintext__exchange__free_unpacked($0, nil) }
        ) { (m) throws(ControlError) in
            var key: KeyMessage?
            if let k = m.pointee.pubkey {
                key = try KeyMessage(rawType: k.pointee.type.rawValue, data: k.pointee.data.bytes, message: "Exchange")
            }
            return PlaintextExchangeMessage(id: m.pointee.has_id != 0 ? m.pointee.id.bytes : nil, publicKey: key)
        }
    }
}
