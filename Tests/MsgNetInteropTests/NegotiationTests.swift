import Foundation
import MsgNetCore
import MsgNetStreams
import Testing

extension InteropTests {
    /// multistream-select fallbacks across implementations: a proposal the other side refuses
    /// (`na`) is followed by the next one, for security and for the muxer.
    @Suite(
        "negotiation fallbacks with py-libp2p",
        .enabled(if: Interop.enabled, "set MSGNET_INTEROP_PYTHON and MSGNET_INTEROP_PEER (or run make test)"),
        .timeLimit(.minutes(2))
    )
    struct Negotiation {
        @Test("MsgNet offers noise then plaintext to a plaintext-only py server")
        func dialerFallsBackToPlaintext() async throws {
            try await Interop.withPyServer(security: "plaintext") { address, _ in
                let host = makeHost(offering: [.noise, .plaintext])
                try await running(host) {
                    let stream = try await host.newStream(to: address, protocols: [PyProtocols.echo])
                    #expect(stream.connection.securityProtocol == SecurityKind.plaintext.protocolID)
                    try await stream.write(Array("hello".utf8))
                    try await stream.closeWrite()
                    let echoed = try await stream.readToEnd(maxBytes: 1024)
                    #expect(Array(echoed.readableBytesView) == Array("hello".utf8))
                }
            }
        }

        @Test("py offers noise then plaintext to a plaintext-only MsgNet listener")
        func listenerRefusesNoise() async throws {
            try await withListeningHost(offering: [.plaintext]) { _, address in
                let result = try await Interop.runPyClient(
                    "ping", address: address, security: "noise,plaintext", extra: ["--count", "3", "--warmup", "0"])
                #expect(result["negotiated_security"] as? String == "plaintext", "\(result)")
                #expect(result["n"] as? Int == 3, "\(result)")
            }
        }

        @Test("py offers plaintext first to a MsgNet listener that has both")
        func listenerTakesFirstSupported() async throws {
            try await withListeningHost(offering: [.noise, .plaintext]) { _, address in
                let result = try await Interop.runPyClient(
                    "ping", address: address, security: "plaintext,noise", extra: ["--count", "3", "--warmup", "0"])
                #expect(result["negotiated_security"] as? String == "plaintext", "\(result)")
                #expect(result["n"] as? Int == 3, "\(result)")
            }
        }

        @Test("py offers yamux then mplex: MsgNet refuses yamux and runs mplex")
        func listenerRefusesYamux() async throws {
            try await withListeningHost(.noise) { _, address in
                let result = try await Interop.runPyClient(
                    "echo-throughput", address: address, security: "noise", muxer: "yamux,mplex",
                    extra: ["--bytes", "262144", "--verify", "1", "--io", "alternate", "--window", "131072"])
                #expect(result["negotiated_muxer"] as? String == "mplex", "\(result)")
                #expect(result["verified"] as? Bool == true, "\(result)")
            }
        }

        @Test("MsgNet dials a py server that prefers yamux: mplex is agreed")
        func dialerProposesMplexToYamuxServer() async throws {
            try await Interop.withPyServer(security: "noise", muxer: "yamux,mplex") { address, _ in
                let host = makeHost(.noise)
                try await running(host) {
                    let rtts = try await host.ping(address, count: 3)
                    #expect(rtts.count == 3)
                    let info = try await host.identify(address)
                    #expect(info.peer == address.peerID)
                }
            }
        }

        @Test("py offers only yamux: the connection fails on both sides, MsgNet keeps serving")
        func yamuxOnlyIsRefused() async throws {
            try await withListeningHost(.noise) { host, address in
                let (python, peer) = try Interop.paths()
                let output = try await runToCompletion(
                    python,
                    [
                        peer, "ping", "\(address)", "--count", "1", "--warmup", "0", "--security", "noise",
                        "--muxer", "yamux", "--fast-dial", "--timeout", "20",
                    ],
                    name: "peer.py ping (yamux only)",
                    timeout: .seconds(40)
                )
                #expect(output.finished && !output.succeeded, "\(output.summary)")
                #expect(!output.stdoutLines.contains { $0.hasPrefix("RESULT ") }, "\(output.summary)")
                #expect(host.connectedPeers.isEmpty)
                // The listener still serves a well-behaved client.
                let result = try await Interop.runPyClient(
                    "ping", address: address, security: "noise", extra: ["--count", "2", "--warmup", "0"])
                #expect(result["n"] as? Int == 2, "\(result)")
            }
        }
    }
}
