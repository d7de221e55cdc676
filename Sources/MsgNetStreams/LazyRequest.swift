import MsgNetCore
import MsgNetMplex
import MsgNetMultistream
import NIOConcurrencyHelpers
import NIOCore

/// A reply announced a length over the caller's limit (the stream was reset).
package struct ReplyTooLargeError: Error, CustomStringConvertible {
    /// The announced length.
    package let length: UInt64
    /// The limit.
    package let limit: Int
    package var description: String { "reply of \(length) bytes exceeds the limit of \(limit)" }
}

/// Parses the answer to a lazily proposed request: first the remote's multistream answer, then
/// one `uvarint(length) || payload` reply. Pure: bytes in, outcome out.
struct LazyReplyParser {
    enum Outcome {
        case needMore
        case reply(ByteBuffer)
        case failed(any Error)
    }

    private var machine: MultistreamMachine?
    /// The bytes a remote that accepts sends back: exactly what we proposed (the header and the
    /// protocol id, echoed). Matched byte for byte, they need no line parsing; anything else
    /// (`na`, an unusual encoding) goes to the machine.
    private var expectedEcho: ByteBuffer?
    private var buffer = ByteBuffer()
    let maxSize: Int

    /// - Parameter proposal: the negotiation bytes the machine produced and we sent, if known.
    init(machine: MultistreamMachine, maxSize: Int, proposal: ByteBuffer? = nil) {
        self.machine = machine
        self.maxSize = maxSize
        self.expectedEcho = proposal
    }

    /// A parser for a later reply on a stream whose protocol is already negotiated (a kept
    /// request stream): one `uvarint(length) || payload` and nothing before it.
    init(maxSize: Int) {
        self.machine = nil
        self.maxSize = maxSize
        self.expectedEcho = nil
    }

    /// Whether the remote accepted the protocol.
    var negotiated: Bool { machine == nil }

    /// Whether bytes beyond the parsed reply are buffered (on a kept stream, data nobody asked for).
    var hasBufferedBytes: Bool { buffer.readableBytes > 0 }

    mutating func onBytes(_ bytes: inout ByteBuffer) -> Outcome {
        if machine != nil, let echo = expectedEcho {
            take(&bytes)
            let n = min(buffer.readableBytes, echo.readableBytes)
            let matches = buffer.withUnsafeReadableBytes { got in
                echo.withUnsafeReadableBytes { want in got.prefix(n).elementsEqual(want.prefix(n)) }
            }
            if matches {
                guard n == echo.readableBytes else { return .needMore }
                buffer.moveReaderIndex(forwardBy: n)
                machine = nil
                expectedEcho = nil
                return parse()
            }
            expectedEcho = nil
            var all = buffer
            buffer = ByteBuffer()
            return onBytes(&all)
        }
        if var m = machine {
            let actions = m.onBytes(&bytes)
            machine = m
            for action in actions {
                switch action {
                case .negotiated(_, var rest):
                    machine = nil
                    take(&rest)
                    return parse()
                case .failed(let error):
                    return .failed(ConnectionUpgrader.classify(error, stage: .streamNegotiation))
                case .send, .optimisticallySelected, .listed:
                    break
                }
            }
            return .needMore
        }
        take(&bytes)
        return parse()
    }

    /// Moves all of `bytes` behind what is buffered (without a copy when nothing is).
    private mutating func take(_ bytes: inout ByteBuffer) {
        buffer.appendChunk(bytes)
        bytes.moveReaderIndex(to: bytes.writerIndex)
    }

    private mutating func parse() -> Outcome {
        let start = buffer.readerIndex
        let length: UInt64?
        do {
            length = try UVarint.read(from: &buffer)
        } catch {
            return .failed(StreamsError(.protocolViolation, "malformed reply length prefix"))
        }
        guard let length else { return .needMore }
        guard length <= UInt64(maxSize) else { return .failed(ReplyTooLargeError(length: length, limit: maxSize)) }
        guard let payload = buffer.readSlice(length: Int(length)) else {
            buffer.moveReaderIndex(to: start)
            return .needMore
        }
        return .reply(payload)
    }
}

extension StreamHost {
    /// One request, run entirely on the connection's event loop: opens a stream, proposes
    /// `protocolID` lazily together with `frame` (already framed), closes the write side, and
    /// reads exactly one `uvarint(length) || payload` reply of at most `maxReplySize` bytes.
    /// The calling task hops to the event loop once and back once.
    ///
    /// With `keepStreamOpen` the write side stays open and, after a clean reply, the stream goes
    /// to the connection's pool of idle request streams for `protocolID`; a later request with
    /// `keepStreamOpen` takes it from there and writes just its frame (no new stream, no
    /// negotiation). Only for protocols whose responder reads request after request on one stream
    /// and answers each with exactly one reply (MsgNet's request streams). A request on a reused
    /// stream that the responder ends (closes or resets) before any byte of its reply is sent
    /// again, once, on a new stream: the end crossed the request (an idle timeout, or a libp2p
    /// responder that closes after one reply). `keepIf` judges a reply
    /// by the caller's protocol: a stream whose reply fails it is reset instead of kept (the
    /// reply is still returned, for the caller to reject).
    ///
    /// - Throws: `StreamsError` (`.protocolNotSupported`, `.timedOut` at `deadline`,
    ///   `.connectionClosed`, `.protocolViolation` when the peer closes without a reply,
    ///   `.limitExceeded` for too many streams), ``ReplyTooLargeError``, `CancellationError`.
    package func request(
        to peer: PeerID,
        protocolID: String,
        frame: ByteBuffer,
        maxReplySize: Int,
        deadline: NIODeadline,
        keepStreamOpen: Bool = false,
        keepIf replyIsSound: (@Sendable (ByteBuffer) -> Bool)? = nil
    ) async throws -> ByteBuffer {
        let record = try await connectionOrDial(peer)
        let muxer = record.connection.muxer
        let loop = muxer.eventLoop
        let exchange = RequestExchange(deadlines: record.requestDeadlines)
        let start: @Sendable () -> Void
        if keepStreamOpen {
            // The proposal is built on the loop, and only when no idle stream can take the request.
            let pool = record.requestStreams
            start = {
                Self.startKeptRequest(
                    exchange, pool: pool, muxer: muxer, peer: peer, protocolID: protocolID, frame: frame,
                    maxReplySize: maxReplySize, deadline: deadline, keepIf: replyIsSound)
            }
        } else {
            let (initialMachine, proposal) = Self.lazyProposal(protocolID)
            var first = proposal
            first.writeImmutableBuffer(frame)
            let out = first
            let pool = record.requestStreams
            start = {
                Self.startRequest(
                    exchange, muxer: muxer, pool: pool, peer: peer, protocolID: protocolID, out: out,
                    proposal: proposal,
                    machine: initialMachine, maxReplySize: maxReplySize, deadline: deadline)
            }
        }
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<ByteBuffer, any Error>) in
                exchange.attach(continuation)
                loop.execute(start)
            }
        } onCancel: {
            loop.execute {
                exchange.finish(.failure(CancellationError()))
                exchange.stream?.resetOnEventLoop()
            }
        }
    }

    /// Opens a request's stream on the loop; on failure finishes `exchange` with the error
    /// (`.limitExceeded` at the muxer's stream limit, else `.connectionClosed`) and returns `nil`.
    static func openStream(
        for exchange: RequestExchange, on muxer: MplexConnection, to peer: PeerID, evictingFrom pool: RequestStreamPool
    ) -> MplexStream? {
        do {
            return try openStream(on: muxer, evictingFrom: pool, flush: false)
        } catch let error as MplexError where error.code == .tooManyStreams {
            exchange.finish(.failure(StreamsError(.limitExceeded, "too many streams to \(peer): \(error)")))
        } catch {
            exchange.finish(.failure(StreamsError(.connectionClosed, "cannot open a stream to \(peer): \(error)")))
        }
        return nil
    }

    /// Opens a stream on the loop; at the muxer's stream limit, makes room by resetting the
    /// connection's longest-idle request stream (if any) and tries once more.
    static func openStream(on muxer: MplexConnection, evictingFrom pool: RequestStreamPool, flush: Bool) throws
        -> MplexStream
    {
        do {
            return try muxer.openStreamOnEventLoop(flush: flush)
        } catch let error as MplexError where error.code == .tooManyStreams {
            guard pool.evictOldest() else { throw error }
            return try muxer.openStreamOnEventLoop(flush: flush)
        }
    }

    /// An initiator's multistream machine proposing `protocolID` optimistically, and the bytes it
    /// sends first (the header and the proposal).
    static func lazyProposal(_ protocolID: String) -> (MultistreamMachine, ByteBuffer) {
        var machine = MultistreamMachine.initiator(proposals: [protocolID], optimistic: true)
        var bytes = ByteBuffer()
        for action in machine.start() {
            if case .send(var b) = action { bytes.writeBuffer(&b) }
        }
        return (machine, bytes)
    }

    /// The event-loop part of ``request(to:protocolID:frame:maxReplySize:deadline:)``: opens the
    /// stream, arms the deadline, installs the reply parser and writes the request.
    private static func startRequest(
        _ exchange: RequestExchange,
        muxer: MplexConnection,
        pool: RequestStreamPool,
        peer: PeerID,
        protocolID: String,
        out: ByteBuffer,
        proposal: ByteBuffer,
        machine initialMachine: MultistreamMachine,
        maxReplySize: Int,
        deadline: NIODeadline
    ) {
        let loop = muxer.eventLoop
        if exchange.isFinished { return }  // cancelled before the stream existed
        guard let stream = openStream(for: exchange, on: muxer, to: peer, evictingFrom: pool) else { return }
        exchange.stream = stream
        exchange.deadlineToken = exchange.deadlines.add(deadline) {
            exchange.finish(.failure(StreamsError(.timedOut, "no reply from \(peer) on \(protocolID) in time")))
            stream.resetOnEventLoop()
        }
        var machine = RequestStreamMachine(peer: peer, protocolID: protocolID, mode: .oneShot)
        machine.onRequest(
            parser: LazyReplyParser(machine: initialMachine, maxSize: maxReplySize, proposal: proposal), keepIf: nil)
        let box = NIOLoopBoundBox(machine, eventLoop: loop)
        stream.setInboundHandler { event in
            let actions: [RequestStreamMachine.Action]
            switch event {
            case .data(var bytes): actions = box.value.onData(&bytes, requestEnded: exchange.isFinished)
            case .remoteClosed: actions = box.value.onRemoteClosed()
            case .reset(let error): actions = box.value.onReset("\(error)")
            }
            for action in actions {
                switch action {
                case .finish(let result): exchange.finish(result)
                case .reset: stream.resetOnEventLoop()
                case .keep, .forget, .closeWrite, .retry: break  // not emitted for a one-shot stream
                }
            }
        }
        // The request and our half-close leave in one flush.
        stream.writeOnEventLoop(out, flush: false, promise: nil)
        stream.closeWriteOnEventLoop(promise: nil)
    }
}

/// One request's outcome, its stream and its deadline. The caller's continuation is attached
/// before the request starts on the loop; ``finish(_:)`` (on the loop) resumes it once, with the
/// first outcome (reply, error, timeout or cancellation).
final class RequestExchange: Sendable {
    private struct State {
        var continuation: UnsafeContinuation<ByteBuffer, any Error>?
        /// An outcome that came before the continuation was attached (cancelled at once).
        var early: Result<ByteBuffer, any Error>?
        var finished = false
        var stream: MplexStream?
        var deadlineToken: UInt64?
    }
    /// The connection's request deadlines (loop-confined).
    let deadlines: RequestDeadlines
    private let state = NIOLockedValueBox(State())

    init(deadlines: RequestDeadlines) {
        self.deadlines = deadlines
    }

    /// Hands the exchange the caller's continuation; resumes it at once when the outcome is
    /// already known.
    func attach(_ continuation: UnsafeContinuation<ByteBuffer, any Error>) {
        let early = state.withLockedValue { s -> Result<ByteBuffer, any Error>? in
            guard s.finished else {
                s.continuation = continuation
                return nil
            }
            return s.early
        }
        if let early { continuation.resume(with: early) }
    }

    /// Whether the exchange already has its outcome.
    var isFinished: Bool { state.withLockedValue { $0.finished } }

    /// The request's stream, once opened.
    var stream: MplexStream? {
        get { state.withLockedValue { $0.stream } }
        set { state.withLockedValue { $0.stream = newValue } }
    }

    /// The request's entry in ``deadlines``, removed when the exchange finishes.
    var deadlineToken: UInt64? {
        get { state.withLockedValue { $0.deadlineToken } }
        set { state.withLockedValue { $0.deadlineToken = newValue } }
    }

    /// Sets the outcome (the first call wins) and resumes the caller. On the event loop.
    func finish(_ result: Result<ByteBuffer, any Error>) {
        let (continuation, token, first) = state.withLockedValue {
            s -> (UnsafeContinuation<ByteBuffer, any Error>?, UInt64?, Bool) in
            guard !s.finished else { return (nil, nil, false) }
            s.finished = true
            defer { s.continuation = nil }
            if s.continuation == nil { s.early = result }
            return (s.continuation, s.deadlineToken, true)
        }
        guard first else { return }
        if let token { deadlines.remove(token) }
        continuation?.resume(with: result)
    }
}
