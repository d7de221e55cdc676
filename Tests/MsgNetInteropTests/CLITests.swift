import Foundation
import MsgNetCore
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The path a CLI message test runs over.
enum CLIPath: String, CaseIterable, Sendable, CustomStringConvertible {
    case tcp
    case udp

    var listenAddress: String { "/ip4/127.0.0.1/\(rawValue)/0" }
    var description: String { rawValue }

    /// The paths the listener serves.
    static let available: [CLIPath] = allCases
}

extension MsgNetBinary {
    /// Runs `msgnet listen` on each of `addresses` for `body`, passing the addresses it prints
    /// (one line each, in order).
    static func withListener<R: Sendable>(
        on addresses: [String],
        _ extra: [String] = [],
        _ body: ([Multiaddr], ChildProcess) async throws -> R
    ) async throws -> R {
        let arguments = ["listen"] + addresses.flatMap { ["--listen", $0] } + extra
        return try await withChild(try require(), arguments, name: "msgnet listen") { listener in
            let count = addresses.count
            let output = try await listener.wait(for: "\(count) address lines", timeout: .seconds(30)) { o in
                o.stdoutLines.count >= count || o.finished
            }
            let lines = output.stdoutLines.prefix(count)
            guard lines.count == count else {
                throw HarnessError("msgnet listen ended before printing its addresses; \(output.summary)")
            }
            let bound = try lines.map { line in
                do {
                    return try Multiaddr(line)
                } catch {
                    throw HarnessError("msgnet listen printed \(line.debugDescription), not a multiaddr: \(error)")
                }
            }
            return try await body(bound, listener)
        }
    }

    /// Creates a key file in `dir` and returns its path and peer id.
    static func identity(named name: String, in dir: URL) async throws -> (key: String, id: String) {
        let key = dir.appendingPathComponent("\(name).key").path
        let output = try await run(["id", "--key", key])
        guard output.succeeded, let id = output.stdoutLines.first else {
            throw HarnessError("msgnet id failed: \(output.summary)")
        }
        return (key, id)
    }
}

extension ChildOutput {
    /// Exited non-zero by itself, printed one line on stderr and nothing on stdout.
    var failedWithOneLine: Bool {
        finished && !signaled && status != 0 && stderrLines.count == 1 && stdout.isEmpty
    }
}

extension InteropTests {
    @Suite("msgnet messages: listen --print-protocol, send, request", .timeLimit(.minutes(2)))
    struct MsgNetMessagesCLI {
        @Test("send prints '<from> <protocol> <text>' on the listener", arguments: CLIPath.available)
        func sendPrintsLine(path: CLIPath) async throws {
            try await withTemporaryDirectory { dir in
                let sender = try await MsgNetBinary.identity(named: "sender", in: dir)
                try await MsgNetBinary.withListener(
                    on: [path.listenAddress], ["--print-protocol", "/chat/1.0.0"]
                ) { addresses, listener in
                    let address = try #require(addresses.first)
                    #expect(address.description.hasPrefix("/ip4/127.0.0.1/\(path.rawValue)/"), "\(address)")
                    let send = try await MsgNetBinary.run([
                        "send", "\(address)", "--protocol", "/chat/1.0.0", "hello", "world", "--key", sender.key,
                    ])
                    #expect(send.succeeded, "\(send.summary)")
                    #expect(send.stdout.isEmpty && send.stderr.isEmpty, "\(send.summary)")
                    let expected = "\(sender.id) /chat/1.0.0 hello world"
                    let output = try await listener.wait(for: "the message line", timeout: .seconds(20)) {
                        $0.stdoutLines.count >= 2 || $0.finished
                    }
                    #expect(output.stdoutLines == ["\(address)", expected], "\(output.summary)")

                    listener.send(SIGTERM)
                    let exit = try await listener.waitForExit(timeout: .seconds(10))
                    #expect(exit.succeeded, "\(exit.summary)")
                    #expect(exit.stdoutLines == ["\(address)", expected], "\(exit.summary)")
                }
            }
        }

        @Test("request prints the reply: the listener echoes the text", arguments: CLIPath.available)
        func requestPrintsReply(path: CLIPath) async throws {
            try await withTemporaryDirectory { dir in
                let client = try await MsgNetBinary.identity(named: "client", in: dir)
                try await MsgNetBinary.withListener(
                    on: [path.listenAddress], ["--print-protocol", "/kv/1.0.0", "--print-protocol", "/chat/1.0.0"]
                ) { addresses, listener in
                    let address = try #require(addresses.first)
                    let request = try await MsgNetBinary.run([
                        "request", "\(address)", "--protocol", "/kv/1.0.0", "what is", "the color?",
                        "--timeout", "10", "--key", client.key,
                    ])
                    #expect(request.succeeded, "\(request.summary)")
                    #expect(request.stdoutLines == ["what is the color?"], "\(request.summary)")
                    #expect(request.stderr.isEmpty, "\(request.summary)")
                    let output = try await listener.wait(for: "the request line", timeout: .seconds(20)) {
                        $0.stdoutLines.count >= 2 || $0.finished
                    }
                    #expect(output.stdoutLines.last == "\(client.id) /kv/1.0.0 what is the color?", "\(output.summary)")
                }
            }
        }

        @Test("several sends from one peer arrive in order, one line each", arguments: CLIPath.available)
        func sendsInOrder(path: CLIPath) async throws {
            try await MsgNetBinary.withListener(
                on: [path.listenAddress], ["--print-protocol", "/chat/1.0.0"]
            ) { addresses, listener in
                let address = try #require(addresses.first)
                for i in 1...3 {
                    let send = try await MsgNetBinary.run([
                        "send", "\(address)", "--protocol", "/chat/1.0.0", "line \(i)",
                    ])
                    #expect(send.succeeded, "\(send.summary)")
                }
                let output = try await listener.wait(for: "three message lines", timeout: .seconds(20)) {
                    $0.stdoutLines.count >= 4 || $0.finished
                }
                let texts = output.stdoutLines.dropFirst().map { $0.split(separator: " ", maxSplits: 2).last ?? "" }
                #expect(texts == ["line 1", "line 2", "line 3"], "\(output.summary)")
            }
        }

        @Test(
            "send and request on a protocol the listener does not handle fail: protocol not supported",
            arguments: CLIPath.available)
        func unknownProtocol(path: CLIPath) async throws {
            try await MsgNetBinary.withListener(
                on: [path.listenAddress], ["--print-protocol", "/chat/1.0.0"]
            ) { addresses, listener in
                let address = try #require(addresses.first)
                for command in [["send"], ["request", "--timeout", "5"]] {
                    let output = try await MsgNetBinary.run(
                        command + ["\(address)", "--protocol", "/nope/1.0.0", "hello"])
                    #expect(output.failedWithOneLine, "\(command): \(output.summary)")
                    #expect(output.stderrText.contains("protocol not supported"), "\(command): \(output.summary)")
                }
                // Nothing was printed for the rejected messages.
                #expect(listener.output.stdoutLines == ["\(addresses[0])"], "\(listener.output.summary)")
            }
        }

        @Test("ping round trips on both paths print the TCP ping format", arguments: CLIPath.available)
        func pingFormat(path: CLIPath) async throws {
            try await MsgNetBinary.withListener(on: [path.listenAddress]) { addresses, _ in
                let address = try #require(addresses.first)
                let ping = try await MsgNetBinary.run(["ping", "\(address)", "--count", "3"])
                #expect(ping.succeeded, "\(ping.summary)")
                let lines = ping.stdoutLines
                #expect(lines.count == 4, "\(ping.summary)")
                for (i, line) in lines.prefix(3).enumerated() {
                    #expect(line.hasPrefix("ping \(i + 1): time="), "\(line)")
                    #expect(line.hasSuffix(" ms"), "\(line)")
                }
                #expect(lines.last?.hasPrefix("3 pings: min/avg/max = ") == true, "\(ping.summary)")
                #expect(ping.stderr.isEmpty, "\(ping.summary)")
            }
        }

        @Test("/msgnet/ping/1.0.0 is answered with its payload on every path", arguments: CLIPath.available)
        func messagePingEchoes(path: CLIPath) async throws {
            try await MsgNetBinary.withListener(on: [path.listenAddress]) { addresses, _ in
                let address = try #require(addresses.first)
                let request = try await MsgNetBinary.run([
                    "request", "\(address)", "--protocol", "/msgnet/ping/1.0.0", "are", "you", "there",
                ])
                #expect(request.succeeded, "\(request.summary)")
                #expect(request.stdoutLines == ["are you there"], "\(request.summary)")
            }
        }

        @Test("one listener on TCP and UDP: the same handler prints a send over each path")
        func bothPaths() async throws {
            try await withTemporaryDirectory { dir in
                let sender = try await MsgNetBinary.identity(named: "sender", in: dir)
                try await MsgNetBinary.withListener(
                    on: [CLIPath.tcp.listenAddress, CLIPath.udp.listenAddress],
                    ["--print-protocol", "/chat/1.0.0", "--print-path"]
                ) { addresses, listener in
                    #expect(addresses.count == 2)
                    #expect(addresses.map(\.peerID) == [addresses[0].peerID, addresses[0].peerID])
                    for (address, text) in zip(addresses, ["over tcp", "over udp"]) {
                        let send = try await MsgNetBinary.run([
                            "send", "\(address)", "--protocol", "/chat/1.0.0", text, "--key", sender.key,
                        ])
                        #expect(send.succeeded, "\(send.summary)")
                    }
                    let output = try await listener.wait(for: "two message lines", timeout: .seconds(20)) {
                        $0.stdoutLines.count >= 4 || $0.finished
                    }
                    #expect(
                        output.stdoutLines.dropFirst(2) == [
                            "\(sender.id) /chat/1.0.0 stream over tcp", "\(sender.id) /chat/1.0.0 datagram over udp",
                        ], "\(output.summary)")
                }
            }
        }

        @Test("identify answers on both paths and lists the message protocols", arguments: CLIPath.available)
        func identifyBothPaths(path: CLIPath) async throws {
            try await MsgNetBinary.withListener(
                on: [path.listenAddress], ["--print-protocol", "/chat/1.0.0"]
            ) { addresses, _ in
                let address = try #require(addresses.first)
                let output = try await MsgNetBinary.run(["identify", "\(address)"])
                #expect(output.succeeded, "\(output.summary)")
                #expect(output.stdoutLines.first == "peer id: \(address.peerID!)", "\(output.summary)")
                let protocols = output.stdoutLines.first { $0.hasPrefix("protocols: ") } ?? ""
                #expect(protocols.contains("/chat/1.0.0"), "\(output.summary)")
                #expect(protocols.contains("/msgnet/ping/1.0.0"), "\(output.summary)")
                #expect(
                    output.stdoutLines.contains {
                        $0.hasPrefix("listen addresses: ") && $0.contains("/\(path.rawValue)/")
                    },
                    "\(output.summary)")
            }
        }

        @Test("a request to a closed port fails with one line on stderr", arguments: CLIPath.available)
        func requestToClosedPort(path: CLIPath) async throws {
            let port = try await closedPort()
            let target = "/ip4/127.0.0.1/\(path.rawValue)/\(port)/p2p/\(PrivateKey.generate().peerID)"
            let output = try await MsgNetBinary.run(
                ["request", target, "--protocol", "/chat/1.0.0", "hello", "--timeout", "1"], timeout: .seconds(60))
            #expect(output.failedWithOneLine, "\(output.summary)")
            // TCP is refused at once; UDP has nobody answering, so --timeout (which covers the
            // connection attempt, and is shorter than the datagram path's 2 s connect timeout)
            // ends it.
            let expected = path == .tcp ? "dial failed" : "timed out"
            #expect(output.stderrText.contains(expected), "\(output.summary)")
        }

        @Test("a text with line breaks prints as one line; the request echo keeps them", arguments: CLIPath.available)
        func lineBreaks(path: CLIPath) async throws {
            try await MsgNetBinary.withListener(
                on: [path.listenAddress], ["--print-protocol", "/chat/1.0.0"]
            ) { addresses, listener in
                let address = try #require(addresses.first)
                let request = try await MsgNetBinary.run([
                    "request", "\(address)", "--protocol", "/chat/1.0.0", "first\nsecond",
                ])
                #expect(request.succeeded, "\(request.summary)")
                #expect(request.stdoutLines == ["first", "second"], "\(request.summary)")
                let output = try await listener.wait(for: "the message line", timeout: .seconds(20)) {
                    $0.stdoutLines.count >= 2 || $0.finished
                }
                #expect(output.stdoutLines.count == 2, "\(output.summary)")
                #expect(output.stdoutLines.last?.hasSuffix(" /chat/1.0.0 first second") == true, "\(output.summary)")
            }
        }

        @Test("send needs an address with /p2p and a text")
        func sendArgumentErrors() async throws {
            let noPeer = try await MsgNetBinary.run(["send", "/ip4/127.0.0.1/tcp/1", "--protocol", "/chat/1.0.0", "hi"])
            #expect(noPeer.failedWithOneLine, "\(noPeer.summary)")
            #expect(noPeer.stderrText.contains("/p2p"), "\(noPeer.summary)")
            let target = "/ip4/127.0.0.1/tcp/1/p2p/\(PrivateKey.generate().peerID)"
            let noText = try await MsgNetBinary.run(["send", target, "--protocol", "/chat/1.0.0"])
            #expect(noText.finished && !noText.signaled && noText.status != 0, "\(noText.summary)")
            #expect(noText.stdout.isEmpty, "\(noText.summary)")
        }

        @Test("listen --help documents the printed line and the request echo")
        func helpDocumentsEcho() async throws {
            let help = try await MsgNetBinary.run(["listen", "--help"])
            #expect(help.succeeded, "\(help.summary)")
            #expect(help.stdoutText.contains("--print-protocol"), "\(help.summary)")
            #expect(help.stdoutText.contains("<from-peer-id> <protocol> <text>"), "\(help.summary)")
            #expect(help.stdoutText.contains("same text"), "\(help.summary)")
        }
    }
}
