import MsgNetCore
import NIOCore
import NIOEmbedded
import Synchronization
import Testing

@testable import MsgNetMplex

@Suite struct MplexHandlerTests {
    private func text(_ buffer: ByteBuffer?) -> String? { buffer.map { String(buffer: $0) } }

    @Test func asyncRoundTrip() async throws {
        let pair = try await AsyncPair()
        let streamA = try await pair.connectionA.openStream()
        #expect(streamA.id == MplexStreamID(number: 0, isLocallyInitiated: true))
        let streamB = try await pair.pumpUntil(pair.inboundB, hasStreams: 1)
        #expect(streamB.id == MplexStreamID(number: 0, isLocallyInitiated: false))

        try await streamA.write(ByteBuffer(string: "hello"))
        try await pair.pump()
        #expect(text(try await streamB.read()) == "hello")

        // A read waiting for data.
        let pending = Task { try await streamA.read() }
        try await streamB.write(ByteBuffer(string: "world"))
        try await pair.pump()
        #expect(text(try await pending.value) == "world")

        // Half-close A -> B: B reads EOF and can still write.
        try await streamA.closeWrite()
        try await streamA.closeWrite()  // idempotent
        try await pair.pump()
        #expect(try await streamB.read() == nil)
        #expect(try await streamB.read() == nil)
        await #expect(throws: MplexError.self) { try await streamA.write(ByteBuffer(string: "late")) }
        try await streamB.write(ByteBuffer(string: "after half-close"))
        try await streamB.closeWrite()
        try await pair.pump()
        #expect(text(try await streamA.read()) == "after half-close")
        #expect(try await streamA.read() == nil)
    }

    /// A read from a task running on the stream's event loop waits with the task's own
    /// continuation (no future): each way it can end is checked while it is waiting.
    @Test(.timeLimit(.minutes(1))) func readsOnTheLoopEndEveryWay() async throws {
        let pair = try await AsyncPair()
        let streamA = try await pair.connectionA.openStream()
        let streamB = try await pair.pumpUntil(pair.inboundB, hasStreams: 1)
        let executor = EventLoopTaskExecutor(pair.b.eventLoop)
        /// Carries bytes over and runs what that queued on B's loop (the testing loop runs work
        /// queued from itself only when told to).
        func settle() async throws {
            try await pair.pump()
            await pair.b.testingEventLoop.run()
        }
        /// Starts a read of `stream` on B's loop and returns once it is waiting.
        func waitingRead(_ stream: MplexStream) async throws -> Task<ByteBuffer?, any Error> {
            let task = Task(executorPreference: executor) {
                #expect(stream.eventLoop.inEventLoop)
                return try await stream.read()
            }
            for _ in 0..<10_000 {
                await pair.b.testingEventLoop.run()
                if try await stream.eventLoop.submit({ stream.isReadPending }).get() { return task }
                await Task.yield()
            }
            Issue.record("the read never waited")
            return task
        }

        // Data.
        var read = try await waitingRead(streamB)
        try await streamA.write(ByteBuffer(string: "one"))
        try await settle()
        #expect(text(try await read.value) == "one")

        // Cancellation: CancellationError, and the stream still reads afterwards.
        read = try await waitingRead(streamB)
        read.cancel()
        try await settle()
        await #expect(throws: CancellationError.self) { _ = try await read.value }
        read = try await waitingRead(streamB)
        try await streamA.write(ByteBuffer(string: "two"))
        try await settle()
        #expect(text(try await read.value) == "two")

        // EOF.
        read = try await waitingRead(streamB)
        try await streamA.closeWrite()
        try await settle()
        #expect(try await read.value == nil)

        // Reset, on a second stream.
        let otherA = try await pair.connectionA.openStream()
        let otherB = try await pair.pumpUntil(pair.inboundB, hasStreams: 2)
        read = try await waitingRead(otherB)
        await otherA.reset()
        try await settle()
        #expect(await errorCode(read) == .streamResetByPeer)
    }

    @Test func largeWriteArrivesWhole() async throws {
        var configuration = MplexConfiguration()
        configuration.maxFrameSize = 1000
        let pair = try await AsyncPair(configuration: configuration)
        let streamA = try await pair.connectionA.openStream()
        let streamB = try await pair.pumpUntil(pair.inboundB, hasStreams: 1)
        let payload = ByteBuffer(bytes: (0..<5000).map { UInt8(truncatingIfNeeded: $0) })
        try await streamA.write(payload)
        try await streamA.closeWrite()
        try await pair.pump()
        var received = ByteBuffer()
        while var chunk = try await streamB.read() { received.writeBuffer(&chunk) }
        #expect(received == payload)
    }

    @Test func resetFromEachSide() async throws {
        let pair = try await AsyncPair()
        let first = try await pair.connectionA.openStream()
        let firstB = try await pair.pumpUntil(pair.inboundB, hasStreams: 1)
        // A resets: B's pending read fails, B's writes fail.
        let pending = Task { try await firstB.read() }
        await first.reset()
        try await pair.pump()
        #expect(await errorCode(pending) == .streamResetByPeer)
        await #expect(throws: MplexError.self) { try await firstB.write(ByteBuffer(string: "x")) }
        await #expect {
            _ = try await first.read()
        } throws: { ($0 as? MplexError)?.code == .streamResetLocally }

        // B resets: A's read fails after the reset arrives, unread data is dropped.
        let second = try await pair.connectionA.openStream()
        let secondB = try await pair.pumpUntil(pair.inboundB, hasStreams: 2)
        try await secondB.write(ByteBuffer(string: "dropped"))
        await secondB.reset()
        try await pair.pump()
        await #expect {
            _ = try await second.read()
        } throws: { ($0 as? MplexError)?.code == .streamResetByPeer }
        #expect(second.id.number == 1)
    }

    @Test func connectionCloseResetsStreams() async throws {
        let pair = try await AsyncPair()
        let streamA = try await pair.connectionA.openStream()
        let streamB = try await pair.pumpUntil(pair.inboundB, hasStreams: 1)
        let finished = try await pair.connectionA.openStream()
        let finishedB = try await pair.pumpUntil(pair.inboundB, hasStreams: 2)
        try await finished.write(ByteBuffer(string: "last words"))
        try await finished.closeWrite()
        try await pair.pump()

        let pendingB = Task { try await streamB.read() }
        let pendingA = Task { try await streamA.read() }
        await pair.connectionA.close()
        #expect(await errorCode(pendingA) == .connectionClosed)
        await #expect {
            try await streamA.write(ByteBuffer(string: "x"))
        } throws: { ($0 as? MplexError)?.code == .connectionClosed }
        await #expect {
            _ = try await pair.connectionA.openStream()
        } throws: { ($0 as? MplexError)?.code == .connectionClosed }

        // The peer's transport closes too.
        try await pair.b.close()
        #expect(await errorCode(pendingB) == .connectionClosed)
        // Data the peer finished sending before the connection ended is still read, then EOF.
        #expect(text(try await finishedB.read()) == "last words")
        #expect(try await finishedB.read() == nil)
    }

    @Test func concurrentReadIsRejected() async throws {
        let pair = try await AsyncPair()
        let streamA = try await pair.connectionA.openStream()
        let streamB = try await pair.pumpUntil(pair.inboundB, hasStreams: 1)
        // Two readers at once: whichever comes second is rejected at once, the first gets the data.
        let first = Task { try await streamB.read() }
        let second = Task { try await streamB.read() }
        let rejected = await withTaskGroup(of: MplexError.Code?.self) { group in
            group.addTask { await errorCode(first) }
            group.addTask { await errorCode(second) }
            let code = await group.next()!
            try? await streamA.write(ByteBuffer(string: "one"))
            try? await pair.pump()
            return code
        }
        #expect(rejected == .invalidUse)
        let results = [await first.result, await second.result].compactMap { try? $0.get() }.compactMap { $0 }
        #expect(results.map { String(buffer: $0) } == ["one"])
    }

    @Test func eventLoopAPI() throws {
        // B echoes each message and closes when A closes.
        let pair = try EmbeddedPair(initializerB: { stream in
            stream.setInboundHandler { event in
                switch event {
                case .data(let data): stream.writeOnEventLoop(data, flush: true)
                case .remoteClosed: stream.closeWriteOnEventLoop()
                case .reset: break
                }
            }
        })
        let stream = try pair.connectionA.openStreamOnEventLoop(flush: false)
        stream.setInboundHandler(pair.inboundA.recorder("A"))
        stream.writeOnEventLoop(ByteBuffer(string: "one"), flush: false)
        stream.writeOnEventLoop(ByteBuffer(string: "two"), flush: true)
        try pair.pump()
        #expect(pair.inboundA.takeEvents() == ["A data:one", "A data:two"])
        stream.closeWriteOnEventLoop()
        try pair.pump()
        #expect(pair.inboundA.takeEvents() == ["A eof"])
        // Both sides closed: a write fails, and the failure is reported through the promise.
        let promise = pair.a.eventLoop.makePromise(of: Void.self)
        stream.writeOnEventLoop(ByteBuffer(string: "late"), flush: true, promise: promise)
        #expect(throws: MplexError.self) { try promise.futureResult.wait() }
        #expect(try pair.a.finish().isClean)
        #expect(try pair.b.finish().isClean)
    }

    /// The initializer runs once the read that opened the stream is processed, so what came
    /// with the NewStream frame (data, even the peer's close) is already there.
    @Test func initializerSeesDataThatCameWithTheStream() throws {
        let seen = Mutex<[String]>([])
        let pair = try EmbeddedPair(initializerB: { stream in
            switch stream.readIfReady() {
            case .success(let data?)?: seen.withLock { $0.append("data:\(String(buffer: data))") }
            case .success(nil)?: seen.withLock { $0.append("eof") }
            case .failure?: seen.withLock { $0.append("error") }
            case nil: seen.withLock { $0.append("would wait") }
            }
            if case .success(nil)? = stream.readIfReady() { seen.withLock { $0.append("eof") } }
        })
        let stream = try pair.connectionA.openStreamOnEventLoop(flush: false)
        stream.writeOnEventLoop(ByteBuffer(string: "hello"), flush: false)
        stream.closeWriteOnEventLoop()
        // One read with the three frames (NewStream, data, Close), as one Noise frame brings them.
        var read = ByteBuffer()
        while var bytes = try pair.a.readOutbound(as: ByteBuffer.self) { read.writeBuffer(&bytes) }
        try pair.b.writeInbound(read)
        #expect(seen.withLock { $0 } == ["data:hello", "eof"])

        // A stream opened without data: the initializer finds nothing yet.
        seen.withLock { $0 = [] }
        _ = try pair.connectionA.openStreamOnEventLoop(flush: true)
        try pair.pump()
        #expect(seen.withLock { $0 } == ["would wait"])
    }

    /// A handler that captures its own stream (the usual shape) must not keep it alive once the
    /// stream is closed both ways: each finished request would otherwise leak its stream.
    @Test func finishedStreamsAreReleasedWithTheirHandlers() throws {
        weak var weakA: MplexStream?
        weak var weakB: MplexStream?
        let pair = try EmbeddedPair(initializerB: { stream in
            stream.setInboundHandler { event in
                if case .remoteClosed = event {
                    stream.writeOnEventLoop(ByteBuffer(string: "reply"), flush: false)
                    stream.closeWriteOnEventLoop()
                }
            }
        })
        do {
            let stream = try pair.connectionA.openStreamOnEventLoop(flush: false)
            let record = pair.inboundA.recorder("A")
            stream.setInboundHandler { event in
                record(event)
                _ = stream.id
            }
            stream.writeOnEventLoop(ByteBuffer(string: "request"), flush: false)
            stream.closeWriteOnEventLoop()
            try pair.pump()
            weakA = stream
            weakB = pair.inboundB.streams.first
            pair.inboundB.removeAll()
        }
        #expect(pair.inboundA.takeEvents() == ["A data:reply", "A eof"])
        #expect(weakA == nil)
        #expect(weakB == nil)
        #expect(try pair.a.finish().isClean)
        #expect(try pair.b.finish().isClean)
    }

    @Test func flushSoonWaitsForTheLoopPassThenSendsEverything() throws {
        let pair = try EmbeddedPair()
        let stream = try pair.connectionA.openStreamOnEventLoop(flush: false)
        stream.writeOnEventLoop(ByteBuffer(string: "one"), flush: false)
        stream.flushSoonOnEventLoop()
        stream.writeOnEventLoop(ByteBuffer(string: "two"), flush: false)
        stream.flushSoonOnEventLoop()
        stream.closeWriteOnEventLoop(flush: false)
        // Nothing is flushed until the loop has run the work queued now.
        #expect(try pair.a.readOutbound(as: ByteBuffer.self) == nil)
        pair.a.embeddedEventLoop.run()
        try pair.pump()
        #expect(pair.inboundB.streams.count == 1)
        let inbound = try #require(pair.inboundB.streams.first)
        inbound.setInboundHandler(pair.inboundB.recorder("B"))
        let events = pair.inboundB.takeEvents()
        #expect(events.last == "B eof")
        #expect(events.dropLast().allSatisfy { $0.hasPrefix("B data:") })
        #expect(events.dropLast().map { $0.dropFirst("B data:".count) }.joined() == "onetwo")
        #expect(try pair.a.finish().isClean)
        #expect(try pair.b.finish().isClean)
    }

    /// Inside the read that brought a request, a reply asked to be flushed "soon" leaves when
    /// the read ends (in the same write as the stream's close), without waiting for a loop task.
    @Test func flushSoonInsideAReadLeavesWithTheRead() throws {
        let pair = try EmbeddedPair(initializerB: { stream in
            stream.writeOnEventLoop(ByteBuffer(string: "reply"), flush: false)
            stream.flushSoonOnEventLoop()
            stream.closeWriteOnEventLoop(flush: false)
        })
        let stream = try pair.connectionA.openStreamOnEventLoop(flush: false)
        stream.setInboundHandler(pair.inboundA.recorder("A"))
        stream.writeOnEventLoop(ByteBuffer(string: "request"), flush: false)
        stream.closeWriteOnEventLoop()
        var read = ByteBuffer()
        while var bytes = try pair.a.readOutbound(as: ByteBuffer.self) { read.writeBuffer(&bytes) }
        try pair.b.writeInbound(read)
        // No loop task has run on B, yet the reply and the close are written.
        var reply = ByteBuffer()
        while var bytes = try pair.b.readOutbound(as: ByteBuffer.self) { reply.writeBuffer(&bytes) }
        #expect(reply.readableBytes > 0)
        try pair.a.writeInbound(reply)
        #expect(pair.inboundA.takeEvents() == ["A data:reply", "A eof"])
        // Outside a read, "soon" still waits for the loop pass.
        let other = try pair.connectionA.openStreamOnEventLoop(flush: false)
        other.writeOnEventLoop(ByteBuffer(string: "later"), flush: false)
        other.flushSoonOnEventLoop()
        #expect(try pair.a.readOutbound(as: ByteBuffer.self) == nil)
        pair.a.embeddedEventLoop.run()
        #expect(try pair.a.readOutbound(as: ByteBuffer.self) != nil)
    }

    @Test func inboundHandlerGetsBufferedDataAndReset() throws {
        let pair = try EmbeddedPair()
        let stream = try pair.connectionA.openStreamOnEventLoop()
        stream.writeOnEventLoop(ByteBuffer(string: "queued"), flush: true)
        try pair.pump()
        let streamB = try #require(pair.inboundB.streams.first)
        streamB.setInboundHandler(pair.inboundB.recorder("B"))
        #expect(pair.inboundB.takeEvents() == ["B data:queued"])
        stream.resetOnEventLoop()
        try pair.pump()
        #expect(pair.inboundB.takeEvents() == ["B reset:streamResetByPeer"])
        let promise = pair.b.eventLoop.makePromise(of: Void.self)
        streamB.writeOnEventLoop(ByteBuffer(string: "x"), flush: true, promise: promise)
        #expect(throws: MplexError.self) { try promise.futureResult.wait() }
    }

    @Test func backpressureHoldsReadsUntilDrained() throws {
        var configuration = MplexConfiguration()
        configuration.maxBufferedBytesPerStream = 100
        let pair = try EmbeddedPair(configuration: configuration)
        let stream = try pair.connectionA.openStreamOnEventLoop()
        stream.writeOnEventLoop(ByteBuffer(repeating: 1, count: 150), flush: true)
        try pair.pump()
        let streamB = try #require(pair.inboundB.streams.first)
        let before = pair.readCounterB.reads
        pair.b.read()
        #expect(pair.readCounterB.reads == before, "read held while the stream is over its bound")
        // The reader takes the data: reading resumes with the held read.
        streamB.setInboundHandler(pair.inboundB.recorder("B"))
        #expect(pair.readCounterB.reads == before + 1)
        pair.b.read()
        #expect(pair.readCounterB.reads == before + 2)
    }

    @Test func stalledStreamIsResetByTheTimer() throws {
        var configuration = MplexConfiguration()
        configuration.maxBufferedBytesPerStream = 100
        configuration.stalledStreamTimeout = .seconds(1)
        configuration.tickInterval = .milliseconds(100)
        let pair = try EmbeddedPair(configuration: configuration)
        let stream = try pair.connectionA.openStreamOnEventLoop()
        stream.setInboundHandler(pair.inboundA.recorder("A"))
        stream.writeOnEventLoop(ByteBuffer(repeating: 1, count: 150), flush: true)
        try pair.pump()
        let before = pair.readCounterB.reads
        pair.b.read()
        pair.b.embeddedEventLoop.advanceTime(by: .milliseconds(900))
        #expect(pair.readCounterB.reads == before)
        pair.b.embeddedEventLoop.advanceTime(by: .milliseconds(300))
        // The stalled stream was reset, the held read released, and the peer told.
        #expect(pair.readCounterB.reads == before + 1)
        try pair.pump()
        #expect(pair.inboundA.takeEvents() == ["A reset:streamResetByPeer"])
        let streamB = try #require(pair.inboundB.streams.first)
        streamB.setInboundHandler(pair.inboundB.recorder("B"))
        #expect(pair.inboundB.takeEvents() == ["B reset:streamStalled"])
    }

    @Test func malformedInputClosesTheConnection() throws {
        let pair = try EmbeddedPair()
        let stream = try pair.connectionB.openStreamOnEventLoop()
        stream.setInboundHandler(pair.inboundB.recorder("B"))
        try pair.b.writeInbound(ByteBuffer(bytes: [0x07, 0x00]))  // flag 7
        #expect(pair.inboundB.takeEvents() == ["B reset:invalidFlag"])
        #expect(!pair.b.isActive)
    }

    @Test func streamLimits() throws {
        var small = MplexConfiguration()
        small.maxConcurrentStreams = 1
        var large = MplexConfiguration()
        large.maxConcurrentStreams = 2
        let pair = try EmbeddedPair(configuration: large, configurationB: small)
        let first = try pair.connectionA.openStreamOnEventLoop()
        let second = try pair.connectionA.openStreamOnEventLoop()
        second.setInboundHandler(pair.inboundA.recorder("A2"))
        #expect {
            try pair.connectionA.openStreamOnEventLoop()
        } throws: { ($0 as? MplexError)?.code == .tooManyStreams }
        try pair.pump()
        // B accepts one inbound stream and resets the one over its limit.
        #expect(pair.inboundB.streams.map(\.id) == [peer(first.id)])
        #expect(pair.inboundA.takeEvents() == ["A2 reset:streamResetByPeer"])
        // B's own outbound budget is separate: its stream 0 is a different stream from A's stream 0.
        let fromB = try pair.connectionB.openStreamOnEventLoop()
        try pair.pump()
        #expect(pair.inboundA.streams.map(\.id) == [peer(fromB.id)])
        #expect(fromB.id.number == first.id.number)
        fromB.writeOnEventLoop(ByteBuffer(string: "from B"), flush: true)
        try pair.pump()
        pair.inboundA.streams[0].setInboundHandler(pair.inboundA.recorder("A<-B"))
        first.setInboundHandler(pair.inboundA.recorder("A1"))
        #expect(pair.inboundA.takeEvents() == ["A<-B data:from B"])
    }

    @Test func asyncWritesWaitForWritability() throws {
        let pair = try EmbeddedPair()
        let stream = try pair.connectionA.openStreamOnEventLoop()
        try pair.pump()
        let handler = try pair.a.pipeline.syncOperations.handler(type: MplexHandler.self)
        pair.a.isWritable = false
        let written = handler.asyncWrite(stream, ByteBuffer(string: "queued"))
        let closed = handler.asyncCloseWrite(stream)
        #expect(try pair.a.readOutbound(as: ByteBuffer.self) == nil)
        let log = Collector()
        written.whenSuccess { log.record("written") }
        closed.whenSuccess { log.record("closed") }
        #expect(log.events.isEmpty)
        // Writable again: the queued write and close go out in order.
        pair.a.isWritable = true
        pair.a.pipeline.fireChannelWritabilityChanged()
        #expect(log.takeEvents() == ["written", "closed"])
        try pair.pump()
        let streamB = try #require(pair.inboundB.streams.first)
        streamB.setInboundHandler(pair.inboundB.recorder("B"))
        #expect(pair.inboundB.takeEvents() == ["B data:queued", "B eof"])
        // An event-loop close does not overtake the stream's async writes still waiting.
        let second = try pair.connectionA.openStreamOnEventLoop()
        try pair.pump()
        pair.a.isWritable = false
        let waiting = handler.asyncWrite(second, ByteBuffer(string: "first"))
        waiting.whenSuccess { log.record("second written") }
        second.closeWriteOnEventLoop()
        #expect(try pair.a.readOutbound(as: ByteBuffer.self) == nil)
        pair.a.isWritable = true
        pair.a.pipeline.fireChannelWritabilityChanged()
        #expect(log.takeEvents() == ["second written"])
        try pair.pump()
        let secondB = try #require(pair.inboundB.streams.last)
        secondB.setInboundHandler(pair.inboundB.recorder("B2"))
        #expect(pair.inboundB.takeEvents() == ["B2 data:first", "B2 eof"])
        // Writes still queued when the connection ends fail instead of hanging.
        pair.a.isWritable = false
        let other = try pair.connectionA.openStreamOnEventLoop()
        let stuck = handler.asyncWrite(other, ByteBuffer(string: "never"))
        stuck.whenFailure { log.record("failed: \(($0 as? MplexError)?.code == .connectionClosed)") }
        pair.a.pipeline.fireChannelInactive()
        #expect(log.takeEvents() == ["failed: true"])
        // Later async writes fail at once even though the channel never became writable.
        let late = handler.asyncWrite(other, ByteBuffer(string: "late"))
        late.whenFailure { log.record("late failed: \(($0 as? MplexError)?.code == .connectionClosed)") }
        #expect(log.takeEvents() == ["late failed: true"])
    }
}
