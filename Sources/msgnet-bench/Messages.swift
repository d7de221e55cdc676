import ArgumentParser
import Logging
import MsgNetCore
import MsgNetHost
import MsgNetSecurity
import MsgNetStreams
import MsgNetTransportPosix
import NIOCore
import NIOPosix
import Synchronization

/// Counts messages arriving at a handler and wakes one waiter when a threshold is reached.
final class Arrivals: Sendable {
    private let count = Atomic<Int>(0)
    private let threshold = Atomic<Int>(Int.max)
    private let waiter = Mutex<CheckedContinuation<Void, Never>?>(nil)

    var received: Int { count.load(ordering: .sequentiallyConsistent) }

    /// Starts counting from zero.
    func reset() {
        count.store(0, ordering: .sequentiallyConsistent)
        threshold.store(Int.max, ordering: .sequentiallyConsistent)
    }

    /// `n` arrivals (from any thread).
    func arrive(_ n: Int = 1) {
        let now = count.wrappingAdd(n, ordering: .sequentiallyConsistent).newValue
        let t = threshold.load(ordering: .sequentiallyConsistent)
        if now >= t, now - n < t { wake() }
    }

    private func wake() {
        waiter.withLock { w in
            w?.resume()
            w = nil
        }
    }

    /// Waits until at least `n` arrived or `deadline` passes; true when reached. One waiter at a time.
    func wait(atLeast n: Int, until deadline: ContinuousClock.Instant) async -> Bool {
        threshold.store(n, ordering: .sequentiallyConsistent)
        return await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                    let done = self.waiter.withLock { w -> Bool in
                        if self.received >= n { return true }
                        w = c
                        return false
                    }
                    if done { c.resume() }
                }
                return true
            }
            group.addTask {
                try? await Task.sleep(until: deadline, clock: .continuous)
                return false
            }
            let first = await group.next()!
            if !first { wake() }
            group.cancelAll()
            _ = await group.next()
            return first || self.received >= n
        }
    }
}

/// What one request/reply measurement found.
struct RequestStats {
    /// Median and 99th-percentile round trip, µs.
    var p50: Double
    var p99: Double
    /// Completed requests per second.
    var rate: Double
    /// The process's CPU time (user and system, every thread) per completed request, µs: both
    /// sides' work, since requester and responder run in this process. Unlike the latencies it
    /// does not include waiting for wake-ups, so it moves little with how busy the machine is.
    var cpu: Double

    /// Adds the four rows of a measurement with `inFlight` requests in flight to `series`.
    func add(to series: inout Series, inFlight n: Int, raw: Bool) {
        let rows = [
            ("request/reply p50, \(n) in flight (µs)", p50),
            ("request/reply p99, \(n) in flight (µs)", p99),
            ("request/reply rate, \(n) in flight (req/s)", rate),
            ("request/reply CPU, \(n) in flight (µs per request, both sides)", cpu),
        ]
        for (name, value) in rows {
            if raw { series.add(name, raw: value) } else { series.add(name, msgnet: value) }
        }
    }
}

/// User plus system CPU time of the whole process so far.
func processCPUTime() -> Duration {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    func duration(_ t: timeval) -> Duration { .seconds(Int64(t.tv_sec)) + .microseconds(Int64(t.tv_usec)) }
    return duration(usage.ru_utime) + duration(usage.ru_stime)
}

/// Latencies of requests with `inFlight` outstanding at a time, bounded by `total` and
/// `deadline`, and the CPU they cost. The requesting tasks run on Swift's global executor, or
/// with `executor` as their preferred executor (the client's event loop, say).
func measureRequests(
    total: Int, inFlight: Int, deadline: ContinuousClock.Instant, executor: (any TaskExecutor)? = nil,
    _ one: @escaping @Sendable () async throws -> Void
) async throws -> RequestStats {
    let clock = ContinuousClock()
    let start = clock.now
    let cpuStart = processCPUTime()
    let per = max(1, total / inFlight)
    let rtts = try await withThrowingTaskGroup(of: [Duration].self) { group in
        for _ in 0..<inFlight {
            group.addTask(executorPreference: executor) {
                var rtts: [Duration] = []
                rtts.reserveCapacity(per)
                for _ in 0..<per {
                    let t0 = clock.now
                    if t0 > deadline { break }
                    try await one()
                    rtts.append(clock.now - t0)
                }
                return rtts
            }
        }
        var all: [Duration] = []
        for try await r in group { all += r }
        return all
    }
    let cpu = seconds(processCPUTime() - cpuStart)
    let elapsed = seconds(clock.now - start)
    guard !rtts.isEmpty else { throw BenchError("no request completed") }
    let (p50, p99) = percentiles(rtts)
    return RequestStats(
        p50: p50, p99: p99, rate: Double(rtts.count) / elapsed, cpu: cpu / Double(rtts.count) * 1_000_000)
}

/// Measurement series of one benchmark: named values per side, medians at the end.
struct Series {
    var raw: [String: [Double]] = [:]
    var msgnet: [String: [Double]] = [:]
    var order: [String] = []

    mutating func add(_ name: String, raw r: Double? = nil, msgnet m: Double? = nil) {
        if !order.contains(name) { order.append(name) }
        if let r { raw[name, default: []].append(r) }
        if let m { msgnet[name, default: []].append(m) }
    }

    /// A warning when the raw baseline of `name` moved by more than half between runs of one
    /// invocation: the machine was disturbed (on this VM a loaded host slows every wake-up, and
    /// the baseline's round trip then grows from ~120 µs to 230–400 µs), so ratios from it mean
    /// little. `nil` when the runs agree.
    func disturbance(_ name: String) -> String? {
        guard let values = raw[name], values.count >= 2, let low = values.min(), let high = values.max(),
            low > 0, high > 1.5 * low
        else { return nil }
        return "warning: the raw \(name) ranged from \(fmt(low)) to \(fmt(high)) across runs: "
            + "the machine was disturbed; rerun before quoting these figures"
    }

    func rawMedian(_ name: String) -> Double { median(raw[name] ?? [.nan]) }
    func msgnetMedian(_ name: String) -> Double { median(msgnet[name] ?? [.nan]) }
}

/// Errors only, to standard error; once per process (`all` runs several commands).
func bootstrapBenchLogging() {
    _ = benchLogging
}

private let benchLogging: Void = LoggingSystem.bootstrap { label in
    var h = StreamLogHandler.standardError(label: label)
    h.logLevel = .error
    return h
}

func goal(_ text: String, _ met: Bool) {
    print("- \(text): **\(met ? "met" : "missed")**")
}

struct MessagesBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "messages",
        abstract:
            "Stream path (MessageHost over TCP/noise/mplex): message rate and request/reply latency vs raw framed TCP."
    )

    @Option(help: "Repetitions of each measurement (the median is reported).")
    var runs = 5
    @Option(help: "Messages per 64 B rate run.")
    var smallCount = 200_000
    @Option(help: "Messages per 1 KiB rate run.")
    var largeCount = 100_000
    @Option(help: "Requests per request/reply run (each in-flight level).")
    var requests = 4000
    @Option(help: "Requests in flight for the concurrent request/reply run.")
    var inFlight = 64
    @Option(help: "Time bound of each measurement, seconds.")
    var timeLimit = 10.0
    @Option(help: "Security for the MsgNet side: noise or plaintext.")
    var security = "noise"
    @Option(help: Leg.help)
    var leg = Leg.both
    @Option(
        help:
            "How MsgNet requests travel: kept (request streams reused between requests, the default between MsgNet peers) or per-request (a new stream each, as to a libp2p peer)."
    )
    var requestStreams = "kept"

    func validate() throws {
        guard ["kept", "per-request"].contains(requestStreams) else {
            throw ValidationError("--request-streams must be kept or per-request")
        }
    }

    var commandLine: String {
        "msgnet-bench messages --runs \(runs) --small-count \(smallCount) --large-count \(largeCount) "
            + "--requests \(requests) --in-flight \(inFlight) --time-limit \(timeLimit) --security \(security) "
            + "--request-streams \(requestStreams)"
    }

    func run() async throws {
        bootstrapBenchLogging()
        print("$ \(CommandLine.arguments.joined(separator: " "))")
        print(commandLine)
        let loops = BenchLoops()
        let sink = Arrivals()
        let rawSink = Arrivals()

        let (sinkPort, closeSink) = try await RawFramedBaseline.startServer(group: loops.server) { _ in
            rawSink.arrive()
            return nil
        }
        let (echoPort, closeEcho) = try await RawFramedBaseline.startServer(group: loops.server) { frame in frame }
        let rawSender = try await RawFramedBaseline.connect(port: sinkPort, group: loops.client)
        let rawRequester = try await RawFramedBaseline.connect(port: echoPort, group: loops.client)

        let server = makeHost(on: loops.server)
        let client = makeHost(on: loops.client)
        server.setMessageHandler(for: "/bench/sink/1.0.0") { _ in sink.arrive() }
        server.setMessageHandler(for: "/bench/echo/1.0.0") { message in try await message.reply(message.data) }

        var series = Series()
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await server.run() }
            tasks.addTask { try await client.run() }
            let address = try await server.network.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
            _ = try await client.network.connect(to: address)
            let peer = server.peerID
            if requestStreams == "kept" {
                // As with the defaults: identify announces the server's request streams, and
                // requests use them from then on.
                let deadline = ContinuousClock.now + .seconds(timeLimit)
                while !client.peerstore.protocols(for: peer).contains(StreamMessageTransport.requestStreamsProtocol) {
                    guard ContinuousClock.now < deadline else { throw BenchError("identify did not complete") }
                    try await Task.sleep(for: .milliseconds(10))
                }
            }
            // Warm up both sides (streams opened, code paths paged in).
            for _ in 0..<200 {
                _ = try await client.request(
                    ByteBuffer(repeating: 1, count: 64), to: peer, protocol: "/bench/echo/1.0.0")
                _ = try await rawRequester.request(ByteBuffer(repeating: 1, count: 64))
            }
            sink.reset()
            try await client.send(ByteBuffer(repeating: 1, count: 64), to: peer, protocol: "/bench/sink/1.0.0")
            _ = await sink.wait(atLeast: 1, until: .now + .seconds(timeLimit))

            for run in 1...runs {
                let rawFirst = run % 2 == 1
                for side in 0..<2 {
                    if (side == 0) == rawFirst {
                        if leg == .msgnet { continue }
                        try await rawLeg(&series, sender: rawSender, sink: rawSink, requester: rawRequester)
                    } else {
                        if leg == .raw { continue }
                        try await msgnetLeg(&series, client: client, peer: peer, sink: sink)
                    }
                }
                func last(_ name: String) -> String {
                    "raw \(series.raw[name]?.last.map(fmt) ?? "–") msgnet \(series.msgnet[name]?.last.map(fmt) ?? "–")"
                }
                FileHandleLog.line(
                    "run \(run): 64 B rate \(last("message rate, 64 B (msg/s)")); "
                        + "p50 1 in flight \(last("request/reply p50, 1 in flight (µs)"))"
                )
            }
            await client.shutdown()
            await server.shutdown()
            try await tasks.waitForAll()
        }
        await rawSender.close()
        await rawRequester.close()
        await closeSink()
        await closeEcho()

        print("")
        print(
            "medians of \(runs) runs; ratio = MsgNet / raw. Raw = TCP with the same uvarint framing; "
                + "raw request/reply with \(inFlight) in flight is pipelined on one connection.")
        print("")
        print("| measure | raw TCP | MsgNet \(security)+mplex | ratio |")
        print("|---|---|---|---|")
        for name in series.order { row(name, series.rawMedian(name), series.msgnetMedian(name)) }
        print("")
        if let warning = series.disturbance("request/reply p50, 1 in flight (µs)") {
            print(warning)
            print("")
        }
        guard leg == .both else {
            print("Goals: not evaluated (--leg \(leg) measures one side only).")
            return
        }
        let r64 = series.msgnetMedian("message rate, 64 B (msg/s)") / series.rawMedian("message rate, 64 B (msg/s)")
        let r1k = series.msgnetMedian("message rate, 1 KiB (msg/s)") / series.rawMedian("message rate, 1 KiB (msg/s)")
        let p1 =
            series.msgnetMedian("request/reply p50, 1 in flight (µs)")
            / series.rawMedian("request/reply p50, 1 in flight (µs)")
        print("Goals:")
        goal("message rate 64 B ≥ 40% of raw (\(fmt(r64 * 100))%)", r64 >= 0.4)
        goal("message rate 1 KiB ≥ 40% of raw (\(fmt(r1k * 100))%)", r1k >= 0.4)
        goal("request/reply p50 (1 in flight) ≤ 1.5× raw TCP ping-pong (\(fmt(p1))×)", p1 <= 1.5)
    }

    func makeHost(on loop: any EventLoop) -> MessageHost {
        let identity = PrivateKey.generate()
        let sec: any SecurityProtocol =
            security == "plaintext" ? PlaintextSecurity(identity: identity) : NoiseSecurity(identity: identity)
        var streamConfig = StreamMessageTransport.Configuration()
        if requestStreams == "per-request" {
            streamConfig.requestStreams = .off
            streamConfig.streamHost.identifyOnConnect = false
        }
        return MessageHost(
            identity: identity, streamTransports: [TCPTransport(group: loop)],
            security: [sec], streamConfiguration: streamConfig)
    }

    func rate(
        count: Int, size: Int, sink: Arrivals, _ send: (ByteBuffer) async throws -> Void
    ) async throws -> Double {
        let payload = ByteBuffer(repeating: 0x5A, count: size)
        let clock = ContinuousClock()
        let start = clock.now
        let deadline = start + .seconds(timeLimit)
        sink.reset()
        for i in 0..<count {
            if i & 1023 == 0, clock.now > deadline { break }
            try await send(payload)
        }
        let complete = await sink.wait(atLeast: count, until: deadline)
        let elapsed = seconds(clock.now - start)
        let got = sink.received
        if !complete { FileHandleLog.line("  (time bound hit: \(got) of \(count) messages received)") }
        return Double(got) / elapsed
    }

    func msgnetLeg(_ series: inout Series, client: MessageHost, peer: PeerID, sink: Arrivals) async throws {
        series.add(
            "message rate, 64 B (msg/s)",
            msgnet: try await rate(count: smallCount, size: 64, sink: sink) {
                try await client.send($0, to: peer, protocol: "/bench/sink/1.0.0")
            })
        series.add(
            "message rate, 1 KiB (msg/s)",
            msgnet: try await rate(count: largeCount, size: 1024, sink: sink) {
                try await client.send($0, to: peer, protocol: "/bench/sink/1.0.0")
            })
        let request = ByteBuffer(repeating: 0x33, count: 64)
        for n in [1, inFlight] {
            try await measureRequests(
                total: n == 1 ? requests : requests * 4, inFlight: n, deadline: .now + .seconds(timeLimit)
            ) {
                let reply = try await client.request(request, to: peer, protocol: "/bench/echo/1.0.0")
                guard reply.data.readableBytes == 64 else { throw BenchError("short reply") }
            }.add(to: &series, inFlight: n, raw: false)
        }
    }

    func rawLeg(
        _ series: inout Series, sender: RawFramedBaseline.Client, sink: Arrivals, requester: RawFramedBaseline.Client
    ) async throws {
        series.add(
            "message rate, 64 B (msg/s)",
            raw: try await rate(count: smallCount, size: 64, sink: sink) { await sender.send($0) })
        series.add(
            "message rate, 1 KiB (msg/s)",
            raw: try await rate(count: largeCount, size: 1024, sink: sink) { await sender.send($0) })
        let request = ByteBuffer(repeating: 0x33, count: 64)
        for n in [1, inFlight] {
            try await measureRequests(
                total: n == 1 ? requests : requests * 4, inFlight: n, deadline: .now + .seconds(timeLimit)
            ) {
                let reply = try await requester.request(request)
                guard reply.readableBytes == 64 else { throw BenchError("short reply") }
            }.add(to: &series, inFlight: n, raw: true)
        }
    }
}
