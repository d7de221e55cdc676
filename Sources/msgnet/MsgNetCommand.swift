import ArgumentParser
import Dispatch
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

@main
struct MsgNetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "msgnet",
        abstract: "A MsgNet / libp2p node: identities, listening, ping and identify.",
        subcommands: [IDCommand.self, ListenCommand.self, PingCommand.self, IdentifyCommand.self]
    )
}

/// Options shared by every command.
struct CommonOptions: ParsableArguments {
    @Option(name: .long, help: "Identity key file (libp2p protobuf PrivateKey); created if missing.")
    var key: String?

    @Option(name: .long, help: "Security protocol(s), comma separated: noise, plaintext.")
    var security: String = "noise"

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel: String = "warning"

    func bootstrapLogging() {
        let level = Logger.Level(rawValue: logLevel) ?? .warning
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }

    func identity() throws -> PrivateKey {
        guard let key else { return .generate() }
        return try KeyFile.loadOrCreate(path: key)
    }

    func securityProtocols(identity: PrivateKey) throws -> [any SecurityProtocol] {
        try security.split(separator: ",").map { name -> any SecurityProtocol in
            switch String(name.filter { !$0.isWhitespace }) {
            case "noise": return NoiseSecurity(identity: identity)
            case "plaintext": return PlaintextSecurity(identity: identity)
            default: throw ValidationError("unknown security protocol '\(name)' (noise, plaintext)")
            }
        }
    }
}

/// Runs `body` with a started host, then shuts it down; errors become one line on stderr and
/// exit status 1.
func withHost<T: Sendable>(
    _ options: CommonOptions,
    listen: [String] = [],
    configure: @Sendable (StreamHost) -> Void = { _ in },
    _ body: @Sendable (StreamHost, [Multiaddr]) async throws -> T
) async throws -> T {
    options.bootstrapLogging()
    let identity = try options.identity()
    let security = try options.securityProtocols(identity: identity)
    let group = MultiThreadedEventLoopGroup.singleton
    let host = StreamHost(
        identity: identity,
        transports: [TCPTransport(group: group)],
        security: security
    )
    configure(host)
    return try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { await host.run() }
        defer { tasks.cancelAll() }
        do {
            var bound: [Multiaddr] = []
            for text in listen {
                bound.append(try await host.listen(on: try Multiaddr(text)))
            }
            let result = try await body(host, bound)
            await host.shutdown()
            try await tasks.waitForAll()
            return result
        } catch {
            await host.shutdown()
            throw error
        }
    }
}

/// Prints `error` as one line and exits with status 1.
func fail(_ error: any Error) -> ExitCode {
    let text = "\(error)".split(separator: "\n").joined(separator: " ")
    FileHandleOutput.standardError("msgnet: error: \(text)\n")
    return ExitCode(1)
}

enum FileHandleOutput {
    /// Prints `line` to stdout and flushes at once (other tools wait for listen addresses).
    static func standardOutput(_ line: String) {
        print(line, terminator: "")
        fflush(nil)
    }
    static func standardError(_ line: String) {
        fflush(nil)
        var bytes = Array(line.utf8)[...]
        while !bytes.isEmpty {
            let n = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
            if n <= 0 { return }
            bytes = bytes.dropFirst(n)
        }
    }
}

struct IDCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "id", abstract: "Create or load an identity and print its peer id.")
    @OptionGroup var options: CommonOptions

    func run() async throws {
        do {
            print(try options.identity().peerID)
        } catch {
            throw fail(error)
        }
    }
}

struct ListenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "listen",
        abstract:
            "Run a node: prints each listen address (with /p2p/<id>) on its own line, serves identify, ping and /echo/1.0.0 until SIGINT or SIGTERM."
    )
    @OptionGroup var options: CommonOptions

    @Option(name: .long, help: "Address to listen on (repeatable), e.g. /ip4/127.0.0.1/tcp/0.")
    var listen: [String] = ["/ip4/127.0.0.1/tcp/0"]

    func run() async throws {
        let signals = SignalWaiter([SIGINT, SIGTERM])
        do {
            try await withHost(
                options, listen: listen,
                configure: { host in host.setStreamHandler(EchoProtocol.id, handler: EchoProtocol.serve) }
            ) { _, bound in
                for address in bound { FileHandleOutput.standardOutput("\(address)\n") }
                let signal = await signals.wait()
                Logger(label: "msgnet").info("shutting down on signal \(signal)")
            }
        } catch {
            throw fail(error)
        }
    }
}

struct PingCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ping", abstract: "Ping a peer (/ipfs/ping/1.0.0) and print round-trip times.")
    @OptionGroup var options: CommonOptions
    @Argument(help: "The peer's address, ending in /p2p/<peer id>.")
    var address: String
    @Option(name: .long, help: "Number of pings.")
    var count: Int = 5

    func run() async throws {
        do {
            let target = try Multiaddr(address)
            let count = max(1, self.count)
            let rtts = try await withHost(options) { host, _ in
                try await host.ping(target, count: count)
            }
            let ms = rtts.map { Double($0.components.attoseconds) / 1e15 + Double($0.components.seconds) * 1e3 }
            for (i, v) in ms.enumerated() {
                print("ping \(i + 1): time=\(format(v)) ms")
            }
            let avg = ms.reduce(0, +) / Double(ms.count)
            print("\(ms.count) pings: min/avg/max = \(format(ms.min()!))/\(format(avg))/\(format(ms.max()!)) ms")
        } catch {
            throw fail(error)
        }
    }
}

struct IdentifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "identify", abstract: "Ask a peer who it is (/ipfs/id/1.0.0).")
    @OptionGroup var options: CommonOptions
    @Argument(help: "The peer's address, ending in /p2p/<peer id>.")
    var address: String

    func run() async throws {
        do {
            let target = try Multiaddr(address)
            let info = try await withHost(options) { host, _ in try await host.identify(target) }
            print("peer id: \(info.peer)")
            print("agent version: \(info.agentVersion ?? "")")
            print("protocol version: \(info.protocolVersion ?? "")")
            print("protocols: \(info.protocols.joined(separator: " "))")
            print("listen addresses: \(info.listenAddresses.map(\.description).joined(separator: " "))")
            if let observed = info.observedAddress { print("observed address: \(observed)") }
        } catch {
            throw fail(error)
        }
    }
}

func format(_ ms: Double) -> String {
    let scaled = (ms * 1000).rounded() / 1000
    return "\(scaled)"
}

/// `/echo/1.0.0`: echoes bytes until the remote closes its side, then closes ours.
enum EchoProtocol {
    static let id = "/echo/1.0.0"

    @Sendable static func serve(_ stream: NegotiatedStream) async throws {
        while let chunk = try await stream.read() {
            try await stream.write(chunk)
        }
    }
}

/// Waits for one of a set of signals, without a detached task.
/// `@unchecked`: `sources` is written once in `init` and only kept alive afterwards.
final class SignalWaiter: @unchecked Sendable {
    private let sources: [any DispatchSourceSignal]
    private let stream: AsyncStream<Int32>

    init(_ signals: [Int32]) {
        let (stream, continuation) = AsyncStream.makeStream(of: Int32.self)
        self.stream = stream
        sources = signals.map { sig in
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { continuation.yield(sig) }
            source.resume()
            return source
        }
    }

    func wait() async -> Int32 {
        for await sig in stream { return sig }
        return 0
    }
}
