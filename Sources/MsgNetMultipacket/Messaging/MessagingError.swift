/// The one error type of the multipacket messaging layer (frames, reliability, fragmentation).
///
/// A `code` callers can switch on, plus a human-readable `message`.
package struct MessagingError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong, as a small closed set.
    package enum Code: String, Hashable, Sendable {
        /// A payload could not be decoded (truncated, bad length, bad field, over a limit).
        case malformedFrame = "malformed frame"
        /// A payload started a frame with a type byte this version does not know.
        case unknownFrameType = "unknown frame type"
        /// The message is larger than the configured limits allow for this mode.
        case messageTooLarge = "message too large"
        /// A bounded queue or table is full; the send was refused.
        case limitExceeded = "limit exceeded"
        /// The delivery deadline passed before the peer acknowledged every fragment (outcome unknown).
        case timedOut = "timed out"
        /// The peer answered the protocol's Init with Reset: it has no handler for it.
        case protocolNotSupported = "protocol not supported"
        /// The machine was closed before the send completed (outcome unknown).
        case closed = "closed"
        /// An argument was invalid (empty or over-long protocol name, …).
        case invalidArgument = "invalid argument"
    }

    /// The kind of error.
    package var code: Code
    /// Details for humans.
    package var message: String

    /// Creates an error.
    package init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// `"<code>: <message>"`.
    package var description: String { "\(code.rawValue): \(message)" }
}
