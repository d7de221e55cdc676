/// The one error type of the mplex module.
///
/// Switch over ``code`` to decide what to do; ``message`` explains the cause for logs.
public struct MplexError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong, as a closed set callers can switch on.
    public enum Code: Hashable, Sendable {
        /// A frame's data length is over the frame size limit (the connection is reset).
        case frameTooLarge
        /// A NewStream frame carries a name longer than the limit (the connection is reset).
        case streamNameTooLong
        /// A header carries flag 7, which mplex does not define (the connection is reset).
        case invalidFlag
        /// A header or length varint is longer than 9 bytes or not minimally encoded.
        case malformedVarint
        /// A stream id does not fit in 60 bits.
        case streamIDOutOfRange
        /// The connection ended in the middle of a frame.
        case truncatedFrame
        /// The peer broke the protocol in a way that makes the whole connection unusable
        /// (for example a NewStream for a stream id that is already open).
        case protocolViolation
        /// The stream was reset because the peer broke the protocol on it
        /// (for example data after it closed its write side).
        case streamProtocolViolation
        /// The peer reset the stream.
        case streamResetByPeer
        /// We reset the stream (``MplexStream/reset()`` was called).
        case streamResetLocally
        /// The stream was reset because its reader took no data for longer than the stalled-stream timeout
        /// while the stream was over its receive buffer bound.
        case streamStalled
        /// The stream was reset because its unread data reached the hard receive buffer cap.
        case receiveBufferOverflow
        /// Opening a stream would exceed ``MplexConfiguration/maxConcurrentStreams``.
        case tooManyStreams
        /// All 2^60 stream ids of this connection have been used.
        case streamIDsExhausted
        /// A write or close after the local write side was closed.
        case writeAfterClose
        /// The stream is not known to the connection (never opened, or already finished).
        case unknownStream
        /// The connection is closed; every open stream is reset with this code.
        case connectionClosed
        /// A second concurrent `read()`, or `read()` on a stream that has an inbound handler.
        case invalidUse
    }

    /// What went wrong.
    public var code: Code
    /// A human-readable explanation.
    public var message: String

    /// Creates an error with a code and an explanation.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// `"mplex: <message>"`.
    public var description: String { "mplex: \(message)" }

    static func connectionClosed() -> MplexError {
        MplexError(.connectionClosed, "connection closed")
    }
}
