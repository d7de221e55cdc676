import MsgNetCore
import NIOCore

/// The requester's decisions on one request stream, without I/O: which bytes end the request in
/// progress and how, whether a kept stream goes back to its connection's pool, and when the
/// stream is reset or closed. ``KeptRequestStream`` drives it for kept streams,
/// `StreamHost.startRequest` for a per-request stream (``Mode/oneShot``), on the stream's event
/// loop, carrying out its actions.
///
/// A stream is *idle* (in the pool, or just opened), *waiting* for the reply to one request, or
/// *done* (never used again: reset, failed, closed by either side, retired, evicted, or, one-shot,
/// answered).
///
/// A kept stream that answered before is *reused*. When the responder ends a reused stream (a
/// close or a reset) before any byte of the reply in progress, the request is sent again, once,
/// on a new stream (``Action/retry``): a responder ends idle streams (its idle timeout, or one that
/// answers one request per stream), and its end crossed our request on the wire, so nobody read
/// it. (A responder that reads a request and ends the stream without answering breaks the
/// request-stream protocol; it may see the request twice.)
struct RequestStreamMachine {
    /// What becomes of a stream after its reply.
    enum Mode {
        /// Kept open for the next request (a request stream between MsgNet peers).
        case kept
        /// Used for one request: our write side closed with it, the responder closes after its
        /// reply; nothing after the reply matters (a per-request stream, as libp2p uses).
        case oneShot
    }

    /// What the driver does, in order.
    enum Action {
        /// The request in progress has its outcome.
        case finish(Result<ByteBuffer, any Error>)
        /// Put the stream back in the pool (idle, for the next request on its protocol).
        case keep
        /// Take the stream out of the pool, if it is there.
        case forget
        /// Reset the stream.
        case reset
        /// Close our write side (the responder then ends the stream from its side).
        case closeWrite
        /// Send the request in progress again on a new stream (not from the pool): the responder
        /// ended this reused stream before any byte of its reply. Its outcome stays open.
        case retry
    }

    private enum State {
        case idle
        case waiting(LazyReplyParser, keepIf: (@Sendable (ByteBuffer) -> Bool)?, gotBytes: Bool)
        case done
    }

    private var state = State.idle
    /// Requests this stream answered (kept streams only: a one-shot stream answers one).
    private(set) var answered = 0
    let peer: PeerID
    let protocolID: String
    let mode: Mode

    init(peer: PeerID, protocolID: String, mode: Mode = .kept) {
        self.peer = peer
        self.protocolID = protocolID
        self.mode = mode
    }

    /// Whether the stream can take a request (it is idle and not done).
    var isIdle: Bool {
        if case .idle = state { return true }
        return false
    }

    /// Whether the stream will never be used again.
    var isDone: Bool {
        if case .done = state { return true }
        return false
    }

    /// A request was written: `parser` reads its reply (with the negotiation on a new stream);
    /// `keepIf` judges the reply before the stream is kept. Only on an idle stream.
    mutating func onRequest(parser: LazyReplyParser, keepIf: (@Sendable (ByteBuffer) -> Bool)?) {
        // The pool hands out idle streams only; a request on any other waits for its deadline.
        assert(isIdle, "a kept request stream carries one request at a time")
        state = .waiting(parser, keepIf: keepIf, gotBytes: false)
    }

    /// Bytes arrived. `requestEnded`: the request in progress already has its outcome from
    /// elsewhere (its deadline passed, or its caller cancelled), so no reply is expected.
    mutating func onData(_ bytes: inout ByteBuffer, requestEnded: Bool) -> [Action] {
        switch state {
        case .done:
            return []
        case .idle:
            // Data nobody asked for: the stream is out of step with its requests.
            state = .done
            return [.forget, .reset]
        case .waiting(var parser, let keepIf, _):
            if requestEnded {
                state = .done
                // One-shot: whatever ended the request reset the stream already.
                return mode == .kept ? [.forget, .reset] : []
            }
            switch parser.onBytes(&bytes) {
            case .needMore:
                state = .waiting(parser, keepIf: keepIf, gotBytes: true)
                return []
            case .reply(let reply):
                if mode == .oneShot {
                    state = .done
                    return [.finish(.success(reply))]
                }
                let sound = keepIf?(reply) ?? true
                if parser.hasBufferedBytes || !sound {
                    // More than one reply, or one the caller's protocol rejects: the reply goes
                    // to the caller, the stream is not kept.
                    state = .done
                    return [.reset, .finish(.success(reply))]
                }
                state = .idle
                answered += 1
                // Kept before the caller resumes: its next request finds the stream in the pool.
                return [.keep, .finish(.success(reply))]
            case .failed(let error):
                state = .done
                return [.finish(.failure(error)), .reset]
            }
        }
    }

    /// Whether the request in progress is sent again when the responder ends the stream now:
    /// kept, reused, and not a byte of the reply yet.
    private var retriesOnEnd: Bool {
        guard mode == .kept, answered > 0, case .waiting(_, _, gotBytes: false) = state else { return false }
        return true
    }

    /// The responder closed its side.
    mutating func onRemoteClosed() -> [Action] {
        var actions: [Action] = []
        if retriesOnEnd {
            actions.append(.retry)
        } else if case .waiting(let parser, _, _) = state {
            let error =
                parser.negotiated
                ? StreamsError(.protocolViolation, "\(peer) closed the \(protocolID) stream without replying")
                : StreamsError(.connectionClosed, "\(peer) closed the stream during negotiation")
            actions.append(.finish(.failure(error)))
        }
        state = .done
        // Our side too, so the stream ends (harmless after a retire); a one-shot stream closed
        // its side with the request.
        if mode == .kept { actions += [.forget, .closeWrite] }
        return actions
    }

    /// The stream was reset (by the responder, or by us: a deadline, a cancellation).
    mutating func onReset(_ reason: String) -> [Action] {
        var actions: [Action] = []
        if retriesOnEnd {
            // A reset of ours (deadline, cancellation) comes after the request's outcome: the
            // driver does not retry a finished request.
            actions.append(.retry)
        } else if case .waiting = state {
            actions.append(
                .finish(.failure(StreamsError(.connectionClosed, "\(protocolID) stream to \(peer) reset: \(reason)"))))
        }
        state = .done
        if mode == .kept { actions.append(.forget) }
        return actions
    }

    /// The pool is done with an idle stream (full, or idle too long): it ends gracefully.
    mutating func retire() -> [Action] {
        guard !isDone else { return [] }
        state = .done
        return [.closeWrite]
    }

    /// The pool takes an idle stream's slot for another stream: it is reset at once.
    mutating func evict() -> [Action] {
        guard !isDone else { return [] }
        state = .done
        return [.reset]
    }
}
