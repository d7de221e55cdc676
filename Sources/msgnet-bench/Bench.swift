import ArgumentParser
import Logging
import MsgNetCore
import MsgNetSecurity
import MsgNetStreams
import MsgNetTransportPosix
import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The benchmark tool. Every MsgNet figure is measured side by side with a raw-socket baseline
/// in the same run and reported as a ratio; each measurement runs `--runs` times and the median
/// is reported. Build it in release mode (`make bench`).
@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "msgnet-bench",
        abstract: "MsgNet benchmarks against raw-socket baselines.",
        subcommands: [
            AllBench.self, StreamsBench.self, MessagesBench.self, DatagramsBench.self, AEADBench.self,
            MachinesBench.self,
        ],
        defaultSubcommand: AllBench.self
    )
}

/// `--leg` of the comparing commands: which sides they measure.
enum Leg: String, ExpressibleByArgument, CaseIterable {
    case both, raw, msgnet

    static let help: ArgumentHelp =
        "Sides to measure: both (every quoted figure), or raw or msgnet alone (to profile one side; no ratios)."
}

/// Where the requesting tasks of the request/reply measurements run (`datagrams --requester`).
enum Requester: String, ExpressibleByArgument, CaseIterable {
    /// Swift's global executor: a request hops to the client's event loop, the reply back.
    case pool
    /// The client's event loop, as the tasks' preferred executor: no hop either way.
    case loop
}

/// Where each side of every benchmark runs: the server side (raw baseline and MsgNet alike) on
/// one event loop, the client side on the other, as two processes would be. Left to round-robin
/// placement, a raw client could share a thread with its server (a round trip without a thread
/// switch) while MsgNet's two hosts land on two threads, or the other way round, and the ratio
/// would measure the placement. Callers (the measuring tasks) run on Swift's global executor on
/// both sides.
struct BenchLoops {
    let server: any EventLoop
    let client: any EventLoop

    init() {
        let loops = Array(MultiThreadedEventLoopGroup.singleton.makeIterator())
        server = loops[0]
        client = loops[loops.count > 1 ? 1 : 0]
    }
}

/// Every comparison with its default options (the commands BENCHMARKS.md quotes), one after
/// another: `streams`, `messages`, `datagrams`, then `aead`.
struct AllBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "all",
        abstract: "Runs streams, messages, datagrams and aead, each with its default options."
    )

    func run() async throws {
        let streams = try StreamsBench.parse([])
        try await streams.run()
        let messages = try MessagesBench.parse([])
        try await messages.run()
        let datagrams = try DatagramsBench.parse([])
        try await datagrams.run()
        let aead = try AEADBench.parse([])
        try await aead.run()
    }
}

struct StreamsBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "streams",
        abstract: "Stream path (TCP): echo throughput and ping round trip, MsgNet vs raw TCP."
    )

    @Option(help: "Repetitions of each measurement (the median is reported).")
    var runs = 5
    @Option(help: "Bytes echoed per throughput run.")
    var bytes = 128 << 20
    @Option(help: "Write size for the throughput runs.")
    var chunk = 128 << 10
    @Option(help: "Round trips per ping run.")
    var pings = 2000
    @Option(help: "Security for the MsgNet side: noise or plaintext.")
    var security = "noise"

    func run() async throws {
        bootstrapBenchLogging()
        let loops = BenchLoops()
        var rawThroughput: [Double] = []
        var msgThroughput: [Double] = []
        var rawP50: [Double] = []
        var rawP99: [Double] = []
        var msgP50: [Double] = []
        var msgP99: [Double] = []

        let (port, closeRaw) = try await RawTCPBaseline.startEchoServer(group: loops.server)
        let server = makeHost(group: loops.server)
        let client = makeHost(group: loops.client)
        server.setStreamHandler("/echo/1.0.0") { stream in
            while let chunk = try await stream.read() { try await stream.write(chunk) }
        }
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { await server.run() }
            tasks.addTask { await client.run() }
            let address = try await server.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
            try await client.connect(to: address)
            for run in 1...runs {
                // Alternate the order so neither side always runs on a warmer machine.
                let first = run % 2 == 0
                for leg in 0..<2 {
                    if (leg == 0) == first {
                        rawThroughput.append(try await rawEcho(port: port, group: loops.client))
                        let (p50, p99) = try await rawPing(port: port, group: loops.client)
                        rawP50.append(p50)
                        rawP99.append(p99)
                    } else {
                        msgThroughput.append(try await msgnetEcho(client: client, server: server.peerID))
                        let (p50, p99) = try await msgnetPing(client: client, server: server.peerID)
                        msgP50.append(p50)
                        msgP99.append(p99)
                    }
                }
                FileHandleLog.line(
                    "run \(run): raw \(fmt(rawThroughput.last!)) MiB/s, msgnet \(fmt(msgThroughput.last!)) MiB/s; "
                        + "ping p50 raw \(fmt(rawP50.last!)) µs, msgnet \(fmt(msgP50.last!)) µs")
            }
            await client.shutdown()
            await server.shutdown()
            await closeRaw()
            try await tasks.waitForAll()
        }

        let label = "\(security)+mplex"
        print("")
        print(
            "msgnet-bench streams --runs \(runs) --bytes \(bytes) --chunk \(chunk) --pings \(pings) --security \(security)"
        )
        print("medians of \(runs) runs; ratio = MsgNet / raw TCP")
        print("")
        print("| measure | raw TCP | MsgNet \(label) | ratio |")
        print("|---|---|---|---|")
        row("echo throughput, one stream (MiB/s)", median(rawThroughput), median(msgThroughput))
        row("ping round trip p50 (µs)", median(rawP50), median(msgP50))
        row("ping round trip p99 (µs)", median(rawP99), median(msgP99))
    }

    func makeHost(group: any EventLoopGroup) -> StreamHost {
        let identity = PrivateKey.generate()
        let sec: any SecurityProtocol =
            security == "plaintext" ? PlaintextSecurity(identity: identity) : NoiseSecurity(identity: identity)
        var config = StreamHostConfiguration()
        config.identifyOnConnect = false
        return StreamHost(
            identity: identity, transports: [TCPTransport(group: group)], security: [sec], configuration: config)
    }

    // MARK: MsgNet

    func msgnetEcho(client: StreamHost, server: PeerID) async throws -> Double {
        let stream = try await client.newStream(to: server, protocols: ["/echo/1.0.0"])
        let total = bytes
        let block = ByteBuffer(repeating: 0x5A, count: chunk)
        let clock = ContinuousClock()
        let start = clock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                var sent = 0
                while sent < total {
                    let n = min(block.readableBytes, total - sent)
                    try await stream.write(block.getSlice(at: block.readerIndex, length: n)!)
                    sent += n
                }
                try await stream.closeWrite()
            }
            var got = 0
            while got < total, let chunk = try await stream.read() { got += chunk.readableBytes }
            guard got == total else { throw BenchError("echo returned \(got) of \(total) bytes") }
            try await group.waitForAll()
        }
        return mibPerSecond(total, clock.now - start)
    }

    func msgnetPing(client: StreamHost, server: PeerID) async throws -> (Double, Double) {
        let rtts = try await client.ping(server, count: pings)
        return percentiles(rtts)
    }

    // MARK: raw TCP

    func rawEcho(port: Int, group: any EventLoopGroup) async throws -> Double {
        let connection = try await RawTCPBaseline.connect(port: port, group: group)
        let total = bytes
        let block = ByteBuffer(repeating: 0x5A, count: chunk)
        let clock = ContinuousClock()
        let start = clock.now
        try await connection.run { inbound, outbound in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    var sent = 0
                    while sent < total {
                        let n = min(block.readableBytes, total - sent)
                        try await outbound.write(block.getSlice(at: block.readerIndex, length: n)!)
                        sent += n
                    }
                }
                var got = 0
                while got < total, let chunk = try await inbound.next() { got += chunk.readableBytes }
                guard got == total else { throw BenchError("raw echo returned \(got) of \(total) bytes") }
                try await group.waitForAll()
            }
        }
        return mibPerSecond(total, clock.now - start)
    }

    func rawPing(port: Int, group: any EventLoopGroup) async throws -> (Double, Double) {
        let connection = try await RawTCPBaseline.connect(port: port, group: group)
        let count = pings
        let rtts = try await connection.run { inbound, outbound -> [Duration] in
            var rtts: [Duration] = []
            rtts.reserveCapacity(count)
            let clock = ContinuousClock()
            var rng = SystemRandomNumberGenerator()
            for _ in 0..<count {
                var payload = ByteBuffer()
                for _ in 0..<4 { payload.writeInteger(rng.next() as UInt64) }
                let start = clock.now
                try await outbound.write(payload)
                var got = ByteBuffer()
                while got.readableBytes < 32 {
                    guard var chunk = try await inbound.next() else { throw BenchError("raw ping: EOF") }
                    got.writeBuffer(&chunk)
                }
                rtts.append(clock.now - start)
                guard got == payload else { throw BenchError("raw ping: mismatch") }
            }
            return rtts
        }
        return percentiles(rtts)
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

enum FileHandleLog {
    static func line(_ s: String) {
        var err = StandardError()
        print(s, to: &err)
    }
    struct StandardError: TextOutputStream {
        mutating func write(_ string: String) {
            var bytes = Array(string.utf8)[...]
            while !bytes.isEmpty {
                let n = bytes.withUnsafeBytes { Glibc.write(2, $0.baseAddress, $0.count) }
                if n <= 0 { return }
                bytes = bytes.dropFirst(n)
            }
        }
    }
}

func seconds(_ d: Duration) -> Double {
    Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}

func mibPerSecond(_ bytes: Int, _ d: Duration) -> Double {
    Double(bytes) / 1_048_576 / seconds(d)
}

func percentiles(_ rtts: [Duration]) -> (Double, Double) {
    let us = rtts.map { seconds($0) * 1e6 }.sorted()
    func p(_ q: Double) -> Double { us[min(us.count - 1, Int((Double(us.count - 1) * q).rounded()))] }
    return (p(0.5), p(0.99))
}

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

func fmt(_ x: Double) -> String {
    if x.isNaN { return "–" }
    if abs(x) >= 1000 { return "\(Int(x.rounded()))" }
    let r = (x * 10).rounded() / 10
    return "\(r)"
}

func row(_ name: String, _ raw: Double, _ msgnet: Double) {
    guard raw != 0, !raw.isNaN, !msgnet.isNaN else {
        print("| \(name) | \(fmt(raw)) | \(fmt(msgnet)) | – |")
        return
    }
    let ratio = ((msgnet / raw) * 100).rounded() / 100
    print("| \(name) | \(fmt(raw)) | \(fmt(msgnet)) | \(ratio) |")
}
