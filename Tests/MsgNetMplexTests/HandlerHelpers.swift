import NIOCore
import NIOEmbedded
import Synchronization

@testable import MsgNetMplex

/// Collects what a connection's inbound streams and event-loop handlers saw (thread-safe).
final class Collector: Sendable {
    private let state = Mutex<(streams: [MplexStream], events: [String])>(([], []))

    var streams: [MplexStream] { state.withLock { $0.streams } }
    var events: [String] { state.withLock { $0.events } }

    func add(_ stream: MplexStream) { state.withLock { $0.streams.append(stream) } }
    /// Forgets the streams (so a test can check they are freed).
    func removeAll() { state.withLock { $0.streams.removeAll() } }
    func record(_ event: String) { state.withLock { $0.events.append(event) } }
    func takeEvents() -> [String] {
        state.withLock { state in
            defer { state.events = [] }
            return state.events
        }
    }

    /// An event-loop inbound handler that records events as text.
    func recorder(_ label: String) -> (MplexStream.InboundEvent) -> Void {
        { event in self.record("\(label) \(describe(event))") }
    }
}

func describe(_ event: MplexStream.InboundEvent) -> String {
    switch event {
    case .data(let buffer): return "data:" + String(buffer: buffer)
    case .remoteClosed: return "eof"
    case .reset(let error): return "reset:\(error.code)"
    }
}

/// Counts `read()` calls that reach the head of the pipeline.
final class ReadCounter: ChannelOutboundHandler {
    typealias OutboundIn = ByteBuffer
    var reads = 0
    func read(context: ChannelHandlerContext) {
        reads += 1
        context.read()
    }
}

/// Two embedded channels whose outbound bytes are carried into each other by `pump()`.
final class EmbeddedPair {
    let a = EmbeddedChannel()
    let b = EmbeddedChannel()
    let inboundA = Collector()
    let inboundB = Collector()
    let connectionA: MplexConnection
    let connectionB: MplexConnection
    let readCounterB = ReadCounter()

    init(
        configuration: MplexConfiguration = .init(),
        configurationB: MplexConfiguration? = nil,
        initializerA: (@Sendable (MplexStream) -> Void)? = nil,
        initializerB: (@Sendable (MplexStream) -> Void)? = nil
    ) throws {
        let address = try SocketAddress(ipAddress: "127.0.0.1", port: 4001)
        try a.connect(to: address).wait()
        try b.connect(to: address).wait()
        try b.pipeline.syncOperations.addHandler(readCounterB)
        let inboundA = inboundA
        let inboundB = inboundB
        connectionA = try MplexConnection.install(on: a, configuration: configuration) { stream in
            inboundA.add(stream)
            initializerA?(stream)
        }
        connectionB = try MplexConnection.install(on: b, configuration: configurationB ?? configuration) { stream in
            inboundB.add(stream)
            initializerB?(stream)
        }
    }

    /// Carries bytes both ways until neither side has anything to send.
    func pump() throws {
        var moved = true
        while moved {
            moved = false
            while let bytes = try a.readOutbound(as: ByteBuffer.self) {
                try b.writeInbound(bytes)
                moved = true
            }
            while let bytes = try b.readOutbound(as: ByteBuffer.self) {
                try a.writeInbound(bytes)
                moved = true
            }
        }
    }
}

/// Two async testing channels (each on its own loop thread) carried into each other by `pump()`.
final class AsyncPair: Sendable {
    let a = NIOAsyncTestingChannel()
    let b = NIOAsyncTestingChannel()
    let inboundA = Collector()
    let inboundB = Collector()
    let connectionA: MplexConnection
    let connectionB: MplexConnection

    init(configuration: MplexConfiguration = .init()) async throws {
        let address = try SocketAddress(ipAddress: "127.0.0.1", port: 4001)
        try await a.connect(to: address).get()
        try await b.connect(to: address).get()
        connectionA = try await Self.install(on: a, configuration: configuration, collector: inboundA)
        connectionB = try await Self.install(on: b, configuration: configuration, collector: inboundB)
    }

    private static func install(
        on channel: NIOAsyncTestingChannel,
        configuration: MplexConfiguration,
        collector: Collector
    ) async throws -> MplexConnection {
        try await channel.eventLoop.submit {
            try MplexConnection.install(on: channel, configuration: configuration) { collector.add($0) }
        }.get()
    }

    /// Carries bytes both ways until neither side has anything to send.
    func pump() async throws {
        var moved = true
        while moved {
            moved = false
            while let bytes = try await a.readOutbound(as: ByteBuffer.self) {
                try await b.writeInbound(bytes)
                moved = true
            }
            while let bytes = try await b.readOutbound(as: ByteBuffer.self) {
                try await a.writeInbound(bytes)
                moved = true
            }
        }
    }

    /// Pumps until the peer has announced `count` inbound streams to `collector`.
    func pumpUntil(_ collector: Collector, hasStreams count: Int) async throws -> MplexStream {
        try await pump()
        while collector.streams.count < count {
            await Task.yield()
            try await pump()
        }
        return collector.streams[count - 1]
    }
}

/// The mplex error code a task failed with, or nil if it succeeded or failed otherwise.
func errorCode<T>(_ task: Task<T, any Error>) async -> MplexError.Code? {
    switch await task.result {
    case .success: return nil
    case .failure(let error): return (error as? MplexError)?.code
    }
}

/// The mplex error code `body` throws, or nil.
func errorCode(_ body: () async throws -> Void) async -> MplexError.Code? {
    do {
        try await body()
        return nil
    } catch {
        return (error as? MplexError)?.code
    }
}
