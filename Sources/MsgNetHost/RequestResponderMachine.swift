import NIOCore

/// The responder's decisions on one inbound request stream, without I/O: which request a reply
/// may answer, that each request gets exactly one answer (its handler's reply, or an error when
/// the handler returned without one or failed), the status byte in front of each answer, and
/// when the stream counts as idle. `StreamChannel` drives it (under its lock) and carries out
/// what it decides; the requester's side is `RequestStreamMachine` (docs/api.md, "Request
/// streams").
///
/// A stream is *idle* (no request yet, or the last one answered) or *handling* one request,
/// known by the token its `Message` carries.
struct RequestResponderMachine {
    /// An answer to write: the status byte (``RequestStreamStatus``), then the payload.
    enum Answer: Equatable {
        /// The handler's reply.
        case reply
        /// An error (``ErrorReply`` payload): the request ended without a reply.
        case error

        /// The byte in front of the answer's payload on the wire.
        var status: UInt8 {
            switch self {
            case .reply: RequestStreamStatus.reply
            case .error: RequestStreamStatus.error
            }
        }
    }

    private enum State {
        case idle
        case handling(token: UInt64)
    }

    private var state = State.idle
    /// The token of the last request (tokens start at 1; 0 is never a request's).
    private var lastToken: UInt64 = 0
    /// When the last request arrived, or the stream opened.
    private var lastRequest: NIODeadline

    /// A stream opened at `now`.
    init(now: NIODeadline) {
        lastRequest = now
    }

    /// Whether a request is being handled (its answer not yet decided).
    var isHandling: Bool {
        if case .handling = state { return true }
        return false
    }

    /// A request arrived at `now`: the token its handler replies with. A request still unanswered
    /// cannot be answered any more (the reader starts the next one only after settling it with
    /// ``onUnanswered()``; this is the backstop).
    mutating func onRequest(now: NIODeadline) -> UInt64 {
        lastToken &+= 1
        if lastToken == 0 { lastToken = 1 }
        lastRequest = now
        state = .handling(token: lastToken)
        return lastToken
    }

    /// The handler replies to request `token`: `.reply` when that request is the one being
    /// handled and has no answer yet (it has one from now on), `nil` when the reply must be
    /// refused (already answered, or a stale token).
    mutating func onReply(token: UInt64) -> Answer? {
        guard case .handling(let current) = state, current == token else { return nil }
        state = .idle
        return .reply
    }

    /// The request being handled ends without its handler's reply (the handler returned or
    /// failed, or the stream is being reset): `.error` when it still needs an answer (it has one
    /// from now on, and its handler can no longer reply), `nil` when it has one already.
    mutating func onUnanswered() -> Answer? {
        guard case .handling = state else { return nil }
        state = .idle
        return .error
    }

    /// Whether no request is being handled and none arrived after `cutoff` (the stream may be
    /// reset as idle).
    func isIdle(since cutoff: NIODeadline) -> Bool {
        guard case .idle = state else { return false }
        return lastRequest <= cutoff
    }
}
