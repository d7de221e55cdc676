import MsgNetCore
import MsgNetMplex
import MsgNetMultistream
import NIOCore

/// One connection's idle request streams, by protocol id: streams that answered a request and
/// stay open for the next one (see `StreamHost.request(…keepStreamOpen:)`). Confined to the
/// connection's event loop (every method but `init` runs there).
///
/// Bounded: at most `maxIdle` idle streams on the connection, over all protocols (a stream
/// returned beyond that is closed; each idle stream holds a stream slot on both sides and
/// counts against the responder's per-peer stream limit), and a stream idle for `idleTimeout`
/// is closed by a sweep. Closing a kept stream closes our write side; the responder then ends
/// the stream from its side. When a new stream meets the muxer's stream limit, the stream idle
/// the longest is reset instead (``evictOldest()``), which frees its slot at once.
final class RequestStreamPool: Sendable {
    private struct State {
        var idle: [String: [KeptRequestStream]] = [:]
        var total = 0
        var sweep: Scheduled<Void>?
    }

    let loop: any EventLoop
    let maxIdle: Int
    let idleTimeout: TimeAmount
    private let state: NIOLoopBoundBox<State>

    /// A pool for streams on `loop`; may be created on any thread.
    init(loop: any EventLoop, maxIdle: Int, idleTimeout: TimeAmount) {
        self.loop = loop
        self.maxIdle = max(0, maxIdle)
        self.idleTimeout = idleTimeout
        self.state = NIOLoopBoundBox.makeBoxSendingValue(State(), eventLoop: loop)
    }

    /// Idle streams for `protocolID`, or on the whole connection when `nil` (for tests).
    func idleCount(_ protocolID: String?) -> Int {
        guard let protocolID else { return state.value.total }
        return state.value.idle[protocolID]?.count ?? 0
    }

    /// The most recently returned idle stream for `protocolID`, taken out of the pool.
    func take(_ protocolID: String) -> KeptRequestStream? {
        guard var streams = state.value.idle[protocolID] else { return nil }
        var found: KeptRequestStream?
        while found == nil, let stream = streams.popLast() {
            state.value.total -= 1
            // Every way a stream ends takes it out of the pool; checked all the same.
            if stream.isIdle { found = stream }
        }
        state.value.idle[protocolID] = streams.isEmpty ? nil : streams
        return found
    }

    /// Returns a stream that just answered a request; closes it instead when the pool is full.
    func put(_ stream: KeptRequestStream) {
        guard state.value.total < maxIdle else {
            stream.retire()
            return
        }
        stream.idleSince = loop.now
        state.value.idle[stream.protocolID, default: []].append(stream)
        state.value.total += 1
        armSweep()
    }

    /// Forgets `stream` (it closed or was reset while idle).
    func remove(_ stream: KeptRequestStream) {
        guard var streams = state.value.idle[stream.protocolID],
            let index = streams.firstIndex(where: { $0 === stream })
        else { return }
        streams.remove(at: index)
        state.value.idle[stream.protocolID] = streams.isEmpty ? nil : streams
        state.value.total -= 1
    }

    /// Resets the stream idle the longest, over all protocols, which frees its stream slot at
    /// once (an open that met the muxer's stream limit can then succeed); false when none is idle.
    func evictOldest() -> Bool {
        var oldest: KeptRequestStream?
        for streams in state.value.idle.values {
            for stream in streams where oldest.map({ stream.idleSince < $0.idleSince }) ?? true { oldest = stream }
        }
        guard let oldest else { return false }
        remove(oldest)
        oldest.evict()
        return true
    }

    /// Arms the sweep for when the oldest idle stream expires (unless one is armed).
    private func armSweep() {
        guard state.value.sweep == nil else { return }
        var oldest: NIODeadline?
        for streams in state.value.idle.values {
            for stream in streams where oldest.map({ stream.idleSince < $0 }) ?? true { oldest = stream.idleSince }
        }
        guard let oldest else { return }
        state.value.sweep = loop.scheduleTask(deadline: oldest + idleTimeout) { [self] in sweep() }
    }

    /// Closes the streams idle for `idleTimeout` or longer; re-arms while any stay idle.
    private func sweep() {
        state.value.sweep = nil
        let cutoff = loop.now - idleTimeout
        var expired: [KeptRequestStream] = []
        for (protocolID, streams) in state.value.idle {
            let keep = streams.filter { $0.idleSince > cutoff }
            expired += streams.filter { $0.idleSince <= cutoff }
            state.value.idle[protocolID] = keep.isEmpty ? nil : keep
        }
        state.value.total -= expired.count
        for stream in expired { stream.retire() }
        armSweep()
    }
}

/// A request stream kept open between requests: its stream, its machine
/// (``RequestStreamMachine``, which makes every decision) and the request in progress, if any.
/// Confined to the stream's event loop.
final class KeptRequestStream: Sendable {
    private struct State {
        var machine: RequestStreamMachine
        var exchange: RequestExchange?
        /// Sends the request in progress again on a new stream (see ``RequestStreamMachine``).
        var retry: (() -> Void)?
        var idleSince = NIODeadline.distantPast
    }

    let stream: MplexStream
    let protocolID: String
    let peer: PeerID
    private let pool: RequestStreamPool
    private let state: NIOLoopBoundBox<State>

    /// Wraps a newly opened stream for `protocolID`. On the event loop.
    init(stream: MplexStream, protocolID: String, peer: PeerID, pool: RequestStreamPool) {
        self.stream = stream
        self.protocolID = protocolID
        self.peer = peer
        self.pool = pool
        self.state = NIOLoopBoundBox(
            State(machine: RequestStreamMachine(peer: peer, protocolID: protocolID)), eventLoop: stream.eventLoop)
    }

    var idleSince: NIODeadline {
        get { state.value.idleSince }
        set { state.value.idleSince = newValue }
    }

    /// Whether the stream can take a request.
    var isIdle: Bool { state.value.machine.isIdle }

    /// Starts a request on this (idle) stream: writes `bytes` (its frame, behind the proposal on a
    /// new stream); `parser` reads the reply; `retry` sends the request again on a new stream.
    func begin(
        _ exchange: RequestExchange, parser: LazyReplyParser, write bytes: ByteBuffer,
        keepIf: (@Sendable (ByteBuffer) -> Bool)?, retry: @escaping () -> Void
    ) {
        state.value.exchange = exchange
        state.value.retry = retry
        state.value.machine.onRequest(parser: parser, keepIf: keepIf)
        stream.writeOnEventLoop(bytes, flush: true, promise: nil)
    }

    /// Installs the inbound handler (once, when the stream is opened).
    func listen() {
        stream.setInboundHandler { [self] event in on(event) }
    }

    /// Ends the stream from our side: closes our write side (the responder then closes its own).
    func retire() {
        perform(state.value.machine.retire())
    }

    /// Resets an idle stream taken out of the pool to make room for another stream.
    func evict() {
        perform(state.value.machine.evict())
    }

    private func on(_ event: MplexStream.InboundEvent) {
        switch event {
        case .data(var bytes):
            let ended = state.value.exchange?.isFinished ?? true
            perform(state.value.machine.onData(&bytes, requestEnded: ended))
        case .remoteClosed:
            perform(state.value.machine.onRemoteClosed())
        case .reset(let error):
            perform(state.value.machine.onReset("\(error)"))
        }
    }

    private func perform(_ actions: [RequestStreamMachine.Action]) {
        for action in actions {
            switch action {
            case .finish(let result):
                let exchange = state.value.exchange
                state.value.exchange = nil
                state.value.retry = nil
                exchange?.finish(result)
            case .retry:
                let (exchange, retry) = (state.value.exchange, state.value.retry)
                state.value.exchange = nil
                state.value.retry = nil
                // Not when the request already has its outcome (our own reset after a deadline
                // or a cancellation).
                if let exchange, !exchange.isFinished { retry?() }
            case .keep:
                pool.put(self)
            case .forget:
                pool.remove(self)
            case .reset:
                stream.resetOnEventLoop()
            case .closeWrite:
                stream.closeWriteOnEventLoop(flush: true)
            }
        }
    }
}

extension StreamHost {
    /// The event-loop part of a request with `keepStreamOpen`: takes an idle stream for
    /// `protocolID` from the connection's pool (writing just `frame`) or opens one (writing the
    /// lazy proposal with the frame), arms the deadline and writes the request. `fresh`: a new
    /// stream even when one is idle (the request's retry after a reused stream ended under it).
    static func startKeptRequest(
        _ exchange: RequestExchange,
        pool: RequestStreamPool,
        muxer: MplexConnection,
        peer: PeerID,
        protocolID: String,
        frame: ByteBuffer,
        maxReplySize: Int,
        deadline: NIODeadline,
        keepIf: (@Sendable (ByteBuffer) -> Bool)?,
        fresh: Bool = false
    ) {
        if exchange.isFinished { return }  // cancelled before it reached the loop
        let kept: KeptRequestStream
        let bytes: ByteBuffer
        let parser: LazyReplyParser
        if !fresh, let idle = pool.take(protocolID) {
            kept = idle
            bytes = frame
            parser = LazyReplyParser(maxSize: maxReplySize)
        } else {
            guard let stream = openStream(for: exchange, on: muxer, to: peer, evictingFrom: pool) else { return }
            let (machine, proposal) = lazyProposal(protocolID)
            kept = KeptRequestStream(stream: stream, protocolID: protocolID, peer: peer, pool: pool)
            kept.listen()
            parser = LazyReplyParser(machine: machine, maxSize: maxReplySize, proposal: proposal)
            var out = proposal
            out.writeImmutableBuffer(frame)
            bytes = out
        }
        let stream = kept.stream
        exchange.stream = stream
        if let earlier = exchange.deadlineToken { exchange.deadlines.remove(earlier) }
        exchange.deadlineToken = exchange.deadlines.add(deadline) {
            exchange.finish(.failure(StreamsError(.timedOut, "no reply from \(peer) on \(protocolID) in time")))
            stream.resetOnEventLoop()
        }
        kept.begin(exchange, parser: parser, write: bytes, keepIf: keepIf) {
            startKeptRequest(
                exchange, pool: pool, muxer: muxer, peer: peer, protocolID: protocolID, frame: frame,
                maxReplySize: maxReplySize, deadline: deadline, keepIf: keepIf, fresh: true)
        }
    }
}
