import Foundation
import Logging
import MsgNetCore
import MsgNetHost
import MsgNetStreams
import MsgNetTestSupport
import MsgNetTransportPosix
import NIOCore
import NIOPosix
import Testing

/// The py-libp2p peer: env `MSGNET_INTEROP_PYTHON` (the virtualenv's python) and
/// `MSGNET_INTEROP_PEER` (peer.py). Without them these tests are skipped, unless
/// `MSGNET_REQUIRE_INTEROP=1`, in which case they run and fail with a clear message.
enum PyPeer {
    static let environment = ProcessInfo.processInfo.environment
    static var python: String? { environment["MSGNET_INTEROP_PYTHON"].flatMap { $0.isEmpty ? nil : $0 } }
    static var peer: String? { environment["MSGNET_INTEROP_PEER"].flatMap { $0.isEmpty ? nil : $0 } }
    static var enabled: Bool { (python != nil && peer != nil) || environment["MSGNET_REQUIRE_INTEROP"] == "1" }

    static func paths() throws -> (python: String, peer: String) {
        guard let python, let peer else {
            throw HarnessError(
                "MSGNET_REQUIRE_INTEROP=1 but MSGNET_INTEROP_PYTHON and/or MSGNET_INTEROP_PEER are not set")
        }
        for (variable, path) in [("MSGNET_INTEROP_PYTHON", python), ("MSGNET_INTEROP_PEER", peer)]
        where !FileManager.default.fileExists(atPath: path) {
            throw HarnessError("\(variable)=\(path) does not exist")
        }
        return (python, peer)
    }

    /// Runs `peer.py serve` (noise, mplex) for `body`, passing its address (with `/p2p`).
    static func withServer<R: Sendable>(_ body: (Multiaddr) async throws -> R) async throws -> R {
        let (python, peer) = try paths()
        return try await withChild(
            python,
            [peer, "serve", "--port", "0", "--security", "noise", "--muxer", "mplex", "--max-seconds", "180"],
            name: "peer.py serve"
        ) { server in
            let line = try await server.firstLine(timeout: .seconds(60))
            let address = try Multiaddr(line)
            guard address.peerID != nil else { throw HarnessError("peer.py serve printed \(line) without /p2p") }
            return try await body(address)
        }
    }

    /// Runs a `peer.py` client command against `address`; returns its `RESULT {json}` object.
    static func runClient(_ command: String, address: Multiaddr, extra: [String]) async throws -> [String: Any] {
        let (python, peer) = try paths()
        let output = try await runToCompletion(
            python,
            [peer, command, "\(address)", "--security", "noise", "--muxer", "mplex", "--fast-dial", "--timeout", "40"]
                + extra,
            name: "peer.py \(command)",
            timeout: .seconds(60)
        )
        guard output.succeeded else { throw HarnessError("peer.py \(command) failed: \(output.summary)") }
        guard let line = output.stdoutLines.last(where: { $0.hasPrefix("RESULT ") }) else {
            throw HarnessError("peer.py \(command) printed no RESULT line: \(output.summary)")
        }
        guard
            let object = try JSONSerialization.jsonObject(with: Data(line.dropFirst("RESULT ".count).utf8))
                as? [String: Any]
        else {
            throw HarnessError("peer.py \(command): RESULT is not a JSON object: \(line)")
        }
        return object
    }
}

func quietHost() -> MessageHost {
    let identity = PrivateKey.generate()
    return MessageHost(
        identity: identity,
        streamTransports: [TCPTransport(group: MultiThreadedEventLoopGroup.singleton)],
        logger: Logger(label: "interop", factory: { _ in SwiftLogNoOpLogHandler() })
    )
}

@Suite(
    "Message API interop with py-libp2p",
    .serialized,
    .enabled(if: PyPeer.enabled, "set MSGNET_INTEROP_PYTHON and MSGNET_INTEROP_PEER"),
    .timeLimit(.minutes(2))
)
struct MessageInteropTests {
    static let msgEcho = "/msg-echo/1.0.0"

    @Test("sends to py's /msg-echo/1.0.0 come back, each echoed, in order; requests too")
    func sendToPy() async throws {
        try await PyPeer.withServer { address in
            let host = quietHost()
            let py = try #require(address.peerID)
            host.peerstore.addAddresses([address], for: py)
            let echoes = host.messages(for: Self.msgEcho)
            try await running([host]) {
                let payloads = (0..<100).map { i in
                    ByteBuffer(bytes: patternBytes(count: 1 + i * 37, seed: UInt64(i + 1)))
                }
                for p in payloads { try await host.send(p, to: py, protocol: Self.msgEcho) }
                var it = echoes.makeAsyncIterator()
                for p in payloads {
                    let echo = try #require(await it.next())
                    #expect(echo.data == p)
                    #expect(echo.from == py)
                }
                // Request/reply: one stream per request, the echo is the reply.
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for i in 0..<8 {
                        group.addTask {
                            let body = ByteBuffer(bytes: patternBytes(count: 1000, seed: UInt64(100 + i)))
                            let reply = try await host.request(
                                body, to: py, protocol: Self.msgEcho, timeout: .seconds(20))
                            #expect(reply.data == body)
                        }
                    }
                    try await group.waitForAll()
                }
            }
        }
    }

    @Test("py-libp2p sends to a MsgNet handler and gets each message back (msg-rate)")
    func pySendsToUs() async throws {
        let host = quietHost()
        let handled = Counter()
        host.setMessageHandler(for: Self.msgEcho) { message in
            handled.add()
            try await message.reply(message.data)
        }
        try await running([host]) {
            let address = try await host.network.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
            let result = try await PyPeer.runClient(
                "msg-rate", address: address, extra: ["--count", "200", "--warmup", "10", "--size", "64"])
            let sequential = try #require(result["sequential"] as? [String: Any])
            #expect((sequential["msgs_per_s"] as? Double ?? 0) > 0)
            let pipelined = try #require(result["pipelined"] as? [String: Any])
            #expect(pipelined["n"] as? Int == 200)
            #expect(handled.value == 410)
        }
    }

    @Test("identify through the generic request call, decoded")
    func identifyByRequest() async throws {
        try await PyPeer.withServer { address in
            let host = quietHost()
            let py = try #require(address.peerID)
            host.peerstore.addAddresses([address], for: py)
            try await running([host]) {
                let reply = try await host.request(
                    ByteBuffer(), to: py, protocol: IdentifyProtocol.id, timeout: .seconds(20))
                let info = try IdentifyProtocol.parse(reply.data, from: py)
                #expect(info.agentVersion?.contains("py-libp2p") == true)
                #expect(info.protocols.contains(Self.msgEcho))
                #expect(info.listenAddresses.contains(address.withoutPeerID()))
            }
        }
    }
}
