import ArgumentParser
import Logging
import MsgNetCore
import MsgNetHost
import MsgNetStreams
import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// `/msgnet/ping/1.0.0`: a request whose reply is its own payload. Every `listen` answers it, so
/// round trips can be measured on paths without libp2p's stream ping (UDP).
enum MessagePing {
    static let id = "/msgnet/ping/1.0.0"
    static let payloadSize = 32
}

struct ListenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "listen",
        abstract:
            "Run a node: prints each listen address (with /p2p/<id>) on its own line, serves identify, ping and /echo/1.0.0 (TCP) and /msgnet/ping/1.0.0 (every path) until SIGINT or SIGTERM.",
        discussion: """
            Listen addresses may be TCP (/ip4/…/tcp/…, /ip6/…/tcp/…) or UDP (/ip4/…/udp/…, /ip6/…/udp/…).
            With --print-protocol P, each message received on P is printed as one line
            "<from-peer-id> <protocol> <text>" (line breaks in the text become spaces); when the
            message is a request (msgnet request), it is answered with the same text (echo).
            With --print-path, the line also names the path the message came on:
            "<from-peer-id> <protocol> <stream|datagram> <text>".
            """
    )
    @OptionGroup var options: CommonOptions

    @Option(
        name: .long,
        help: "Address to listen on (repeatable), e.g. /ip4/127.0.0.1/tcp/0 or /ip4/127.0.0.1/udp/0.")
    var listen: [String] = ["/ip4/127.0.0.1/tcp/0"]

    @Option(
        name: .long,
        help:
            "Message protocol to print (repeatable): one line '<from-peer-id> <protocol> <text>' per message; requests are answered with the same text."
    )
    var printProtocol: [String] = []

    @Flag(
        name: .long,
        help: "With --print-protocol: also print the path each message came on (stream or datagram).")
    var printPath = false

    func run() async throws {
        let signals = SignalWaiter([SIGINT, SIGTERM])
        let printed = printProtocol
        let withPath = printPath
        do {
            try await withNode(
                options, listen: listen,
                configure: { node in
                    node.streams.streamHost.setStreamHandler(EchoProtocol.id) { stream in
                        try await EchoProtocol.serve(stream)
                    }
                    node.host.setMessageHandler(for: MessagePing.id) { message in
                        if message.canReply { try await message.reply(message.data) }
                    }
                    for protocolID in printed {
                        node.host.setMessageHandler(for: protocolID) { message in
                            let path = withPath ? " \(message.path.map { "\($0)" } ?? "unknown")" : ""
                            Output.standardOutput(
                                "\(message.from) \(message.protocol)\(path) \(lineText(message.data))\n")
                            if message.canReply { try await message.reply(message.data) }
                        }
                    }
                }
            ) { _, bound in
                for address in bound { Output.standardOutput("\(address)\n") }
                let signal = await signals.wait()
                Logger(label: "msgnet").info("shutting down on signal \(signal)")
            }
        } catch {
            throw fail(error)
        }
    }
}

/// Where a message goes: an address with `/p2p/<id>`, a protocol and the text.
struct MessageTarget: ParsableArguments {
    @Argument(help: "The peer's address (TCP or UDP), ending in /p2p/<peer id>.")
    var address: String

    @Option(name: .long, help: "The message protocol id, e.g. /chat/1.0.0.")
    var `protocol`: String

    @Argument(help: "The message text (several words are joined with spaces).")
    var text: [String]

    func validate() throws {
        if text.isEmpty { throw ValidationError("missing the message text") }
    }

    var payload: ByteBuffer { ByteBuffer(string: text.joined(separator: " ")) }

    /// Parses the address; it must name the peer.
    func target() throws -> Multiaddr {
        let address = try Multiaddr(self.address)
        guard address.peerID != nil else { throw ValidationError("the address must end in /p2p/<peer id>") }
        return address
    }
}

struct SendCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "send",
        abstract: "Connect to a peer and send it one message (reliable); exits 0 once sent."
    )
    @OptionGroup var options: CommonOptions
    @OptionGroup var message: MessageTarget

    func run() async throws {
        do {
            let target = try message.target()
            let protocolID = message.protocol
            let payload = message.payload
            try await withNode(options) { node, _ in
                let peer = try await node.host.network.connect(to: target)
                try await node.host.send(payload, to: peer, protocol: protocolID, mode: .reliable)
            }
        } catch {
            throw fail(error)
        }
    }
}

struct RequestCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "request",
        abstract: "Send a request to a peer and print the text of its reply."
    )
    @OptionGroup var options: CommonOptions
    @OptionGroup var message: MessageTarget

    @Option(name: .long, help: "Seconds to wait for the reply, connecting included.")
    var timeout: Double = 10

    func validate() throws {
        if !(timeout > 0) { throw ValidationError("--timeout must be positive") }
    }

    func run() async throws {
        do {
            let target = try message.target()
            let protocolID = message.protocol
            let payload = message.payload
            let limit = Duration.milliseconds(Int64(timeout * 1000))
            let seconds = timeout
            let reply = try await withNode(options) { node, _ in
                // --timeout bounds the whole exchange, connecting included.
                try await withDeadline(limit, "no reply within \(seconds) s", onTimeout: node.host.shutdown) {
                    let peer = try await node.host.network.connect(to: target)
                    return try await node.host.request(payload, to: peer, protocol: protocolID, timeout: limit)
                }
            }
            Output.standardOutput("\(String(buffer: reply.data))\n")
        } catch {
            throw fail(error)
        }
    }
}

struct PingCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ping",
        abstract:
            "Ping a peer and print round-trip times (/ipfs/ping/1.0.0 on TCP, /msgnet/ping/1.0.0 requests on UDP)."
    )
    @OptionGroup var options: CommonOptions
    @Argument(help: "The peer's address, ending in /p2p/<peer id>.")
    var address: String
    @Option(name: .long, help: "Number of pings.")
    var count: Int = 5

    func run() async throws {
        do {
            let target = try Multiaddr(address)
            let count = max(1, self.count)
            let rtts = try await withNode(options) { node, _ in
                if node.isDatagram(target) {
                    return try await Self.messagePing(node.host, target, count: count)
                }
                return try await node.streams.streamHost.ping(target, count: count)
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

    /// Round trips of `/msgnet/ping/1.0.0` requests (after connecting, which is not timed).
    static func messagePing(_ host: MessageHost, _ target: Multiaddr, count: Int) async throws -> [Duration] {
        let peer = try await host.network.connect(to: target)
        let clock = ContinuousClock()
        var rtts: [Duration] = []
        for _ in 0..<count {
            let payload = ByteBuffer(bytes: (0..<MessagePing.payloadSize).map { _ in UInt8.random(in: 0...255) })
            let start = clock.now
            let reply = try await host.request(payload, to: peer, protocol: MessagePing.id, timeout: .seconds(10))
            rtts.append(clock.now - start)
            guard reply.data == payload else {
                throw MessageError(.remoteError, "the ping reply from \(peer) differs from the request")
            }
        }
        return rtts
    }
}

struct IdentifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "identify", abstract: "Ask a peer who it is (/ipfs/id/1.0.0, over TCP or UDP).")
    @OptionGroup var options: CommonOptions
    @Argument(help: "The peer's address, ending in /p2p/<peer id>.")
    var address: String

    func run() async throws {
        do {
            let target = try Multiaddr(address)
            let info = try await withNode(options) { node, _ in
                if node.isDatagram(target) {
                    // Identify as a request/reply exchange over the datagram session.
                    let peer = try await node.host.network.connect(to: target)
                    let reply = try await node.host.request(
                        ByteBuffer(), to: peer, protocol: IdentifyProtocol.id, timeout: .seconds(10))
                    return try IdentifyProtocol.parse(reply.data, from: peer)
                }
                return try await node.streams.streamHost.identify(target)
            }
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

/// Runs `body`, failing with `.timedOut` after `limit`; then cancels `body` and runs `onTimeout`
/// (e.g. a host shutdown that ends a dial which does not observe cancellation).
func withDeadline<T: Sendable>(
    _ limit: Duration, _ what: String, onTimeout: @escaping @Sendable () async -> Void,
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: limit)
            return nil
        }
        let first = try await group.next()
        group.cancelAll()
        guard let first, let result = first else {
            await onTimeout()
            throw MessageError(.timedOut, what)
        }
        return result
    }
}
