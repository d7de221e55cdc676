import Logging
import NIOCore

/// Runs one ``MultistreamMachine`` on a channel (raw TCP, a secured channel, or a muxed stream).
///
/// - It starts when the channel becomes active, or at once when added to an active channel, and
///   arms a timer of `timeout`; the timer firing fails the negotiation.
/// - On agreement it succeeds the promise with the protocol id. Bytes that arrived after the last
///   negotiation frame (in the same read, or in later reads while the handler is still in the
///   pipeline) are held and fired downstream, in order, from `handlerRemoved`. So in the promise's
///   callback (which runs on the event loop) add the protocol's handler after this one and remove
///   this one; the new handler then reads those bytes first.
/// - On failure, timeout or removal before the end it fails the promise with a
///   ``MultistreamError`` (or the pipeline error it caught) and, except on removal or when the
///   channel is already inactive, closes the channel.
/// - Optimistic initiator (``MultistreamMachine/initiator(proposals:optimistic:)`` with one
///   proposal): the header and proposal are written when the handler starts, so once the handler
///   has been added to an active channel the caller may write application data right away; it
///   reaches the peer after the proposal. The promise still completes only on the peer's
///   confirmation, or fails with ``MultistreamError/protocolRejected(_:)`` (and the channel closes).
public final class MultistreamHandler: ChannelInboundHandler, RemovableChannelHandler {
    /// Bytes from the peer.
    public typealias InboundIn = ByteBuffer
    /// Bytes for the next handler, after the negotiation.
    public typealias InboundOut = ByteBuffer
    /// Negotiation frames for the peer.
    public typealias OutboundOut = ByteBuffer

    private enum Completion {
        case selected(EventLoopPromise<String>)
        case listed(EventLoopPromise<[String]>)

        func fail(_ error: any Error) {
            switch self {
            case .selected(let promise): promise.fail(error)
            case .listed(let promise): promise.fail(error)
            }
        }
    }

    private enum State {
        /// Not started yet.
        case idle
        /// The machine is negotiating.
        case negotiating
        /// Agreed; application bytes held until removal.
        case negotiated(buffered: ByteBuffer)
        /// Listed, failed or removed; nothing more to do.
        case done
    }

    private var machine: MultistreamMachine
    private let completion: Completion
    private let timeout: TimeAmount
    private let logger: Logger
    private var timer: Scheduled<Void>?
    private var state: State = .idle

    /// Creates a handler that negotiates with `machine` and reports the agreed protocol id.
    ///
    /// - Parameters:
    ///   - machine: an initiator or responder machine that has not been started.
    ///   - promise: succeeded with the agreed protocol id, or failed.
    ///   - timeout: how long the whole negotiation may take.
    ///   - logger: where negotiation outcomes are logged (debug level).
    public init(
        machine: MultistreamMachine,
        promise: EventLoopPromise<String>,
        timeout: TimeAmount,
        logger: Logger = Logger(label: "msgnet.multistream")
    ) {
        self.machine = machine
        self.completion = .selected(promise)
        self.timeout = timeout
        self.logger = logger
    }

    /// Creates a handler that asks the peer for its protocol list (`ls`) and reports it.
    ///
    /// The channel is of no further use afterwards; close it when the promise completes.
    public init(
        listPromise: EventLoopPromise<[String]>,
        timeout: TimeAmount,
        logger: Logger = Logger(label: "msgnet.multistream")
    ) {
        self.machine = .listProtocols()
        self.completion = .listed(listPromise)
        self.timeout = timeout
        self.logger = logger
    }

    // MARK: Channel events

    /// Starts the negotiation if the channel is already active.
    public func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive {
            start(context: context)
        }
    }

    /// Starts the negotiation.
    public func channelActive(context: ChannelHandlerContext) {
        start(context: context)
        context.fireChannelActive()
    }

    /// Feeds the machine, or holds application bytes after the agreement.
    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if case .idle = state {
            start(context: context)
        }
        switch state {
        case .negotiating:
            apply(machine.onBytes(&bytes), context: context)
        case .negotiated(var buffered):
            state = .done  // drop the state's reference so the append does not copy the storage
            buffered.writeBuffer(&bytes)
            state = .negotiated(buffered: buffered)
        case .idle, .done:
            break
        }
    }

    /// Fails an unfinished negotiation with ``MultistreamError/connectionClosed``.
    public func channelInactive(context: ChannelHandlerContext) {
        switch state {
        case .idle, .negotiating:
            finish()
            logger.debug("multistream: connection closed during negotiation")
            completion.fail(MultistreamError.connectionClosed)
        case .negotiated, .done:
            break
        }
        context.fireChannelInactive()
    }

    /// Fails an unfinished negotiation with `error` and closes the channel.
    public func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch state {
        case .idle, .negotiating:
            finish()
            logger.debug("multistream: pipeline error during negotiation", metadata: ["error": "\(error)"])
            completion.fail(error)
            context.close(promise: nil)
        case .negotiated, .done:
            break
        }
        context.fireErrorCaught(error)
    }

    /// Fires the held application bytes downstream, or fails an unfinished negotiation with
    /// ``MultistreamError/handlerRemoved``.
    public func handlerRemoved(context: ChannelHandlerContext) {
        let previous = state
        finish()
        switch previous {
        case .negotiated(let buffered):
            if buffered.readableBytes > 0 {
                context.fireChannelRead(wrapInboundOut(buffered))
                context.fireChannelReadComplete()
            }
        case .idle, .negotiating:
            completion.fail(MultistreamError.handlerRemoved)
        case .done:
            break
        }
    }

    // MARK: Driving the machine

    private func start(context: ChannelHandlerContext) {
        guard case .idle = state else { return }
        state = .negotiating
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) {
            self.timerFired(context: context)
        }
        apply(machine.start(), context: context)
    }

    private func timerFired(context: ChannelHandlerContext) {
        timer = nil
        guard case .negotiating = state else { return }
        apply(machine.onTimeout(), context: context)
    }

    /// Cancels the timer and marks the negotiation done.
    private func finish() {
        timer?.cancel()
        timer = nil
        state = .done
    }

    private func apply(_ actions: [MultistreamMachine.Action], context: ChannelHandlerContext) {
        for action in actions {
            switch action {
            case .send(let bytes):
                context.writeAndFlush(wrapOutboundOut(bytes), promise: nil)

            case .optimisticallySelected(let id):
                logger.debug("multistream: optimistically selected", metadata: ["protocol": "\(id)"])

            case .negotiated(let id, let leftover):
                finish()
                // Hold the leftover before completing: the promise's callback may remove this
                // handler right away, and handlerRemoved fires what is held.
                state = .negotiated(buffered: leftover)
                logger.debug("multistream: negotiated", metadata: ["protocol": "\(id)"])
                switch completion {
                case .selected(let promise):
                    promise.succeed(id)
                case .listed(let promise):
                    promise.fail(MultistreamError.unexpectedMessage(id))
                    state = .done
                    context.close(promise: nil)
                }
                return

            case .listed(let protocols):
                finish()
                logger.debug("multistream: listed", metadata: ["protocols": "\(protocols)"])
                switch completion {
                case .listed(let promise):
                    promise.succeed(protocols)
                case .selected(let promise):
                    promise.fail(MultistreamError.unexpectedMessage(MultistreamCodec.listRequest))
                    context.close(promise: nil)
                }
                return

            case .failed(let error):
                finish()
                logger.debug("multistream: negotiation failed", metadata: ["error": "\(error)"])
                completion.fail(error)
                context.close(promise: nil)
                return
            }
        }
    }
}

/// The handler belongs to one channel's event loop; add it with `pipeline.syncOperations`.
@available(*, unavailable)
extension MultistreamHandler: Sendable {}
