import MsgNetMultistream
import NIOCore
import NIOEmbedded
import Testing

/// Records every byte that reaches it.
private final class Recorder: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    var received: [UInt8] = []
    var reads = 0

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received += Array(unwrapInboundIn(data).readableBytesView)
        reads += 1
    }
}

/// The result of an already completed future, read on the embedded loop.
private func result<T>(_ future: EventLoopFuture<T>) -> Result<T, any Error>? {
    var outcome: Result<T, any Error>?
    future.assumeIsolated().whenComplete { outcome = $0 }
    return outcome
}

private func failure<T>(_ future: EventLoopFuture<T>) -> MultistreamError? {
    guard case .failure(let error)? = result(future) else { return nil }
    return error as? MultistreamError
}

private func activeChannel() throws -> EmbeddedChannel {
    let channel = EmbeddedChannel()
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 4001)).wait()
    return channel
}

private func outbound(_ channel: EmbeddedChannel) throws -> [UInt8] {
    var bytes: [UInt8] = []
    while let chunk = try channel.readOutbound(as: ByteBuffer.self) {
        bytes += Array(chunk.readableBytesView)
    }
    return bytes
}

@Suite("MultistreamHandler on EmbeddedChannel")
struct HandlerTests {
    @Test("initiator starts on channelActive; leftover reaches the next handler after removal")
    func initiatorLeftoverAfterRemoval() throws {
        let channel = EmbeddedChannel()
        let promise = channel.eventLoop.makePromise(of: String.self)
        let handler = MultistreamHandler(
            machine: .initiator(proposals: ["/x", "/a"]), promise: promise, timeout: .seconds(10))
        try channel.pipeline.syncOperations.addHandler(handler)
        #expect(try outbound(channel).isEmpty)

        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 4001)).wait()
        #expect(try outbound(channel) == headerFrame + frame("/x"))

        let recorder = Recorder()
        promise.futureResult.assumeIsolated().whenSuccess { _ in
            try! channel.pipeline.syncOperations.addHandler(recorder, position: .after(handler))
            channel.pipeline.syncOperations.removeHandler(handler, promise: nil)
        }
        try channel.writeInbound(buffer(headerFrame + naFrame))
        #expect(try outbound(channel) == frame("/a"))
        try channel.writeInbound(buffer(frame("/a") + utf8("hello")))
        guard case .success(let id)? = result(promise.futureResult) else {
            Issue.record("promise not succeeded")
            return
        }
        #expect(id == "/a")
        #expect(recorder.received == utf8("hello"))
        try channel.writeInbound(buffer(utf8(" world")))
        #expect(recorder.received == utf8("hello world"))
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
        #expect(try channel.finish().isClean)
    }

    @Test("reads after the agreement are held, in order, until the handler is removed")
    func laterReadsHeld() throws {
        let channel = try activeChannel()
        let promise = channel.eventLoop.makePromise(of: String.self)
        let handler = MultistreamHandler(
            machine: .responder(selector: ProtocolSelector(["/a"])), promise: promise, timeout: .seconds(10))
        try channel.pipeline.syncOperations.addHandler(handler)
        #expect(try outbound(channel).isEmpty)

        try channel.writeInbound(buffer(headerFrame + frame("/a") + utf8("one,")))
        #expect(try outbound(channel) == headerFrame + frame("/a"))
        #expect(try result(promise.futureResult)?.get() == "/a")
        try channel.writeInbound(buffer(utf8("two,")))
        try channel.writeInbound(buffer(utf8("three")))
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil)

        let recorder = Recorder()
        try channel.pipeline.syncOperations.addHandler(recorder, position: .after(handler))
        try channel.pipeline.syncOperations.removeHandler(handler).wait()
        #expect(recorder.received == utf8("one,two,three"))
        #expect(recorder.reads == 1)
        #expect(try channel.finish().isClean)
    }

    @Test("added to an active channel the initiator writes header and proposal at once")
    func startsWhenAddedActive() throws {
        let channel = try activeChannel()
        let promise = channel.eventLoop.makePromise(of: String.self)
        try channel.pipeline.syncOperations.addHandler(
            MultistreamHandler(machine: .initiator(proposals: ["/a"]), promise: promise, timeout: .seconds(1)))
        #expect(try outbound(channel) == headerFrame + frame("/a"))
        try channel.writeInbound(buffer(headerFrame + frame("/a")))
        #expect(try result(promise.futureResult)?.get() == "/a")
        _ = try channel.finish()
    }

    @Test("timeout fails the promise and closes the channel")
    func timeout() throws {
        let channel = try activeChannel()
        let promise = channel.eventLoop.makePromise(of: String.self)
        try channel.pipeline.syncOperations.addHandler(
            MultistreamHandler(machine: .initiator(proposals: ["/a"]), promise: promise, timeout: .seconds(5)))
        try channel.writeInbound(buffer(headerFrame))
        channel.embeddedEventLoop.advanceTime(by: .seconds(4))
        #expect(result(promise.futureResult) == nil)
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(failure(promise.futureResult) == .timeout)
        #expect(!channel.isActive)
    }

    @Test("no timeout after the agreement")
    func noTimeoutAfterSuccess() throws {
        let channel = try activeChannel()
        let promise = channel.eventLoop.makePromise(of: String.self)
        try channel.pipeline.syncOperations.addHandler(
            MultistreamHandler(machine: .initiator(proposals: ["/a"]), promise: promise, timeout: .seconds(5)))
        try channel.writeInbound(buffer(headerFrame + frame("/a")))
        channel.embeddedEventLoop.advanceTime(by: .seconds(60))
        #expect(try result(promise.futureResult)?.get() == "/a")
        #expect(channel.isActive)
        _ = try channel.finish()
    }

    @Test("malformed input fails the promise and closes the channel")
    func malformedCloses() throws {
        let channel = try activeChannel()
        let promise = channel.eventLoop.makePromise(of: String.self)
        try channel.pipeline.syncOperations.addHandler(
            MultistreamHandler(
                machine: .responder(selector: ProtocolSelector(["/a"])), promise: promise, timeout: .seconds(5)))
        try channel.writeInbound(buffer(frame("/multistream/2.0.0")))
        #expect(failure(promise.futureResult) == .unexpectedHeader("/multistream/2.0.0"))
        #expect(!channel.isActive)
        #expect(try outbound(channel).isEmpty)
    }

    @Test("responder answers na before failing on too many proposals")
    func tooManyProposals() throws {
        let channel = try activeChannel()
        let promise = channel.eventLoop.makePromise(of: String.self)
        try channel.pipeline.syncOperations.addHandler(
            MultistreamHandler(
                machine: .responder(selector: ProtocolSelector(["/a"]), maxMessages: 2), promise: promise,
                timeout: .seconds(5)))
        try channel.writeInbound(buffer(headerFrame + frame("/x") + frame("/y") + frame("/z")))
        #expect(try outbound(channel) == headerFrame + naFrame + naFrame)
        #expect(failure(promise.futureResult) == .tooManyProposals(2))
        #expect(!channel.isActive)
    }

    @Test("optimistic: the caller writes at once; a rejection fails the promise and closes")
    func optimisticRejected() throws {
        let channel = try activeChannel()
        let promise = channel.eventLoop.makePromise(of: String.self)
        try channel.pipeline.syncOperations.addHandler(
            MultistreamHandler(
                machine: .initiator(proposals: ["/a"], optimistic: true), promise: promise, timeout: .seconds(5)))
        try channel.writeAndFlush(buffer(utf8("early"))).wait()
        #expect(try outbound(channel) == headerFrame + frame("/a") + utf8("early"))
        #expect(result(promise.futureResult) == nil)
        try channel.writeInbound(buffer(headerFrame + naFrame))
        #expect(failure(promise.futureResult) == .protocolRejected("/a"))
        #expect(!channel.isActive)
    }

    @Test("optimistic: confirmation succeeds the promise and hands over the leftover")
    func optimisticConfirmed() throws {
        let channel = try activeChannel()
        let promise = channel.eventLoop.makePromise(of: String.self)
        let handler = MultistreamHandler(
            machine: .initiator(proposals: ["/a"], optimistic: true), promise: promise, timeout: .seconds(5))
        try channel.pipeline.syncOperations.addHandler(handler)
        try channel.writeInbound(buffer(headerFrame + frame("/a") + utf8("reply")))
        #expect(try result(promise.futureResult)?.get() == "/a")
        try channel.pipeline.syncOperations.removeHandler(handler).wait()
        #expect(try channel.readInbound(as: ByteBuffer.self) == buffer(utf8("reply")))
        _ = try channel.finish()
    }

    @Test("the channel closing during negotiation fails the promise")
    func closedDuringNegotiation() throws {
        let channel = try activeChannel()
        let promise = channel.eventLoop.makePromise(of: String.self)
        try channel.pipeline.syncOperations.addHandler(
            MultistreamHandler(machine: .initiator(proposals: ["/a"]), promise: promise, timeout: .seconds(5)))
        _ = try channel.finish()
        #expect(failure(promise.futureResult) == .connectionClosed)
    }

    @Test("removal during negotiation fails the promise")
    func removedDuringNegotiation() throws {
        let channel = try activeChannel()
        let promise = channel.eventLoop.makePromise(of: String.self)
        let handler = MultistreamHandler(
            machine: .initiator(proposals: ["/a"]), promise: promise, timeout: .seconds(5))
        try channel.pipeline.syncOperations.addHandler(handler)
        try channel.pipeline.syncOperations.removeHandler(handler).wait()
        #expect(failure(promise.futureResult) == .handlerRemoved)
        channel.embeddedEventLoop.advanceTime(by: .seconds(10))
        #expect(channel.isActive)
        _ = try channel.finish()
    }

    @Test("list handler asks with ls and reports the list")
    func listing() throws {
        let channel = try activeChannel()
        let promise = channel.eventLoop.makePromise(of: [String].self)
        try channel.pipeline.syncOperations.addHandler(MultistreamHandler(listPromise: promise, timeout: .seconds(5)))
        #expect(try outbound(channel) == headerFrame + frame("ls"))
        var list = ByteBuffer()
        MultistreamCodec.encodeProtocolList(["/a", "/b"], into: &list)
        try channel.writeInbound(buffer(headerFrame + Array(list.readableBytesView)))
        #expect(try result(promise.futureResult)?.get() == ["/a", "/b"])
        _ = try channel.finish()
    }

    @Test("two handlers negotiate with each other through their channels")
    func handlersBackToBack() throws {
        let dialer = try activeChannel()
        let listener = try activeChannel()
        let dialed = dialer.eventLoop.makePromise(of: String.self)
        let accepted = listener.eventLoop.makePromise(of: String.self)
        var selector = ProtocolSelector(["/yamux/1.0.0"])
        selector.add("/mplex/6.7.0")
        try listener.pipeline.syncOperations.addHandler(
            MultistreamHandler(machine: .responder(selector: selector), promise: accepted, timeout: .seconds(5)))
        try dialer.pipeline.syncOperations.addHandler(
            MultistreamHandler(
                machine: .initiator(proposals: ["/quic", "/mplex/6.7.0"]), promise: dialed, timeout: .seconds(5)))
        for _ in 0..<10 {
            let toListener = try outbound(dialer)
            if !toListener.isEmpty { try listener.writeInbound(buffer(toListener)) }
            let toDialer = try outbound(listener)
            if !toDialer.isEmpty { try dialer.writeInbound(buffer(toDialer)) }
        }
        #expect(try result(dialed.futureResult)?.get() == "/mplex/6.7.0")
        #expect(try result(accepted.futureResult)?.get() == "/mplex/6.7.0")
        _ = try dialer.finish()
        _ = try listener.finish()
    }
}
