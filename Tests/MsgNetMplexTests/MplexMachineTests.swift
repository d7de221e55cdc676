import NIOCore
import Testing

@testable import MsgNetMplex

/// Back-to-back machine tests; each runs with whole reads and with one byte per read.
@Suite struct MplexMachineTests {
    static let chunks = [Int.max, 1]

    private func config(
        bound: Int = 4 << 20, connectionBound: Int = 32 << 20, maxStreams: Int = 1024, frame: Int = 1 << 20
    ) -> MplexConfiguration {
        var configuration = MplexConfiguration()
        configuration.maxBufferedBytesPerStream = bound
        configuration.maxBufferedBytesPerConnection = connectionBound
        configuration.maxConcurrentStreams = maxStreams
        configuration.maxFrameSize = frame
        return configuration
    }

    @Test(arguments: chunks)
    func openAndDataBothWays(chunk: Int) throws {
        let pair = MachinePair(chunk: chunk)
        let id = try pair.a.open()
        #expect(id == MplexStreamID(number: 0, isLocallyInitiated: true))
        #expect(pair.a.sent == [MplexFrame(streamID: 0, flag: .newStream, data: ByteBuffer(string: "0"))])
        try pair.pump()
        #expect(pair.b.takeEvents() == [.newInboundStream(peer(id))])

        try pair.a.write(id, "ping")
        try pair.b.write(peer(id), "pong")
        try pair.pump()
        #expect(pair.b.text(peer(id)) == "ping")
        #expect(pair.a.text(id) == "pong")
        #expect(pair.a.sent.last?.flag == .messageInitiator)
        #expect(pair.b.sent.last?.flag == .messageReceiver)
        #expect(pair.a.takeEvents().isEmpty)
        #expect(pair.b.takeEvents().isEmpty)
    }

    @Test(arguments: chunks)
    func halfCloseInitiatorFirst(chunk: Int) throws {
        let pair = MachinePair(chunk: chunk)
        let id = try pair.a.open()
        try pair.pump()
        _ = pair.b.takeEvents()

        try pair.a.closeWrite(id)
        #expect(pair.a.sent.last == MplexFrame(streamID: 0, flag: .closeInitiator))
        try pair.pump()
        #expect(pair.b.takeEvents() == [.remoteClosed(peer(id))])
        // Closing again is a no-op; writing after close is an error.
        try pair.a.closeWrite(id)
        #expect(pair.a.outbound.readableBytes == 0)
        #expect(throws: MplexError.self) { try pair.a.write(id, "late") }

        // The other direction still works.
        try pair.b.write(peer(id), "reply")
        try pair.pump()
        #expect(pair.a.text(id) == "reply")

        try pair.b.closeWrite(peer(id))
        #expect(pair.b.sent.last == MplexFrame(streamID: 0, flag: .closeReceiver))
        #expect(pair.b.takeEvents() == [.streamClosed(peer(id))])
        try pair.pump()
        #expect(pair.a.takeEvents() == [.remoteClosed(id), .streamClosed(id)])
        #expect(pair.a.machine.streamCount == 0)
        #expect(pair.b.machine.streamCount == 0)
    }

    @Test(arguments: chunks)
    func halfCloseReceiverFirst(chunk: Int) throws {
        let pair = MachinePair(chunk: chunk)
        let id = try pair.a.open()
        try pair.pump()
        _ = pair.b.takeEvents()
        try pair.b.closeWrite(peer(id))
        try pair.pump()
        #expect(pair.a.takeEvents() == [.remoteClosed(id)])
        try pair.a.write(id, "still open")
        try pair.pump()
        #expect(pair.b.text(peer(id)) == "still open")
        try pair.a.closeWrite(id)
        #expect(pair.a.takeEvents() == [.streamClosed(id)])
        try pair.pump()
        #expect(pair.b.takeEvents() == [.remoteClosed(peer(id)), .streamClosed(peer(id))])
        #expect(pair.a.machine.streamCount == 0 && pair.b.machine.streamCount == 0)
        // Forgotten: further calls fail, and a late frame for it is answered with a reset.
        #expect(throws: MplexError.self) { try pair.a.write(id, "x") }
    }

    @Test(arguments: chunks)
    func resetFromInitiator(chunk: Int) throws {
        let pair = MachinePair(chunk: chunk)
        let id = try pair.a.open()
        try pair.a.write(id, "data")
        try pair.pump()
        _ = pair.b.takeEvents()
        pair.a.reset(id)
        #expect(pair.a.sent.last == MplexFrame(streamID: 0, flag: .resetInitiator))
        #expect(pair.a.machine.streamCount == 0)
        try pair.pump()
        let events = pair.b.takeEvents()
        #expect(events.count == 1)
        #expect(events.first?.errorCode == .streamResetByPeer)
        #expect(pair.b.machine.streamCount == 0)
        // Nothing answers a reset (no reset loops).
        #expect(pair.b.sent.isEmpty)
        #expect(throws: MplexError.self) { try pair.b.write(peer(id), "x") }
    }

    @Test(arguments: chunks)
    func resetFromReceiver(chunk: Int) throws {
        let pair = MachinePair(chunk: chunk)
        let id = try pair.a.open()
        try pair.pump()
        _ = pair.b.takeEvents()
        pair.b.reset(peer(id))
        #expect(pair.b.sent.last == MplexFrame(streamID: 0, flag: .resetReceiver))
        // Data the initiator sends before it learns of the reset is answered with another reset, harmlessly.
        try pair.a.write(id, "in flight")
        try pair.pump()
        #expect(pair.a.takeEvents().first?.errorCode == .streamResetByPeer)
        #expect(pair.a.machine.streamCount == 0 && pair.b.machine.streamCount == 0)
        #expect(pair.b.received[peer(id)] == nil)
        #expect(pair.b.sent.last == MplexFrame(streamID: 0, flag: .resetReceiver))
    }

    @Test func unknownStream() throws {
        let side = MachineEndpoint(configuration: .init())
        // Data for a stream the peer never opened: answer with a reset, deliver nothing.
        side.inject(MplexFrame(streamID: 7, flag: .messageInitiator, data: ByteBuffer(string: "?")))
        #expect(side.sent == [MplexFrame(streamID: 7, flag: .resetReceiver)])
        // Data claiming to be on a stream we opened, which we did not.
        side.inject(MplexFrame(streamID: 3, flag: .messageReceiver, data: ByteBuffer(string: "?")))
        #expect(side.sent.last == MplexFrame(streamID: 3, flag: .resetInitiator))
        // Close and reset for unknown streams are ignored.
        side.inject(MplexFrame(streamID: 9, flag: .closeInitiator), MplexFrame(streamID: 9, flag: .resetInitiator))
        #expect(side.sent.count == 2)
        #expect(side.received.isEmpty && side.events.isEmpty)
        #expect(side.machine.streamCount == 0)
    }

    @Test func dataAfterRemoteCloseResetsTheStream() throws {
        let side = MachineEndpoint(configuration: .init())
        side.inject(
            MplexFrame(streamID: 4, flag: .newStream),
            MplexFrame(streamID: 4, flag: .messageInitiator, data: ByteBuffer(string: "ok")),
            MplexFrame(streamID: 4, flag: .closeInitiator),
            MplexFrame(streamID: 4, flag: .messageInitiator, data: ByteBuffer(string: "bad"))
        )
        let id = MplexStreamID(number: 4, isLocallyInitiated: false)
        #expect(side.text(id) == "ok")
        let events = side.takeEvents()
        #expect(events.count == 3)
        #expect(events[0] == .newInboundStream(id))
        #expect(events[1] == .remoteClosed(id))
        #expect(events[2].errorCode == .streamProtocolViolation)
        #expect(side.sent == [MplexFrame(streamID: 4, flag: .resetReceiver)])
        #expect(side.machine.streamCount == 0)
    }

    @Test func duplicateNewStreamClosesTheConnection() throws {
        let side = MachineEndpoint(configuration: .init())
        let id = try side.open()
        side.inject(MplexFrame(streamID: 0, flag: .newStream), MplexFrame(streamID: 0, flag: .newStream))
        let events = side.takeEvents()
        #expect(events.count == 4)
        #expect(events[0] == .newInboundStream(MplexStreamID(number: 0, isLocallyInitiated: false)))
        // Both streams are reset, then the connection closes.
        #expect(events[1] == .streamReset(id, events[3].closeError!))
        #expect(events[2].errorCode == .protocolViolation)
        #expect(events[3].errorCode == .protocolViolation)
        #expect(throws: MplexError.self) { try side.machine.openStream() }
        #expect(side.machine.onFrame(MplexFrame(streamID: 1, flag: .newStream)).isEmpty)
    }

    @Test(arguments: chunks)
    func bothSidesOpenIDZero(chunk: Int) throws {
        let pair = MachinePair(chunk: chunk)
        let fromA = try pair.a.open()
        let fromB = try pair.b.open()
        #expect(fromA.number == 0 && fromB.number == 0)
        try pair.a.write(fromA, "a's stream")
        try pair.b.write(fromB, "b's stream")
        try pair.pump()
        #expect(pair.a.takeEvents() == [.newInboundStream(peer(fromB))])
        #expect(pair.b.takeEvents() == [.newInboundStream(peer(fromA))])
        #expect(pair.a.machine.streamCount == 2 && pair.b.machine.streamCount == 2)
        try pair.a.write(peer(fromB), " answered by a")
        try pair.b.write(peer(fromA), " answered by b")
        try pair.pump()
        #expect(pair.b.text(peer(fromA)) == "a's stream")
        #expect(pair.a.text(peer(fromB)) == "b's stream")
        #expect(pair.a.text(fromA) == " answered by b")
        #expect(pair.b.text(fromB) == " answered by a")
        // Resetting one leaves the other alone.
        pair.a.reset(fromA)
        try pair.pump()
        #expect(pair.b.takeEvents().map(\.errorCode) == [.streamResetByPeer])
        #expect(pair.a.machine.streamCount == 1 && pair.b.machine.streamCount == 1)
    }

    @Test(arguments: chunks)
    func concurrentStreamLimit(chunk: Int) throws {
        let pair = MachinePair(chunk: chunk, configuration: config(maxStreams: 3), b: config(maxStreams: 2))
        let ids = try (0..<3).map { _ in try pair.a.open() }
        #expect(ids.map(\.number) == [0, 1, 2])
        // Outbound over the limit: an error to the caller.
        #expect {
            try pair.a.machine.openStream()
        } throws: { ($0 as? MplexError)?.code == .tooManyStreams }
        try pair.pump()
        // Inbound over the limit: the new stream is reset.
        #expect(pair.b.takeEvents() == [.newInboundStream(peer(ids[0])), .newInboundStream(peer(ids[1]))])
        #expect(pair.b.sent == [MplexFrame(streamID: 2, flag: .resetReceiver)])
        let events = pair.a.takeEvents()
        #expect(events.count == 1)
        #expect(events.first == .streamReset(ids[2], events.first!.closeError!))
        #expect(pair.a.machine.streamCount == 2)
        // A slot is free again; ids are never reused.
        let next = try pair.a.open()
        #expect(next.number == 3)
        try pair.pump()
        #expect(pair.b.sent.last == MplexFrame(streamID: 3, flag: .resetReceiver))
        pair.a.reset(ids[0])
        try pair.pump()
        let again = try pair.a.open()
        try pair.pump()
        #expect(again.number == 4)
        #expect(pair.b.takeEvents().last == .newInboundStream(peer(again)))
    }

    @Test(arguments: chunks)
    func largeWritesAreSplitAtTheFrameLimit(chunk: Int) throws {
        let pair = MachinePair(chunk: chunk, configuration: config(frame: 10))
        let id = try pair.a.open()
        try pair.a.write(id, count: 25)
        #expect(pair.a.sent.dropFirst().map(\.data.readableBytes) == [10, 10, 5])
        try pair.a.write(id, count: 0)
        #expect(pair.a.sent.count == 4)
        try pair.pump()
        #expect(pair.b.received[peer(id)]?.count == 25)
    }

    // MARK: Backpressure

    @Test(arguments: chunks)
    func stopAndResumeReading(chunk: Int) throws {
        let pair = MachinePair(chunk: chunk, configuration: config(bound: 100))
        pair.b.autoConsume = false
        let id = try pair.a.open()
        try pair.a.write(id, count: 60)
        try pair.pump()
        #expect(pair.b.takeEvents() == [.newInboundStream(peer(id))])
        #expect(!pair.b.machine.isReadingPaused)
        try pair.a.write(id, count: 60)
        try pair.pump()
        #expect(pair.b.takeEvents() == [.stopReading])
        #expect(pair.b.machine.isReadingPaused)
        #expect(pair.b.machine.bufferedBytes(peer(id)) == 120)
        // Still over half the bound: stays paused.
        pair.b.consume(peer(id), 60)
        #expect(pair.b.takeEvents().isEmpty)
        pair.b.consume(peer(id), 10)
        #expect(pair.b.takeEvents() == [.resumeReading])
        #expect(!pair.b.machine.isReadingPaused)
        // Another stream over the bound pauses again; removing it resumes.
        let other = try pair.a.open()
        try pair.a.write(other, count: 101)
        try pair.pump()
        #expect(pair.b.takeEvents() == [.newInboundStream(peer(other)), .stopReading])
        pair.b.reset(peer(other))
        #expect(pair.b.takeEvents() == [.resumeReading])
    }

    @Test func pausedUntilEveryCongestedStreamDrains() throws {
        let pair = MachinePair(configuration: config(bound: 100))
        pair.b.autoConsume = false
        let s1 = try pair.a.open()
        let s2 = try pair.a.open()
        try pair.a.write(s1, count: 150)
        try pair.a.write(s2, count: 150)
        try pair.pump()
        #expect(pair.b.takeEvents().filter { $0 == .stopReading }.count == 1)
        pair.b.consume(peer(s1), 150)
        #expect(pair.b.takeEvents().isEmpty)
        pair.b.consume(peer(s2), 150)
        #expect(pair.b.takeEvents() == [.resumeReading])
    }

    @Test(arguments: chunks)
    func stalledStreamIsReset(chunk: Int) throws {
        let pair = MachinePair(chunk: chunk, configuration: config(bound: 100))
        pair.b.autoConsume = false
        let id = try pair.a.open()
        try pair.a.write(id, count: 150)
        try pair.pump()
        _ = pair.b.takeEvents()
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        pair.b.tick(start)  // the stall clock starts here
        pair.b.tick(start + .seconds(4))
        // Progress (still over half the bound) restarts the clock.
        pair.b.consume(peer(id), 10)
        pair.b.tick(start + .seconds(6))
        pair.b.tick(start + .milliseconds(10_999))
        #expect(pair.b.takeEvents().isEmpty)
        #expect(pair.b.sent.isEmpty)
        pair.b.tick(start + .seconds(11))
        let events = pair.b.takeEvents()
        #expect(events.count == 2)
        #expect(events.first?.errorCode == .streamStalled)
        #expect(events.last == .resumeReading)
        #expect(pair.b.sent == [MplexFrame(streamID: 0, flag: .resetReceiver)])
        #expect(pair.b.machine.streamCount == 0)
        try pair.pump()
        #expect(pair.a.takeEvents().map(\.errorCode) == [.streamResetByPeer])
    }

    @Test func ticksWithoutCongestionDoNothing() throws {
        let pair = MachinePair(configuration: config(bound: 100))
        pair.b.autoConsume = false
        let id = try pair.a.open()
        try pair.a.write(id, count: 100)  // at the bound, not over it
        try pair.pump()
        _ = pair.b.takeEvents()
        pair.b.tick(.uptimeNanoseconds(0))
        pair.b.tick(.uptimeNanoseconds(60_000_000_000))
        #expect(pair.b.takeEvents().isEmpty)
        #expect(pair.b.machine.streamCount == 1)
    }

    @Test(arguments: chunks)
    func hardCapResetsAtOnce(chunk: Int) throws {
        let pair = MachinePair(chunk: chunk, configuration: config(bound: 100))
        pair.b.autoConsume = false
        let id = try pair.a.open()
        try pair.a.write(id, count: 150)
        try pair.pump()
        #expect(pair.b.takeEvents() == [.newInboundStream(peer(id)), .stopReading])
        // Data already in flight keeps coming (reading stops at the transport, not here).
        try pair.a.write(id, count: 50)  // 200: exactly the hard cap, still buffered
        try pair.pump()
        #expect(pair.b.received[peer(id)]?.count == 200)
        try pair.a.write(id, count: 1)  // over the cap: not buffered, reset now
        try pair.pump()
        #expect(pair.b.received[peer(id)]?.count == 200)
        let events = pair.b.takeEvents()
        #expect(events.map(\.errorCode) == [.receiveBufferOverflow, nil])
        #expect(events.last == .resumeReading)
        #expect(pair.a.takeEvents().map(\.errorCode) == [.streamResetByPeer])
        #expect(pair.a.machine.streamCount == 0 && pair.b.machine.streamCount == 0)
    }

    @Test(arguments: chunks)
    func manyStreamsUnderTheirBoundPauseTheConnection(chunk: Int) throws {
        // Five streams of 80 bytes: each under its own bound (100), together over the
        // connection's (300).
        let pair = MachinePair(chunk: chunk, configuration: config(bound: 100, connectionBound: 300))
        pair.b.autoConsume = false
        let ids = try (0..<5).map { _ in try pair.a.open() }
        for id in ids.prefix(3) { try pair.a.write(id, count: 80) }
        try pair.pump()
        #expect(!pair.b.machine.isReadingPaused)
        #expect(pair.b.machine.totalBufferedBytes == 240)
        for id in ids.suffix(2) { try pair.a.write(id, count: 80) }
        try pair.pump()
        #expect(pair.b.takeEvents().filter { $0 == .stopReading }.count == 1)
        #expect(pair.b.machine.isReadingPaused)
        #expect(pair.b.machine.totalBufferedBytes == 400)
        // Resumes only once the sum is down to half the bound (150).
        pair.b.consume(peer(ids[0]), 80)
        pair.b.consume(peer(ids[1]), 80)
        #expect(pair.b.takeEvents().isEmpty)
        #expect(pair.b.machine.totalBufferedBytes == 240)
        pair.b.consume(peer(ids[2]), 80)
        #expect(pair.b.takeEvents().isEmpty)
        pair.b.consume(peer(ids[3]), 10)  // 150
        #expect(pair.b.takeEvents() == [.resumeReading])
        #expect(!pair.b.machine.isReadingPaused)
    }

    @Test func removedStreamsGiveBackTheirShare() throws {
        let pair = MachinePair(configuration: config(bound: 100, connectionBound: 300))
        pair.b.autoConsume = false
        let ids = try (0..<4).map { _ in try pair.a.open() }
        for id in ids { try pair.a.write(id, count: 90) }
        try pair.pump()
        #expect(pair.b.takeEvents().contains(.stopReading))
        pair.b.reset(peer(ids[0]))  // 270: still over half
        #expect(pair.b.takeEvents().isEmpty)
        pair.a.reset(ids[1])
        try pair.pump()  // the peer's reset: 180
        #expect(pair.b.takeEvents().map(\.errorCode) == [.streamResetByPeer])
        try pair.a.closeWrite(ids[2])
        try pair.b.closeWrite(peer(ids[2]))
        try pair.pump()  // closed both ways, forgotten with its 90 unread bytes: 90
        #expect(pair.b.takeEvents().contains(.resumeReading))
        #expect(pair.b.machine.totalBufferedBytes == 90)
    }

    @Test(arguments: chunks)
    func stalledConnectionResetsItsLargestStreams(chunk: Int) throws {
        let pair = MachinePair(chunk: chunk, configuration: config(bound: 100, connectionBound: 300))
        pair.b.autoConsume = false
        let sizes = [50, 90, 70, 90, 20]
        let ids = try (0..<sizes.count).map { _ in try pair.a.open() }
        for (id, size) in zip(ids, sizes) { try pair.a.write(id, count: size) }
        try pair.pump()
        #expect(pair.b.machine.isReadingPaused)  // 320
        _ = pair.b.takeEvents()
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        pair.b.tick(start)  // the stall clock starts here
        // Progress on any stream restarts it.
        pair.b.consume(peer(ids[4]), 10)  // 310
        pair.b.tick(start + .seconds(4))
        pair.b.tick(start + .milliseconds(8_999))
        #expect(pair.b.takeEvents().isEmpty)
        pair.b.tick(start + .seconds(9))
        // The two 90-byte streams go (in id order): 310 → 130, under half the bound (150).
        let events = pair.b.takeEvents()
        let reset = events.compactMap { event -> MplexStreamID? in
            if case .streamReset(let id, let error) = event, error.code == .streamStalled { return id }
            return nil
        }
        #expect(reset == [peer(ids[1]), peer(ids[3])])
        #expect(events.last == .resumeReading)
        #expect(pair.b.machine.totalBufferedBytes == 130)
        #expect(pair.b.machine.streamCount == 3)
        try pair.pump()
        #expect(pair.a.takeEvents().map(\.errorCode) == [.streamResetByPeer, .streamResetByPeer])
    }

    @Test(arguments: chunks)
    func connectionHardCapResetsTheStreamThatWouldCrossIt(chunk: Int) throws {
        let pair = MachinePair(chunk: chunk, configuration: config(bound: 100, connectionBound: 200))
        pair.b.autoConsume = false
        let ids = try (0..<5).map { _ in try pair.a.open() }
        for id in ids.prefix(4) { try pair.a.write(id, count: 100) }  // 400: exactly the hard cap
        try pair.pump()
        #expect(pair.b.machine.totalBufferedBytes == 400)
        try pair.a.write(ids[4], count: 1)
        try pair.pump()
        #expect(pair.b.received[peer(ids[4])] == nil)
        #expect(pair.b.machine.totalBufferedBytes == 400)
        let overflow = pair.b.takeEvents().compactMap { event -> MplexStreamID? in
            if case .streamReset(let id, let error) = event, error.code == .receiveBufferOverflow { return id }
            return nil
        }
        #expect(overflow == [peer(ids[4])])
        #expect(pair.b.machine.streamCount == 4)
    }

    @Test func connectionBoundIsAtLeastTheStreamBound() {
        var configuration = config(bound: 100, connectionBound: 10)
        #expect(configuration.connectionBufferBound == 100)
        #expect(configuration.connectionHardBufferCap == 200)
        configuration.maxBufferedBytesPerConnection = 1000
        #expect(configuration.connectionBufferBound == 1000)
    }

    @Test func connectionClosedResetsEveryStream() throws {
        let pair = MachinePair(configuration: config(bound: 100))
        pair.b.autoConsume = false
        let s1 = try pair.a.open()
        let s2 = try pair.a.open()
        try pair.a.write(s2, count: 200)
        try pair.pump()
        #expect(pair.b.machine.isReadingPaused)
        let actions = pair.a.machine.onConnectionClosed()
        #expect(actions.count == 2)
        #expect(Set(actions.compactMap { if case .streamReset(let id, _) = $0 { id } else { nil } }) == [s1, s2])
        #expect(actions.allSatisfy { $0.errorCode == .connectionClosed })
        #expect(pair.a.machine.streamCount == 0)
        #expect(throws: MplexError.self) { try pair.a.machine.openStream() }
        #expect(throws: MplexError.self) { try pair.a.machine.write(s1, ByteBuffer(string: "x")) }
        #expect(pair.a.machine.onConnectionClosed().isEmpty)
        let decodeFailure = pair.b.machine.onDecodeError(MplexError(.invalidFlag, "test"))
        #expect(decodeFailure.map(\.errorCode) == [.invalidFlag, .invalidFlag, .invalidFlag])
        #expect(decodeFailure.last == .closeConnection(MplexError(.invalidFlag, "test")))
    }
}

extension MplexMachine.Action {
    fileprivate var closeError: MplexError? {
        switch self {
        case .streamReset(_, let error), .closeConnection(let error): return error
        default: return nil
        }
    }
}
