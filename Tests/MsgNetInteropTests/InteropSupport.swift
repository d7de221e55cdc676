import Foundation
import Logging
import MsgNetCore
import MsgNetSecurity
import MsgNetStreams
import MsgNetTransportPosix
import NIOCore
import NIOPosix
import Testing

/// Where the py-libp2p peer lives: env `MSGNET_INTEROP_PYTHON` (the virtualenv's python) and
/// `MSGNET_INTEROP_PEER` (peer.py). Without them the interop tests are skipped, unless
/// `MSGNET_REQUIRE_INTEROP=1`, in which case they run and fail with a clear message.
enum Interop {
    static let environment = ProcessInfo.processInfo.environment

    static var python: String? { environment["MSGNET_INTEROP_PYTHON"].flatMap { $0.isEmpty ? nil : $0 } }
    static var peer: String? { environment["MSGNET_INTEROP_PEER"].flatMap { $0.isEmpty ? nil : $0 } }
    static var required: Bool { environment["MSGNET_REQUIRE_INTEROP"] == "1" }

    /// Whether interop tests run (configured, or required and then failing).
    static var enabled: Bool { (python != nil && peer != nil) || required }

    /// The python and peer.py paths.
    /// - Throws: when they are not configured or do not exist.
    static func paths() throws -> (python: String, peer: String) {
        guard let python, let peer else {
            throw HarnessError(
                "MSGNET_REQUIRE_INTEROP=1 but MSGNET_INTEROP_PYTHON and/or MSGNET_INTEROP_PEER are not set: "
                    + "run `make test`, or set them to the py-libp2p virtualenv's python and ../shared/interop/peer.py")
        }
        for (variable, path) in [("MSGNET_INTEROP_PYTHON", python), ("MSGNET_INTEROP_PEER", peer)] {
            guard FileManager.default.fileExists(atPath: path) else {
                throw HarnessError("\(variable)=\(path) does not exist")
            }
        }
        return (python, peer)
    }

    /// Bound on every py-libp2p client run (its own `--timeout`); the test waits a little longer.
    static let clientTimeoutSeconds = 40
    /// Bound on every py-libp2p server's life (`--max-seconds`); tests kill it much earlier.
    static let serverMaxSeconds = 180

    /// Runs `peer.py serve` for `body`, passing its printed address (with `/p2p`).
    static func withPyServer<R: Sendable>(
        security: String,
        muxer: String = "mplex",
        _ body: (Multiaddr, ChildProcess) async throws -> R
    ) async throws -> R {
        let (python, peer) = try paths()
        return try await withChild(
            python,
            [
                peer, "serve", "--port", "0", "--security", security, "--muxer", muxer,
                "--max-seconds", "\(serverMaxSeconds)",
            ],
            name: "peer.py serve (\(security))"
        ) { server in
            let line = try await server.firstLine(timeout: .seconds(60))
            let address: Multiaddr
            do {
                address = try Multiaddr(line)
            } catch {
                throw HarnessError("peer.py serve printed \(line.debugDescription), not a multiaddr: \(error)")
            }
            guard address.peerID != nil else {
                throw HarnessError("peer.py serve printed \(line) without /p2p")
            }
            return try await body(address, server)
        }
    }

    /// Runs a `peer.py` client command against `address` and returns its `RESULT {json}`
    /// object. Requires exit status 0.
    static func runPyClient(
        _ command: String,
        address: Multiaddr,
        security: String,
        muxer: String = "mplex",
        extra: [String] = []
    ) async throws -> [String: Any] {
        let (python, peer) = try paths()
        let output = try await runToCompletion(
            python,
            [
                peer, command, "\(address)", "--security", security, "--muxer", muxer, "--fast-dial",
                "--timeout", "\(clientTimeoutSeconds)",
            ] + extra,
            name: "peer.py \(command) (\(security))",
            timeout: .seconds(clientTimeoutSeconds + 20)
        )
        guard output.succeeded else {
            throw HarnessError("peer.py \(command) failed: \(output.summary)")
        }
        guard let line = output.stdoutLines.last(where: { $0.hasPrefix("RESULT ") }) else {
            throw HarnessError("peer.py \(command) printed no RESULT line: \(output.summary)")
        }
        let json = Data(line.dropFirst("RESULT ".count).utf8)
        guard let object = try JSONSerialization.jsonObject(with: json) as? [String: Any] else {
            throw HarnessError("peer.py \(command): RESULT is not a JSON object: \(line)")
        }
        return object
    }
}

/// The security protocols both sides speak; the raw value is what peer.py and msgnet take.
enum SecurityKind: String, CaseIterable, Sendable, CustomStringConvertible {
    case noise, plaintext
    var description: String { rawValue }

    func make(_ identity: PrivateKey) -> any SecurityProtocol {
        switch self {
        case .noise: return NoiseSecurity(identity: identity)
        case .plaintext: return PlaintextSecurity(identity: identity)
        }
    }

    /// The protocol id negotiated on the wire.
    var protocolID: String {
        switch self {
        case .noise: return "/noise"
        case .plaintext: return "/plaintext/2.0.0"
        }
    }
}

/// Protocols the py-libp2p peer serves.
enum PyProtocols {
    static let echo = "/echo/1.0.0"
    static let msgEcho = "/msg-echo/1.0.0"
}

/// A host with one TCP transport and one security protocol; logs are dropped.
func makeHost(_ security: SecurityKind, identity: PrivateKey = .generate()) -> StreamHost {
    makeHost(offering: [security], identity: identity)
}

/// A host with one TCP transport offering `securities` in order; logs are dropped.
func makeHost(offering securities: [SecurityKind], identity: PrivateKey = .generate()) -> StreamHost {
    StreamHost(
        identity: identity,
        transports: [TCPTransport(group: MultiThreadedEventLoopGroup.singleton)],
        security: securities.map { $0.make(identity) },
        logger: Logger(label: "interop", factory: { _ in SwiftLogNoOpLogHandler() })
    )
}

/// Runs `host` for the duration of `body`, then shuts it down (also on error).
func running<R: Sendable>(_ host: StreamHost, _ body: @Sendable () async throws -> R) async throws -> R {
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { await host.run() }
        do {
            let result = try await body()
            await host.shutdown()
            try await group.waitForAll()
            return result
        } catch {
            await host.shutdown()
            try? await group.waitForAll()
            throw error
        }
    }
}

/// Sends `payload` on `stream` in `chunk`-sized writes while reading the echo concurrently,
/// keeping at most `window` bytes written but not yet echoed (py-libp2p's mplex streams have
/// no flow control and cannot read while a write is pending). Closes the write side after the
/// last chunk and reads until the remote closes its side.
/// - Returns: every byte echoed, and whether the stream then ended with EOF.
func echoWindowed(
    _ stream: NegotiatedStream,
    payload: [UInt8],
    chunk: Int = 64 * 1024,
    window: Int = 128 * 1024
) async throws -> (echoed: [UInt8], sawEOF: Bool) {
    precondition(chunk <= window)
    let (progress, progressContinuation) = AsyncStream.makeStream(of: Int.self)
    return try await withThrowingTaskGroup(of: ([UInt8], Bool)?.self) { group in
        group.addTask {
            defer { progressContinuation.finish() }
            var echoed = [UInt8]()
            echoed.reserveCapacity(payload.count)
            while let buffer = try await stream.read() {
                echoed += buffer.readableBytesView
                progressContinuation.yield(echoed.count)
                // More than was sent: stop reading, the caller sees the surplus.
                if echoed.count > payload.count { return (echoed, false) }
            }
            return (echoed, true)
        }
        group.addTask {
            var sent = 0
            var acknowledged = 0
            var updates = progress.makeAsyncIterator()
            while sent < payload.count {
                let n = min(chunk, payload.count - sent)
                while sent + n - acknowledged > window {
                    guard let received = await updates.next() else {
                        throw HarnessError("echo ended after \(acknowledged) of \(payload.count) bytes")
                    }
                    acknowledged = received
                }
                try await stream.write(payload[sent..<(sent + n)])
                sent += n
            }
            try await stream.closeWrite()
            return nil
        }
        var result: ([UInt8], Bool)?
        for try await item in group {
            if let item { result = item }
        }
        return result!
    }
}
