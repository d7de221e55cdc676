import DequeModule
import Logging
import NIOCore

/// The NIO shell of an mplex connection: decodes frames, drives ``MplexMachine`` and performs its actions.
///
/// Place it on a channel that carries the plaintext of a secured connection. It intercepts
/// outbound `read()` to stop reading while a stream is over its buffer bound (the channel should
/// use autoRead), and runs a repeated tick timer for stalled streams.
/// Prefer ``MplexConnection/install(on:configuration:logger:inboundStreamInitializer:)``.
public final class MplexHandler: ChannelDuplexHandler {
    /// Bytes of the secured connection.
    public typealias InboundIn = ByteBuffer
    /// Nothing is passed on inbound.
    public typealias InboundOut = Never
    /// Bytes to the secured connection.
    public typealias OutboundIn = ByteBuffer
    /// Bytes to the secured connection.
    public typealias OutboundOut = ByteBuffer

    private enum PendingWrite {
        case write(MplexStream, ByteBuffer, EventLoopPromise<Void>)
        case closeWrite(MplexStream, EventLoopPromise<Void>)
    }

    /// Frames with this much data or less are copied into one buffer with their prefix.
    private static let coalesceLimit = 16 * 1024

    private let configuration: MplexConfiguration
    private let logger: Logger
    private let inboundStreamInitializer: @Sendable (MplexStream) -> Void
    private var machine: MplexMachine
    private var processor: NIOSingleStepByteToMessageProcessor<MplexFrameDecoder>
    private var streams: [MplexStreamID: MplexStream] = [:]
    private var context: ChannelHandlerContext?
    private var tickTask: RepeatedTask?
    private var readHeld = false
    private var needsFlush = false
    private var flushSoonScheduled = false
    /// Inside ``channelRead(context:data:)``, which flushes at its end: a flush asked for
    /// meanwhile needs no loop task of its own.
    private var inRead = false
    private var inputFailed = false
    private var pendingWrites: Deque<PendingWrite> = []
    private var connectionBox: MplexConnection?
    /// Streams the peer opened in the read being processed; they go to the initializer once the
    /// whole read is processed, so the data that came with a NewStream frame is already
    /// buffered when the stream's reader starts.
    private var newInboundStreams: [MplexStream] = []

    /// Creates the handler.
    ///
    /// - Parameter inboundStreamInitializer: called on the event loop for each stream the peer
    ///   opens, once the read that opened it is processed (data that came with it is buffered);
    ///   install an inbound handler or start a reader there.
    public init(
        configuration: MplexConfiguration = MplexConfiguration(),
        logger: Logger = Logger(label: "msgnet.mplex"),
        inboundStreamInitializer: @escaping @Sendable (MplexStream) -> Void
    ) {
        self.configuration = configuration
        self.logger = logger
        self.inboundStreamInitializer = inboundStreamInitializer
        self.machine = MplexMachine(configuration: configuration)
        self.processor = NIOSingleStepByteToMessageProcessor(MplexFrameDecoder(configuration: configuration))
    }

    /// The connection API of this handler; available once the handler is in a pipeline.
    public var connection: MplexConnection {
        guard let connectionBox else { preconditionFailure("MplexHandler.connection used before handlerAdded") }
        return connectionBox
    }

    // MARK: Channel events

    /// Creates the connection object; starts the tick timer if the channel is active.
    public func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        connectionBox = MplexConnection(channel: context.channel, handler: self)
        if context.channel.isActive { startTicking(context: context) }
    }

    /// Stops the timer and resets every stream.
    public func handlerRemoved(context: ChannelHandlerContext) {
        tickTask?.cancel()
        tickTask = nil
        connectionEnded()
        self.context = nil
    }

    /// Starts the tick timer.
    public func channelActive(context: ChannelHandlerContext) {
        startTicking(context: context)
        context.fireChannelActive()
    }

    /// Stops the timer and resets every stream with ``MplexError/Code/connectionClosed``.
    public func channelInactive(context: ChannelHandlerContext) {
        tickTask?.cancel()
        tickTask = nil
        connectionEnded()
        context.fireChannelInactive()
    }

    /// Decodes frames and feeds them to the machine; a decoding error closes the connection.
    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !inputFailed else { return }
        let buffer = unwrapInboundIn(data)
        inRead = true
        do {
            try processor.process(buffer: buffer) { frame in
                perform(machine.onFrame(frame))
            }
        } catch {
            inputFailed = true
            let mplexError =
                error as? MplexError ?? MplexError(.protocolViolation, "undecodable input: \(error)")
            logger.debug("mplex input error", metadata: ["error": "\(mplexError)"])
            perform(machine.onDecodeError(mplexError))
        }
        startNewInboundStreams()
        // Cleared before the flush: what the flush's completions write asks for its own.
        inRead = false
        flushIfNeeded()
    }

    /// Hands the streams opened by the read just processed to the initializer, in order.
    private func startNewInboundStreams() {
        while !newInboundStreams.isEmpty {
            let opened = newInboundStreams
            newInboundStreams = []
            for stream in opened { inboundStreamInitializer(stream) }
        }
    }

    /// Flushes frames written while handling the read (resets, replies from inbound handlers).
    public func channelReadComplete(context: ChannelHandlerContext) {
        flushIfNeeded()
        context.fireChannelReadComplete()
    }

    /// Sends queued async writes once the channel is writable again.
    public func channelWritabilityChanged(context: ChannelHandlerContext) {
        drainPendingWrites()
        context.fireChannelWritabilityChanged()
    }

    /// Holds the read while the machine has paused reading (backpressure); it is released on resume.
    public func read(context: ChannelHandlerContext) {
        if machine.isReadingPaused {
            readHeld = true
        } else {
            context.read()
        }
    }

    // MARK: Connection API (on the loop)

    func openStream(flush: Bool) throws -> MplexStream {
        guard let context else { throw MplexError.connectionClosed() }
        let (id, actions) = try machine.openStream()
        let stream = MplexStream(id: id, handler: self, eventLoop: context.eventLoop)
        streams[id] = stream
        perform(actions)
        if flush { flushIfNeeded() }
        return stream
    }

    func close() {
        context?.close(promise: nil)
    }

    // MARK: Stream API (on the loop)

    func write(_ stream: MplexStream, _ buffer: ByteBuffer, flush: Bool, promise: EventLoopPromise<Void>?) {
        if let error = stream.writeError() {
            promise?.fail(error)
            return
        }
        do {
            let actions = try machine.write(stream.id, buffer)
            if actions.isEmpty {
                promise?.succeed()
            } else {
                perform(actions, lastWritePromise: promise)
            }
        } catch {
            promise?.fail(error)
        }
        if flush { flushIfNeeded() }
    }

    /// The event-loop API's close: queued behind this stream's async writes still waiting for
    /// writability, so it never overtakes them; otherwise at once.
    func closeWriteInOrder(_ stream: MplexStream, flush: Bool, promise: EventLoopPromise<Void>?) {
        let waiting = pendingWrites.contains {
            if case .write(let s, _, _) = $0 { s === stream } else { false }
        }
        guard waiting else {
            closeWrite(stream, flush: flush, promise: promise)
            return
        }
        pendingWrites.append(.closeWrite(stream, promise ?? stream.eventLoop.makePromise(of: Void.self)))
    }

    func closeWrite(_ stream: MplexStream, flush: Bool = true, promise: EventLoopPromise<Void>?) {
        if stream.isOnlyWriteClosed {
            promise?.succeed()  // idempotent (the stream host closes what a handler closed)
            return
        }
        if let error = stream.writeError() {
            if error.code == .writeAfterClose {
                promise?.succeed()  // idempotent
            } else {
                promise?.fail(error)
            }
            return
        }
        do {
            let actions = try machine.closeWrite(stream.id)
            stream.markLocalWriteClosed()
            perform(actions, lastWritePromise: promise)
            if !flush {
                flushSoon()
                return
            }
        } catch {
            promise?.fail(error)
        }
        flushIfNeeded()
    }

    func reset(_ stream: MplexStream) {
        let actions = machine.reset(stream.id)
        streams[stream.id] = nil
        stream.receiveReset(MplexError(.streamResetLocally, "stream \(stream.id) was reset locally"))
        perform(actions)
        flushIfNeeded()
    }

    func consumed(_ id: MplexStreamID, bytes: Int) {
        perform(machine.onConsumed(id, bytes: bytes))
    }

    func asyncWrite(_ stream: MplexStream, _ buffer: ByteBuffer) -> EventLoopFuture<Void> {
        let promise = stream.eventLoop.makePromise(of: Void.self)
        enqueue(.write(stream, buffer, promise))
        return promise.futureResult
    }

    func asyncCloseWrite(_ stream: MplexStream) -> EventLoopFuture<Void> {
        let promise = stream.eventLoop.makePromise(of: Void.self)
        enqueue(.closeWrite(stream, promise))
        return promise.futureResult
    }

    // MARK: Internals

    private func enqueue(_ write: PendingWrite) {
        if machine.isClosed || context == nil {
            // Never queue behind writability on a connection that is gone.
            switch write {
            case .write(_, _, let promise), .closeWrite(_, let promise):
                promise.fail(MplexError.connectionClosed())
            }
            return
        }
        pendingWrites.append(write)
        drainPendingWrites()
    }

    /// Performs queued async writes in order while the channel is writable.
    private func drainPendingWrites() {
        guard let context else {
            failPendingWrites()
            return
        }
        var wrote = false
        while context.channel.isWritable, let next = pendingWrites.popFirst() {
            wrote = true
            switch next {
            case .write(let stream, let buffer, let promise):
                write(stream, buffer, flush: false, promise: promise)
            case .closeWrite(let stream, let promise):
                closeWrite(stream, promise: promise)
            }
        }
        if wrote { flushIfNeeded() }
    }

    private func failPendingWrites() {
        while let next = pendingWrites.popFirst() {
            switch next {
            case .write(_, _, let promise), .closeWrite(_, let promise):
                promise.fail(MplexError.connectionClosed())
            }
        }
    }

    private func connectionEnded() {
        startNewInboundStreams()
        perform(machine.onConnectionClosed())
        streams.removeAll()
        failPendingWrites()
    }

    private func startTicking(context: ChannelHandlerContext) {
        guard tickTask == nil else { return }
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        tickTask = eventLoop.scheduleRepeatedTask(
            initialDelay: configuration.tickInterval,
            delay: configuration.tickInterval
        ) { _ in
            loopBound.value.tick(now: eventLoop.now)
        }
    }

    private func tick(now: NIODeadline) {
        perform(machine.onTick(now: now))
        flushIfNeeded()
    }

    private func perform(_ actions: [MplexMachine.Action], lastWritePromise: EventLoopPromise<Void>? = nil) {
        var lastSend = -1
        if lastWritePromise != nil {
            lastSend = actions.lastIndex { if case .send = $0 { true } else { false } } ?? -1
        }
        for (index, action) in actions.enumerated() {
            switch action {
            case .send(let frame):
                writeFrame(frame, promise: index == lastSend ? lastWritePromise : nil)
            case .deliver(let id, let data):
                guard let stream = streams[id] else { continue }
                let consumed = stream.receive(data)
                if consumed > 0 { perform(machine.onConsumed(id, bytes: consumed)) }
            case .remoteClosed(let id):
                streams[id]?.receiveEOF()
            case .streamReset(let id, let error):
                if let stream = streams.removeValue(forKey: id) {
                    logger.debug("mplex stream reset", metadata: ["stream": "\(id)", "error": "\(error)"])
                    stream.receiveReset(error)
                }
            case .streamClosed(let id):
                streams.removeValue(forKey: id)?.receiveFinished()
            case .newInboundStream(let id):
                guard let context else { continue }
                let stream = MplexStream(id: id, handler: self, eventLoop: context.eventLoop)
                streams[id] = stream
                newInboundStreams.append(stream)
            case .stopReading, .resumeReading:
                // The machine's flag is the truth; actions may be performed out of order when a
                // delivery is consumed re-entrantly.
                if !machine.isReadingPaused && readHeld {
                    readHeld = false
                    context?.read()
                }
            case .closeConnection(let error):
                // A protocol violation by the peer ends the whole connection: say why.
                logger.warning("mplex closing connection", metadata: ["error": "\(error)"])
                flushIfNeeded()
                context?.close(promise: nil)
            }
        }
        if lastSend < 0, let lastWritePromise { lastWritePromise.succeed() }
    }

    private func writeFrame(_ frame: MplexFrame, promise: EventLoopPromise<Void>?) {
        guard let context else {
            promise?.fail(MplexError.connectionClosed())
            return
        }
        let dataLength = frame.data.readableBytes
        if dataLength <= Self.coalesceLimit {
            var buffer = context.channel.allocator.buffer(capacity: MplexFrameEncoder.maxPrefixLength + dataLength)
            MplexFrameEncoder.encode(frame, into: &buffer)
            context.write(wrapOutboundOut(buffer), promise: promise)
        } else {
            var prefix = context.channel.allocator.buffer(capacity: MplexFrameEncoder.maxPrefixLength)
            MplexFrameEncoder.writePrefix(of: frame, to: &prefix)
            context.write(wrapOutboundOut(prefix), promise: nil)
            context.write(wrapOutboundOut(frame.data), promise: promise)
        }
        needsFlush = true
    }

    /// Flushes once the event loop has run the work queued on it now (one `execute`): frames
    /// written until then — by this task and by loop tasks queued before the flush — leave in
    /// one write.
    func flushSoon() {
        guard !inRead, !flushSoonScheduled, let context else { return }
        flushSoonScheduled = true
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.execute {
            loopBound.value.flushSoonScheduled = false
            loopBound.value.flushIfNeeded()
        }
    }

    private func flushIfNeeded() {
        guard needsFlush, let context else { return }
        needsFlush = false
        context.flush()
    }
}
