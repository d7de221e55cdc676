/// Errors from MsgNetCore: malformed keys, peer ids and multiaddrs.
public struct CoreError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What kind of value was malformed.
    public enum Kind: String, Sendable {
        case key
        case peerID = "peer id"
        case multiaddr
        case multihash
    }

    /// The kind of value.
    public var kind: Kind
    /// Why it was rejected.
    public var reason: String

    /// Creates an error.
    public init(_ kind: Kind, _ reason: String) {
        self.kind = kind
        self.reason = reason
    }

    public var description: String { "invalid \(kind.rawValue): \(reason)" }
}
