import MsgNetStreams

/// The one error type of the message API: a small closed set of codes callers can switch on,
/// the same on every path (streams and datagrams).
public struct MessageError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What went wrong.
    public enum Code: Sendable, Hashable {
        /// The peer could not be reached: no usable address, refused, unreachable, or it proved to
        /// be a different peer.
        case dialFailed
        /// No answer in time. The outcome is unknown: the peer may have handled the message.
        case timedOut
        /// The connection or channel closed before the operation finished. The outcome is
        /// unknown: the peer may have handled the message.
        case connectionClosed
        /// The peer does not handle this protocol.
        case protocolNotSupported
        /// The message is larger than the configured maximum (ours or the peer's).
        case messageTooLarge
        /// The calling task was cancelled, or the host is shutting down.
        case cancelled
        /// The peer answered with something malformed, or broke the protocol.
        case remoteError
        /// A configured limit (streams per peer, inbound rate, concurrency) was reached.
        case limitExceeded
        /// We could not listen on the address: it is in use or not ours, or no transport
        /// handles it.
        case listenFailed
    }

    /// The classification.
    public var code: Code
    /// A human-readable explanation for logs.
    public var message: String

    /// Creates an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// Whether the peer may or may not have acted on the message (`.timedOut`,
    /// `.connectionClosed`): retry only idempotent operations.
    public var outcomeUnknown: Bool { code == .timedOut || code == .connectionClosed }

    /// `"<code>: <message>"`.
    public var description: String { "\(code): \(message)" }

    /// Classifies an error from a lower layer (or passes a `MessageError` through).
    package static func from(_ error: any Error) -> MessageError {
        switch error {
        case let e as MessageError:
            return e
        case is CancellationError:
            return MessageError(.cancelled, "cancelled")
        case let e as StreamsError:
            switch e.code {
            case .dialFailed, .peerIDMismatch: return MessageError(.dialFailed, e.message)
            case .timedOut: return MessageError(.timedOut, e.message)
            case .protocolNotSupported: return MessageError(.protocolNotSupported, e.message)
            case .connectionClosed: return MessageError(.connectionClosed, e.message)
            case .protocolViolation: return MessageError(.remoteError, e.message)
            case .limitExceeded: return MessageError(.limitExceeded, e.message)
            case .shutdown: return MessageError(.cancelled, e.message)
            }
        default:
            return MessageError(.connectionClosed, "\(error)")
        }
    }
}
