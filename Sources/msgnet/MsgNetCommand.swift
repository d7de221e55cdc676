import ArgumentParser
import Dispatch
import Logging
import MsgNetCore
import MsgNetHost
import MsgNetSecurity
import MsgNetStreams
import MsgNetTransportPosix
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

@main
struct MsgNetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "msgnet",
        abstract: "A MsgNet / libp2p node: identities, listening, messages, requests, ping and identify.",
        subcommands: [
            IDCommand.self, ListenCommand.self, SendCommand.self, RequestCommand.self, PingCommand.self,
            IdentifyCommand.self,
        ]
    )
}

/// Options shared by every command.
struct CommonOptions: ParsableArguments {
    @Option(name: .long, help: "Identity key file (libp2p protobuf PrivateKey); created if missing.")
    var key: String?

    @Option(
        name: .long,
        help: "Security protocol(s) on TCP, comma separated: noise, plaintext. UDP always uses Noise.")
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

/// A running node: the message host and its stream path (for libp2p stream protocols such as
/// ping, identify and echo).
struct Node: Sendable {
    let host: MessageHost
    let streams: StreamMessageTransport

    /// Whether `address` is served by the datagram (UDP) path.
    func isDatagram(_ address: Multiaddr) -> Bool {
        let bare = address.withoutPeerID()
        return host.transports.first { $0.canHandle(bare) }?.path == .datagram
    }
}

/// Builds a message host with the TCP stream path (and the UDP datagram path), runs `body`
/// with it started, then shuts it down.
func withNode<T: Sendable>(
    _ options: CommonOptions,
    listen: [String] = [],
    configure: @Sendable (Node) -> Void = { _ in },
    _ body: @Sendable (Node, [Multiaddr]) async throws -> T
) async throws -> T {
    options.bootstrapLogging()
    let identity = try options.identity()
    let security = try options.securityProtocols(identity: identity)
    let addresses = try listen.map { try Multiaddr($0) }
    let group = MultiThreadedEventLoopGroup.singleton
    let peerstore = Peerstore()
    let streams = StreamMessageTransport(
        identity: identity,
        transports: [TCPTransport(group: group)],
        security: security,
        peerstore: peerstore
    )
    let datagrams = DatagramMessageTransport(
        identity: identity, datagrams: UDPTransport(group: group), eventLoop: group.next())
    let transports: [any MessageTransport] = [streams, datagrams]
    let host = MessageHost(
        identity: identity, transports: transports, peerstore: peerstore,
        configuration: MessageHostConfiguration())
    let node = Node(host: host, streams: streams)
    configure(node)
    return try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await host.run() }
        defer { tasks.cancelAll() }
        do {
            let bound = try await host.network.listen(on: addresses)
            let result = try await body(node, bound)
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
    let text = describe(error).split(separator: "\n").joined(separator: " ")
    Output.standardError("msgnet: error: \(text)\n")
    return ExitCode(1)
}

/// A human-readable one-line description; message errors read as "protocol not supported: …".
func describe(_ error: any Error) -> String {
    guard let error = error as? MessageError else { return "\(error)" }
    let phrase: String
    switch error.code {
    case .dialFailed: phrase = "dial failed"
    case .timedOut: phrase = "timed out"
    case .connectionClosed: phrase = "connection closed"
    case .protocolNotSupported: phrase = "protocol not supported"
    case .messageTooLarge: phrase = "message too large"
    case .cancelled: phrase = "cancelled"
    case .remoteError: phrase = "remote error"
    case .limitExceeded: phrase = "limit exceeded"
    case .listenFailed: phrase = "listen failed"
    }
    return error.message.hasPrefix(phrase) ? error.message : "\(phrase): \(error.message)"
}

/// Line output shared by concurrent handlers: each line is written whole and flushed at once
/// (other tools wait for listen addresses and message lines).
enum Output {
    private static let lock = Mutex(())

    static func standardOutput(_ line: String) {
        lock.withLock { _ in writeAll(1, line) }
    }

    static func standardError(_ line: String) {
        lock.withLock { _ in writeAll(2, line) }
    }

    private static func writeAll(_ fd: Int32, _ line: String) {
        fflush(nil)
        var bytes = Array(line.utf8)[...]
        while !bytes.isEmpty {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n <= 0 { return }
            bytes = bytes.dropFirst(n)
        }
    }
}

/// A message payload as one line of text (line breaks become spaces).
func lineText(_ data: ByteBuffer) -> String {
    String(String(buffer: data).map { $0.isNewline ? " " : $0 })
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
