import MsgNetCore
import MsgNetHost
import MsgNetStreams
import MsgNetTestSupport
import MsgNetTransportPosix
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

/// The message API's handler semantics, run over every path in ``TransportFactory/all``.
@Suite("Message handlers", .timeLimit(.minutes(2)))
struct HandlerSuite {
    @Test("send reaches the handler, in order, with the authenticated sender", arguments: TransportFactory.all)
    func sendInOrder(factory: TransportFactory) async throws {
        let a = factory.host()
        let b = factory.host()
        let got = NIOLockedValueBox<[String]>([])
        let count = Counter()
        b.setMessageHandler(for: "/t/1") { message in
            #expect(message.from == a.peerID)
            #expect(message.protocol == "/t/1")
            #expect(message.path != nil)
            got.withLockedValue { $0.append(String(buffer: message.data)) }
            count.add()
        }
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: factory)
            for i in 0..<200 { try await a.send(bytes("m\(i)"), to: b.peerID, protocol: "/t/1") }
            await count.wait(atLeast: 200)
            #expect(got.withLockedValue { $0 } == (0..<200).map { "m\($0)" })
            #expect(a.network.hasSession(with: b.peerID))
            #expect(a.network.peers == [b.peerID])
        }
    }

    @Test("request and reply; 64 concurrent requests do not block each other", arguments: TransportFactory.all)
    func requestReply(factory: TransportFactory) async throws {
        let a = factory.host()
        let b = factory.host()
        b.setMessageHandler(for: "/kv/1") { message in
            #expect(message.canReply)
            try await message.reply(bytes("re:" + String(buffer: message.data)))
        }
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: factory)
            let one = try await a.request(bytes("x"), to: b.peerID, protocol: "/kv/1", timeout: .seconds(10))
            #expect(String(buffer: one.data) == "re:x")
            #expect(one.from == b.peerID)
            #expect(!one.canReply)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<64 {
                    group.addTask {
                        let r = try await a.request(bytes("q\(i)"), to: b.peerID, protocol: "/kv/1")
                        #expect(String(buffer: r.data) == "re:q\(i)")
                    }
                }
                try await group.waitForAll()
            }
        }
    }

    @Test(
        "handlers start on the event loop by default, on the global executor with .concurrent",
        arguments: TransportFactory.all)
    func handlerExecution(factory: TransportFactory) async throws {
        for execution in [InboundExecution.eventLoop, .concurrent] {
            let a = factory.host()
            let b = factory.host(limits: PathLimits(inboundExecution: execution))
            b.setMessageHandler(for: "/where/1") { message in
                let onLoop = MultiThreadedEventLoopGroup.currentEventLoop != nil
                try await message.reply(bytes(onLoop ? "loop" : "global"))
                // Still there after the reply (the library's async calls keep the executor).
                #expect((MultiThreadedEventLoopGroup.currentEventLoop != nil) == onLoop)
            }
            try await running([a, b]) {
                _ = try await introduce(a, to: b, on: factory)
                for _ in 0..<3 {
                    let r = try await a.request(bytes("?"), to: b.peerID, protocol: "/where/1", timeout: .seconds(10))
                    #expect(String(buffer: r.data) == (execution == .eventLoop ? "loop" : "global"))
                }
            }
        }
    }

    @Test("a blocked request does not hold up others to the same peer", arguments: TransportFactory.all)
    func requestsIndependent(factory: TransportFactory) async throws {
        let a = factory.host()
        let b = factory.host()
        let release = Signal()
        let blocked = Signal()
        b.setMessageHandler(for: "/kv/1") { message in
            if String(buffer: message.data) == "slow" {
                blocked.fire()
                await release.wait()
            }
            try await message.reply(message.data)
        }
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: factory)
            // The slow request outlives ten others: its deadline is not the default 10 s, which
            // ten requests on a starved machine (the whole suite runs in parallel) can use up.
            async let slow = a.request(bytes("slow"), to: b.peerID, protocol: "/kv/1", timeout: .seconds(60))
            await blocked.wait()
            for i in 0..<10 {
                let r = try await a.request(bytes("f\(i)"), to: b.peerID, protocol: "/kv/1")
                #expect(String(buffer: r.data) == "f\(i)")
            }
            release.fire()
            #expect(String(buffer: try await slow.data) == "slow")
        }
    }

    @Test("registration, replacement and removal", arguments: TransportFactory.all)
    func registration(factory: TransportFactory) async throws {
        let a = factory.host()
        let b = factory.host()
        b.setMessageHandler(for: "/r/1") { try await $0.reply(bytes("one")) }
        #expect(b.handledProtocols == ["/r/1"])
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: factory)
            #expect(String(buffer: try await a.request(bytes(""), to: b.peerID, protocol: "/r/1").data) == "one")
            b.setMessageHandler(for: "/r/1") { try await $0.reply(bytes("two")) }
            #expect(String(buffer: try await a.request(bytes(""), to: b.peerID, protocol: "/r/1").data) == "two")
            b.removeMessageHandler(for: "/r/1")
            #expect(b.handledProtocols.isEmpty)
            await #expect {
                _ = try await a.request(bytes(""), to: b.peerID, protocol: "/r/1")
            } throws: { code($0) == .protocolNotSupported }
        }
    }

    @Test("a replaced handler gets the next message on the same channel", arguments: TransportFactory.all)
    func replacementOnOneChannel(factory: TransportFactory) async throws {
        let a = factory.host()
        let b = factory.host()
        let first = Counter()
        let second = Counter()
        b.setMessageHandler(for: "/swap/1") { _ in first.add() }
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: factory)
            // A burst on one channel: the receiver remembers the handler between messages.
            for _ in 0..<20 { try await a.send(bytes("x"), to: b.peerID, protocol: "/swap/1") }
            await first.wait(atLeast: 20)
            b.setMessageHandler(for: "/swap/1") { _ in second.add() }
            for _ in 0..<20 { try await a.send(bytes("y"), to: b.peerID, protocol: "/swap/1") }
            await second.wait(atLeast: 20)
            #expect(first.value == 20)
            #expect(second.value == 20)
        }
    }

    @Test("unknown protocol: not supported for sends, requests and sessions", arguments: TransportFactory.all)
    func unknownProtocol(factory: TransportFactory) async throws {
        let a = factory.host()
        let b = factory.host()
        b.setMessageHandler(for: "/known/1") { try await $0.reply($0.data) }
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: factory)
            await #expect {
                try await a.send(bytes("x"), to: b.peerID, protocol: "/unknown/1")
            } throws: { code($0) == .protocolNotSupported }
            await #expect {
                _ = try await a.request(bytes("x"), to: b.peerID, protocol: "/unknown/1")
            } throws: { code($0) == .protocolNotSupported }
            // Opening a session asks: the stream path negotiates the protocol, the datagram path
            // probes it. Either way the opener gets "not supported" before any message is sent.
            await #expect {
                _ = try await a.network.newSession(to: b.peerID, protocol: "/unknown/1")
            } throws: { code($0) == .protocolNotSupported }
            #expect(a.network.sessions(with: b.peerID).isEmpty)
            // A session on a handled protocol opens; its probe reaches no handler.
            let known = try await a.network.newSession(to: b.peerID, protocol: "/known/1")
            #expect(known.protocol == "/known/1")
            // The connection survives.
            #expect(String(buffer: try await a.request(bytes("k"), to: b.peerID, protocol: "/known/1").data) == "k")
        }
    }

    @Test("oversize: refused before sending; a receiver with a lower limit resets", arguments: TransportFactory.all)
    func oversize(factory: TransportFactory) async throws {
        let a = factory.host { $0.maxMessageSize = 4096 }
        let b = factory.host { $0.maxMessageSize = 1024 }
        let handled = Counter()
        b.setMessageHandler(for: "/big/1") { message in
            handled.add()
            try await message.reply(message.data)
        }
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: factory)
            await #expect {
                try await a.send(ByteBuffer(repeating: 1, count: 4097), to: b.peerID, protocol: "/big/1")
            } throws: { code($0) == .messageTooLarge }
            await #expect {
                _ = try await a.request(ByteBuffer(repeating: 1, count: 4097), to: b.peerID, protocol: "/big/1")
            } throws: { code($0) == .messageTooLarge }
            // Accepted by a, refused by b: on streams the stream is reset and the outcome is
            // unknown; a datagram path can say exactly that the message was too large.
            await #expect {
                _ = try await a.request(ByteBuffer(repeating: 1, count: 2000), to: b.peerID, protocol: "/big/1")
            } throws: { ($0 as? MessageError)?.outcomeUnknown == true || code($0) == .messageTooLarge }
            let rejected = await firstEvent(b) {
                if case .messageRejected(_, "/big/1", let reason) = $0 { return reason.code == .messageTooLarge }
                return false
            }
            #expect(rejected != nil)
            #expect(handled.value == 0)
            // A reply larger than the requester's limit is refused too.
            let r = try await a.request(ByteBuffer(repeating: 2, count: 1000), to: b.peerID, protocol: "/big/1")
            #expect(r.data.readableBytes == 1000)
        }
    }

    @Test("concurrent senders: every message arrives once, each sender's in order", arguments: TransportFactory.all)
    func concurrentSenders(factory: TransportFactory) async throws {
        let a = factory.host()
        let b = factory.host()
        let got = NIOLockedValueBox<[Int: [Int]]>([:])
        let count = Counter()
        b.setMessageHandler(for: "/c/1") { message in
            var d = message.data
            let sender = Int(d.readInteger(as: UInt32.self)!)
            let seq = Int(d.readInteger(as: UInt32.self)!)
            got.withLockedValue { $0[sender, default: []].append(seq) }
            count.add()
        }
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: factory)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for sender in 0..<8 {
                    group.addTask {
                        for seq in 0..<100 {
                            var m = ByteBuffer()
                            m.writeInteger(UInt32(sender))
                            m.writeInteger(UInt32(seq))
                            try await a.send(m, to: b.peerID, protocol: "/c/1")
                        }
                    }
                }
                try await group.waitForAll()
            }
            await count.wait(atLeast: 800)
            let all = got.withLockedValue { $0 }
            #expect(all.count == 8)
            for (_, seqs) in all { #expect(seqs == Array(0..<100)) }
        }
    }

    @Test("a slow plain-message handler holds up only its own channel", arguments: TransportFactory.all)
    func slowPlainHandlerHoldsOnlyItsChannel(factory: TransportFactory) async throws {
        let a = factory.host()
        let b = factory.host()
        let release = Signal()
        let slowStarted = Counter()
        let slowDone = Counter()
        let other = Counter()
        b.setMessageHandler(for: "/slow-plain/1") { _ in
            slowStarted.add()
            await release.wait()
            slowDone.add()
        }
        b.setMessageHandler(for: "/other/1") { _ in other.add() }
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: factory)
            try await a.send(bytes("1"), to: b.peerID, protocol: "/slow-plain/1")
            try await a.send(bytes("2"), to: b.peerID, protocol: "/slow-plain/1")
            await slowStarted.wait(atLeast: 1)
            for i in 0..<5 { try await a.send(bytes("\(i)"), to: b.peerID, protocol: "/other/1") }
            await other.wait(atLeast: 5)
            // One channel's messages are handled one after another: the second waits.
            #expect(slowStarted.value == 1)
            #expect(slowDone.value == 0)
            release.fire()
            await slowDone.wait(atLeast: 2)
        }
    }

    @Test("slow handler: bounded concurrency per protocol, the rest wait", arguments: TransportFactory.all)
    func slowHandlerBounded(factory: TransportFactory) async throws {
        let a = factory.host()
        let b = factory.host { $0.maxConcurrentHandlersPerProtocol = 2 }
        let running = Counter()
        let started = Counter()
        let release = Signal()
        b.setMessageHandler(for: "/fast/1") { try await $0.reply($0.data) }
        b.setMessageHandler(for: "/slow/1") { message in
            running.add()
            started.add()
            await release.wait()
            running.add(-1)
            try await message.reply(message.data)
        }
        try await MsgNetHostTests.running([a, b]) {
            _ = try await introduce(a, to: b, on: factory)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<10 {
                    group.addTask {
                        let r = try await a.request(bytes("\(i)"), to: b.peerID, protocol: "/slow/1")
                        #expect(String(buffer: r.data) == "\(i)")
                    }
                }
                await started.wait(atLeast: 2)
                // Two run; a round trip on another protocol later still only two have started.
                _ = try await a.request(bytes("barrier"), to: b.peerID, protocol: "/fast/1")
                #expect(started.value == 2)
                release.fire()
                try await group.waitForAll()
            }
            #expect(running.peak == 2)
            #expect(started.value == 10)
        }
    }

    @Test("slow handler: the stream stops being read and the sender waits", arguments: TransportFactory.all)
    func slowHandlerBackpressure(factory: TransportFactory) async throws {
        let a = factory.host()
        // The datagram path holds undelivered messages up to a byte bound (set low here so the
        // test sends a few MiB, not the default 32).
        let b = factory.host(limits: PathLimits(maxPendingInboundBytes: 2 << 20))
        let handled = Counter()
        let release = Signal()
        b.setMessageHandler(for: "/bp/1") { message in
            await release.wait()
            #expect(message.data.getInteger(at: 0, as: UInt32.self) == UInt32(handled.value))
            handled.add()
        }
        // 64 MiB cannot fit in the buffers between the two: a send must wait. The sender stops
        // once one has (the test needs no more bytes than that).
        let total = 1000
        let enough = Signal()
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: factory)
            let sent = Counter()
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for i in 0..<total where !enough.isFired {
                        var m = ByteBuffer(repeating: 0, count: 64 * 1024)
                        m.setInteger(UInt32(i), at: 0)
                        try await a.send(m, to: b.peerID, protocol: "/bp/1")
                        sent.add()
                    }
                }
                await factory.waitForBlockedSend(from: a, to: b)
                enough.fire()
                #expect(sent.value < total)
                #expect(handled.value == 0)
                release.fire()
                try await group.waitForAll()
            }
            // Every message sent arrives, in order (checked in the handler).
            await handled.wait(atLeast: sent.value)
            #expect(handled.value == sent.value)
            #expect(sent.value > 0)
        }
    }

    @Test(
        "cancelling a stream send that waits for the stream to drain fails with cancelled; its message still arrives",
        arguments: [TransportFactory.tcp, .tcpRequestStreams])
    func cancelBlockedStreamSend(factory: TransportFactory) async throws {
        let a = factory.host()
        let b = factory.host()
        let handled = Counter()
        let release = Signal()
        b.setMessageHandler(for: "/bp/1") { _ in
            await release.wait()
            handled.add()
        }
        let transport = try #require(a.transports.first as? StreamMessageTransport)
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: factory)
            let sent = Counter()
            // Sends cancelled while waiting (their messages were queued).
            var cancelledInWait = 0
            var conclusive = false
            // The handler holds the first message, so the buffers between the two fill: within
            // a bounded number of attempts a send waits for good and only cancelling ends it.
            // An attempt is inconclusive when its send stopped waiting on its own (the buffers
            // took its bytes) before the cancellation: the next send then fails at its start.
            for _ in 0..<50 where !conclusive {
                let blocked = transport.blockedSendCount
                let sender = Task {
                    for _ in 0..<1000 {
                        try await a.send(ByteBuffer(repeating: 0, count: 64 * 1024), to: b.peerID, protocol: "/bp/1")
                        sent.add()
                    }
                }
                await transport.waitForBlockedSend(after: blocked)
                let sentBefore = sent.value
                sender.cancel()
                let error = await #expect(throws: MessageError.self) { try await sender.value }
                #expect(error?.code == .cancelled)
                let inWait = error?.message.contains("waiting for the stream to drain") ?? false
                if inWait { cancelledInWait += 1 }
                conclusive = inWait && sent.value == sentBefore
            }
            #expect(conclusive, "no send was cancelled while it waited")
            release.fire()
            // Every queued message arrives, the cancelled sends' too, and the stream still works.
            try await a.send([1], to: b.peerID, protocol: "/bp/1")
            let expected = sent.value + cancelledInWait + 1
            await handled.wait(atLeast: expected)
            #expect(handled.value == expected)
        }
    }

    @Test("cancelling a reliable datagram send or session opening that waits for its ack fails with cancelled")
    func cancelWaitingDatagramSend() async throws {
        let factory = TransportFactory.udp
        let a = factory.host()
        // b takes one undelivered message at most; while its handler holds it, b drops later
        // datagrams before acknowledging them, so a's next reliable send waits for an ack that
        // does not come (it would fail only at its delivery deadline, with timedOut).
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        var configuration = DatagramTransportConfiguration()
        configuration.maxPendingInbound = 1
        let identity = PrivateKey.generate()
        let bTransport = DatagramMessageTransport(
            identity: identity, datagrams: UDPTransport(group: loop), eventLoop: loop, configuration: configuration)
        let b = MessageHost(identity: identity, transports: [bTransport], peerstore: Peerstore())
        let holding = Signal()
        let release = Signal()
        b.setMessageHandler(for: "/slow/1") { _ in
            holding.fire()
            await release.wait()
        }
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: factory)
            try await a.send([1], to: b.peerID, protocol: "/slow/1")
            await holding.wait()
            let transport = try #require(a.transports.first as? DatagramMessageTransport)
            // Cancels `waiter` once a send waits on the loop (bounded by a count and the test's
            // time limit), and expects `cancelled`.
            func cancelOnceWaiting(_ waiter: Task<Void, any Error>) async throws {
                var waiting = 0
                for _ in 0..<100_000 where waiting == 0 {
                    waiting = await transport.reliableSendsWaiting()
                    if waiting == 0 { await Task.yield() }
                }
                try #require(waiting == 1)
                waiter.cancel()
                await #expect {
                    try await waiter.value
                } throws: { code($0) == .cancelled }
                #expect(await transport.reliableSendsWaiting() == 0)
            }
            try await cancelOnceWaiting(Task { try await a.send([2], to: b.peerID, protocol: "/slow/1") })
            // Opening a session waits the same way (its probe goes unacknowledged too).
            b.setMessageHandler(for: "/other/1") { _ in }
            try await cancelOnceWaiting(Task { _ = try await a.network.newSession(to: b.peerID, protocol: "/other/1") })
            release.fire()
        }
    }

    @Test("slow consumer: the inbox holds at most its capacity; sends wait", arguments: TransportFactory.all)
    func inboxBackpressure(factory: TransportFactory) async throws {
        let a = factory.host()
        let b = factory.host { $0.inboxCapacity = 4 }
        let inbox = b.messages(for: "/in/1")
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: factory)
            let sent = Counter()
            async let sending: Void = {
                for i in 0..<300 {
                    var m = ByteBuffer(repeating: 0, count: 16 * 1024)
                    m.setInteger(UInt32(i), at: 0)
                    try await a.send(m, to: b.peerID, protocol: "/in/1")
                    sent.add()
                }
            }()
            var next = 0
            for await message in inbox {
                #expect(message.data.getInteger(at: 0, as: UInt32.self) == UInt32(next))
                #expect(inbox.bufferedPeak <= 4)
                next += 1
                if next == 300 { break }
            }
            try await sending
            #expect(sent.value == 300)
            #expect(inbox.bufferedPeak <= 4)
        }
    }

    @Test("peer disconnects mid-request: connection closed, outcome unknown", arguments: TransportFactory.all)
    func disconnectMidRequest(factory: TransportFactory) async throws {
        let a = factory.host()
        let b = factory.host()
        let got = Signal()
        let release = Signal()
        b.setMessageHandler(for: "/hang/1") { _ in
            got.fire()
            await release.wait()
        }
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: factory)
            async let result: Result<Message, any Error> = {
                do {
                    return .success(
                        try await a.request(bytes("x"), to: b.peerID, protocol: "/hang/1", timeout: .seconds(60)))
                } catch {
                    return .failure(error)
                }
            }()
            await got.wait()
            await b.network.closePeer(a.peerID)
            let outcome = await result
            guard case .failure(let error) = outcome else {
                Issue.record("the request succeeded")
                return
            }
            #expect(code(error) == .connectionClosed)
            #expect((error as? MessageError)?.outcomeUnknown == true)
            release.fire()
        }
    }

    @Test("request timeout: timed out, outcome unknown", arguments: TransportFactory.all)
    func requestTimeout(factory: TransportFactory) async throws {
        let a = factory.host()
        let b = factory.host()
        let release = Signal()
        b.setMessageHandler(for: "/hang/1") { _ in await release.wait() }
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: factory)
            await #expect {
                _ = try await a.request(bytes("x"), to: b.peerID, protocol: "/hang/1", timeout: .milliseconds(200))
            } throws: { code($0) == .timedOut }
            release.fire()
        }
    }

    @Test(
        "a short request times out while a longer one is pending; the longer one still gets its reply",
        arguments: TransportFactory.all)
    func timeoutsOfConcurrentRequests(factory: TransportFactory) async throws {
        let a = factory.host()
        let b = factory.host()
        let release = Signal()
        b.setMessageHandler(for: "/hang/1") { message in
            await release.wait()
            try await message.reply(message.data)
        }
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: factory)
            // Far beyond the suite's time limit: only its reply can end it.
            let long = Task {
                try await a.request(bytes("long"), to: b.peerID, protocol: "/hang/1", timeout: .seconds(3600))
            }
            for _ in 0..<2 {
                // Each must end at its own deadline, not the pending request's.
                await #expect {
                    _ = try await a.request(bytes("x"), to: b.peerID, protocol: "/hang/1", timeout: .milliseconds(200))
                } throws: { code($0) == .timedOut }
            }
            release.fire()
            let reply = try await long.value
            #expect(reply.data == bytes("long"))
        }
    }

    @Test("cancelling a request fails it with cancelled", arguments: TransportFactory.all)
    func cancelRequest(factory: TransportFactory) async throws {
        let a = factory.host()
        let b = factory.host()
        let got = Signal()
        let release = Signal()
        b.setMessageHandler(for: "/hang/1") { _ in
            got.fire()
            await release.wait()
        }
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: factory)
            let task = Task {
                try await a.request(bytes("x"), to: b.peerID, protocol: "/hang/1", timeout: .seconds(60))
            }
            await got.wait()
            task.cancel()
            await #expect {
                _ = try await task.value
            } throws: { code($0) == .cancelled }
            release.fire()
        }
    }

    @Test("a path's request from an already cancelled task fails with cancelled", arguments: TransportFactory.all)
    func requestFromCancelledTask(factory: TransportFactory) async throws {
        let a = factory.host()
        let b = factory.host()
        b.setMessageHandler(for: "/echo/1") { try await $0.reply($0.data) }
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: factory)
            _ = try await a.request(bytes("warm"), to: b.peerID, protocol: "/echo/1")
            // The transport itself, so the host's own check before it does not answer first: the
            // cancellation handler then runs before the request reaches the event loop.
            let transport = a.transports[0]
            let peer = b.peerID
            let task = Task {
                withUnsafeCurrentTask { $0?.cancel() }
                return try await transport.request(
                    ByteBuffer(bytes: [1]), to: peer, protocol: "/echo/1", timeout: .seconds(10))
            }
            await #expect {
                _ = try await task.value
            } throws: { code($0) == .cancelled }
        }
    }

    @Test("a handler's reply to a plain send reaches our handler of the protocol", arguments: TransportFactory.all)
    func replyOnOutboundStream(factory: TransportFactory) async throws {
        let a = factory.host()
        let b = factory.host()
        b.setMessageHandler(for: "/chat/1") { try await $0.reply(bytes("ack:" + String(buffer: $0.data))) }
        let acks = a.messages(for: "/chat/1")
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: factory)
            try await a.send(bytes("hi"), to: b.peerID, protocol: "/chat/1")
            var it = acks.makeAsyncIterator()
            let ack = await it.next()
            #expect(ack.map { String(buffer: $0.data) } == "ack:hi")
            #expect(ack?.from == b.peerID)
        }
    }

    /// A message an inbox took keeps its stream open for the reply after the peer closed its
    /// side, for up to the reply window (here an hour): shutdown must not wait that out.
    @Test(
        "shutdown does not wait out the reply window of a message an inbox took",
        arguments: TransportFactory.all)
    func shutdownWithHeldReply(factory: TransportFactory) async throws {
        let a = factory.host { $0.defaultRequestTimeout = .seconds(3600) }
        let b = factory.host()
        b.setMessageHandler(for: "/chat/1") { try await $0.reply(bytes("ack:" + String(buffer: $0.data))) }
        let acks = a.messages(for: "/chat/1")
        let (stopped, stop) = AsyncStream.makeStream(of: Bool.self)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for h in [a, b] { group.addTask { try await h.run() } }
            _ = try await introduce(a, to: b, on: factory)
            try await a.send(bytes("hi"), to: b.peerID, protocol: "/chat/1")
            var it = acks.makeAsyncIterator()
            #expect(await it.next().map { String(buffer: $0.data) } == "ack:hi")
            // The shutdowns race a generous bound (far below the window): the first to finish wins.
            group.addTask {
                await b.shutdown()
                await a.shutdown()
                stop.yield(true)
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(60))
                stop.yield(false)
            }
            var first = stopped.makeAsyncIterator()
            #expect(await first.next() == true, "shutdown waited for the held reply window")
            group.cancelAll()
            try? await group.waitForAll()
        }
    }

    /// A handler runs on its transport's event loop, so the requests and sends it makes start on
    /// the loop at once (no job queued behind the read that delivered its message), back on the
    /// session the message came on as well as on another.
    @Test("a handler's own requests and sends, to its requester and to a third peer", arguments: TransportFactory.all)
    func handlerMakesRequests(factory: TransportFactory) async throws {
        let a = factory.host()
        let b = factory.host()
        let c = factory.host()
        let logged = Counter()
        for host in [a, c] {
            host.setMessageHandler(for: "/kv/1") { try await $0.reply(bytes("re:" + String(buffer: $0.data))) }
            host.setMessageHandler(for: "/log/1") { _ in logged.add() }
        }
        b.setMessageHandler(for: "/fwd/1") { message in
            let back = try await b.request(message.data, to: message.from, protocol: "/kv/1", timeout: .seconds(10))
            let onward = try await b.request(back.data, to: c.peerID, protocol: "/kv/1", timeout: .seconds(10))
            try await b.send(bytes("to a"), to: message.from, protocol: "/log/1")
            try await b.send(bytes("to c"), to: c.peerID, protocol: "/log/1")
            try await message.reply(onward.data)
        }
        try await running([a, b, c]) {
            _ = try await introduce(a, to: b, on: factory)
            _ = try await introduce(b, to: c, on: factory)
            _ = try await introduce(b, to: a, on: factory)
            for i in 0..<20 {
                let reply = try await a.request(bytes("q\(i)"), to: b.peerID, protocol: "/fwd/1", timeout: .seconds(20))
                #expect(String(buffer: reply.data) == "re:re:q\(i)")
            }
            await logged.wait(atLeast: 40)
            #expect(logged.value == 40)
        }
    }

    @Test("a throwing handler closes the channel; the requester sees it", arguments: TransportFactory.all)
    func throwingHandler(factory: TransportFactory) async throws {
        struct Boom: Error {}
        let a = factory.host()
        let b = factory.host()
        b.setMessageHandler(for: "/boom/1") { _ in throw Boom() }
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: factory)
            await #expect {
                _ = try await a.request(bytes("x"), to: b.peerID, protocol: "/boom/1")
            } throws: {
                // Streams: the channel is reset, outcome unknown. Datagrams: the peer reports
                // the handler's failure precisely.
                ($0 as? MessageError)?.outcomeUnknown == true || code($0) == .remoteError
            }
        }
    }

    @Test("a handler that does not reply: the requester gets remoteError", arguments: TransportFactory.all)
    func noReply(factory: TransportFactory) async throws {
        let a = factory.host()
        let b = factory.host()
        b.setMessageHandler(for: "/silent/1") { _ in }
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: factory)
            await #expect {
                _ = try await a.request(bytes("x"), to: b.peerID, protocol: "/silent/1")
            } throws: { code($0) == .remoteError }
        }
    }

    @Test("unreliable mode is accepted on every path; a reply cannot be replied to", arguments: TransportFactory.all)
    func unreliableAndReplyToReply(factory: TransportFactory) async throws {
        let a = factory.host()
        let b = factory.host()
        let count = Counter()
        b.setMessageHandler(for: "/u/1") { message in
            count.add()
            if message.data.readableBytes > 0 { try await message.reply(message.data) }
        }
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: factory)
            try await a.send(bytes(""), to: b.peerID, protocol: "/u/1", mode: .unreliable)
            await count.wait(atLeast: 1)
            let reply = try await a.request(bytes("r"), to: b.peerID, protocol: "/u/1")
            await #expect {
                try await reply.reply(bytes("again"))
            } throws: { code($0) == .remoteError }
        }
    }

    @Test("messages(for:) ends when its handler is removed", arguments: TransportFactory.all)
    func inboxEndsOnRemoval(factory: TransportFactory) async throws {
        let a = factory.host()
        let inbox = a.messages(for: "/i/1")
        try await running([a]) {
            a.removeMessageHandler(for: "/i/1")
            var it = inbox.makeAsyncIterator()
            #expect(await it.next() == nil)
        }
    }

    @Test("after shutdown, sends fail with cancelled and run() has returned", arguments: TransportFactory.all)
    func afterShutdown(factory: TransportFactory) async throws {
        let a = factory.host()
        let b = factory.host()
        b.setMessageHandler(for: "/x/1") { try await $0.reply($0.data) }
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: factory)
            #expect(String(buffer: try await a.request(bytes("x"), to: b.peerID, protocol: "/x/1").data) == "x")
            await a.shutdown()
            await #expect {
                try await a.send(bytes("x"), to: b.peerID, protocol: "/x/1")
            } throws: { code($0) == .cancelled }
        }
    }

    @Test(
        "an outbound channel reset by the peer is reopened by the next send",
        arguments: TransportFactory.all.filter(\.hasStreams))
    func reopenAfterReset(factory: TransportFactory) async throws {
        struct Boom: Error {}
        let a = factory.host()
        let b = factory.host()
        let got = NIOLockedValueBox<[String]>([])
        let count = Counter()
        b.setMessageHandler(for: "/re/1") { message in
            let text = String(buffer: message.data)
            got.withLockedValue { $0.append(text) }
            count.add()
            if text == "boom" { throw Boom() }
        }
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: factory)
            try await a.send(bytes("one"), to: b.peerID, protocol: "/re/1")
            try await a.send(bytes("boom"), to: b.peerID, protocol: "/re/1")
            await count.wait(atLeast: 2)
            // Wait until a has seen the reset (its channel is gone). No event reports a channel's
            // end, so this polls, bounded: 10 s is far beyond a loopback reset.
            let deadline = ContinuousClock.now + .seconds(10)
            while !a.network.sessions(with: b.peerID).isEmpty {
                try #require(ContinuousClock.now < deadline, "the reset channel was still listed after 10 s")
                try await Task.sleep(for: .milliseconds(5))
            }
            try await a.send(bytes("two"), to: b.peerID, protocol: "/re/1")
            await count.wait(atLeast: 3)
            #expect(got.withLockedValue { $0 } == ["one", "boom", "two"])
        }
    }

    @Test("sessions: open, list, send, close", arguments: TransportFactory.all)
    func sessions(factory: TransportFactory) async throws {
        let a = factory.host()
        let b = factory.host()
        let count = Counter()
        b.setMessageHandler(for: "/s/1") { _ in count.add() }
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: factory)
            let session = try await a.network.newSession(to: b.peerID, protocol: "/s/1")
            #expect(session.remote == b.peerID)
            #expect(session.protocol == "/s/1")
            #expect(a.network.sessions(with: b.peerID).map(\.protocol) == ["/s/1"])
            try await session.send(bytes("1"))
            try await session.send(bytes("2"))
            await count.wait(atLeast: 2)
            await session.close()
            #expect(a.network.sessions(with: b.peerID).isEmpty)
            // The next send reopens transparently.
            try await session.send(bytes("3"))
            await count.wait(atLeast: 3)
        }
    }

    @Test("sending to an unconnected peer dials once for concurrent sends", arguments: TransportFactory.all)
    func dialDedup(factory: TransportFactory) async throws {
        let a = factory.host()
        let b = factory.host()
        let count = Counter()
        b.setMessageHandler(for: "/d/1") { _ in count.add() }
        let events = try await running([a, b]) { () -> [MessageHostEvent] in
            _ = try await introduce(a, to: b, on: factory)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<16 {
                    group.addTask { try await a.send(bytes("\(i)"), to: b.peerID, protocol: "/d/1") }
                }
                try await group.waitForAll()
            }
            await count.wait(atLeast: 16)
            await a.shutdown()
            var all: [MessageHostEvent] = []
            for await e in a.events { all.append(e) }
            return all
        }
        let opened = events.filter {
            if case .connectionOpened(let c) = $0 { return c.peer == b.peerID }
            return false
        }
        #expect(opened.count == 1)
    }

    @Test("sending to a peer without addresses fails with dialFailed", arguments: TransportFactory.all)
    func noAddress(factory: TransportFactory) async throws {
        let a = factory.host()
        _ = try await running([a]) {
            await #expect {
                try await a.send(bytes("x"), to: PrivateKey.generate().peerID, protocol: "/x/1")
            } throws: { code($0) == .dialFailed }
        }
    }

    @Test("limit: inbound message streams per peer", arguments: TransportFactory.all.filter(\.hasStreams))
    func inboundStreamLimit(factory: TransportFactory) async throws {
        let a = factory.host()
        let b = factory.host(limits: PathLimits(maxStreamsPerPeer: 2))
        let started = Counter()
        let release = Signal()
        b.setMessageHandler(for: "/l/1") { message in
            started.add()
            await release.wait()
            try await message.reply(message.data)
        }
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: factory)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<2 {
                    group.addTask { _ = try await a.request(bytes("ok"), to: b.peerID, protocol: "/l/1") }
                }
                await started.wait(atLeast: 2)
                await #expect {
                    _ = try await a.request(bytes("third"), to: b.peerID, protocol: "/l/1")
                } throws: { ($0 as? MessageError)?.outcomeUnknown == true }
                release.fire()
                try await group.waitForAll()
            }
            #expect(started.value == 2)
        }
    }

    @Test("limit: outbound requests in flight per peer", arguments: TransportFactory.all.filter(\.hasStreams))
    func outboundStreamLimit(factory: TransportFactory) async throws {
        let a = factory.host(limits: PathLimits(maxStreamsPerPeer: 2))
        let b = factory.host()
        let started = Counter()
        let release = Signal()
        b.setMessageHandler(for: "/l/1") { message in
            started.add()
            await release.wait()
            try await message.reply(message.data)
        }
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: factory)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<2 {
                    group.addTask { _ = try await a.request(bytes("ok"), to: b.peerID, protocol: "/l/1") }
                }
                await started.wait(atLeast: 2)
                await #expect {
                    _ = try await a.request(bytes("third"), to: b.peerID, protocol: "/l/1")
                } throws: { code($0) == .limitExceeded }
                release.fire()
                try await group.waitForAll()
            }
        }
    }

    @Test("limit: inbound message rate per peer (injected clock)", arguments: TransportFactory.all)
    func rateLimit(factory: TransportFactory) async throws {
        let clock = ManualClock()
        let a = factory.host()
        let b = factory.host {
            $0.maxInboundMessagesPerSecondPerPeer = 1
            $0.inboundMessageBurst = 3
            $0.now = clock.now
        }
        b.setMessageHandler(for: "/rate/1") { try await $0.reply($0.data) }
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: factory)
            for i in 0..<3 {
                #expect(
                    String(buffer: try await a.request(bytes("\(i)"), to: b.peerID, protocol: "/rate/1").data) == "\(i)"
                )
            }
            await #expect {
                _ = try await a.request(bytes("over"), to: b.peerID, protocol: "/rate/1")
            } throws: { ($0 as? MessageError)?.outcomeUnknown == true || code($0) == .limitExceeded }
            let rejected = await firstEvent(b) {
                if case .messageRejected(let from, _, let reason) = $0 {
                    return from == a.peerID && reason.code == .limitExceeded
                }
                return false
            }
            #expect(rejected != nil)
            clock.advance(.seconds(1))
            #expect(
                String(buffer: try await a.request(bytes("again"), to: b.peerID, protocol: "/rate/1").data) == "again")
        }
    }

    @Test("lifecycle events: listen, connection, identify, close", arguments: TransportFactory.all)
    func events(factory: TransportFactory) async throws {
        let a = factory.host()
        let b = factory.host()
        b.setMessageHandler(for: "/e/1") { try await $0.reply($0.data) }
        let (address, bAddress, events) = try await running([a, b]) {
            () -> (Multiaddr, Multiaddr, [MessageHostEvent]) in
            let address = try await a.network.listen(on: factory.listenAddress())
            let bAddress = try await b.network.listen(on: factory.listenAddress())
            #expect(address.peerID == a.peerID)
            #expect(a.network.listenAddresses == [address])
            #expect(a.network.sockets.map(\.localAddress) == [address])
            #expect(try await a.network.connect(to: bAddress) == b.peerID)
            var seen: [MessageHostEvent] = []
            var iterator = a.events.makeAsyncIterator()
            func waitFor(_ predicate: (MessageHostEvent) -> Bool) async {
                while let e = await iterator.next() {
                    seen.append(e)
                    if predicate(e) { return }
                }
            }
            await waitFor {
                if case .peerIdentified(let info) = $0 { return info.peer == b.peerID }
                return false
            }
            #expect(a.peerstore.protocols(for: b.peerID).contains("/e/1"))
            // b adds a protocol: identify push tells a (once b knows a supports push).
            _ = await firstEvent(b) {
                if case .peerIdentified(let info) = $0 { return info.peer == a.peerID }
                return false
            }
            b.setMessageHandler(for: "/e/2") { _ in }
            await waitFor {
                if case .peerProtocolsUpdated(let peer, let protocols) = $0 {
                    return peer == b.peerID && protocols.contains("/e/2")
                }
                return false
            }
            await a.network.closePeer(b.peerID)
            await waitFor {
                if case .connectionClosed(let c) = $0 { return c.peer == b.peerID }
                return false
            }
            #expect(!a.network.hasSession(with: b.peerID))
            await a.shutdown()
            while let e = await iterator.next() { seen.append(e) }
            return (address, bAddress, seen)
        }
        #expect(bAddress.peerID == b.peerID)
        func has(_ predicate: (MessageHostEvent) -> Bool) -> Bool { events.contains(where: predicate) }
        #expect(
            has {
                if case .listenStarted(let x) = $0 { return x == address }; return false
            })
        #expect(
            has {
                if case .connectionOpened(let c) = $0 { return c.peer == b.peerID && c.direction == .outbound }
                return false
            })
        #expect(
            has {
                if case .connectionClosed(let c) = $0 { return c.peer == b.peerID }; return false
            })
        #expect(
            has {
                if case .listenClosed(let x) = $0 { return x == address }; return false
            })
    }
}
