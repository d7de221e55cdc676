import Logging
import MsgNetCore
import NIOCore

/// `/plaintext/2.0.0`: exchanges peer ids and public keys, then carries bytes unchanged.
/// Insecure: for tests and interop checks only.
public struct PlaintextSecurity: SecurityProtocol {
    /// `"/plaintext/2.0.0"`.
    public var protocolID: String { PlaintextHandshake.protocolID }

    private let identity: PrivateKey

    /// Plaintext security for the node whose identity is `identity`.
    public init(identity: PrivateKey) {
        self.identity = identity
    }

    /// A ``PlaintextHandler`` driving a fresh ``PlaintextHandshake``.
    public func makeHandler(
        role: SecurityRole,
        expectedRemotePeer: PeerID?,
        promise: EventLoopPromise<SecuredConnectionInfo>
    ) -> any ChannelHandler {
        PlaintextHandler(
            handshake: PlaintextHandshake(identity: identity, expectedRemotePeer: expectedRemotePeer),
            promise: promise
        )
    }
}

/// Runs a ``PlaintextHandshake`` on a channel, then passes bytes through unchanged.
final class PlaintextHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private static let logger = Logger(label: "msgnet.plaintext")

    private enum Phase {
        case idle
        case handshaking
        case done
        case failed
    }

    private var handshake: PlaintextHandshake
    private let promise: EventLoopPromise<SecuredConnectionInfo>
    private var phase: Phase = .idle
    private var pending = PendingWrites()

    init(handshake: PlaintextHandshake, promise: EventLoopPromise<SecuredConnectionInfo>) {
        self.handshake = handshake
        self.promise = promise
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context: context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        abandon()
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context: context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        abandon()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch phase {
        case .idle, .handshaking:
            fail(context: context, error: error)
        case .done, .failed:
            context.fireErrorCaught(error)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch phase {
        case .done:
            context.fireChannelRead(data)
        case .idle, .handshaking:
            start(context: context)
            guard phase == .handshaking else { return }
            apply(handshake.onBytes(unwrapInboundIn(data)), context: context)
        case .failed:
            break
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch phase {
        case .done:
            context.write(data, promise: promise)
        case .idle, .handshaking:
            do {
                try pending.append(unwrapOutboundIn(data), promise: promise)
            } catch {
                promise?.fail(error)
            }
        case .failed:
            promise?.fail(ChannelError.ioOnClosedChannel)
        }
    }

    func flush(context: ChannelHandlerContext) {
        switch phase {
        case .done:
            context.flush()
        case .idle, .handshaking:
            pending.flushRequested = true
        case .failed:
            break
        }
    }

    private func start(context: ChannelHandlerContext) {
        guard phase == .idle else { return }
        phase = .handshaking
        apply(handshake.start(), context: context)
    }

    private func apply(_ actions: [PlaintextHandshake.Action], context: ChannelHandlerContext) {
        for action in actions {
            switch action {
            case .send(let bytes):
                context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: bytes)), promise: nil)
            case .completed(let remotePeer, let remotePublicKey, let leftover):
                phase = .done
                let (writes, flush) = pending.drain()
                for (buffer, promise) in writes { context.write(wrapOutboundOut(buffer), promise: promise) }
                if flush { context.flush() }
                promise.succeed(
                    SecuredConnectionInfo(
                        protocolID: PlaintextHandshake.protocolID,
                        remotePeer: remotePeer,
                        remotePublicKey: remotePublicKey
                    )
                )
                if leftover.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(leftover)) }
            case .failed(let error):
                fail(context: context, error: error)
            }
        }
    }

    private func fail(context: ChannelHandlerContext, error: any Error) {
        guard phase == .idle || phase == .handshaking else { return }
        phase = .failed
        Self.logger.debug("plaintext exchange failed", metadata: ["error": "\(error)"])
        pending.failAll(error)
        promise.fail(error)
        context.close(promise: nil)
    }

    private func abandon() {
        if phase == .idle || phase == .handshaking {
            phase = .failed
            promise.fail(SecurityError.connectionClosed)
        }
        pending.failAll(SecurityError.connectionClosed)
    }
}
