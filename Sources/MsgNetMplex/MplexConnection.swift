import Logging
import MsgNetCore
import NIOCore

/// An mplex connection: opens streams, accepts the peer's streams, closes.
///
/// Obtain one with ``install(on:configuration:logger:inboundStreamInitializer:)``.
/// When the underlying channel closes, every open stream is reset with
/// ``MplexError/Code/connectionClosed`` so no reader or writer hangs.
public final class MplexConnection: Sendable {
    /// The channel carrying the connection.
    public let channel: any Channel
    private let handler: NIOLoopBound<MplexHandler>

    init(channel: any Channel, handler: MplexHandler) {
        self.channel = channel
        self.handler = NIOLoopBound(handler, eventLoop: channel.eventLoop)
    }

    /// The event loop of the connection and of all its streams.
    public var eventLoop: any EventLoop { channel.eventLoop }

    /// Completes when the connection's channel is closed.
    public var closeFuture: EventLoopFuture<Void> { channel.closeFuture }

    /// Opens a stream (sends NewStream, flushed).
    ///
    /// - Throws: ``MplexError/Code/tooManyStreams``, ``MplexError/Code/streamIDsExhausted``,
    ///   ``MplexError/Code/connectionClosed``.
    public func openStream() async throws -> MplexStream {
        if eventLoop.inEventLoop { return try handler.value.openStream(flush: true) }
        return try await eventLoop.submit { try self.handler.value.openStream(flush: true) }.get()
    }

    /// Opens a stream on the event loop. With `flush: false` the NewStream frame leaves with the next flush
    /// (for example the stream's first `writeOnEventLoop(_:flush: true)`), saving a syscall.
    /// - Precondition: called on ``eventLoop``.
    public func openStreamOnEventLoop(flush: Bool = true) throws -> MplexStream {
        eventLoop.preconditionInEventLoop()
        return try handler.value.openStream(flush: flush)
    }

    /// Closes the connection; every open stream is reset.
    public func close() async {
        eventLoop.execute { self.handler.value.close() }
        try? await channel.closeFuture.get()
    }

    /// Waits until the connection is closed.
    public func onClose() async {
        try? await channel.closeFuture.get()
    }

    /// Adds an ``MplexHandler`` at the end of `channel`'s pipeline and returns its connection.
    ///
    /// - Precondition: called on `channel.eventLoop`.
    public static func install(
        on channel: any Channel,
        configuration: MplexConfiguration = MplexConfiguration(),
        logger: Logger = Logger(label: "msgnet.mplex"),
        inboundStreamInitializer: @escaping @Sendable (MplexStream) -> Void
    ) throws -> MplexConnection {
        channel.eventLoop.preconditionInEventLoop()
        let handler = MplexHandler(
            configuration: configuration,
            logger: logger,
            inboundStreamInitializer: inboundStreamInitializer
        )
        try channel.pipeline.syncOperations.addHandler(handler)
        return handler.connection
    }
}
