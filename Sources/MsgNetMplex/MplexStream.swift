import DequeModule
import MsgNetCore
import NIOCore

/// One mplex stream: a bidirectional, half-closable byte stream on an ``MplexConnection``.
///
/// Its state is confined to the connection's event loop. Use either the event-loop API
/// (``setInboundHandler(_:)``, ``writeOnEventLoop(_:flush:promise:)``, …; call these on ``eventLoop``)
/// or the async API (``read()``, ``write(_:)``, ``closeWrite()``, ``reset()``; callable anywhere).
/// Do not mix the two write paths on one stream: async writes wait for the channel to be
/// writable, event-loop writes do not, so mixing them can reorder data.
public final class MplexStream: Sendable {
    /// What the event-loop inbound handler receives.
    public enum InboundEvent: Sendable {
        /// Data from the peer, in order.
        case data(ByteBuffer)
        /// The peer closed its write side; no more data follows.
        case remoteClosed
        /// The stream is gone (reset by either side, or the connection ended); no more events follow.
        case reset(MplexError)
    }

    /// The stream's id on its connection.
    public let id: MplexStreamID
    /// The event loop that owns the stream (the connection's channel's loop).
    public let eventLoop: any EventLoop

    private let handler: NIOLoopBound<MplexHandler>
    private let state: NIOLoopBoundBox<State>

    private struct State {
        var buffer: Deque<ByteBuffer> = []
        var remoteClosed = false
        var localWriteClosed = false
        var error: MplexError?
        var pendingRead: PendingRead?
        var inboundHandler: ((InboundEvent) -> Void)?
    }

    /// A reader waiting for data: a promise (a read from off the loop) or the continuation of a
    /// task reading on the loop (resumed directly, without a future in between).
    private enum PendingRead {
        case promise(EventLoopPromise<ByteBuffer?>)
        case continuation(UnsafeContinuation<ByteBuffer?, any Error>)

        func complete(_ result: Result<ByteBuffer?, any Error>) {
            switch self {
            case .promise(let promise): promise.completeWith(result)
            case .continuation(let continuation): continuation.resume(with: result)
            }
        }
    }

    /// The most bytes one `read()` returns when it merges several buffered chunks.
    private static let mergeLimit = 64 * 1024

    init(id: MplexStreamID, handler: MplexHandler, eventLoop: any EventLoop) {
        self.id = id
        self.eventLoop = eventLoop
        self.handler = NIOLoopBound(handler, eventLoop: eventLoop)
        self.state = NIOLoopBoundBox(State(), eventLoop: eventLoop)
    }

    // MARK: Event-loop API

    /// Installs the callback that receives this stream's inbound events, on the event loop.
    ///
    /// Data that arrived before is delivered at once, then EOF or reset if they happened.
    /// Data handed to the callback counts as consumed (it no longer holds back the connection).
    /// After this, ``read()`` fails with ``MplexError/Code/invalidUse``.
    /// - Precondition: called on ``eventLoop``.
    public func setInboundHandler(_ handler: @escaping (InboundEvent) -> Void) {
        eventLoop.preconditionInEventLoop()
        state.value.inboundHandler = handler
        var consumed = 0
        while let chunk = state.value.buffer.popFirst() {
            consumed += chunk.readableBytes
            handler(.data(chunk))
        }
        if consumed > 0 { self.handler.value.consumed(id, bytes: consumed) }
        let error = state.value.error
        if state.value.remoteClosed && (error == nil || error?.code == .connectionClosed) {
            handler(.remoteClosed)
        }
        if let error {
            state.value.inboundHandler = nil
            handler(.reset(error))
        }
    }

    /// Writes data on the stream (split into frames of at most the frame size), on the event loop.
    ///
    /// Does not wait for writability. The promise fails with the stream's reset error,
    /// ``MplexError/Code/writeAfterClose`` or ``MplexError/Code/connectionClosed``.
    /// - Precondition: called on ``eventLoop``.
    public func writeOnEventLoop(_ buffer: ByteBuffer, flush: Bool, promise: EventLoopPromise<Void>? = nil) {
        eventLoop.preconditionInEventLoop()
        handler.value.write(self, buffer, flush: flush, promise: promise)
    }

    /// Closes the write side (sends Close), on the event loop. Idempotent. Async writes of this
    /// stream still waiting for writability go first.
    /// - Parameter flush: flush now (default); with `false` the Close frame leaves with the next
    ///   flush (see ``flushSoonOnEventLoop()``).
    /// - Precondition: called on ``eventLoop``.
    public func closeWriteOnEventLoop(flush: Bool = true, promise: EventLoopPromise<Void>? = nil) {
        eventLoop.preconditionInEventLoop()
        handler.value.closeWriteInOrder(self, flush: flush, promise: promise)
    }

    /// Flushes the connection once the event loop has run the work queued on it now, so that
    /// frames written by several steps of one exchange (a protocol echo, a handler's reply, a
    /// close) leave in one write. Cheap to call repeatedly.
    /// - Precondition: called on ``eventLoop``.
    public func flushSoonOnEventLoop() {
        eventLoop.preconditionInEventLoop()
        handler.value.flushSoon()
    }

    /// Resets the stream (sends Reset, flushed), on the event loop: buffered data is dropped and
    /// pending reads and writes fail with ``MplexError/Code/streamResetLocally``. Idempotent.
    /// - Precondition: called on ``eventLoop``.
    public func resetOnEventLoop() {
        eventLoop.preconditionInEventLoop()
        handler.value.reset(self)
    }

    // MARK: Async API

    /// Reads the next data from the peer: `nil` at EOF (after all data), throws when the stream was reset.
    ///
    /// After a reset, unread data is discarded and reads throw. When the connection closes,
    /// data received before is still returned; then the read returns `nil` if the peer had closed
    /// the stream, or throws ``MplexError/Code/connectionClosed``.
    ///
    /// One reader at a time (a concurrent call fails with ``MplexError/Code/invalidUse``).
    /// Cancelling the calling task fails the read with `CancellationError`.
    ///
    /// Called on ``eventLoop`` (a task running there) with data or the end already buffered,
    /// it returns without suspending.
    public func read() async throws -> ByteBuffer? {
        if eventLoop.inEventLoop {
            if let ready = readNowOnLoop() { return try ready.get() }
            // A task on the loop waits with its own continuation, resumed by the next event.
            return try await withTaskCancellationHandler {
                try await withUnsafeThrowingContinuation { continuation in
                    if eventLoop.inEventLoop {
                        waitOnLoop(continuation)
                    } else {
                        eventLoop.execute { self.waitOnLoop(continuation) }
                    }
                }
            } onCancel: {
                eventLoop.execute { self.cancelRead() }
            }
        }
        return try await withTaskCancellationHandler {
            try await onLoop { self.readOnLoop() }.get()
        } onCancel: {
            eventLoop.execute { self.cancelRead() }
        }
    }

    /// What ``read()`` would return now without waiting, or `nil` when it would wait (or when not
    /// called on ``eventLoop``): data, the end (`.success(nil)`) or the stream's error.
    package func readIfReady() -> Result<ByteBuffer?, any Error>? {
        guard eventLoop.inEventLoop else { return nil }
        return readNowOnLoop()
    }

    /// Writes data on the stream; returns once it is written to the connection.
    ///
    /// Waits while the channel is not writable. Throws the stream's reset error,
    /// ``MplexError/Code/writeAfterClose`` or ``MplexError/Code/connectionClosed``.
    public func write(_ buffer: ByteBuffer) async throws {
        try await onLoop { self.handler.value.asyncWrite(self, buffer) }.get()
    }

    /// Closes the write side of the stream (after the writes issued before it). Idempotent.
    public func closeWrite() async throws {
        try await onLoop { self.handler.value.asyncCloseWrite(self) }.get()
    }

    /// Resets the stream. Idempotent.
    public func reset() async {
        try? await onLoop {
            self.handler.value.reset(self)
            return self.eventLoop.makeSucceededVoidFuture()
        }.get()
    }

    /// Runs `body` on the loop: at once when already there (a task running on the loop, the
    /// default for inbound handlers), else submitted to it.
    private func onLoop<T: Sendable>(_ body: @escaping @Sendable () -> EventLoopFuture<T>) -> EventLoopFuture<T> {
        eventLoop.inEventLoop ? body() : eventLoop.flatSubmit(body)
    }

    // MARK: Called by the handler, on the loop

    private func readOnLoop() -> EventLoopFuture<ByteBuffer?> {
        if let ready = readNowOnLoop() { return eventLoop.makeCompletedFuture(ready) }
        let promise = eventLoop.makePromise(of: ByteBuffer?.self)
        state.value.pendingRead = .promise(promise)
        return promise.futureResult
    }

    /// Whether a read is waiting (for tests). On the loop.
    var isReadPending: Bool { state.value.pendingRead != nil }

    private func waitOnLoop(_ continuation: UnsafeContinuation<ByteBuffer?, any Error>) {
        if let ready = readNowOnLoop() {
            continuation.resume(with: ready)
            return
        }
        state.value.pendingRead = .continuation(continuation)
    }

    /// The outcome of a read when it is known now (data, the end, an error); `nil` when the read
    /// has to wait for data.
    private func readNowOnLoop() -> Result<ByteBuffer?, any Error>? {
        if state.value.inboundHandler != nil || state.value.pendingRead != nil {
            return .failure(
                MplexError(
                    .invalidUse, "read() on stream \(id) while another read is pending or an inbound handler is set")
            )
        }
        if var chunk = state.value.buffer.popFirst() {
            while chunk.readableBytes < Self.mergeLimit, let next = state.value.buffer.first,
                chunk.readableBytes + next.readableBytes <= Self.mergeLimit
            {
                var next = state.value.buffer.removeFirst()
                chunk.writeBuffer(&next)
            }
            handler.value.consumed(id, bytes: chunk.readableBytes)
            return .success(chunk)
        }
        if let error = state.value.error, !(error.code == .connectionClosed && state.value.remoteClosed) {
            return .failure(error)
        }
        if state.value.remoteClosed {
            return .success(nil)
        }
        return nil
    }

    private func cancelRead() {
        if let pending = state.value.pendingRead {
            state.value.pendingRead = nil
            pending.complete(.failure(CancellationError()))
        }
    }

    /// The error a write or close must fail with, if any (reset or write side closed).
    func writeError() -> MplexError? {
        if let error = state.value.error { return error }
        if state.value.localWriteClosed {
            return MplexError(.writeAfterClose, "write on stream \(id) after closing it for writing")
        }
        return nil
    }

    /// Whether a close of our write side is a no-op: already closed, and the stream not reset
    /// (checked before ``writeError()``, which builds an error).
    var isOnlyWriteClosed: Bool { state.value.localWriteClosed && state.value.error == nil }

    func markLocalWriteClosed() {
        state.value.localWriteClosed = true
    }

    /// New data from the peer. Returns the byte count consumed at once (by a reader or handler).
    func receive(_ data: ByteBuffer) -> Int {
        if let inbound = state.value.inboundHandler {
            inbound(.data(data))
            return data.readableBytes
        }
        if let pending = state.value.pendingRead {
            state.value.pendingRead = nil
            pending.complete(.success(data))
            return data.readableBytes
        }
        state.value.buffer.append(data)
        return 0
    }

    func receiveEOF() {
        guard state.value.error == nil, !state.value.remoteClosed else { return }
        state.value.remoteClosed = true
        if let inbound = state.value.inboundHandler {
            inbound(.remoteClosed)
        } else if let pending = state.value.pendingRead {
            state.value.pendingRead = nil
            pending.complete(.success(nil))
        }
    }

    /// The stream is closed in both directions and gone from its connection: no event follows,
    /// so the inbound handler is released. Handlers usually capture their stream; keeping the
    /// handler would keep both alive for as long as the process runs.
    func receiveFinished() {
        state.value.inboundHandler = nil
    }

    func receiveReset(_ error: MplexError) {
        guard state.value.error == nil else { return }
        state.value.error = error
        // A reset discards unread data; a closed connection keeps what arrived before it, so a
        // reply followed by the peer hanging up is still read in full.
        if error.code != .connectionClosed {
            state.value.buffer.removeAll()
        }
        if let inbound = state.value.inboundHandler {
            state.value.inboundHandler = nil
            inbound(.reset(error))
        } else if let pending = state.value.pendingRead {
            state.value.pendingRead = nil
            pending.complete(.failure(error))
        }
    }
}
