import MsgNetCore
import MsgNetSecurity
import NIOCore
import Testing

@testable import MsgNetMultipacket

/// Establishes A → B on a clean network and returns it.
private func connected(seed: UInt64 = 1, limits: SessionLimits = SessionLimits()) -> SessionTestNetwork {
    var net = SessionTestNetwork(seed: seed, limits: limits)
    _ = net.connect("A", to: ["B"], expecting: net.peer("B"))
    net.run(for: .seconds(1))
    return net
}

@Suite("Session handshake and data")
struct SessionHandshakeTests {
    @Test func handshakeThenDataBothWays() throws {
        var net = connected()
        let a = try #require(net.established["A"]?.first)
        let b = try #require(net.established["B"]?.first)
        #expect(a.remotePeer == net.peer("B"))
        #expect(b.remotePeer == net.peer("A"))
        #expect(a.localID == b.remoteID && a.remoteID == b.localID)
        #expect(a.role == .initiator && b.role == .responder)
        for i in 0..<20 {
            try net.send("a\(i)", from: "A", to: net.peer("B"))
            try net.send("b\(i)", from: "B", to: net.peer("A"))
        }
        net.run(for: .seconds(1))
        #expect(net.payloads(at: "B") == (0..<20).map { "a\($0)" })
        #expect(net.payloads(at: "A") == (0..<20).map { "b\($0)" })
        #expect(net.delivered["B"]!.allSatisfy { $0.from == net.peer("A") && $0.session == b.localID })
        #expect(net.tables["A"]!.counters.handshakeRetransmits == 0)
    }

    @Test func datagramsStayWithinLimits() throws {
        var net = connected()
        let big = ByteBuffer(repeating: 7, count: 1200)
        net.perform("A", try net.tables["A"]!.send(big, to: net.peer("B"), now: net.now))
        #expect(net.log.allSatisfy { $0.bytes.readableBytes <= 1232 })
        #expect(net.log.last!.bytes.readableBytes == 1231)
        #expect(throws: SessionError.payloadTooLarge(size: 1201, limit: 1200)) {
            _ = try net.tables["A"]!.send(ByteBuffer(repeating: 0, count: 1201), to: net.peer("B"), now: net.now)
        }
        #expect(throws: SessionError.noSession(net.peer("A"))) {
            _ = try net.tables["A"]!.send(ByteBuffer(), to: net.peer("A"), now: net.now)
        }
    }

    @Test(arguments: [(0.1, UInt64(11)), (0.1, 12), (0.2, 13), (0.3, 14), (0.3, 15), (0.3, 16)])
    func handshakeCompletesUnderLoss(loss: Double, seed: UInt64) throws {
        var net = SessionTestNetwork(seed: seed)
        net.loss = loss
        _ = net.connect("A", to: ["B"], expecting: net.peer("B"))
        net.run(for: .seconds(9))
        let a = try #require(net.established["A"]?.first)
        let b = try #require(net.established["B"]?.first)
        #expect(a.localID == b.remoteID)
        // Both sides confirmed: no session timed out, and exactly one session each.
        net.run(for: .seconds(5))
        #expect(net.closed["A"] == nil && net.closed["B"] == nil)
        #expect(net.tables["A"]!.sessionCount == 1 && net.tables["B"]!.sessionCount == 1)
    }

    @Test func lostMessage3IsRetransmittedAndEarlyDataHeld() throws {
        var net = SessionTestNetwork(seed: 3)
        _ = net.connect("A", to: ["B"], expecting: net.peer("B"))
        net.run(for: .milliseconds(15))  // message 1 delivered; message 2 in flight
        net.run(for: .milliseconds(10))  // message 2 delivered: A sends message 3
        #expect(net.established["A"]?.count == 1)
        // Drop message 3 and the data sent right after it on the wire.
        let message3 = net.queue.removeFirst()
        #expect(message3.bytes.getInteger(at: 0, as: UInt8.self) == 0x13)
        for i in 0..<12 { try net.send("early\(i)", from: "A", to: net.peer("B")) }
        net.run(for: .seconds(3))
        #expect(net.established["B"]?.count == 1)
        #expect(net.tables["A"]!.counters.handshakeRetransmits >= 1)
        // Data sent before B had keys was held (8 at most) and delivered once message 3 arrived.
        #expect(net.payloads(at: "B") == (0..<8).map { "early\($0)" })
        #expect(net.tables["B"]!.counters.earlyDropped == 4)
    }

    @Test func lostMessage2IsRecoveredByRetransmittingMessage1() throws {
        var net = SessionTestNetwork(seed: 4)
        _ = net.connect("A", to: ["B"], expecting: net.peer("B"))
        net.run(for: .milliseconds(15))
        let message2 = net.queue.removeFirst().bytes
        #expect(message2.getInteger(at: 0, as: UInt8.self) == 0x12)
        net.run(for: .seconds(1))
        #expect(net.established["A"]?.count == 1 && net.established["B"]?.count == 1)
        // The retransmitted message 1 was answered with the very same message 2; one session.
        let answers = net.log.filter { $0.bytes.getInteger(at: 0, as: UInt8.self) == 0x12 }
        #expect(answers.count == 2 && answers.allSatisfy { $0.bytes == message2 })
        #expect(net.tables["B"]!.counters.handshakeDuplicates == 1)
        #expect(net.tables["B"]!.counters.sessionsEstablished == 1)
    }

    @Test func dataUnderLossIsNeverDuplicated() throws {
        var net = connected(seed: 6)
        net.loss = 0.1
        net.duplicate = 0.1
        for i in 0..<500 { try net.send("\(i)", from: "A", to: net.peer("B")) }
        net.run(for: .seconds(1))
        let got = net.payloads(at: "B")
        #expect(Set(got).count == got.count)
        #expect(got.count > 400 && got.count < 500)
    }

    @Test func duplicatesAndReorderingDeliverOnce() throws {
        var net = connected(seed: 5)
        net.duplicate = 0.5
        net.jitter = .milliseconds(40)
        for i in 0..<300 {
            try net.send("\(i)", from: "A", to: net.peer("B"))
            try net.send("\(i)", from: "B", to: net.peer("A"))
        }
        net.run(for: .seconds(2))
        #expect(Set(net.payloads(at: "B")).count == 300 && net.payloads(at: "B").count == 300)
        #expect(Set(net.payloads(at: "A")).count == 300 && net.payloads(at: "A").count == 300)
        #expect(net.payloads(at: "B") != (0..<300).map { "\($0)" })  // it really reordered
        #expect(net.tables["B"]!.counters.replayed > 50)
    }

    @Test func wrongExpectedPeerFailsTheHandshake() throws {
        var net = SessionTestNetwork(seed: 7, nodes: ["A", "B", "C"])
        _ = net.connect("A", to: ["B"], expecting: net.peer("C"))
        net.run(for: .seconds(1))
        let failure = try #require(net.closed["A"]?.first)
        #expect(failure.reason == .handshakeFailed(.peerIDMismatch(expected: net.peer("C"), actual: net.peer("B"))))
        #expect(net.established["A"] == nil)
        #expect(net.tables["A"]!.sessionCount == 0)
        // B's half-open session times out; nothing leaks.
        net.run(for: .seconds(11))
        #expect(net.closed["B"]?.first?.reason == .handshakeTimeout)
        #expect(net.tables["B"]!.sessionCount == 0 && net.tables["B"]!.halfOpenCount == 0)
    }

    @Test func tamperedMessage2IsDroppedAndTheRealOneStillWorks() throws {
        var net = SessionTestNetwork(seed: 8)
        _ = net.connect("A", to: ["B"], expecting: net.peer("B"))
        net.run(for: .milliseconds(15))
        var message2 = try #require(net.queue.first?.bytes)
        #expect(message2.getInteger(at: 0, as: UInt8.self) == 0x12)
        let last = message2.writerIndex - 1
        message2.setInteger(message2.getInteger(at: last, as: UInt8.self)! ^ 1, at: last)
        net.inject(message2, into: "A", from: "B", local: "A")
        #expect(net.tables["A"]!.counters.handshakeFailed == 1)
        #expect(net.closed["A"] == nil)
        net.run(for: .seconds(1))
        #expect(net.established["A"]?.count == 1 && net.established["B"]?.count == 1)
    }

    @Test func handshakeDeadlineFailsWhenThePeerIsSilent() {
        var net = SessionTestNetwork(seed: 9)
        _ = net.connect("A", to: ["nowhere"], expecting: net.peer("B"))
        net.run(for: .seconds(12))
        #expect(net.closed["A"]?.map(\.reason) == [.handshakeTimeout])
        #expect(net.tables["A"]!.counters.handshakeRetransmits >= 5)
        #expect(net.tables["A"]!.sessionCount == 0)
        // Backoff: far fewer than one retransmission per 250 ms.
        #expect((net.sinks["nowhere"]?.count ?? 0) < 12)
    }
}

@Suite("Session simultaneous open and consolidation")
struct SessionOpenTests {
    @Test(arguments: [UInt64(21), 22, 23])
    func simultaneousOpenLeavesOneSession(seed: UInt64) throws {
        var net = SessionTestNetwork(seed: seed)
        net.jitter = .milliseconds(5)
        _ = net.connect("A", to: ["B"], expecting: net.peer("B"))
        _ = net.connect("B", to: ["A"], expecting: net.peer("A"))
        net.run(for: .seconds(2))
        let a = net.tables["A"]!
        let b = net.tables["B"]!
        #expect(a.sessions(with: net.peer("B")).count == 1)
        #expect(b.sessions(with: net.peer("A")).count == 1)
        let aID = try #require(a.session(with: net.peer("B")))
        let bID = try #require(b.session(with: net.peer("A")))
        let aInfo = try #require(net.established["A"]?.first { $0.localID == aID })
        #expect(aInfo.remoteID == bID)
        // The handshake initiated by the smaller peer id won.
        let smaller = min(net.peer("A"), net.peer("B")) == net.peer("A") ? "A" : "B"
        #expect(net.established[smaller]?.first { $0.localID == (smaller == "A" ? aID : bID) }?.role == .initiator)
        #expect(a.sessionCount == 1 && b.sessionCount == 1)
        // Both handshakes really completed, and each side dropped the loser.
        #expect(a.counters.sessionsEstablished == 2 && b.counters.sessionsEstablished == 2)
        #expect(a.counters.sessionsSuperseded + b.counters.sessionsSuperseded >= 1)
        try net.send("x", from: "A", to: net.peer("B"))
        try net.send("y", from: "B", to: net.peer("A"))
        net.run(for: .seconds(1))
        #expect(net.payloads(at: "B").last == "x" && net.payloads(at: "A").last == "y")
    }

    @Test func reconnectAfterRestartReplacesTheOldSession() throws {
        var net = connected(seed: 24)
        let old = try #require(net.tables["B"]!.session(with: net.peer("A")))
        // A restarts: a fresh table with the same identity dials again much later.
        net.run(for: .seconds(12))
        net.tables["A"] = SessionTable(identity: net.identities["A"]!, random: SessionSplitMix64(seed: 99))
        _ = net.connect("A", to: ["B"], expecting: net.peer("B"))
        net.run(for: .seconds(1))
        let new = try #require(net.tables["B"]!.session(with: net.peer("A")))
        #expect(new != old)
        #expect(net.tables["B"]!.sessions(with: net.peer("A")) == [new])
        #expect(net.closed["B"]?.contains { $0.session == old && $0.reason == .superseded } == true)
    }

    @Test func consolidationAnswersTheFirstCopyOnly() throws {
        var net = SessionTestNetwork(seed: 31)
        net.owner["B1"] = "B"
        net.owner["B2"] = "B"
        net.owner["B3"] = "B"
        net.extraDelay = ["B1": .milliseconds(30), "B3": .milliseconds(60)]
        _ = net.connect("A", to: ["B1", "B2", "B3"], expecting: net.peer("B"))
        net.run(for: .seconds(1))
        let a = try #require(net.established["A"]?.first)
        #expect(a.transportID == 1)
        #expect(a.path == Route(remote: "B2", local: "A"))
        #expect(net.established["B"]?.count == 1)
        #expect(net.tables["B"]!.sessionCount == 1)
        #expect(net.tables["B"]!.counters.handshakeDuplicates == 2)
        // Message 2 went out once (on the first copy's path).
        #expect(net.log.filter { $0.bytes.getInteger(at: 0, as: UInt8.self) == 0x12 }.count == 1)
        try net.send("hi", from: "A", to: net.peer("B"))
        net.run(for: .seconds(1))
        #expect(net.payloads(at: "B") == ["hi"])
        #expect(net.log.last { $0.source == "A" }?.destination == "B2")
    }

    @Test func anotherNodeAtOneOfThePeersAddressesDoesNotFailTheHandshake() throws {
        // "C2" is C's address, listed for B (C answers first: it is nearer); B2 is B's.
        var net = SessionTestNetwork(seed: 33, nodes: ["A", "B", "C"])
        net.owner["C2"] = "C"
        net.owner["B2"] = "B"
        net.extraDelay = ["B2": .milliseconds(30)]
        _ = net.connect("A", to: ["C2", "B2"], expecting: net.peer("B"))
        net.run(for: .seconds(1))
        let a = try #require(net.established["A"]?.first)
        #expect(a.remotePeer == net.peer("B"))
        #expect(a.path == Route(remote: "B2", local: "A"))
        #expect(net.closed["A"] == nil)
        #expect(net.tables["A"]!.counters.handshakeFailed >= 1)
        try net.send("hi", from: "A", to: net.peer("B"))
        net.run(for: .seconds(1))
        #expect(net.payloads(at: "B") == ["hi"])
    }

    @Test func everyAddressReachingAnotherNodeFailsTheHandshake() throws {
        var net = SessionTestNetwork(seed: 34, nodes: ["A", "B", "C", "D"])
        net.owner["C2"] = "C"
        net.owner["D2"] = "D"
        _ = net.connect("A", to: ["C2", "D2"], expecting: net.peer("B"))
        net.run(for: .seconds(1))
        let failure = try #require(net.closed["A"]?.first)
        guard case .handshakeFailed(.peerIDMismatch) = failure.reason else {
            Issue.record("closed for \(failure.reason)")
            return
        }
        #expect(net.established["A"] == nil)
        #expect(net.tables["A"]!.sessionCount == 0)
    }
    @Test func aPathTheNetworkRefusesGetsNoMoreInitiationsAndTheOthersCarryOn() throws {
        // "X1" is an address the network refuses (the socket layer reports it); B answers on
        // B2 only after several retransmissions.
        var net = SessionTestNetwork(seed: 35)
        net.owner["B2"] = "B"
        net.extraDelay = ["B2": .milliseconds(1500)]
        _ = net.connect("A", to: ["X1", "B2"], expecting: net.peer("B"))
        let refused = Route(remote: "X1", local: "A")
        net.perform("A", net.tables["A"]!.onSendRefused(to: refused, reason: "ENETUNREACH", now: net.now))
        // Reported again (a dropped send), and for a path of no session: nothing changes.
        net.perform("A", net.tables["A"]!.onSendRefused(to: refused, reason: "ENETUNREACH", now: net.now))
        net.perform(
            "A", net.tables["A"]!.onSendRefused(to: Route(remote: "Y", local: "A"), reason: "EPERM", now: net.now))
        net.run(for: .seconds(3))
        let a = try #require(net.established["A"]?.first)
        #expect(a.path == Route(remote: "B2", local: "A"))
        #expect(net.closed["A"] == nil)
        // Retransmissions went to B2 only.
        #expect(net.tables["A"]!.counters.handshakeRetransmits >= 2)
        #expect(net.sinks["X1"]?.count == 1)
        #expect(net.tables["A"]!.counters.pathsRefused == 1)
        // An established session ignores a refusal of its path.
        net.perform(
            "A", net.tables["A"]!.onSendRefused(to: Route(remote: "B2", local: "A"), reason: "EPERM", now: net.now))
        try net.send("hi", from: "A", to: net.peer("B"))
        net.run(for: .seconds(3))
        #expect(net.payloads(at: "B") == ["hi"])
        #expect(net.closed["A"] == nil)
    }

    @Test func everyPathRefusedFailsTheHandshakeAtOnce() throws {
        var net = SessionTestNetwork(seed: 36)
        _ = net.connect("A", to: ["X1", "X2"], expecting: net.peer("B"))
        for remote in ["X1", "X2"] {
            net.perform(
                "A",
                net.tables["A"]!.onSendRefused(
                    to: Route(remote: remote, local: "A"), reason: "network unreachable", now: net.now))
        }
        // No time passed: the failure is the refusal, not the handshake deadline.
        #expect(net.closed["A"]?.map(\.reason) == [.unreachable("network unreachable")])
        #expect(net.tables["A"]!.sessionCount == 0)
        #expect(net.tables["A"]!.counters.pathsRefused == 2)
        net.run(for: .seconds(12))
        #expect(net.sinks["X1"]?.count == 1 && net.sinks["X2"]?.count == 1)
        #expect(net.closed["A"]?.count == 1)
    }

    @Test func aRefusedPathDoesNotDisturbAResponder() throws {
        // B is answering A's handshake when its socket reports A's address refused: B does not
        // initiate, so the report changes nothing and the handshake completes.
        var net = SessionTestNetwork(seed: 37)
        _ = net.connect("A", to: ["B"], expecting: net.peer("B"))
        net.run(for: .milliseconds(1))
        net.perform(
            "B", net.tables["B"]!.onSendRefused(to: Route(remote: "A", local: "B"), reason: "EPERM", now: net.now))
        net.run(for: .seconds(1))
        #expect(net.established["A"]?.count == 1 && net.established["B"]?.count == 1)
        #expect(net.tables["B"]!.counters.pathsRefused == 0)
    }

}

@Suite("Session retry under load")
struct SessionRetryTests {
    /// A message 1 as a spoofer would send it: a fresh source id and ephemeral key, padded.
    static func initiation(_ n: UInt64, token: [UInt8] = []) -> ByteBuffer {
        var random = SessionSplitMix64(seed: n)
        let ephemeral = (0..<4).flatMap { _ in withUnsafeBytes(of: random.next()) { Array($0) } }
        return SessionPacketCodec.handshake(
            .handshake1, destination: .none, source: SessionID(rawValue: n + 1), transportID: 0, noise: ephemeral,
            token: token, paddedTo: 1200)
    }

    static func retryToken(_ bytes: ByteBuffer) -> [UInt8]? {
        guard case .retry(let retry)? = try? SessionPacketCodec.parse(bytes, maxDatagram: 1232) else { return nil }
        return retry.token
    }

    @Test func underLoadTheFirstContactIsRetriedAndCompletes() throws {
        var limits = SessionLimits()
        limits.retryWhenHalfOpen = 0
        var net = SessionTestNetwork(seed: 51, limits: limits)
        _ = net.connect("A", to: ["B"], expecting: net.peer("B"))
        net.run(for: .seconds(1))
        #expect(net.established["A"]?.count == 1 && net.established["B"]?.count == 1)
        #expect(net.tables["B"]!.counters.retriesSent == 1)
        #expect(net.tables["A"]!.counters.retriesReceived == 1)
        // The Retry was far smaller than the message 1 it answered.
        let retry = try #require(net.log.first { $0.bytes.getInteger(at: 0, as: UInt8.self) == 0x1A })
        #expect(retry.bytes.readableBytes == 10 + SessionTable<Route>.tokenLength)
        try net.send("hi", from: "A", to: net.peer("B"))
        net.run(for: .seconds(1))
        #expect(net.payloads(at: "B") == ["hi"])
    }

    @Test func aSpoofedFloodGetsRetriesNotStateAndARealPeerStillConnects() throws {
        var limits = SessionLimits()
        limits.retryWhenHalfOpen = 2
        var net = SessionTestNetwork(seed: 52, limits: limits)
        for i in 0..<100 { net.inject(Self.initiation(UInt64(i)), into: "B", from: "S\(i)") }
        #expect(net.tables["B"]!.halfOpenCount == 2)
        #expect(net.tables["B"]!.counters.retriesSent == 98)
        // No amplification: each spoofed address got at most what it "sent" (one 1200-byte message 1).
        net.run(for: .milliseconds(100))
        for i in 2..<100 {
            #expect(net.bytesTo["S\(i)"] == 10 + SessionTable<Route>.tokenLength)
        }
        // A real peer proves its address with the token and gets a session.
        _ = net.connect("A", to: ["B"], expecting: net.peer("B"))
        net.run(for: .seconds(1))
        #expect(net.established["A"]?.count == 1)
        #expect(net.tables["A"]!.counters.retriesReceived == 1)
    }

    @Test func forgedExpiredAndStolenTokensAreRefused() throws {
        var limits = SessionLimits()
        limits.retryWhenHalfOpen = 0
        var net = SessionTestNetwork(seed: 53, limits: limits)
        net.inject(Self.initiation(7), into: "B", from: "S1")
        net.run(for: .milliseconds(100))
        let token = try #require(net.sinks["S1"]?.last.flatMap(Self.retryToken))
        #expect(token.count == SessionTable<Route>.tokenLength)
        // The same source id and token from another address: refused.
        net.inject(Self.initiation(7, token: token), into: "B", from: "S2")
        // A forged token (right length, wrong tag; and a short one): refused.
        var forged = token
        forged[20] ^= 1
        net.inject(Self.initiation(7, token: forged), into: "B", from: "S1")
        net.inject(Self.initiation(7, token: [1, 2, 3]), into: "B", from: "S1")
        // Another source id with this token: refused.
        net.inject(Self.initiation(8, token: token), into: "B", from: "S1")
        #expect(net.tables["B"]!.counters.invalidTokens == 4)
        #expect(net.tables["B"]!.halfOpenCount == 0)
        // The real one, in time: accepted.
        net.inject(Self.initiation(7, token: token), into: "B", from: "S1")
        #expect(net.tables["B"]!.halfOpenCount == 1)
        // Past its lifetime (the half-open session it made has timed out by then): refused.
        net.run(for: .seconds(11))
        #expect(net.tables["B"]!.halfOpenCount == 0)
        net.inject(Self.initiation(7, token: token), into: "B", from: "S1")
        #expect(net.tables["B"]!.counters.invalidTokens == 5)
        #expect(net.tables["B"]!.halfOpenCount == 0)
    }

    @Test func retriesAreHonouredAFewTimesPerPathAndOnlyWhileInitiating() throws {
        var net = SessionTestNetwork(seed: 54)
        let session = net.connect("A", to: ["B"], expecting: net.peer("B"))
        let retry = SessionPacketCodec.retry(destination: session, token: [9, 9, 9])
        // From an address that is not one of the handshake's paths: ignored.
        net.inject(retry, into: "A", from: "X")
        #expect(net.tables["A"]!.counters.retriesReceived == 0)
        for _ in 0..<5 { net.inject(retry, into: "A", from: "B") }
        #expect(net.tables["A"]!.counters.retriesReceived == 3)
        #expect(net.tables["A"]!.counters.unexpected == 3)
        // To an unknown session: counted, dropped.
        net.inject(SessionPacketCodec.retry(destination: SessionID(rawValue: 42), token: [1]), into: "A", from: "B")
        #expect(net.tables["A"]!.counters.unknownSession == 1)
        // B ignores the bogus token (no load) and the handshake completes; a Retry afterwards
        // changes nothing.
        net.run(for: .seconds(1))
        let a = try #require(net.established["A"]?.first)
        net.inject(retry, into: "A", from: "B")
        #expect(net.tables["A"]!.counters.retriesReceived == 3)
        try net.send("still", from: "A", to: net.peer("B"))
        net.run(for: .seconds(1))
        #expect(net.payloads(at: "B") == ["still"])
        #expect(a.localID == session)
    }
}

@Suite("Session hostile input")
struct SessionHostileTests {
    @Test func replayedCapturedPacketsAreDropped() throws {
        var net = connected(seed: 41)
        for i in 0..<10 { try net.send("m\(i)", from: "A", to: net.peer("B")) }
        net.run(for: .seconds(1))
        let captured = net.log.filter { $0.source == "A" && $0.bytes.getInteger(at: 0, as: UInt8.self) == 0x14 }
        #expect(captured.count == 10)
        for packet in captured { net.inject(packet.bytes, into: "B", from: "A", local: "B") }
        #expect(net.payloads(at: "B").count == 10)
        #expect(net.tables["B"]!.counters.replayed == 10)
        // Captured handshake packets replayed later change nothing.
        for packet in net.log where packet.bytes.getInteger(at: 0, as: UInt8.self)! <= 0x13 {
            net.inject(packet.bytes, into: packet.destination, from: packet.source, local: packet.destination)
        }
        #expect(net.established["A"]?.count == 1 && net.established["B"]?.count == 1)
        #expect(net.tables["B"]!.sessionCount == 1)
    }

    @Test func replayWindowDropsTooOldPackets() {
        var window = SessionReplayWindow()
        for n: UInt64 in [5, 3, 2000, 1500, 977] {
            #expect(window.check(n) == .fresh)
            window.commit(n)
            #expect(window.check(n) == .duplicate)
        }
        #expect(window.check(976) == .tooOld)
        #expect(window.check(3) == .tooOld)
        #expect(window.check(1999) == .fresh)
        window.commit(5000)
        #expect(window.check(2000) == .tooOld)
        #expect(window.check(4999) == .fresh)
        #expect(window.check(5000) == .duplicate)
        // Every bit of a long run is tracked.
        var run = SessionReplayWindow()
        for n: UInt64 in 0..<3000 { run.commit(n) }
        #expect((1976..<3000).allSatisfy { run.check(UInt64($0)) == .duplicate })
        #expect(run.check(1975) == .tooOld)
    }

    @Test func forgedSessionIDsAndTamperedPacketsAreDropped() throws {
        var net = connected(seed: 42)
        try net.send("real", from: "A", to: net.peer("B"))
        let packet = net.log.last!.bytes
        var random = SessionSplitMix64(seed: 1)
        for _ in 0..<500 {
            var forged = packet
            forged.setInteger(random.next() | 1, at: 1)
            net.inject(forged, into: "B", from: "A", local: "B")
        }
        #expect(net.tables["B"]!.counters.unknownSession == 500)
        for offset in [9, 14, 15, 30] {
            var tampered = packet
            tampered.setInteger(tampered.getInteger(at: offset, as: UInt8.self)! ^ 0x40, at: offset)
            net.inject(tampered, into: "B", from: "A", local: "B")
        }
        #expect(net.tables["B"]!.counters.decryptFailed == 4)
        #expect(net.payloads(at: "B").isEmpty)
        net.run(for: .seconds(1))
        #expect(net.payloads(at: "B") == ["real"])
    }

    @Test func randomAndTruncatedDatagramsAreCounted() throws {
        var limits = SessionLimits()
        limits.maxHalfOpen = 8
        var net = connected(seed: 43, limits: limits)
        try net.send("payload", from: "A", to: net.peer("B"))
        let samples = net.log.map(\.bytes)
        var random = SessionSplitMix64(seed: 2)
        var fed = 0
        var accepted = 0
        func feed(_ bytes: ByteBuffer, _ net: inout SessionTestNetwork) {
            let actions = net.tables["B"]!.onDatagram(
                bytes, from: Route(remote: "X\(fed % 50)", local: "B"), now: net.now)
            fed += 1
            for action in actions {
                switch action {
                case .send: accepted += 1
                case .deliver, .established, .closed: Issue.record("hostile input caused \(action)")
                case .scheduleTimer: break
                }
            }
        }
        // Every truncation of every captured packet.
        for sample in samples {
            for length in 0..<sample.readableBytes { feed(sample.getSlice(at: 0, length: length)!, &net) }
        }
        // Random bytes, with a valid type byte half of the time.
        for _ in 0..<5000 {
            let length = Int(random.next() % 1300)
            var bytes = ByteBuffer()
            for _ in 0..<(length + 7) / 8 { bytes.writeInteger(random.next()) }
            bytes.moveWriterIndex(to: length)
            if length > 0, random.next() % 2 == 0 { bytes.setInteger(UInt8(0x11 + random.next() % 9), at: 0) }
            feed(bytes, &net)
        }
        let c = net.tables["B"]!.counters
        let counted =
            c.malformed + c.unknownSession + c.replayed + c.tooOld + c.decryptFailed + c.handshakeFailed
            + c.limitRejected + c.earlyDropped + c.unexpected + c.handshakeDuplicates + c.amplificationLimited
        #expect(Int(counted) + accepted == fed)
        #expect(net.tables["B"]!.halfOpenCount <= 8)
        #expect(net.tables["B"]!.sessionCount <= 9)
    }

    @Test func initiationFloodKeepsStateBounded() {
        var limits = SessionLimits()
        limits.maxHalfOpen = 16
        limits.maxHalfOpenPerPath = 2
        var net = SessionTestNetwork(seed: 44, limits: limits)
        var random = SessionSplitMix64(seed: 3)
        func initiation(_ random: inout SessionSplitMix64) -> ByteBuffer {
            var key: [UInt8] = []
            for _ in 0..<4 { withUnsafeBytes(of: random.next()) { key += $0 } }
            return SessionPacketCodec.handshake(
                .handshake1, destination: .none, source: SessionID(rawValue: random.next() | 1),
                transportID: 0, noise: key, paddedTo: 1200)
        }
        for i in 0..<2000 { net.inject(initiation(&random), into: "B", from: "spoofed-\(i)") }
        #expect(net.tables["B"]!.halfOpenCount == 16)
        #expect(net.tables["B"]!.sessionCount == 16)
        #expect(net.tables["B"]!.counters.limitRejected == 2000 - 16)
        // One source path can hold only two half-open handshakes.
        var fresh = SessionTestNetwork(seed: 45, limits: limits)
        for _ in 0..<10 { fresh.inject(initiation(&random), into: "B", from: "one") }
        #expect(fresh.tables["B"]!.halfOpenCount == 2)
        // They expire; a real peer can connect afterwards.
        net.run(for: .seconds(11))
        #expect(net.tables["B"]!.sessionCount == 0)
        _ = net.connect("A", to: ["B"], expecting: net.peer("B"))
        net.run(for: .seconds(1))
        #expect(net.established["B"]?.count == 1)
    }

    @Test func spoofedInitiationIsNotAmplified() {
        var net = SessionTestNetwork(seed: 46)
        // The attacker sends message 1 with the victim's address as source, many times.
        var attacker = SessionTable<Route>(identity: .generate(), random: SessionSplitMix64(seed: 4))
        let start = try! attacker.connect(to: [Route(remote: "B", local: "victim")], expecting: nil, now: net.now)
        guard case .send(let message1, _)? = start.actions.first else {
            Issue.record("no message 1")
            return
        }
        var received = 0
        for _ in 0..<3 {
            net.transmit(message1, from: "victim", to: "B")
            received += message1.readableBytes
        }
        net.run(for: .seconds(20))
        let toVictim = net.sinks["victim"]?.reduce(0) { $0 + $1.readableBytes } ?? 0
        #expect(toVictim > 0 && toVictim <= 3 * received)
        #expect(net.tables["B"]!.sessionCount == 0)
    }

    @Test func unpaddedInitiationHitsTheAmplificationLimit() {
        var limits = SessionLimits()
        limits.initiationPaddedSize = 0
        var net = SessionTestNetwork(seed: 47, limits: limits)
        _ = net.connect("A", to: ["B"], expecting: net.peer("B"))
        net.run(for: .milliseconds(20))
        #expect(net.tables["B"]!.counters.amplificationLimited == 1)
        #expect(net.log.allSatisfy { $0.bytes.getInteger(at: 0, as: UInt8.self) != 0x12 })
    }
}

@Suite("Session paths, expiry and keep-alives")
struct SessionPathTests {
    @Test func natRebindingMovesTheSessionAfterValidation() throws {
        var net = connected(seed: 51)
        let bSession = try #require(net.tables["B"]!.session(with: net.peer("A")))
        net.nat["A"] = "A2"
        net.owner["A2"] = "A"
        try net.send("from new address", from: "A", to: net.peer("B"))
        net.run(for: .milliseconds(15))
        // Delivered at once (authenticated), but B still answers on the old path until validation.
        #expect(net.payloads(at: "B") == ["from new address"])
        #expect(net.tables["B"]!.path(of: bSession) == Route(remote: "A", local: "B"))
        net.run(for: .milliseconds(30))
        #expect(net.tables["B"]!.path(of: bSession) == Route(remote: "A2", local: "B"))
        #expect(net.tables["B"]!.counters.pathMigrations == 1)
        try net.send("reply", from: "B", to: net.peer("A"))
        net.run(for: .seconds(1))
        #expect(net.payloads(at: "A") == ["reply"])
        #expect(net.log.last { $0.source == "B" }?.destination == "A2")
    }

    @Test func spoofedPathNeverGetsMoreThanThreeTimesWhatItSent() throws {
        var net = connected(seed: 52)
        let bSession = try #require(net.tables["B"]!.session(with: net.peer("A")))
        try net.send("captured", from: "A", to: net.peer("B"))
        // The attacker captures the packet and races it to B from its own (or a victim's) address.
        let item = net.queue.removeFirst()
        var sentByAttacker = 0
        for _ in 0..<50 {
            net.inject(item.bytes, into: "B", from: "X")
            sentByAttacker += item.bytes.readableBytes
            net.run(for: .milliseconds(200))
        }
        let toX = net.bytesTo["X"] ?? 0
        #expect(toX > 0)
        #expect(toX <= 3 * item.bytes.readableBytes)
        #expect(net.tables["B"]!.path(of: bSession) == Route(remote: "A", local: "B"))
        #expect(net.tables["B"]!.counters.replayed == 49)
        #expect(net.tables["B"]!.counters.pathValidationFailures >= 1)
        #expect(net.payloads(at: "B") == ["captured"])
        // The real peer is unaffected.
        try net.send("still here", from: "A", to: net.peer("B"))
        net.run(for: .seconds(1))
        #expect(net.payloads(at: "B").last == "still here")
    }

    @Test func keepAlivesHoldAnIdleSession() throws {
        var net = connected(seed: 53)
        net.run(for: .seconds(120))
        #expect(net.closed["A"] == nil && net.closed["B"] == nil)
        let sent = net.tables["A"]!.counters.keepAlivesSent + net.tables["B"]!.counters.keepAlivesSent
        #expect(sent >= 10)
        #expect(net.delivered["A"] == nil && net.delivered["B"] == nil)  // never surfaced
    }

    @Test func idleSessionsExpireWithoutKeepAlives() throws {
        var limits = SessionLimits()
        limits.keepAliveInterval = nil
        var net = connected(seed: 54, limits: limits)
        net.run(for: .seconds(29))
        #expect(net.closed["A"] == nil)
        net.run(for: .seconds(2))
        #expect(net.closed["A"]?.map(\.reason) == [.idleTimeout])
        #expect(net.closed["B"]?.map(\.reason) == [.idleTimeout])
        #expect(net.tables["A"]!.sessionCount == 0 && net.tables["B"]!.sessionCount == 0)
        #expect(throws: SessionError.noSession(net.peer("B"))) { try net.send("late", from: "A", to: net.peer("B")) }
    }

    @Test func closeIsAuthenticatedAndReachesThePeer() throws {
        var net = connected(seed: 55)
        let id = try #require(net.tables["A"]!.session(with: net.peer("B")))
        net.perform("A", net.tables["A"]!.close(session: id, now: net.now))
        net.run(for: .seconds(1))
        #expect(net.closed["A"]?.map(\.reason) == [.localClose])
        #expect(net.closed["B"]?.map(\.reason) == [.remoteClose])
    }

    @Test func closeAsUnusedTellsThePeerForHowLong() throws {
        var net = connected(seed: 56)
        let id = try #require(net.tables["A"]!.session(with: net.peer("B")))
        net.perform("A", net.tables["A"]!.close(session: id, now: net.now, unusedFor: .milliseconds(120_345)))
        net.run(for: .seconds(1))
        #expect(net.closed["A"]?.map(\.reason) == [.localClose])
        #expect(net.closed["B"]?.map(\.reason) == [.remoteCloseUnused(.milliseconds(120_345))])
    }

    @Test func closePayloadsDecodeToWhatTheySayOrToAPlainClose() {
        typealias Machine = SessionMachine<String>
        for ms: Int64 in [0, 1, 120_000, Int64(UInt32.max)] {
            let payload = Machine.closePayload(unusedFor: .milliseconds(ms))
            #expect(payload.readableBytes == 5)
            #expect(Machine.closeReason(payload) == .remoteCloseUnused(.milliseconds(ms)))
        }
        // Longer than a u32 of milliseconds: capped, never wrapped to a short time.
        let capped = Machine.closeReason(Machine.closePayload(unusedFor: .hours(24 * 365)))
        #expect(capped == .remoteCloseUnused(.milliseconds(Int64(UInt32.max))))
        #expect(Machine.closePayload(unusedFor: nil).readableBytes == 0)
        // Anything else is a plain Close: empty, another kind byte, truncated, or too long.
        for bytes: [UInt8] in [[], [1], [1, 0, 0, 0], [2, 0, 0, 0, 1], [1, 0, 0, 0, 1, 0], [0, 0, 0, 0, 9]] {
            #expect(Machine.closeReason(ByteBuffer(bytes: bytes)) == .remoteClose, "\(bytes)")
        }
    }

    @Test func packetNumberExhaustionClosesTheSession() throws {
        var limits = SessionLimits()
        limits.maxPacketNumber = 5
        limits.keepAliveInterval = nil
        var net = connected(seed: 56, limits: limits)
        // The responder used packet 0 for its confirmation; the initiator has 0...5 left.
        for i in 0..<6 { try net.send("\(i)", from: "A", to: net.peer("B")) }
        #expect(net.closed["A"]?.map(\.reason) == [.packetNumbersExhausted])
        #expect(throws: SessionError.noSession(net.peer("B"))) { try net.send("x", from: "A", to: net.peer("B")) }
        net.run(for: .seconds(1))
        #expect(net.payloads(at: "B").count == 6)
    }
}
