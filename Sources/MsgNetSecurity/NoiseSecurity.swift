import Logging
import MsgNetCore
import NIOCore

/// libp2p Noise (`/noise`): `Noise_XX_25519_ChaChaPoly_SHA256` with 2-byte length framing.
public struct NoiseSecurity: SecurityProtocol {
    /// The multistream protocol id, `"/noise"`.
    public static let protocolID = "/noise"

    /// `"/noise"`.
    public var protocolID: String { Self.protocolID }

    private let identity: PrivateKey

    /// Noise security for the node whose identity is `identity`. A fresh static X25519 key is
    /// generated for every handshake.
    public init(identity: PrivateKey) {
        self.identity = identity
    }

    /// A ``NoiseHandler`` driving a fresh ``NoiseHandshake``.
    public func makeHandler(
        role: SecurityRole,
        expectedRemotePeer: PeerID?,
        promise: EventLoopPromise<SecuredConnectionInfo>
    ) -> any ChannelHandler {
        NoiseHandler(
            handshake: NoiseHandshake(role: role, identity: identity, expectedRemotePeer: expectedRemotePeer),
            promise: promise
        )
    }
}

/// Runs a ``NoiseHandshake`` on a channel, then encrypts outbound and decrypts inbound bytes.
///
/// Handshake messages and transport messages travel as `uint16 big-endian length || message`.
/// After the handshake, small writes (up to 8 KiB) are gathered until the next flush (or until a
/// maximal frame's worth is gathered) and encrypted together, so the writes of one loop pass — an mplex
/// header and its data, a protocol echo, a reply and a close — cost one frame and one AEAD
/// operation instead of one each. A large write is encrypted on its own, without the copy.
final class NoiseHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private static let logger = Logger(label: "msgnet.noise")

    private enum Phase {
        case idle
        case handshaking
        case transport
        case failed
    }

    private struct Ciphers {
        var sending: NoiseCipherState
        var receiving: NoiseCipherState
    }

    private var handshake: NoiseHandshake
    private let promise: EventLoopPromise<SecuredConnectionInfo>
    private var phase: Phase = .idle
    private var ciphers: Ciphers?
    private var pending = PendingWrites()
    /// Plaintext written since the last flush (transport phase), and the writes' promises.
    private var gathered: ByteBuffer?
    private var gatheredPromises: [EventLoopPromise<Void>] = []
    private let decoder = NIOSingleStepByteToMessageProcessor(
        NoiseFrameDecoder(),
        maximumBufferSize: NoiseFrameDecoder.maxBufferedBytes
    )

    init(handshake: NoiseHandshake, promise: EventLoopPromise<SecuredConnectionInfo>) {
        self.handshake = handshake
        self.promise = promise
    }

    // MARK: Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { startHandshake(context: context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        abandon(.connectionClosed)
    }

    func channelActive(context: ChannelHandlerContext) {
        startHandshake(context: context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        abandon(.connectionClosed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch phase {
        case .idle, .handshaking:
            failHandshake(context: context, error: error)
        case .transport, .failed:
            context.fireErrorCaught(error)
        }
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        // Reading implies the channel is active, even if channelActive has not reached us yet.
        startHandshake(context: context)
        guard phase != .failed else { return }
        do {
            try decoder.process(buffer: buffer) { frame in
                try self.handleFrame(frame, context: context)
            }
        } catch {
            switch phase {
            case .idle, .handshaking:
                failHandshake(context: context, error: error)
            case .transport:
                Self.logger.error(
                    "closing Noise connection",
                    metadata: ["error": "\(error)", "remote": "\(context.remoteAddress.map { "\($0)" } ?? "?")"]
                )
                phase = .failed
                context.fireErrorCaught(error)
                context.close(promise: nil)
            case .failed:
                break
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.fireChannelReadComplete()
    }

    private func handleFrame(_ frame: ByteBuffer, context: ChannelHandlerContext) throws {
        switch phase {
        case .handshaking:
            apply(handshake.onMessage(frame), context: context)
        case .transport:
            let plaintext = try ciphers!.receiving.decrypt(frame)
            context.fireChannelRead(wrapInboundOut(plaintext))
        case .idle, .failed:
            // Frames after a failure are dropped; the channel is closing.
            break
        }
    }

    // MARK: Outbound

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let buffer = unwrapOutboundIn(data)
        switch phase {
        case .idle, .handshaking:
            do {
                try pending.append(buffer, promise: promise)
            } catch {
                promise?.fail(error)
            }
        case .transport:
            if buffer.readableBytes > Self.smallWriteLimit {
                // Large: no copy into the gather buffer; what was gathered goes first.
                writeGathered(context: context)
                writeEncrypted(buffer, promise: promise, context: context)
                return
            }
            if gathered == nil {
                gathered = context.channel.allocator.buffer(capacity: max(1024, buffer.readableBytes))
            }
            var incoming = buffer
            gathered!.writeBuffer(&incoming)
            if let promise { gatheredPromises.append(promise) }
            if gathered!.readableBytes >= Self.gatherLimit { writeGathered(context: context) }
        case .failed:
            promise?.fail(ChannelError.ioOnClosedChannel)
        }
    }

    func flush(context: ChannelHandlerContext) {
        switch phase {
        case .idle, .handshaking:
            pending.flushRequested = true
        case .transport:
            writeGathered(context: context)
            context.flush()
        case .failed:
            break
        }
    }

    /// Writes up to this size are gathered (copying them is cheaper than a frame and an AEAD
    /// call each); larger ones are encrypted on their own, without the copy.
    static let smallWriteLimit = 8 * 1024
    /// Gathered plaintext is encrypted once it reaches one maximal frame.
    static let gatherLimit = NoiseFrameEncoder.maxPlaintextPerFrame

    /// Encrypts what was gathered since the last flush as one channel write (not flushed).
    private func writeGathered(context: ChannelHandlerContext) {
        guard let plaintext = gathered, plaintext.readableBytes > 0 else { return }
        gathered = nil
        let promises = gatheredPromises
        gatheredPromises = []
        var aggregate: EventLoopPromise<Void>?
        if promises.count == 1 {
            aggregate = promises[0]
        } else if promises.count > 1 {
            let combined = context.eventLoop.makePromise(of: Void.self)
            for promise in promises { combined.futureResult.cascade(to: promise) }
            aggregate = combined
        }
        writeEncrypted(plaintext, promise: aggregate, context: context)
    }

    private func writeEncrypted(
        _ plaintext: ByteBuffer, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext
    ) {
        do {
            var output = context.channel.allocator.buffer(
                capacity: NoiseFrameEncoder.encryptedSize(plaintextLength: plaintext.readableBytes)
            )
            try NoiseFrameEncoder.encrypt(plaintext, with: &ciphers!.sending, into: &output)
            context.write(wrapOutboundOut(output), promise: promise)
        } catch {
            promise?.fail(error)
            closeAfterSendError(context: context, error: error)
        }
    }

    // MARK: Driving the machine

    private func startHandshake(context: ChannelHandlerContext) {
        guard phase == .idle else { return }
        phase = .handshaking
        apply(handshake.start(), context: context)
    }

    private func apply(_ actions: [NoiseHandshake.Action], context: ChannelHandlerContext) {
        for action in actions {
            switch action {
            case .send(let message):
                var buffer = context.channel.allocator.buffer(capacity: 2 + message.count)
                NoiseFrameEncoder.writeFrame(message, to: &buffer)
                context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
            case .completed(let result):
                ciphers = Ciphers(sending: result.sendingCipher, receiving: result.receivingCipher)
                phase = .transport
                sendPendingWrites(context: context)
                // Success callbacks may install the next handlers; frames that follow in this
                // read are decrypted and fired after that.
                promise.succeed(
                    SecuredConnectionInfo(
                        protocolID: NoiseSecurity.protocolID,
                        remotePeer: result.remotePeer,
                        remotePublicKey: result.remotePublicKey
                    )
                )
            case .failed(let error):
                failHandshake(context: context, error: error)
            }
        }
    }

    /// Encrypts everything written during the handshake as one channel write.
    private func sendPendingWrites(context: ChannelHandlerContext) {
        let (writes, flush) = pending.drain()
        guard !writes.isEmpty else { return }
        var plaintext: ByteBuffer
        if writes.count == 1 {
            plaintext = writes[0].0
        } else {
            // Coalesce small writes so they share maximal frames.
            plaintext = context.channel.allocator.buffer(capacity: writes.reduce(0) { $0 + $1.0.readableBytes })
            for (buffer, _) in writes { plaintext.writeImmutableBuffer(buffer) }
        }
        let promises = writes.compactMap(\.1)
        var aggregate: EventLoopPromise<Void>? = nil
        if !promises.isEmpty {
            let combined = context.eventLoop.makePromise(of: Void.self)
            for promise in promises { combined.futureResult.cascade(to: promise) }
            aggregate = combined
        }
        do {
            var output = context.channel.allocator.buffer(
                capacity: NoiseFrameEncoder.encryptedSize(plaintextLength: plaintext.readableBytes)
            )
            try NoiseFrameEncoder.encrypt(plaintext, with: &ciphers!.sending, into: &output)
            context.write(wrapOutboundOut(output), promise: aggregate)
            if flush { context.flush() }
        } catch {
            aggregate?.fail(error)
            closeAfterSendError(context: context, error: error)
        }
    }

    // MARK: Failure

    private func failHandshake(context: ChannelHandlerContext, error: any Error) {
        guard phase == .idle || phase == .handshaking else { return }
        phase = .failed
        Self.logger.debug("Noise handshake failed", metadata: ["error": "\(error)"])
        pending.failAll(error)
        promise.fail(error)
        context.close(promise: nil)
    }

    private func closeAfterSendError(context: ChannelHandlerContext, error: any Error) {
        guard phase != .failed else { return }
        Self.logger.error("closing Noise connection after a send error", metadata: ["error": "\(error)"])
        phase = .failed
        context.close(promise: nil)
    }

    /// The connection went away (or the handler was removed) before or after completion.
    private func abandon(_ error: SecurityError) {
        switch phase {
        case .idle, .handshaking:
            phase = .failed
            pending.failAll(error)
            promise.fail(error)
        case .transport, .failed:
            pending.failAll(error)
        }
        // Gathered writes that were never flushed fail, as unflushed writes do in NIO.
        gathered = nil
        let promises = gatheredPromises
        gatheredPromises = []
        for promise in promises { promise.fail(error) }
    }
}
