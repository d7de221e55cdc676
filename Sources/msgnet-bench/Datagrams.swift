import ArgumentParser
import Logging
import MsgNetCore
import MsgNetHost
import MsgNetStreams
import MsgNetTransportPosix
import NIOCore
import NIOPosix
import Synchronization

/// Replies to pipelined raw UDP requests, matched by an 8-byte id at the front of the payload.
final class PendingReplies: Sendable {
    private let pending = Mutex<[UInt64: (CheckedContinuation<Bool, Never>, NIODeadline)]>([:])
    private let next = Atomic<UInt64>(0)

    func nextID() -> UInt64 { next.wrappingAdd(1, ordering: .relaxed).newValue }

    /// One raw request as MsgNet makes one: a single hop to the socket's loop, which notes the
    /// deadline and writes the datagram; the reply handler finishes it there. Deadlines are kept
    /// by one sweeping timer (``sweep(on:)``), as MsgNet keeps its requests' with one timer.
    func request(_ payload: ByteBuffer, id: UInt64, on socket: RawUDPBaseline.Socket, to address: SocketAddress)
        async -> Bool
    {
        let loop = socket.eventLoop
        return await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
            // On the loop already (`--requester loop`), as MsgNet's request then is: no hop.
            if loop.inEventLoop {
                self.pending.withLock { $0[id] = (c, .now() + .seconds(2)) }
                socket.write(payload, to: address)
                return
            }
            loop.execute {
                self.pending.withLock { $0[id] = (c, .now() + .seconds(2)) }
                socket.write(payload, to: address)
            }
        }
    }

    /// Fails overdue requests every 100 ms on `loop` until the returned task is cancelled.
    func sweep(on loop: any EventLoop) -> RepeatedTask {
        loop.scheduleRepeatedTask(initialDelay: .milliseconds(100), delay: .milliseconds(100)) { _ in
            let now = NIODeadline.now()
            let overdue = self.pending.withLock { p in p.filter { $0.value.1 <= now }.map(\.key) }
            for id in overdue { self.finish(id, false) }
        }
    }

    /// Resumes the request `id` (true = answered, false = timed out), once.
    func finish(_ id: UInt64, _ answered: Bool) {
        pending.withLock { $0.removeValue(forKey: id) }?.0.resume(returning: answered)
    }
}

struct DatagramsBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "datagrams",
        abstract:
            "Datagram path (MessageHost over UDP: Noise sessions, multipacket frames) vs raw UDP: message rate, "
            + "request/reply latency, one 1 MiB message."
    )

    @Option(help: "Repetitions of each measurement (the median is reported).")
    var runs = 5
    @Option(help: "Messages per rate run.")
    var count = 50_000
    @Option(help: "Concurrent reliable sends in the reliable rate runs (a reliable send returns on its ack).")
    var window = 64
    @Option(help: "Datagrams in flight for the raw lossless (windowed) rate.")
    var rawWindow = 1024
    @Option(help: "Requests per request/reply run (each in-flight level).")
    var requests = 4000
    @Option(help: "Requests in flight for the concurrent request/reply run.")
    var inFlight = 64
    @Option(help: "Time bound of each measurement, seconds.")
    var timeLimit = 10.0
    @Option(help: "Largest unreliable MsgNet message (one datagram payload minus frame overhead).")
    var maxUnreliable = 1158
    @Flag(help: "Measure only request/reply (for profiling and A/B runs); skips the rates and the 1 MiB message.")
    var requestsOnly = false
    @Option(help: Leg.help)
    var leg = Leg.both
    @Option(
        help:
            "Where the requesting tasks run, on both legs: pool (Swift's global executor, the default) or loop (the client's event loop as their preferred executor: a request needs no hop to it)."
    )
    var requester = Requester.pool

    var commandLine: String {
        "msgnet-bench datagrams --runs \(runs) --count \(count) --window \(window) --raw-window \(rawWindow) "
            + "--requests \(requests) --in-flight \(inFlight) --time-limit \(timeLimit) --max-unreliable \(maxUnreliable)"
            + (requestsOnly ? " --requests-only" : "") + (leg == .both ? "" : " --leg \(leg)")
            + (requester == .pool ? "" : " --requester \(requester)")
    }

    /// The requesting tasks' preferred executor: the client's event loop with `--requester loop`.
    var requestExecutor: (any TaskExecutor)? {
        requester == .loop ? EventLoopTaskExecutor(BenchLoops().client) : nil
    }

    static let sizes = [64, 1200]
    static let bigSize = 1 << 20

    func run() async throws {
        bootstrapBenchLogging()
        print("$ \(CommandLine.arguments.joined(separator: " "))")
        print(commandLine)
        let loops = BenchLoops()

        // Raw UDP: a counting sink, an echo socket, a client socket for requests.
        let rawSink = Arrivals()
        let rawBytes = Arrivals()
        let sinkSocket = try await RawUDPBaseline.bind(group: loops.server) { d in
            rawSink.arrive()
            rawBytes.arrive(d.readableBytes)
            return nil
        }
        let echoSocket = try await RawUDPBaseline.bind(group: loops.server) { d in d }
        let replies = PendingReplies()
        let clientSocket = try await RawUDPBaseline.bind(group: loops.client) { d in
            if let id = d.getInteger(at: d.readerIndex, as: UInt64.self) { replies.finish(id, true) }
            return nil
        }
        let senderSocket = try await RawUDPBaseline.bind(group: loops.client) { _ in nil }
        let sweeper = replies.sweep(on: clientSocket.eventLoop)

        let sink = Arrivals()
        let server = makeHost(on: loops.server)
        let client = makeHost(on: loops.client)
        server.setMessageHandler(for: "/bench/sink/1.0.0") { message in
            sink.arrive()
            _ = message
        }
        server.setMessageHandler(for: "/bench/echo/1.0.0") { message in try await message.reply(message.data) }

        var series = Series()
        for size in requestsOnly ? [] : Self.sizes {
            series.add("rate \(size) B, unreliable (msg/s delivered)")
            series.add("loss \(size) B, unreliable (%)")
            series.add("rate \(size) B, unreliable, \(window) senders (msg/s delivered)")
            series.add("loss \(size) B, unreliable, \(window) senders (%)")
            series.add("rate \(size) B, lossless (msg/s)")
            series.add("rate \(size) B, reliable, \(window) senders (msg/s)")
        }
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await server.run() }
            tasks.addTask { try await client.run() }
            let address = try await server.network.listen(on: try Multiaddr("/ip4/127.0.0.1/udp/0"))
            _ = try await client.network.listen(on: try Multiaddr("/ip4/127.0.0.1/udp/0"))
            _ = try await client.network.connect(to: address)
            let peer = server.peerID
            for _ in 0..<200 {
                _ = try await client.request(
                    ByteBuffer(repeating: 1, count: 64), to: peer, protocol: "/bench/echo/1.0.0")
            }
            try await client.send(ByteBuffer(repeating: 1, count: 64), to: peer, protocol: "/bench/sink/1.0.0")

            for run in 1...runs {
                let rawFirst = run % 2 == 1
                for leg in 0..<2 {
                    if (leg == 0) == rawFirst {
                        if self.leg == .msgnet { continue }
                        try await rawLeg(
                            &series, sender: senderSocket, sinkPort: sinkSocket.port, sink: rawSink, bytes: rawBytes,
                            client: clientSocket, echoPort: echoSocket.port, replies: replies)
                    } else {
                        if self.leg == .raw { continue }
                        try await msgnetLeg(&series, client: client, peer: peer, sink: sink)
                    }
                }
                FileHandleLog.line("run \(run) done")
            }
            await client.shutdown()
            await server.shutdown()
            try await tasks.waitForAll()
        }
        sweeper.cancel()
        for s in [sinkSocket, echoSocket, clientSocket, senderSocket] { await s.close() }

        print("")
        print(
            "medians of \(runs) runs; ratio = MsgNet / raw. Raw = plain UDP (8 MiB socket buffers, vector reads), "
                + "no session, no encryption, no loss recovery; raw requests with \(inFlight) in flight are "
                + "pipelined on one socket (id-matched). MsgNet's unreliable 1200 B rows send \(maxUnreliable) B messages "
                + "(an unreliable message is one datagram; that is the largest that fits). Raw \"unreliable\" = blast; "
                + "raw \"lossless\" = at most \(rawWindow) datagrams unreceived (in-process flow control).")
        print("")
        print("| measure | raw UDP | MsgNet UDP | ratio |")
        print("|---|---|---|---|")
        for name in series.order { row(name, series.rawMedian(name), series.msgnetMedian(name)) }
        print("")
        if let warning = series.disturbance("request/reply p50, 1 in flight (µs)") {
            print(warning)
            print("")
        }
        let unreliable64 = series.msgnetMedian("rate 64 B, unreliable (msg/s delivered)")
        let lossless64 = series.rawMedian("rate 64 B, lossless (msg/s)")
        let p50 =
            series.msgnetMedian("request/reply p50, 1 in flight (µs)")
            / series.rawMedian("request/reply p50, 1 in flight (µs)")
        guard leg == .both else {
            print("Goals: not evaluated (--leg \(leg) measures one side only).")
            return
        }
        print("Goals:")
        if !requestsOnly {
            goal(
                "unreliable 64 B rate ≥ 50% of raw-UDP lossless rate (\(fmt(unreliable64 / lossless64 * 100))%)",
                unreliable64 / lossless64 >= 0.5)
        }
        goal("request/reply p50 (1 in flight) ≤ 1.5× raw UDP ping-pong (\(fmt(p50))×)", p50 <= 1.5)
    }

    func makeHost(on loop: any EventLoop) -> MessageHost {
        let identity = PrivateKey.generate()
        let transport = DatagramMessageTransport(
            identity: identity, datagrams: UDPTransport(group: loop), eventLoop: loop)
        return MessageHost(identity: identity, transports: [transport], peerstore: Peerstore())
    }

    /// Waits for `sink` to reach its target or to go quiet (no arrival for 200 ms) after
    /// sending ended; returns (received, seconds from `start` to the last arrival seen).
    func drain(_ sink: Arrivals, target: Int, start: ContinuousClock.Instant) async -> (Int, Double) {
        let clock = ContinuousClock()
        let hardDeadline = clock.now + .seconds(timeLimit)
        var last = sink.received
        var lastChange = clock.now
        while true {
            if await sink.wait(atLeast: target, until: min(hardDeadline, clock.now + .milliseconds(20))) {
                return (sink.received, seconds(clock.now - start))
            }
            let now = clock.now
            let got = sink.received
            if got != last {
                last = got
                lastChange = now
            } else if now - lastChange > .milliseconds(200) || now > hardDeadline {
                return (got, seconds(lastChange - start))
            }
        }
    }

    func msgnetLeg(_ series: inout Series, client: MessageHost, peer: PeerID, sink: Arrivals) async throws {
        let clock = ContinuousClock()
        for size in requestsOnly ? [] : Self.sizes {
            let payload = ByteBuffer(repeating: 0x5A, count: size)
            // Unreliable: one sender, then `window` concurrent senders; sends return once queued.
            // An unreliable message is one datagram, so the large size is capped at `maxUnreliable`.
            let small = ByteBuffer(repeating: 0x5A, count: min(size, maxUnreliable))
            for senders in [1, window] {
                sink.reset()
                let start = clock.now
                let deadline = start + .seconds(timeLimit)
                let per = count / senders
                let sent = try await withThrowingTaskGroup(of: Int.self) { group in
                    for _ in 0..<senders {
                        group.addTask {
                            var n = 0
                            while n < per {
                                if n & 255 == 0, clock.now > deadline { break }
                                try await client.send(small, to: peer, protocol: "/bench/sink/1.0.0", mode: .unreliable)
                                n += 1
                            }
                            return n
                        }
                    }
                    return try await group.reduce(0, +)
                }
                let (got, elapsed) = await drain(sink, target: sent, start: start)
                let label = senders == 1 ? "unreliable" : "unreliable, \(senders) senders"
                series.add("rate \(size) B, \(label) (msg/s delivered)", msgnet: Double(got) / elapsed)
                series.add("loss \(size) B, \(label) (%)", msgnet: Double(sent - got) / Double(sent) * 100)
            }

            // Reliable: `window` concurrent senders (a reliable send returns on its ack).
            sink.reset()
            let start = clock.now
            let reliableDeadline = start + .seconds(timeLimit)
            let per = count / window
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<window {
                    group.addTask {
                        for i in 0..<per {
                            if i & 63 == 0, clock.now > reliableDeadline { break }
                            try await client.send(payload, to: peer, protocol: "/bench/sink/1.0.0", mode: .reliable)
                        }
                    }
                }
                try await group.waitForAll()
            }
            let (got, elapsed) = await drain(sink, target: per * window, start: start)
            if got < per * window { FileHandleLog.line("  reliable \(size) B: \(got) of \(per * window) delivered") }
            series.add("rate \(size) B, reliable, \(window) senders (msg/s)", msgnet: Double(got) / elapsed)
        }
        let request = ByteBuffer(repeating: 0x33, count: 64)
        for n in [1, inFlight] {
            try await measureRequests(
                total: n == 1 ? requests : requests * 4, inFlight: n, deadline: .now + .seconds(timeLimit),
                executor: requestExecutor
            ) {
                let reply = try await client.request(
                    request, to: peer, protocol: "/bench/echo/1.0.0", timeout: .seconds(2))
                guard reply.data.readableBytes == 64 else { throw BenchError("short reply") }
            }.add(to: &series, inFlight: n, raw: false)
        }
        if requestsOnly { return }
        // One 1 MiB message, reliable: time until the handler has it.
        sink.reset()
        let start = clock.now
        try await client.send(
            ByteBuffer(repeating: 0x77, count: Self.bigSize), to: peer, protocol: "/bench/sink/1.0.0", mode: .reliable)
        if await sink.wait(atLeast: 1, until: start + .seconds(timeLimit)) {
            series.add("1 MiB message, time to deliver (ms)", msgnet: seconds(clock.now - start) * 1000)
        } else {
            FileHandleLog.line("  1 MiB message not delivered within \(timeLimit) s")
        }
        series.add("1 MiB message, bytes lost (%)", msgnet: 0)
    }

    func rawLeg(
        _ series: inout Series, sender: RawUDPBaseline.Socket, sinkPort: Int, sink: Arrivals, bytes: Arrivals,
        client: RawUDPBaseline.Socket, echoPort: Int, replies: PendingReplies
    ) async throws {
        let clock = ContinuousClock()
        for size in requestsOnly ? [] : Self.sizes {
            let payload = ByteBuffer(repeating: 0x5A, count: size)
            // Blast: as fast as the socket takes them.
            sink.reset()
            var start = clock.now
            try await sender.blast(payload, count: count, to: sinkPort)
            var (got, elapsed) = await drain(sink, target: count, start: start)
            series.add("rate \(size) B, unreliable (msg/s delivered)", raw: Double(got) / elapsed)
            series.add("loss \(size) B, unreliable (%)", raw: Double(count - got) / Double(count) * 100)

            // Lossless: at most `rawWindow` datagrams unreceived (the sender reads the receiver's
            // counter in-process: flow control without feedback datagrams).
            sink.reset()
            start = clock.now
            let deadline = start + .seconds(timeLimit)
            var sent = 0
            while sent < count, clock.now < deadline {
                let n = min(64, count - sent)
                try await sender.blast(payload, count: n, to: sinkPort)
                sent += n
                if sent - sink.received > rawWindow {
                    _ = await sink.wait(atLeast: sent - rawWindow / 2, until: deadline)
                }
            }
            (got, elapsed) = await drain(sink, target: count, start: start)
            if got < count { FileHandleLog.line("  raw lossless \(size) B: \(got) of \(count) (loss)") }
            series.add("rate \(size) B, lossless (msg/s)", raw: Double(got) / elapsed)
        }
        let echoAddress = try SocketAddress(ipAddress: "127.0.0.1", port: echoPort)
        for n in [1, inFlight] {
            try await measureRequests(
                total: n == 1 ? requests : requests * 4, inFlight: n, deadline: .now + .seconds(timeLimit),
                executor: requestExecutor
            ) {
                let id = replies.nextID()
                var request = ByteBuffer()
                request.writeInteger(id)
                request.writeRepeatingByte(0x33, count: 56)
                let answered = await replies.request(request, id: id, on: client, to: echoAddress)
                guard answered else { throw BenchError("raw UDP request \(id) lost") }
            }.add(to: &series, inFlight: n, raw: true)
        }
        if requestsOnly { return }
        // 1 MiB in 1200 B datagrams, no loss recovery.
        let datagrams = (Self.bigSize + 1199) / 1200
        bytes.reset()
        let start = clock.now
        let chunks = (0..<datagrams).map { i in
            ByteBuffer(repeating: 0x77, count: min(1200, Self.bigSize - i * 1200))
        }
        try await sender.blast(chunks, to: sinkPort)
        let (got, elapsed) = await drain(bytes, target: Self.bigSize, start: start)
        series.add("1 MiB message, time to deliver (ms)", raw: elapsed * 1000)
        series.add("1 MiB message, bytes lost (%)", raw: Double(Self.bigSize - got) / Double(Self.bigSize) * 100)
    }
}
