import MsgNetCore
import MsgNetStreams
import NIOConcurrencyHelpers
import NIOCore

/// Splits a stream's bytes into `uvarint(length) || payload` messages, with a hard size limit.
/// Messages are slices of the received buffers (no copy unless a message spans chunks).
struct FramedReader {
    private var buffer = ByteBuffer()
    let maxSize: Int

    init(maxSize: Int) {
        self.maxSize = maxSize
    }

    /// Takes one complete message out of `buffer`, or `nil` when more bytes are needed.
    /// - Throws: `.messageTooLarge` for a length over the limit, `.remoteError` for a malformed one.
    static func parse(_ buffer: inout ByteBuffer, maxSize: Int) throws -> ByteBuffer? {
        let start = buffer.readerIndex
        let length: UInt64?
        do {
            length = try UVarint.read(from: &buffer)
        } catch {
            throw MessageError(.remoteError, "malformed message length prefix")
        }
        guard let length else { return nil }
        guard length <= UInt64(maxSize) else {
            throw MessageError(.messageTooLarge, "inbound message of \(length) bytes exceeds the limit of \(maxSize)")
        }
        guard let payload = buffer.readSlice(length: Int(length)) else {
            buffer.moveReaderIndex(to: start)
            return nil
        }
        return payload
    }

    /// What ``next(from:)`` would return without waiting: a message complete in the buffer or
    /// in bytes the stream already holds (`.message`), the clean end (`.end`), or `.wait`.
    enum Ready {
        case message(ByteBuffer)
        case end
        case wait
    }

    /// The next message if it can be had without waiting (on the stream's event loop, a reader
    /// takes a burst of messages this way without one async call each).
    mutating func nextIfReady(from stream: NegotiatedStream) throws -> Ready {
        while true {
            if buffer.readableBytes > 0, let message = try Self.parse(&buffer, maxSize: maxSize) {
                return .message(message)
            }
            switch stream.readIfReady() {
            case nil:
                return .wait
            case .failure(let error)?:
                throw error
            case .success(nil)?:
                if buffer.readableBytes == 0 { return .end }
                throw MessageError(.connectionClosed, "stream \(stream.protocolID) ended inside a message")
            case .success(let chunk?)?:
                buffer.appendChunk(chunk)
            }
        }
    }

    /// The next message, or `nil` when the stream ends cleanly between messages.
    mutating func next(from stream: NegotiatedStream) async throws -> ByteBuffer? {
        while true {
            if buffer.readableBytes > 0, let message = try Self.parse(&buffer, maxSize: maxSize) {
                return message
            }
            guard let chunk = try await stream.read() else {
                if buffer.readableBytes == 0 { return nil }
                throw MessageError(.connectionClosed, "stream \(stream.protocolID) ended inside a message")
            }
            buffer.appendChunk(chunk)
        }
    }
}

/// One message stream (inbound or outbound) with a coalescing writer: messages queued while a
/// flush is pending leave together in one write. Sends wait only when more than the high
/// watermark is queued or unwritten (backpressure), until it drains below the low watermark.
final class StreamChannel: MessageReplyChannel, Sendable {
    let stream: NegotiatedStream
    let peer: PeerID
    let protocolID: String
    let maxMessageSize: Int
    private let highWatermark: Int
    private let lowWatermark: Int

    private typealias Waiter = (id: UInt64, continuation: CheckedContinuation<Void, any Error>)

    private struct State {
        var pending = ByteBuffer()
        var flushScheduled = false
        var unwritten = 0
        /// Sends waiting for the channel to drain, each with the id its cancellation finds it by.
        var waiters: [Waiter] = []
        var lastWaiterID: UInt64 = 0
        var error: MessageError?
        var closing = false
        /// On a request stream: which request may be answered, and how (see
        /// ``RequestResponderMachine``).
        var responder = RequestResponderMachine(now: .now())
        /// Elsewhere: how long the last message an inbox took may still be replied to after the
        /// peer closed its side (see ``hold(for:)``).
        var held: TimeAmount?
    }
    /// Whether this is an inbound request stream: one reply per message, given by its handler.
    let requests: Bool
    /// Whether the current request (request streams) or the held message (``hold(for:)``) has
    /// its reply: what an inbox delivery, or the reader at the stream's end, waits for.
    let answer = AnswerWatch(answered: true)
    private let state = NIOLockedValueBox(State())

    /// Called when a send starts waiting for the channel to drain (tests observe backpressure).
    private let onBlocked: (@Sendable () -> Void)?

    /// - Parameters:
    ///   - protocolID: the message protocol, when it is not the stream's (request streams).
    ///   - requests: an inbound request stream (see ``RequestResponderMachine``).
    init(
        stream: NegotiatedStream,
        protocolID: String? = nil,
        maxMessageSize: Int,
        highWatermark: Int,
        requests: Bool = false,
        onBlocked: (@Sendable () -> Void)? = nil
    ) {
        self.stream = stream
        self.onBlocked = onBlocked
        self.requests = requests
        self.peer = stream.connection.remotePeer
        self.protocolID = protocolID ?? stream.protocolID
        self.maxMessageSize = maxMessageSize
        self.highWatermark = max(1, highWatermark)
        self.lowWatermark = max(1, highWatermark / 2)
    }

    /// Whether the channel can still take messages.
    var isUsable: Bool { state.withLockedValue { $0.error == nil && !$0.closing } }

    /// The reply of a handler goes back on this stream. On a request stream, only the request
    /// being handled can be answered, once.
    func reply(_ data: ByteBuffer, token: UInt64) async throws {
        guard data.readableBytes <= maxMessageSize else {
            throw MessageError(
                .messageTooLarge, "reply of \(data.readableBytes) bytes exceeds the limit of \(maxMessageSize)")
        }
        guard requests else {
            try await write(data)
            answer.answered()
            return
        }
        guard let decision = state.withLockedValue({ $0.responder.onReply(token: token) }) else {
            throw MessageError(
                .remoteError, "request \(token) on \(protocolID) from \(peer) was already answered or has ended")
        }
        defer { answer.answered() }
        try await write(data, status: decision.status, flushNow: true)
    }

    /// Answers the request being handled with an error (a request stream's handler that did not
    /// reply, threw, or was refused); nothing when it already has its answer.
    func replyError(_ code: MessageError.Code, _ reason: String) async throws {
        guard requests, let decision = state.withLockedValue({ $0.responder.onUnanswered() }) else { return }
        // From here on its handler can no longer reply: the request has this answer.
        answer.answered()
        try await write(ErrorReply.encode(code, reason), status: decision.status, flushNow: true)
    }

    /// An inbox took the last message read: when the peer closes its side (a per-request
    /// stream's requester does so right after its request), the stream stays open for that
    /// message's reply for up to `window` (``waitForHeldReply()``).
    func hold(for window: TimeAmount) {
        state.withLockedValue { $0.held = window }
        answer.reset()
    }

    /// The held message was not handed on after all.
    func releaseHeld() {
        answer.answered()
    }

    /// Waits until the held message (``hold(for:)``) is replied to, or its window passes.
    func waitForHeldReply() async {
        guard let window = state.withLockedValue({ $0.held }) else { return }
        await answer.wait(upTo: window)
    }

    /// The reply token of the next message read (on a request stream, starts its request).
    func nextRequestToken() -> UInt64 {
        guard requests else { return 0 }
        answer.reset()
        return state.withLockedValue { $0.responder.onRequest(now: .now()) }
    }

    /// On a request stream: whether no request is being handled and none arrived after `cutoff`.
    func isIdle(since cutoff: NIODeadline) -> Bool {
        state.withLockedValue { $0.responder.isIdle(since: cutoff) }
    }

    /// Queues one framed message if the channel is usable and stays under its high watermark;
    /// false (nothing queued) otherwise, so the caller can take the waiting path.
    func tryWrite(_ payload: ByteBuffer) -> Bool {
        let (written, schedule) = state.withLockedValue { s -> (Bool, Bool) in
            guard s.error == nil, !s.closing,
                s.pending.readableBytes + s.unwritten + payload.readableBytes + 10 <= highWatermark
            else { return (false, false) }
            return (true, Self.append(payload, to: &s))
        }
        if schedule { stream.eventLoop.execute { self.flushOnLoop() } }
        return written
    }

    /// Queues one framed message (on a request stream's answer, behind its status byte).
    /// - Parameter flushNow: on the event loop, write and flush at once instead of after the
    ///   loop's current work (an answer on a request stream: nothing else is coming to coalesce
    ///   it with, and the requester is waiting).
    func write(_ payload: ByteBuffer, status: UInt8? = nil, flushNow: Bool = false) async throws {
        let (schedule, wait) = try state.withLockedValue { s throws -> (Bool, Bool) in
            if let error = s.error { throw error }
            if s.closing { throw MessageError(.connectionClosed, "the channel to \(peer) on \(protocolID) is closed") }
            let schedule = Self.append(payload, status: status, to: &s)
            return (schedule, s.pending.readableBytes + s.unwritten > highWatermark)
        }
        if flushNow, stream.eventLoop.inEventLoop {
            flushOnLoop(now: true)
        } else if schedule {
            stream.eventLoop.execute { self.flushOnLoop() }
        }
        if wait {
            onBlocked?()
            try await waitForDrain()
        }
    }

    /// Waits until the queued and unwritten bytes are at most the low watermark. Cancelling the
    /// caller ends the wait with `cancelled`; the message it queued stays queued and may still
    /// be delivered (outcome unknown), as a cancelled reliable datagram send.
    private func waitForDrain() async throws {
        let id = state.withLockedValue { s in
            s.lastWaiterID &+= 1
            return s.lastWaiterID
        }
        let cancelled = MessageError(
            .cancelled,
            "send to \(peer) on \(protocolID) cancelled while waiting for the stream to drain; "
                + "the message is queued and may still be delivered (outcome unknown)")
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                let result = state.withLockedValue { s -> Result<Void, MessageError>? in
                    if let error = s.error { return .failure(error) }
                    if s.pending.readableBytes + s.unwritten <= lowWatermark { return .success(()) }
                    // Checked under the lock: a cancellation that found no waiter has already
                    // marked the task, so the wait does not start.
                    if Task.isCancelled { return .failure(cancelled) }
                    s.waiters.append((id, c))
                    return nil
                }
                if let result { c.resume(with: result) }
            }
        } onCancel: {
            let waiter = state.withLockedValue { s -> CheckedContinuation<Void, any Error>? in
                guard let index = s.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return s.waiters.remove(at: index).continuation
            }
            waiter?.resume(throwing: cancelled)
        }
    }

    /// Frames `payload` (behind `status`, if any) onto the pending bytes; true when the caller
    /// must schedule the flush.
    private static func append(_ payload: ByteBuffer, status: UInt8? = nil, to s: inout State) -> Bool {
        if let status {
            UVarint.write(UInt64(payload.readableBytes + 1), to: &s.pending)
            s.pending.writeInteger(status)
        } else {
            UVarint.write(UInt64(payload.readableBytes), to: &s.pending)
        }
        s.pending.writeImmutableBuffer(payload)
        defer { s.flushScheduled = true }
        return !s.flushScheduled
    }

    private func flushOnLoop(now: Bool = false) {
        let buffer = state.withLockedValue { s -> ByteBuffer? in
            s.flushScheduled = false
            guard s.error == nil, s.pending.readableBytes > 0 else { return nil }
            let b = s.pending
            s.pending = ByteBuffer()
            if !now { s.unwritten += b.readableBytes }
            return b
        }
        if now, let buffer {
            // An answer on a request stream: at most one is outstanding (the requester waits for
            // it before it sends the next request), so it needs no accounting against the high
            // watermark; a failed write resets the stream, which the next read reports.
            stream.writeOnEventLoop(buffer, flush: true, promise: nil)
            return
        }
        guard let buffer else { return }
        let count = buffer.readableBytes
        let promise = stream.eventLoop.makePromise(of: Void.self)
        promise.futureResult.whenComplete { result in self.written(count, result) }
        // Flushed once this loop pass is done: what else is written meanwhile (a protocol echo,
        // the stream's close, other channels' messages) leaves in the same write.
        stream.writeOnEventLoop(buffer, flush: false, promise: promise)
        stream.flushSoonOnEventLoop()
    }

    private func written(_ count: Int, _ result: Result<Void, any Error>) {
        let waiters = state.withLockedValue { s -> [Waiter] in
            s.unwritten -= count
            if case .failure(let error) = result, s.error == nil {
                s.error = MessageError(.connectionClosed, "stream to \(peer) on \(protocolID) failed: \(error)")
            }
            guard s.error != nil || s.pending.readableBytes + s.unwritten <= lowWatermark else { return [] }
            let w = s.waiters
            s.waiters = []
            return w
        }
        let error = state.withLockedValue { $0.error }
        for w in waiters {
            if let error { w.continuation.resume(throwing: error) } else { w.continuation.resume() }
        }
    }

    /// Marks the channel failed: queued and later writes fail with `error`.
    func fail(_ error: MessageError) {
        let waiters = state.withLockedValue { s -> [Waiter] in
            if s.error == nil { s.error = error }
            let w = s.waiters
            s.waiters = []
            return w
        }
        for w in waiters { w.continuation.resume(throwing: error) }
    }

    /// Writes what is queued, then closes our write side. Off the loop, returns once the close
    /// is written; on the loop, once it is queued.
    func close() async {
        let proceed = state.withLockedValue { s -> Bool in
            guard !s.closing else { return false }
            s.closing = true
            return true
        }
        guard proceed else { return }
        if stream.eventLoop.inEventLoop {
            // On the loop (an inbound handler's task): the close is queued behind what was
            // written and leaves with the next flush; nothing to wait for.
            closeOnLoop(nil)
            return
        }
        let promise = stream.eventLoop.makePromise(of: Void.self)
        stream.eventLoop.execute { self.closeOnLoop(promise) }
        try? await promise.futureResult.get()
    }

    private func closeOnLoop(_ promise: EventLoopPromise<Void>?) {
        flushOnLoop()
        stream.closeWriteOnEventLoop(flush: false, promise: promise)
    }

    /// Resets the stream; queued messages are dropped.
    func reset(_ error: MessageError) {
        fail(error)
        // At once when on the loop: a close issued right after (the stream host closes a stream
        // whose handler returned) must not overtake the reset.
        if stream.eventLoop.inEventLoop {
            stream.resetOnEventLoop()
        } else {
            stream.eventLoop.execute { self.stream.resetOnEventLoop() }
        }
    }
}

/// The first byte of every answer on a request stream (see
/// ``StreamMessageTransport/RequestStreams``): the handler's reply follows, or an error
/// (``ErrorReply``: a code byte and a UTF-8 reason).
enum RequestStreamStatus {
    static let reply: UInt8 = 0
    static let error: UInt8 = 1
}
