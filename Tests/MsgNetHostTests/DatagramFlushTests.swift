import MsgNetCore
import MsgNetHost
import MsgNetStreams
import MsgNetTransportPosix
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

/// What a datagram socket saw, in order: read batches, writes and flushes.
enum SocketEvent: Equatable, Sendable {
    case read
    case batchEnd
    case write
    case flush
}

/// Real UDP underneath, with a log of the socket's events. When `batchNext` is set, that many
/// incoming datagrams are held and then handed over as one read batch (each datagram, then one
/// end-of-batch call), as a vector read of several datagrams would.
final class RecordingDatagrams: DatagramTransport {
    private struct State {
        var log: [SocketEvent] = []
        var batchNext = 0
        var held: [(ByteBuffer, SocketAddress)] = []
    }
    private let inner: UDPTransport
    private let state = NIOLockedValueBox(State())

    init(group: any EventLoopGroup) {
        inner = UDPTransport(group: group)
    }

    var log: [SocketEvent] { state.withLockedValue { $0.log } }
    func clearLog() { state.withLockedValue { $0.log = [] } }
    func batchNext(_ count: Int) { state.withLockedValue { $0.batchNext = count } }

    func canHandle(_ address: Multiaddr) -> Bool { inner.canHandle(address) }

    func bind(
        _ address: Multiaddr,
        handler: @escaping @Sendable (ByteBuffer, SocketAddress) -> Void,
        flush: @escaping @Sendable () -> Void
    ) async throws -> any DatagramSocket {
        let state = self.state
        let socket = try await inner.bind(
            address,
            handler: { data, from in
                let batch = state.withLockedValue { s -> [(ByteBuffer, SocketAddress)]? in
                    guard s.batchNext > 0 else { return nil }
                    s.held.append((data, from))
                    guard s.held.count == s.batchNext else { return [] }
                    defer {
                        s.held = []
                        s.batchNext = 0
                    }
                    return s.held
                }
                guard let batch else {
                    state.withLockedValue { $0.log.append(.read) }
                    handler(data, from)
                    return
                }
                guard !batch.isEmpty else { return }
                for (d, f) in batch {
                    state.withLockedValue { $0.log.append(.read) }
                    handler(d, f)
                }
                state.withLockedValue { $0.log.append(.batchEnd) }
                flush()
            },
            flush: {
                // A real batch ends here even when it only added to the held datagrams; those
                // make a batch of their own once complete.
                state.withLockedValue { $0.log.append(.batchEnd) }
                flush()
            })
        return RecordingSocket(inner: socket, state: state)
    }

    private struct RecordingSocket: DatagramSocket {
        let inner: any DatagramSocket
        let state: NIOLockedValueBox<State>
        var localAddress: Multiaddr { inner.localAddress }
        var eventLoop: any EventLoop { inner.eventLoop }
        func write(_ datagram: ByteBuffer, to address: SocketAddress) {
            state.withLockedValue { $0.log.append(.write) }
            inner.write(datagram, to: address)
        }
        func flush() {
            state.withLockedValue { $0.log.append(.flush) }
            inner.flush()
        }
        func close() async { await inner.close() }
    }
}

@Suite("Datagram path: when replies leave", .timeLimit(.minutes(1)))
struct DatagramFlushTests {
    /// The first datagram a read batch causes leaves at once; the rest of the batch's writes wait
    /// for its end and leave in one flush (at most one extra flush per batch).
    @Test("the first reply of a read batch is flushed at once, later ones at the batch's end")
    func firstReplyFlushesAtOnce() async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let recording = RecordingDatagrams(group: loop)
        let identity = PrivateKey.generate()
        let peerstore = Peerstore()
        let serverTransport = DatagramMessageTransport(identity: identity, datagrams: recording, eventLoop: loop)
        let server = MessageHost(identity: identity, transports: [serverTransport], peerstore: peerstore)
        let client = TransportFactory.udp.host()
        server.setMessageHandler(for: "/echo") { message in try await message.reply(message.data) }
        try await running([server, client]) {
            let address = try await server.network.listen(on: try Multiaddr("/ip4/127.0.0.1/udp/0"))
            let peer = try await client.network.connect(to: address)
            // Settle the session (identify, protocol binding) before looking at the log.
            let warm = try await client.request([1], to: peer, protocol: "/echo")
            #expect(Array(buffer: warm.data) == [1])

            // Every read batch that writes: its first write is flushed at once, nothing else is
            // flushed inside it, and what it wrote later leaves right at its end. Other datagrams
            // (acknowledgements, identify) come and go too, so batches are checked by this rule,
            // and the test repeats (bounded) until it has seen a lone request answered and two
            // requests held into one batch and both answered.
            var sawSingle = false
            var sawPair = false
            // The log is cleared and read on the socket's loop: from the test's thread, a clear
            // could land in the middle of a read batch and leave only its tail in the log.
            for attempt in 0..<20 where !(sawSingle && sawPair) {
                try await loop.submit {
                    recording.clearLog()
                    if attempt % 2 == 1 { recording.batchNext(2) }
                }.get()
                // Even attempts send one request, odd ones two held into one batch (two sent at
                // once without holding would mostly arrive in one batch too).
                if attempt % 2 == 0 {
                    let reply = try await client.request([2], to: peer, protocol: "/echo")
                    #expect(Array(buffer: reply.data) == [2])
                } else {
                    async let a = client.request([2], to: peer, protocol: "/echo")
                    async let b = client.request([3], to: peer, protocol: "/echo")
                    let replies = try await [a, b].map { Array(buffer: $0.data) }
                    #expect(Set(replies) == [[2], [3]])
                }
                let log = try await loop.submit { recording.log }.get()
                for batch in Self.batches(log) {
                    let writes = batch.events.filter { $0 == .write }.count
                    guard writes > 0, let first = batch.events.firstIndex(of: .write) else { continue }
                    #expect(batch.events.dropFirst(first + 1).first == .flush, "first write flushed at once: \(log)")
                    #expect(batch.events.filter { $0 == .flush }.count == 1, "one flush inside a batch: \(log)")
                    if writes > 1 { #expect(batch.after == .flush, "the rest leaves at the batch's end: \(log)") }
                    let reads = batch.events.filter { $0 == .read }.count
                    if reads == 1 { sawSingle = true }
                    if reads == 2 && writes >= 2 { sawPair = true }
                }
            }
            #expect(sawSingle, "a lone request was answered inside its read batch")
            #expect(sawPair, "two requests in one read batch were answered")
        }
    }

    /// The log's read batches: the events from a batch's first read to its end, and the event
    /// right after the end.
    static func batches(_ log: [SocketEvent]) -> [(events: [SocketEvent], after: SocketEvent?)] {
        var result: [(events: [SocketEvent], after: SocketEvent?)] = []
        var current: [SocketEvent] = []
        var inBatch = false
        for (i, event) in log.enumerated() {
            if event == .read { inBatch = true }
            guard inBatch else { continue }
            if event == .batchEnd {
                result.append((current, i + 1 < log.count ? log[i + 1] : nil))
                current = []
                inBatch = false
            } else {
                current.append(event)
            }
        }
        return result
    }
}
