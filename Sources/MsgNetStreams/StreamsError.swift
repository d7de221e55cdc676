/// Errors of the stream layer: upgrading connections, opening and negotiating streams.
public struct StreamsError: Error, CustomStringConvertible, Sendable {
    /// A coarse classification callers can switch on.
    public enum Code: Sendable, Hashable {
        /// Dialing the peer failed (unreachable, refused, no usable address).
        case dialFailed
        /// A negotiation (upgrade or stream protocol) did not finish in time.
        case timedOut
        /// The remote supports none of the proposed protocols.
        case protocolNotSupported
        /// The remote is not the peer we expected.
        case peerIDMismatch
        /// The connection or stream closed (or was reset) before the operation finished.
        case connectionClosed
        /// The remote broke the protocol (malformed or oversize data).
        case protocolViolation
        /// A configured limit was reached.
        case limitExceeded
        /// The host is not running or is shutting down.
        case shutdown
    }

    /// The classification.
    public var code: Code
    /// A human-readable description of what happened.
    public var message: String

    /// Creates an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
