import Foundation
import MsgNetCore
import Testing

/// The `Chat` example (Examples/Chat), built next to `msgnet` by `swift build --build-tests`.
enum ChatBinary {
    static var path: String {
        if let bin = ProcessInfo.processInfo.environment["MSGNET_CHAT_BIN"], !bin.isEmpty { return bin }
        return URL(fileURLWithPath: MsgNetBinary.path).deletingLastPathComponent().appendingPathComponent("Chat").path
    }

    static func require() throws -> String {
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw HarnessError(
                "Chat executable not found at \(path): run `swift build --build-tests` or set MSGNET_CHAT_BIN")
        }
        return path
    }

    /// A started chat node: its peer id, the short id it prints before lines, its addresses.
    struct Node {
        let process: ChildProcess
        let id: String
        let addresses: [Multiaddr]
        var short: String { String(id.suffix(8)) }

        /// Its address on `path` (printed with `/p2p/<id>`), for `--peer`.
        func address(_ path: CLIPath) throws -> String {
            let address = try #require(addresses.first { $0.description.contains("/\(path.rawValue)/") })
            #expect(address.description.hasSuffix("/p2p/\(id)"), "\(address)")
            return "\(address)"
        }
    }

    /// Runs a chat node listening on `listen`, chatting with `peers`, for `body`. Waits for
    /// its greeting, its addresses and one "connected" line per peer.
    static func withNode<R: Sendable>(
        listen: [String], peers: [String] = [], _ body: (Node) async throws -> R
    ) async throws -> R {
        let arguments = listen.flatMap { ["--listen", $0] } + peers.flatMap { ["--peer", $0] }
        return try await withChild(try require(), arguments, name: "Chat", withInput: true) { process in
            let ready = 1 + listen.count + peers.count
            let output = try await process.wait(for: "greeting, addresses and connections", timeout: .seconds(30)) {
                $0.stdoutLines.count >= ready || $0.finished
            }
            let lines = output.stdoutLines
            guard lines.count >= ready, lines[0].hasPrefix("chat: I am ") else {
                throw HarnessError("Chat did not start as expected; \(output.summary)")
            }
            let id = String(lines[0].dropFirst("chat: I am ".count).prefix { $0 != " " })
            let addresses = try lines[1...listen.count].map { try Multiaddr($0) }
            for line in lines[(1 + listen.count)..<ready] where !line.hasPrefix("* connected to ") {
                throw HarnessError("Chat printed \(line.debugDescription) instead of a connection; \(output.summary)")
            }
            return try await body(Node(process: process, id: id, addresses: addresses))
        }
    }
}

extension ChatBinary.Node {
    /// Waits until the node has printed `line`.
    @discardableResult
    func expectLine(_ line: String) async throws -> ChildOutput {
        try await process.wait(for: "the line \(line.debugDescription)", timeout: .seconds(30)) {
            $0.stdoutLines.contains(line) || $0.finished
        }
    }
}

extension InteropTests {
    @Suite("Chat example", .timeLimit(.minutes(2)))
    struct ChatExample {
        @Test("three nodes chat: one listens on TCP and UDP, one joins over each path, lines go both ways")
        func threeNodes() async throws {
            try await ChatBinary.withNode(listen: ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0"]) { hub in
                try await ChatBinary.withNode(listen: ["/ip4/127.0.0.1/tcp/0"], peers: [try hub.address(.tcp)]) {
                    tcp in
                    try await ChatBinary.withNode(listen: ["/ip4/127.0.0.1/udp/0"], peers: [try hub.address(.udp)]) {
                        udp in
                        // Each joiner writes first: the hub learns of it from the message.
                        try tcp.process.writeLine("hello over tcp")
                        var hubOutput = try await hub.expectLine("\(tcp.short): hello over tcp")
                        #expect(hubOutput.stdoutLines.contains("* \(tcp.short) joined"), "\(hubOutput.summary)")

                        try udp.process.writeLine("hello over udp")
                        hubOutput = try await hub.expectLine("\(udp.short): hello over udp")
                        #expect(hubOutput.stdoutLines.contains("* \(udp.short) joined"), "\(hubOutput.summary)")

                        // The hub's line goes to both, each on the path it came by.
                        try hub.process.writeLine("welcome both")
                        let tcpOutput = try await tcp.expectLine("\(hub.short): welcome both")
                        let udpOutput = try await udp.expectLine("\(hub.short): welcome both")
                        #expect(!tcpOutput.finished && !udpOutput.finished)

                        // Nothing went wrong on the way, and the joiners never heard of each other.
                        for node in [hub, tcp, udp] {
                            let lines = node.process.output.stdoutLines
                            #expect(
                                !lines.contains { $0.hasPrefix("* could not send") }, "\(node.process.output.summary)")
                            #expect(!lines.contains { $0.hasPrefix("chat: error") }, "\(node.process.output.summary)")
                        }
                        #expect(!tcp.process.output.stdoutLines.contains { $0.hasPrefix(udp.short) })
                    }
                }
            }
        }

        @Test("a node with nobody to talk to says so, and exits at the end of its input")
        func aloneThenEndOfInput() async throws {
            try await ChatBinary.withNode(listen: ["/ip4/127.0.0.1/tcp/0"]) { node in
                try node.process.writeLine("anyone?")
                try await node.expectLine("* nobody to send to yet (use --peer, or wait for someone to write)")
                node.process.closeInput()
                let exit = try await node.process.waitForExit(timeout: .seconds(30))
                #expect(exit.succeeded, "\(exit.summary)")
            }
        }
    }
}
