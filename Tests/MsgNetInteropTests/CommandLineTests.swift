import Foundation
import MsgNetCore
import NIOCore
import NIOPosix
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The `msgnet` executable: env `MSGNET_BIN`, else `.build/debug/msgnet` of this checkout
/// (built by `swift build --build-tests`).
enum MsgNetBinary {
    static var path: String {
        if let bin = ProcessInfo.processInfo.environment["MSGNET_BIN"], !bin.isEmpty { return bin }
        let root = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent()  // MsgNetInteropTests
            .deletingLastPathComponent()  // Tests
            .deletingLastPathComponent()  // repository root
        return root.appendingPathComponent(".build/debug/msgnet").path
    }

    /// The path, after checking that it exists.
    static func require() throws -> String {
        let path = self.path
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw HarnessError(
                "msgnet executable not found at \(path): run `swift build --build-tests` or set MSGNET_BIN")
        }
        return path
    }

    /// Runs `msgnet arguments…` to completion (bounded) and returns its output.
    static func run(_ arguments: [String], timeout: Duration = .seconds(30)) async throws -> ChildOutput {
        try await runToCompletion(try require(), arguments, name: "msgnet \(arguments.first ?? "")", timeout: timeout)
    }

    /// Runs `msgnet listen` for `body`, passing the one address it prints.
    static func withListener<R: Sendable>(
        _ extra: [String] = [],
        _ body: (Multiaddr, ChildProcess) async throws -> R
    ) async throws -> R {
        try await withChild(
            try require(), ["listen", "--listen", "/ip4/127.0.0.1/tcp/0"] + extra, name: "msgnet listen"
        ) { listener in
            let line = try await listener.firstLine(timeout: .seconds(30))
            let address: Multiaddr
            do {
                address = try Multiaddr(line)
            } catch {
                throw HarnessError("msgnet listen printed \(line.debugDescription), not a multiaddr: \(error)")
            }
            return try await body(address, listener)
        }
    }
}

/// A fresh temporary directory, removed after `body`.
func withTemporaryDirectory<R>(_ body: (URL) async throws -> R) async throws -> R {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("msgnet-interop-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    return try await body(dir)
}

/// A TCP port on 127.0.0.1 that nothing listens on (bound, then released).
func closedPort() async throws -> Int {
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .bind(host: "127.0.0.1", port: 0).get()
    let port = channel.localAddress!.port!
    try await channel.close()
    return port
}

extension InteropTests {
    @Suite("msgnet command line", .timeLimit(.minutes(2)))
    struct MsgNetCLI {
        @Test("id creates a key file and prints the same peer id each time")
        func idCreatesAndReloads() async throws {
            try await withTemporaryDirectory { dir in
                let key = dir.appendingPathComponent("alice.key").path
                let first = try await MsgNetBinary.run(["id", "--key", key])
                #expect(first.succeeded, "\(first.summary)")
                #expect(FileManager.default.fileExists(atPath: key))
                let permissions = try FileManager.default.attributesOfItem(atPath: key)[.posixPermissions] as? Int
                #expect(permissions == 0o600)
                let second = try await MsgNetBinary.run(["id", "--key", key])
                #expect(second.succeeded, "\(second.summary)")
                #expect(first.stdoutLines.count == 1, "\(first.summary)")
                #expect(first.stdoutLines == second.stdoutLines)
                let id = try PeerID(try #require(first.stdoutLines.first))
                #expect(id.description.hasPrefix("12D3KooW"))
                // The file holds the libp2p protobuf PrivateKey of that id.
                let marshaled = try Data(contentsOf: URL(fileURLWithPath: key))
                #expect(try PrivateKey(marshaled: Array(marshaled)).peerID == id)
                #expect(first.stderr.isEmpty, "\(first.summary)")
            }
        }

        @Test("a corrupt key file fails with one line on stderr")
        func corruptKeyFile() async throws {
            try await withTemporaryDirectory { dir in
                let key = dir.appendingPathComponent("bad.key")
                try Data("this is not a key".utf8).write(to: key)
                let output = try await MsgNetBinary.run(["id", "--key", key.path])
                #expect(output.finished && output.status != 0 && !output.signaled, "\(output.summary)")
                #expect(output.stderrLines.count == 1, "\(output.summary)")
                #expect(output.stderrText.contains(key.path), "\(output.summary)")
                #expect(output.stdout.isEmpty, "\(output.summary)")
                // The corrupt file is left alone.
                #expect(try Data(contentsOf: key) == Data("this is not a key".utf8))
            }
        }

        @Test("listen, then ping and identify it; SIGTERM stops the listener", arguments: SecurityKind.allCases)
        func listenPingIdentify(security: SecurityKind) async throws {
            try await withTemporaryDirectory { dir in
                let key = dir.appendingPathComponent("listener.key").path
                let id = try await MsgNetBinary.run(["id", "--key", key])
                let peerID = try #require(id.stdoutLines.first, "\(id.summary)")
                try await MsgNetBinary.withListener(["--key", key, "--security", security.rawValue]) {
                    address, listener in
                    #expect(address.description.hasSuffix("/p2p/\(peerID)"), "\(address)")
                    #expect(address.description.hasPrefix("/ip4/127.0.0.1/tcp/"), "\(address)")

                    let ping = try await MsgNetBinary.run(
                        ["ping", "\(address)", "--count", "3", "--security", security.rawValue])
                    #expect(ping.succeeded, "\(ping.summary)")
                    let lines = ping.stdoutLines
                    #expect(lines.count == 4, "\(ping.summary)")
                    for (i, line) in lines.prefix(3).enumerated() {
                        #expect(line.hasPrefix("ping \(i + 1): time="), "\(line)")
                        #expect(line.hasSuffix(" ms"), "\(line)")
                    }
                    #expect(lines.last?.contains("min/avg/max") == true, "\(ping.summary)")

                    let identify = try await MsgNetBinary.run([
                        "identify", "\(address)", "--security", security.rawValue,
                    ])
                    #expect(identify.succeeded, "\(identify.summary)")
                    #expect(identify.stdoutLines.contains("peer id: \(peerID)"), "\(identify.summary)")
                    #expect(identify.stdoutText.contains("/echo/1.0.0"), "\(identify.summary)")
                    #expect(identify.stdoutText.contains("/ipfs/ping/1.0.0"), "\(identify.summary)")

                    listener.send(SIGTERM)
                    let exit = try await listener.waitForExit(timeout: .seconds(10))
                    #expect(exit.succeeded, "\(exit.summary)")
                    #expect(exit.stdoutLines == ["\(address)"], "\(exit.summary)")
                }
            }
        }

        @Test("msgnet listen echoes on /echo/1.0.0 for an in-process host", arguments: SecurityKind.allCases)
        func listenerEchoes(security: SecurityKind) async throws {
            try await MsgNetBinary.withListener(["--security", security.rawValue]) { address, listener in
                let host = makeHost(security)
                try await running(host) {
                    let stream = try await host.newStream(to: address, protocols: [PyProtocols.echo])
                    let payload = patternBytes(count: 512 * 1024, seed: 7)
                    let (echoed, sawEOF) = try await echoWindowed(stream, payload: payload)
                    #expect(echoed == payload, "first difference at \(firstDifference(echoed, payload))")
                    #expect(sawEOF)
                }
                listener.send(SIGTERM)
                let exit = try await listener.waitForExit(timeout: .seconds(10))
                #expect(exit.succeeded, "\(exit.summary)")
            }
        }

        @Test("SIGINT stops the listener too")
        func sigint() async throws {
            try await MsgNetBinary.withListener { _, listener in
                listener.send(SIGINT)
                let exit = try await listener.waitForExit(timeout: .seconds(10))
                #expect(exit.succeeded, "\(exit.summary)")
            }
        }

        @Test("ping with the wrong /p2p id fails with one line on stderr")
        func wrongPeerID() async throws {
            try await MsgNetBinary.withListener { address, _ in
                let impostor = address.withoutPeerID().appending(.p2p(PrivateKey.generate().peerID))
                let output = try await MsgNetBinary.run(["ping", "\(impostor)", "--count", "1"])
                #expect(output.finished && output.status != 0 && !output.signaled, "\(output.summary)")
                #expect(output.stderrLines.count == 1, "\(output.summary)")
                #expect(output.stdout.isEmpty, "\(output.summary)")
            }
        }

        @Test("ping to a closed port fails with one line on stderr")
        func closedPortFails() async throws {
            let port = try await closedPort()
            let target = "/ip4/127.0.0.1/tcp/\(port)/p2p/\(PrivateKey.generate().peerID)"
            let output = try await MsgNetBinary.run(["ping", target, "--count", "1"])
            #expect(output.finished && output.status != 0 && !output.signaled, "\(output.summary)")
            #expect(output.stderrLines.count == 1, "\(output.summary)")
            #expect(output.stdout.isEmpty, "\(output.summary)")
        }

        @Test("listen on a port in use fails with one line on stderr")
        func busyPort() async throws {
            try await MsgNetBinary.withListener { address, _ in
                let output = try await MsgNetBinary.run(["listen", "--listen", "\(address.withoutPeerID())"])
                #expect(output.finished && output.status != 0 && !output.signaled, "\(output.summary)")
                #expect(output.stderrLines.count == 1, "\(output.summary)")
                #expect(output.stdout.isEmpty, "\(output.summary)")
            }
        }

        @Test("an unknown security protocol fails with one line on stderr")
        func unknownSecurity() async throws {
            let output = try await MsgNetBinary.run(["listen", "--security", "tls"])
            #expect(output.finished && output.status != 0 && !output.signaled, "\(output.summary)")
            #expect(output.stderrLines.count == 1, "\(output.summary)")
            #expect(output.stderrText.contains("tls"), "\(output.summary)")
            #expect(output.stdout.isEmpty, "\(output.summary)")
        }

        @Test("a malformed address fails with one line on stderr")
        func malformedAddress() async throws {
            let output = try await MsgNetBinary.run(["ping", "/ip4/not-an-ip/tcp/1", "--count", "1"])
            #expect(output.finished && output.status != 0 && !output.signaled, "\(output.summary)")
            #expect(output.stderrLines.count == 1, "\(output.summary)")
        }

        @Test(
            "msgnet ping and identify a py-libp2p server (noise)",
            .enabled(if: Interop.enabled, "set MSGNET_INTEROP_PYTHON and MSGNET_INTEROP_PEER (or run make test)")
        )
        func pyServer() async throws {
            try await Interop.withPyServer(security: "noise") { address, _ in
                let ping = try await MsgNetBinary.run(["ping", "\(address)", "--count", "3"])
                #expect(ping.succeeded, "\(ping.summary)")
                #expect(ping.stdoutLines.count == 4, "\(ping.summary)")
                #expect(ping.stdoutLines.last?.contains("min/avg/max") == true, "\(ping.summary)")

                let identify = try await MsgNetBinary.run(["identify", "\(address)"])
                #expect(identify.succeeded, "\(identify.summary)")
                #expect(identify.stdoutLines.contains("peer id: \(address.peerID!)"), "\(identify.summary)")
                #expect(identify.stdoutText.contains("/echo/1.0.0"), "\(identify.summary)")
                #expect(identify.stdoutText.contains("py-libp2p"), "\(identify.summary)")
            }
        }

        @Test(
            "py-libp2p pings, identifies and echoes through msgnet listen (noise)",
            .enabled(if: Interop.enabled, "set MSGNET_INTEROP_PYTHON and MSGNET_INTEROP_PEER (or run make test)")
        )
        func pyClientsAgainstListener() async throws {
            try await MsgNetBinary.withListener { address, listener in
                let ping = try await Interop.runPyClient(
                    "ping", address: address, security: "noise", extra: ["--count", "5", "--warmup", "0"])
                #expect(ping["n"] as? Int == 5, "\(ping)")
                let identify = try await Interop.runPyClient("identify", address: address, security: "noise")
                #expect(identify["pubkey_matches_peer_id"] as? Bool == true, "\(identify)")
                #expect((identify["protocols"] as? [String] ?? []).contains(PyProtocols.echo), "\(identify)")
                let echo = try await Interop.runPyClient(
                    "echo-throughput", address: address, security: "noise",
                    extra: ["--bytes", "1048576", "--verify", "1", "--io", "alternate", "--window", "131072"])
                #expect(echo["verified"] as? Bool == true, "\(echo)")
                listener.send(SIGTERM)
                let exit = try await listener.waitForExit(timeout: .seconds(10))
                #expect(exit.succeeded, "\(exit.summary)")
            }
        }
    }
}
