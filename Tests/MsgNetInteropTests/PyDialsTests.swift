import Foundation
import MsgNetCore
import MsgNetStreams
import NIOCore
import Testing

/// `/echo/1.0.0` as peer.py expects it: echo bytes until EOF, then close (the host closes our
/// side when the handler returns).
@Sendable func echoHandler(_ stream: NegotiatedStream) async throws {
    while let chunk = try await stream.read() {
        try await stream.write(chunk)
    }
}

/// `/msg-echo/1.0.0`: echo each `uvarint(length) || payload` message until EOF.
@Sendable func messageEchoHandler(_ stream: NegotiatedStream) async throws {
    while let message = try await stream.readLengthPrefixed(maxSize: 1 << 20) {
        try await stream.writeLengthPrefixed(message)
    }
}

/// A listening MsgNet host serving echo and msg-echo for `body`.
func withListeningHost<R: Sendable>(
    _ security: SecurityKind,
    _ body: @Sendable (StreamHost, Multiaddr) async throws -> R
) async throws -> R {
    try await withListeningHost(offering: [security], body)
}

/// A listening MsgNet host offering `securities`, serving echo and msg-echo for `body`.
func withListeningHost<R: Sendable>(
    offering securities: [SecurityKind],
    _ body: @Sendable (StreamHost, Multiaddr) async throws -> R
) async throws -> R {
    let host = makeHost(offering: securities)
    host.setStreamHandler(PyProtocols.echo, handler: echoHandler)
    host.setStreamHandler(PyProtocols.msgEcho, handler: messageEchoHandler)
    return try await running(host) {
        let address = try await host.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        return try await body(host, address)
    }
}

extension InteropTests {
    @Suite(
        "py-libp2p dials MsgNet",
        .enabled(if: Interop.enabled, "set MSGNET_INTEROP_PYTHON and MSGNET_INTEROP_PEER (or run make test)"),
        .timeLimit(.minutes(2))
    )
    struct PyDials {
        /// What every client RESULT must say about the connection.
        func checkConnection(_ result: [String: Any], _ security: SecurityKind) {
            #expect(result["negotiated_security"] as? String == security.rawValue, "\(result)")
            #expect(result["negotiated_muxer"] as? String == "mplex", "\(result)")
        }

        @Test("peer.py ping --count 20", arguments: SecurityKind.allCases)
        func ping(security: SecurityKind) async throws {
            try await withListeningHost(security) { _, address in
                let result = try await Interop.runPyClient(
                    "ping", address: address, security: security.rawValue, extra: ["--count", "20", "--warmup", "5"])
                #expect(result["test"] as? String == "ping")
                #expect(result["n"] as? Int == 20, "\(result)")
                #expect((result["min_us"] as? Double ?? 0) > 0, "\(result)")
                checkConnection(result, security)
            }
        }

        @Test("peer.py identify", arguments: SecurityKind.allCases)
        func identify(security: SecurityKind) async throws {
            try await withListeningHost(security) { host, address in
                let result = try await Interop.runPyClient("identify", address: address, security: security.rawValue)
                #expect(result["pubkey_matches_peer_id"] as? Bool == true, "\(result)")
                #expect(result["agent_version"] as? String == host.configuration.agentVersion, "\(result)")
                #expect(result["protocol_version"] as? String == host.configuration.protocolVersion, "\(result)")
                let protocols = result["protocols"] as? [String] ?? []
                for id in [PingProtocol.id, IdentifyProtocol.id, PyProtocols.echo, PyProtocols.msgEcho] {
                    #expect(protocols.contains(id), "\(id) missing from \(protocols)")
                }
                let listen = result["listen_addrs"] as? [String] ?? []
                #expect(listen.contains("\(address.withoutPeerID())"), "\(address) missing from \(listen)")
                // We saw py connect from a loopback address and told it so.
                let observed = result["observed_addr"] as? String ?? ""
                #expect(observed.hasPrefix("/ip4/127.0.0.1/tcp/"), "observed \(observed.debugDescription)")
                checkConnection(result, security)
            }
        }

        @Test("peer.py echo-throughput 1 MiB, verified", arguments: SecurityKind.allCases)
        func echo(security: SecurityKind) async throws {
            try await withListeningHost(security) { _, address in
                let result = try await Interop.runPyClient(
                    "echo-throughput", address: address, security: security.rawValue,
                    extra: ["--bytes", "1048576", "--verify", "1", "--io", "alternate", "--window", "131072"])
                #expect(result["bytes_sent"] as? Int == 1_048_576, "\(result)")
                #expect(result["bytes_received"] as? Int == 1_048_576, "\(result)")
                #expect(result["verified"] as? Bool == true, "\(result)")
                checkConnection(result, security)
            }
        }

        @Test("peer.py msg-rate on /msg-echo/1.0.0", arguments: SecurityKind.allCases)
        func messageRate(security: SecurityKind) async throws {
            try await withListeningHost(security) { _, address in
                let result = try await Interop.runPyClient(
                    "msg-rate", address: address, security: security.rawValue,
                    extra: ["--count", "200", "--size", "300", "--warmup", "5", "--mode", "both"])
                let sequential = result["sequential"] as? [String: Any]
                let pipelined = result["pipelined"] as? [String: Any]
                #expect(sequential?["n"] as? Int == 200, "\(result)")
                #expect(pipelined?["n"] as? Int == 200, "\(result)")
                checkConnection(result, security)
            }
        }
    }
}
