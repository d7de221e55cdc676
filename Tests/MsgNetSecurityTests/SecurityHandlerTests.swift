import MsgNetCore
import NIOCore
import NIOEmbedded
import Testing

@testable import MsgNetSecurity

/// Keeps whatever reaches it (stands in for the handler the upgrader installs next).
final class Collector: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    var received = ByteBuffer()
    var reads = 0

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        reads += 1
        received.writeBuffer(&buffer)
    }
}

/// Lets a test hand a non-Sendable value to a future callback that runs on the same thread
/// (EmbeddedEventLoop runs callbacks inline).
struct SameThread<Value>: @unchecked Sendable {
    let value: Value
}

/// Two embedded channels, each with a security handler, wired back to back by ``shuttle(chunkSize:)``.
final class SecuredPair {
    let initiator = EmbeddedChannel()
    let responder = EmbeddedChannel()
    let initiatorResult: ResultBox<SecuredConnectionInfo>
    let responderResult: ResultBox<SecuredConnectionInfo>
    let initiatorFuture: EventLoopFuture<SecuredConnectionInfo>
    let initiatorCollector = Collector()
    let responderCollector = Collector()

    /// - Parameter addBeforeActive: add the handlers before the channels become active.
    init(
        _ security: (PrivateKey) -> any SecurityProtocol,
        initiatorIdentity: PrivateKey,
        responderIdentity: PrivateKey,
        initiatorExpects: PeerID?,
        responderExpects: PeerID? = nil,
        addBeforeActive: Bool = false
    ) throws {
        let address = try SocketAddress(ipAddress: "127.0.0.1", port: 4001)
        if !addBeforeActive {
            initiator.connect(to: address, promise: nil)
            responder.connect(to: address, promise: nil)
        }
        var boxes: [ResultBox<SecuredConnectionInfo>] = []
        var futures: [EventLoopFuture<SecuredConnectionInfo>] = []
        for (channel, identity, role, expects, collector) in [
            (initiator, initiatorIdentity, SecurityRole.initiator, initiatorExpects, initiatorCollector),
            (responder, responderIdentity, SecurityRole.responder, responderExpects, responderCollector),
        ] {
            let promise = channel.eventLoop.makePromise(of: SecuredConnectionInfo.self)
            boxes.append(ResultBox(promise.futureResult))
            futures.append(promise.futureResult)
            // Like the upgrader: install the next handler when security succeeds.
            let context = SameThread(value: (channel, collector))
            promise.futureResult.whenSuccess { _ in
                try! context.value.0.pipeline.syncOperations.addHandler(context.value.1)
            }
            let handler = security(identity).makeHandler(role: role, expectedRemotePeer: expects, promise: promise)
            try channel.pipeline.syncOperations.addHandler(handler)
        }
        initiatorResult = boxes[0]
        initiatorFuture = futures[0]
        responderResult = boxes[1]
        if addBeforeActive {
            initiator.connect(to: address, promise: nil)
            responder.connect(to: address, promise: nil)
        }
    }

    /// Moves flushed bytes between the channels until both are quiet. Everything one side flushed
    /// is delivered as one read, or in reads of `chunkSize` bytes.
    func shuttle(chunkSize: Int? = nil) throws {
        var moved = true
        while moved {
            moved = false
            for (from, to) in [(initiator, responder), (responder, initiator)] {
                var combined = ByteBuffer()
                while let chunk = try from.readOutbound(as: ByteBuffer.self) { combined.writeImmutableBuffer(chunk) }
                guard combined.readableBytes > 0, to.isActive else { continue }
                moved = true
                if let chunkSize {
                    while combined.readableBytes > 0 {
                        try to.writeInbound(combined.readSlice(length: min(chunkSize, combined.readableBytes))!)
                    }
                } else {
                    try to.writeInbound(combined)
                }
            }
        }
    }

    func finish() {
        _ = try? initiator.finish(acceptAlreadyClosed: true)
        _ = try? responder.finish(acceptAlreadyClosed: true)
    }
}

/// Splits a Noise wire buffer into its frames' lengths.
func frameLengths(_ wire: ByteBuffer) -> [Int] {
    var buffer = wire
    var lengths: [Int] = []
    while let length = buffer.readInteger(as: UInt16.self) {
        lengths.append(Int(length))
        buffer.moveReaderIndex(forwardBy: Int(length))
    }
    return lengths
}

@Suite struct NoiseHandlerTests {
    let alice = PrivateKey.generate()
    let bob = PrivateKey.generate()

    func pair(
        initiatorExpects: PeerID? = nil,
        responderExpects: PeerID? = nil,
        addBeforeActive: Bool = false
    ) throws -> SecuredPair {
        try SecuredPair(
            { NoiseSecurity(identity: $0) },
            initiatorIdentity: alice,
            responderIdentity: bob,
            initiatorExpects: initiatorExpects ?? bob.peerID,
            responderExpects: responderExpects,
            addBeforeActive: addBeforeActive
        )
    }

    @Test(arguments: [false, true])
    func handshakeCompletesBothWays(addBeforeActive: Bool) throws {
        let pair = try pair(addBeforeActive: addBeforeActive)
        defer { pair.finish() }
        try pair.shuttle()
        let i = try #require(pair.initiatorResult.value)
        let r = try #require(pair.responderResult.value)
        #expect(i.remotePeer == bob.peerID && i.remotePublicKey == bob.publicKey && i.protocolID == "/noise")
        #expect(r.remotePeer == alice.peerID && r.remotePublicKey == alice.publicKey)

        try pair.initiator.writeOutbound(ByteBuffer(string: "ping"))
        try pair.shuttle()
        #expect(pair.responderCollector.received == ByteBuffer(string: "ping"))
        try pair.responder.writeOutbound(ByteBuffer(string: "pong"))
        try pair.shuttle()
        #expect(pair.initiatorCollector.received == ByteBuffer(string: "pong"))
    }

    @Test func handshakeFedOneByteAtATime() throws {
        let pair = try pair()
        defer { pair.finish() }
        // Queue data on both sides first so it travels one byte at a time too.
        pair.initiator.writeAndFlush(ByteBuffer(string: "early from initiator"), promise: nil)
        pair.responder.writeAndFlush(ByteBuffer(string: "early from responder"), promise: nil)
        try pair.shuttle(chunkSize: 1)
        #expect(pair.initiatorResult.value?.remotePeer == bob.peerID)
        #expect(pair.responderResult.value?.remotePeer == alice.peerID)
        #expect(pair.responderCollector.received == ByteBuffer(string: "early from initiator"))
        #expect(pair.initiatorCollector.received == ByteBuffer(string: "early from responder"))
    }

    @Test func largeWriteIsSplitIntoMaximalFramesInOneChannelWrite() throws {
        let pair = try pair()
        defer { pair.finish() }
        try pair.shuttle()
        var payload = ByteBuffer()
        for i in 0..<(200 * 1024) { payload.writeInteger(UInt8(truncatingIfNeeded: i &* 31)) }

        let writePromise = pair.initiator.eventLoop.makePromise(of: Void.self)
        let written = ResultBox(writePromise.futureResult)
        pair.initiator.write(payload, promise: writePromise)
        pair.initiator.flush()
        let wire = try #require(try pair.initiator.readOutbound(as: ByteBuffer.self))
        #expect(try pair.initiator.readOutbound(as: ByteBuffer.self) == nil)  // one channel write
        #expect(written.result != nil)
        let tail = 200 * 1024 - 3 * 65519
        #expect(frameLengths(wire) == [65535, 65535, 65535, tail + 16])
        #expect(wire.readableBytes == 200 * 1024 + 4 * 18)

        try pair.responder.writeInbound(wire)
        #expect(pair.responderCollector.received == payload)
        #expect(pair.responderCollector.reads == 4)

        // And back, delivered in awkward pieces.
        try pair.responder.writeOutbound(payload)
        try pair.shuttle(chunkSize: 1000)
        #expect(pair.initiatorCollector.received == payload)
    }

    @Test func severalWritesBeforeOneFlushShareOneFrame() throws {
        let pair = try pair()
        defer { pair.finish() }
        try pair.shuttle()
        let first = pair.initiator.eventLoop.makePromise(of: Void.self)
        let second = pair.initiator.eventLoop.makePromise(of: Void.self)
        let done = (ResultBox(first.futureResult), ResultBox(second.futureResult))
        pair.initiator.write(ByteBuffer(string: "a"), promise: first)
        pair.initiator.write(ByteBuffer(string: "bc"), promise: second)
        pair.initiator.write(ByteBuffer(), promise: nil)
        // Nothing leaves before the flush.
        #expect(try pair.initiator.readOutbound(as: ByteBuffer.self) == nil)
        pair.initiator.flush()
        var wires: [ByteBuffer] = []
        while let wire = try pair.initiator.readOutbound(as: ByteBuffer.self) { wires.append(wire) }
        // One frame: 3 plaintext bytes + the 16-byte tag; both promises complete with it.
        #expect(wires.map(frameLengths) == [[19]])
        #expect(done.0.value != nil && done.1.value != nil)
        for wire in wires { try pair.responder.writeInbound(wire) }
        #expect(pair.responderCollector.received == ByteBuffer(string: "abc"))
    }

    @Test func unflushedWritesFailWhenTheConnectionGoesAway() throws {
        let pair = try pair()
        try pair.shuttle()
        let promise = pair.initiator.eventLoop.makePromise(of: Void.self)
        let result = ResultBox(promise.futureResult)
        pair.initiator.write(ByteBuffer(string: "never flushed"), promise: promise)
        pair.finish()
        #expect(result.error != nil)
    }

    @Test func earlyDataIsCoalescedWithTheLastHandshakeMessage() throws {
        let pair = try pair()
        defer { pair.finish() }
        // Written before the handshake: queued, then sent right after message 3.
        let promise = pair.initiator.eventLoop.makePromise(of: Void.self)
        let written = ResultBox(promise.futureResult)
        pair.initiator.write(ByteBuffer(string: "hello "), promise: promise)
        pair.initiator.writeAndFlush(ByteBuffer(string: "world"), promise: nil)
        #expect(written.result == nil)

        // msg1 → responder, msg2 → initiator.
        let m1 = try #require(try pair.initiator.readOutbound(as: ByteBuffer.self))
        #expect(try pair.initiator.readOutbound(as: ByteBuffer.self) == nil)
        try pair.responder.writeInbound(m1)
        let m2 = try #require(try pair.responder.readOutbound(as: ByteBuffer.self))
        try pair.initiator.writeInbound(m2)
        #expect(pair.initiatorResult.value != nil)
        #expect(written.result != nil)

        // msg3 and the queued data (one frame for both writes) arrive in ONE read.
        var wire = ByteBuffer()
        var writes = 0
        while let chunk = try pair.initiator.readOutbound(as: ByteBuffer.self) {
            writes += 1
            wire.writeImmutableBuffer(chunk)
        }
        #expect(writes == 2)
        #expect(frameLengths(wire).count == 2)
        try pair.responder.writeInbound(wire)
        #expect(pair.responderResult.value?.remotePeer == alice.peerID)
        // The data reached the handler installed by the success callback.
        #expect(pair.responderCollector.received == ByteBuffer(string: "hello world"))
        #expect(try pair.responder.readInbound(as: ByteBuffer.self) == nil)
    }

    @Test func writesFromTheSuccessCallbackFollowQueuedWrites() throws {
        let pair = try pair()
        defer { pair.finish() }
        pair.initiator.writeAndFlush(ByteBuffer(string: "queued,"), promise: nil)
        let channel = SameThread(value: pair.initiator)
        pair.initiatorFuture.whenSuccess { _ in
            channel.value.writeAndFlush(ByteBuffer(string: "from callback"), promise: nil)
        }
        try pair.shuttle()
        #expect(pair.responderCollector.received == ByteBuffer(string: "queued,from callback"))
    }

    @Test func bytesFiredRightAfterAddingAreNotLost() throws {
        // The responder's handler is added while message 1 is already waiting: the previous
        // handler fires it into the new one right after adding it.
        let initiator = EmbeddedChannel()
        let responder = EmbeddedChannel()
        defer {
            _ = try? initiator.finish(acceptAlreadyClosed: true)
            _ = try? responder.finish(acceptAlreadyClosed: true)
        }
        let address = try SocketAddress(ipAddress: "127.0.0.1", port: 1)
        initiator.connect(to: address, promise: nil)
        responder.connect(to: address, promise: nil)
        let ip = initiator.eventLoop.makePromise(of: SecuredConnectionInfo.self)
        let rp = responder.eventLoop.makePromise(of: SecuredConnectionInfo.self)
        let iResult = ResultBox(ip.futureResult)
        let rResult = ResultBox(rp.futureResult)
        try initiator.pipeline.syncOperations.addHandler(
            NoiseSecurity(identity: alice).makeHandler(role: .initiator, expectedRemotePeer: bob.peerID, promise: ip))
        let m1 = try #require(try initiator.readOutbound(as: ByteBuffer.self))
        #expect(m1.readableBytes == 34 && m1.getInteger(at: m1.readerIndex, as: UInt16.self) == 32)
        try responder.pipeline.syncOperations.addHandler(
            NoiseSecurity(identity: bob).makeHandler(role: .responder, expectedRemotePeer: nil, promise: rp))
        try responder.writeInbound(m1)
        try initiator.writeInbound(try #require(try responder.readOutbound(as: ByteBuffer.self)))
        while let chunk = try initiator.readOutbound(as: ByteBuffer.self) { try responder.writeInbound(chunk) }
        #expect(iResult.value?.remotePeer == bob.peerID)
        #expect(rResult.value?.remotePeer == alice.peerID)
    }

    @Test func peerIDMismatchFailsThePromiseAndCloses() throws {
        let stranger = PrivateKey.generate().peerID
        let pair = try pair(initiatorExpects: stranger)
        defer { pair.finish() }
        try pair.shuttle()
        #expect(pair.initiatorResult.error as? SecurityError == .peerIDMismatch(expected: stranger, actual: bob.peerID))
        #expect(!pair.initiator.isActive)
        // The responder never heard message 3; its connection closing fails its promise.
        #expect(pair.responderResult.result == nil)
        pair.responder.close(promise: nil)
        #expect(pair.responderResult.error as? SecurityError == .connectionClosed)
    }

    @Test func garbageHandshakeFailsThePromiseAndCloses() throws {
        let pair = try pair()
        defer { pair.finish() }
        _ = try pair.initiator.readOutbound(as: ByteBuffer.self)  // drop the real message 1
        try pair.responder.writeInbound(ByteBuffer(bytes: [0, 3, 1, 2, 3]))
        #expect(
            pair.responderResult.error as? SecurityError == .malformedMessage("message 1 is 3 bytes, need at least 32"))
        #expect(!pair.responder.isActive)
    }

    @Test func queuedWritesFailWhenTheHandshakeFails() throws {
        let pair = try pair(initiatorExpects: PrivateKey.generate().peerID)
        defer { pair.finish() }
        let promise = pair.initiator.eventLoop.makePromise(of: Void.self)
        let written = ResultBox(promise.futureResult)
        pair.initiator.writeAndFlush(ByteBuffer(string: "never sent"), promise: promise)
        try pair.shuttle()
        guard case .peerIDMismatch = written.error as? SecurityError else {
            Issue.record("queued write did not fail with the handshake error: \(String(describing: written.result))")
            return
        }
    }

    @Test func closingBeforeCompletionFailsThePromise() throws {
        let pair = try pair()
        defer { pair.finish() }
        pair.initiator.close(promise: nil)
        #expect(pair.initiatorResult.error as? SecurityError == .connectionClosed)
    }

    @Test func pendingWritesAreBounded() throws {
        let pair = try pair()
        defer { pair.finish() }
        let promise = pair.initiator.eventLoop.makePromise(of: Void.self)
        let written = ResultBox(promise.futureResult)
        pair.initiator.write(ByteBuffer(repeating: 1, count: PendingWrites.limit + 1), promise: promise)
        #expect(written.error as? SecurityError == .pendingWritesLimitExceeded(limit: PendingWrites.limit))
        // The connection itself is unaffected.
        try pair.shuttle()
        #expect(pair.initiatorResult.value != nil && pair.responderResult.value != nil)
    }

    @Test func tamperedTransportFrameClosesTheChannel() throws {
        let pair = try pair()
        defer { pair.finish() }
        try pair.shuttle()
        try pair.initiator.writeOutbound(ByteBuffer(string: "secret"))
        var wire = try #require(try pair.initiator.readOutbound(as: ByteBuffer.self))
        let index = wire.readerIndex + 5
        wire.setInteger(wire.getInteger(at: index, as: UInt8.self)! ^ 1, at: index)
        #expect(throws: SecurityError.decryptFailed) { try pair.responder.writeInbound(wire) }
        #expect(!pair.responder.isActive)
        #expect(pair.responderCollector.reads == 0)
    }

    @Test func replayedTransportFrameClosesTheChannel() throws {
        let pair = try pair()
        defer { pair.finish() }
        try pair.shuttle()
        try pair.initiator.writeOutbound(ByteBuffer(string: "once"))
        let wire = try #require(try pair.initiator.readOutbound(as: ByteBuffer.self))
        try pair.responder.writeInbound(wire)
        #expect(pair.responderCollector.received == ByteBuffer(string: "once"))
        #expect(throws: SecurityError.decryptFailed) { try pair.responder.writeInbound(wire) }
        #expect(!pair.responder.isActive)
        #expect(pair.responderCollector.reads == 1)
    }

    @Test func frameDecoderHoldsAtMostOneFrame() throws {
        var decoder = NoiseFrameDecoder()
        var buffer = ByteBuffer(bytes: [0, 0, 0, 2, 7, 8, 0xff, 0xff])
        #expect(try decoder.decode(buffer: &buffer) == ByteBuffer())
        #expect(try decoder.decode(buffer: &buffer) == ByteBuffer(bytes: [7, 8]))
        #expect(try decoder.decode(buffer: &buffer) == nil)  // 65535-byte frame still incomplete
        buffer.writeBytes([UInt8](repeating: 3, count: 65535))
        #expect(try decoder.decode(buffer: &buffer)?.readableBytes == 65535)
        #expect(buffer.readableBytes == 0)
        #expect(NoiseFrameDecoder.maxBufferedBytes == 65537)
    }
}

@Suite struct PlaintextHandlerTests {
    let alice = PrivateKey.generate()
    let bob = PrivateKey.generate()

    func pair(initiatorExpects: PeerID?) throws -> SecuredPair {
        try SecuredPair(
            { PlaintextSecurity(identity: $0) },
            initiatorIdentity: alice,
            responderIdentity: bob,
            initiatorExpects: initiatorExpects
        )
    }

    @Test func exchangeAndDataBothWays() throws {
        let pair = try pair(initiatorExpects: bob.peerID)
        defer { pair.finish() }
        // Early data is queued and follows the exchange in the same read.
        pair.initiator.writeAndFlush(ByteBuffer(string: "early"), promise: nil)
        try pair.shuttle()
        let i = try #require(pair.initiatorResult.value)
        let r = try #require(pair.responderResult.value)
        #expect(i.remotePeer == bob.peerID && i.protocolID == "/plaintext/2.0.0")
        #expect(r.remotePeer == alice.peerID && r.remotePublicKey == alice.publicKey)
        #expect(pair.responderCollector.received == ByteBuffer(string: "early"))

        try pair.responder.writeOutbound(ByteBuffer(string: "reply"))
        try pair.shuttle()
        #expect(pair.initiatorCollector.received == ByteBuffer(string: "reply"))
        // After the exchange bytes pass unchanged.
        try pair.initiator.writeOutbound(ByteBuffer(string: "raw"))
        #expect(try pair.initiator.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "raw"))
    }

    @Test func exchangeFedOneByteAtATime() throws {
        let pair = try pair(initiatorExpects: bob.peerID)
        defer { pair.finish() }
        pair.responder.writeAndFlush(ByteBuffer(string: "early reply"), promise: nil)
        try pair.shuttle(chunkSize: 1)
        #expect(pair.initiatorResult.value?.remotePeer == bob.peerID)
        #expect(pair.responderResult.value?.remotePeer == alice.peerID)
        #expect(pair.initiatorCollector.received == ByteBuffer(string: "early reply"))
    }

    @Test func mismatchFailsAndCloses() throws {
        let stranger = PrivateKey.generate().peerID
        let pair = try pair(initiatorExpects: stranger)
        defer { pair.finish() }
        try pair.shuttle()
        #expect(pair.initiatorResult.error as? SecurityError == .peerIDMismatch(expected: stranger, actual: bob.peerID))
        #expect(!pair.initiator.isActive)
    }

    @Test func oversizeExchangeFailsAndCloses() throws {
        let pair = try pair(initiatorExpects: nil)
        defer { pair.finish() }
        _ = try pair.responder.readOutbound(as: ByteBuffer.self)
        try pair.initiator.writeInbound(ByteBuffer(bytes: UVarint.encode(100_000)))
        #expect(pair.initiatorResult.error as? SecurityError == .messageTooLarge(size: 100_000, limit: 4096))
        #expect(!pair.initiator.isActive)
    }
}
