import Logging
import MsgNetCore
import MsgNetSecurity
import MsgNetStreams
import MsgNetTransportPosix
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

/// A log handler that keeps every message, so tests can assert that an error was logged.
final class LogRecorder: Sendable {
    struct Entry: Sendable {
        let level: Logger.Level
        let message: String
        let metadata: String
    }
    private struct Waiter {
        let level: Logger.Level
        let text: String
        let continuation: CheckedContinuation<Void, Never>
    }
    private let entries = NIOLockedValueBox<(log: [Entry], waiters: [Waiter])>(([], []))

    var all: [Entry] { entries.withLockedValue { $0.log } }

    private static func matches(_ e: Entry, _ level: Logger.Level, _ text: String) -> Bool {
        e.level >= level && (e.message.contains(text) || e.metadata.contains(text))
    }

    func contains(level atLeast: Logger.Level, _ text: String) -> Bool {
        all.contains { Self.matches($0, atLeast, text) }
    }

    /// Waits until a message at `level` or above containing `text` is logged (the test's time
    /// limit bounds the wait). Logging happens on event-loop threads, so a test that saw a
    /// connection close must wait for the log line rather than expect it already.
    func waitFor(level: Logger.Level, _ text: String) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let done = entries.withLockedValue { state -> Bool in
                if state.log.contains(where: { Self.matches($0, level, text) }) { return true }
                state.waiters.append(Waiter(level: level, text: text, continuation: c))
                return false
            }
            if done { c.resume() }
        }
    }

    fileprivate func append(_ entry: Entry) {
        let ready = entries.withLockedValue { state -> [Waiter] in
            state.log.append(entry)
            let ready = state.waiters.filter { Self.matches(entry, $0.level, $0.text) }
            state.waiters.removeAll { Self.matches(entry, $0.level, $0.text) }
            return ready
        }
        for w in ready { w.continuation.resume() }
    }

    func logger(_ label: String) -> Logger {
        Logger(label: label) { _ in Handler(recorder: self) }
    }

    struct Handler: LogHandler {
        let recorder: LogRecorder
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            let merged = self.metadata.merging(event.metadata ?? [:]) { $1 }
            recorder.append(Entry(level: event.level, message: "\(event.message)", metadata: "\(merged)"))
        }
    }
}

enum SecurityKind: String, CaseIterable, Sendable, CustomStringConvertible {
    case noise, plaintext
    var description: String { rawValue }
    func make(_ identity: PrivateKey) -> any SecurityProtocol {
        switch self {
        case .noise: return NoiseSecurity(identity: identity)
        case .plaintext: return PlaintextSecurity(identity: identity)
        }
    }
}

func makeHost(
    _ security: SecurityKind = .noise,
    identity: PrivateKey = .generate(),
    configure: (inout StreamHostConfiguration) -> Void = { _ in },
    logger: Logger = Logger(label: "test")
) -> StreamHost {
    var config = StreamHostConfiguration()
    configure(&config)
    return StreamHost(
        identity: identity,
        transports: [TCPTransport(group: MultiThreadedEventLoopGroup.singleton)],
        security: [security.make(identity)],
        configuration: config,
        logger: logger
    )
}

/// Runs `hosts` for the duration of `body`, then shuts them down.
func running<R: Sendable>(
    _ hosts: [StreamHost],
    _ body: @Sendable () async throws -> R
) async throws -> R {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for h in hosts { group.addTask { await h.run() } }
        do {
            let r = try await body()
            for h in hosts { await h.shutdown() }
            try await group.waitForAll()
            return r
        } catch {
            for h in hosts { await h.shutdown() }
            try? await group.waitForAll()
            throw error
        }
    }
}

/// A raw TCP client for hostile-peer tests: sends what the test says, reads exact byte counts,
/// and reports when the server closed the connection.
final class RawClient: Sendable {
    let channel: any Channel
    private let inbox: Inbox

    private init(channel: any Channel, inbox: Inbox) {
        self.channel = channel
        self.inbox = inbox
    }

    static func connect(to address: Multiaddr) async throws -> RawClient {
        let inbox = Inbox()
        let socket = try address.withoutPeerID().socketAddress()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Collector(inbox: inbox))
                }
            }
            .connect(to: socket).get()
        return RawClient(channel: channel, inbox: inbox)
    }

    func send(_ bytes: [UInt8]) async throws {
        try await channel.writeAndFlush(ByteBuffer(bytes: bytes))
    }

    /// Waits for and removes exactly `count` received bytes.
    /// - Throws: when the connection closes first.
    func read(exactly count: Int) async throws -> [UInt8] {
        try await inbox.take(count)
    }

    /// Waits until the server closes the connection.
    func closedByServer() async throws {
        try await channel.closeFuture.get()
    }

    /// Everything received and not yet taken.
    var bytesReceived: ByteBuffer { inbox.pending }

    final class Inbox: Sendable {
        struct ClosedError: Error {}
        private struct State {
            var buffer = ByteBuffer()
            var closed = false
            var waiter: (count: Int, continuation: CheckedContinuation<[UInt8], any Error>)?
        }
        private let state = NIOLockedValueBox(State())

        var pending: ByteBuffer { state.withLockedValue { $0.buffer } }

        func take(_ count: Int) async throws -> [UInt8] {
            try await withCheckedThrowingContinuation { c in
                state.withLockedValue { s in
                    s.waiter = (count, c)
                    Self.serve(&s)
                }
            }
        }

        func append(_ bytes: inout ByteBuffer) {
            state.withLockedValue { s in
                s.buffer.writeBuffer(&bytes)
                Self.serve(&s)
            }
        }

        func close() {
            state.withLockedValue { s in
                s.closed = true
                Self.serve(&s)
            }
        }

        private static func serve(_ s: inout State) {
            guard let (count, c) = s.waiter else { return }
            if s.buffer.readableBytes >= count {
                s.waiter = nil
                c.resume(returning: s.buffer.readBytes(length: count)!)
            } else if s.closed {
                s.waiter = nil
                c.resume(throwing: ClosedError())
            }
        }
    }

    final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let inbox: Inbox
        init(inbox: Inbox) { self.inbox = inbox }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var b = unwrapInboundIn(data)
            inbox.append(&b)
        }
        func channelInactive(context: ChannelHandlerContext) {
            inbox.close()
            context.fireChannelInactive()
        }
    }
}

/// Multistream frame bytes: uvarint(len + 1) || text || "\n".
func msFrame(_ text: String) -> [UInt8] {
    let body = Array(text.utf8) + [0x0A]
    return UVarint.encode(UInt64(body.count)) + body
}
