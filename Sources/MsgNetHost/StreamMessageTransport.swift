import Logging
import MsgNetCore
import MsgNetSecurity
import MsgNetStreams
import NIOConcurrencyHelpers
import NIOCore

/// The stream path of the message API: libp2p over a ``StreamTransport`` (TCP), wire-compatible
/// with other libp2p implementations.
///
/// - A message protocol is negotiated with multistream-select on an mplex stream; then each
///   message is `uvarint(length) || payload`.
/// - Plain sends reuse one outbound stream per (peer, protocol), reopened after it closes;
///   messages the peer writes back on it reach the protocol's handler.
/// - Each request opens its own stream (protocol proposed lazily, together with the request),
///   closes its write side after the request and reads exactly one reply, as libp2p
///   request/response protocols (identify, kad) do.
/// - Between MsgNet peers, requests instead use *request streams*
///   (``Configuration/requestStreams``): a stream negotiated as
///   ``requestStreamsProtocol`` + the protocol id, kept open after its reply and reused by the
///   next request to that peer and protocol, so a request costs no stream setup or negotiation.
/// - Inbound streams are read one message at a time; a handler's reply is written on the stream
///   the message came on. While the handler is busy (or its protocol at its concurrency limit)
///   the stream is not read, so mplex and then TCP push back on the sender.
public final class StreamMessageTransport: MessageTransport {
    /// Settings of the stream path.
    public struct Configuration: Sendable {
        /// Message streams per peer and direction: inbound streams over this are reset; a
        /// request over this fails with `.limitExceeded`.
        public var maxStreamsPerPeer = 256
        /// Bytes queued or unwritten on one outbound channel above which sends wait.
        public var writeHighWatermark = 256 * 1024
        /// The underlying stream host's settings (identify, timeouts, mplex limits, and how many
        /// idle request streams are kept and for how long).
        public var streamHost = StreamHostConfiguration()
        /// Whether requests use kept-open request streams (see ``RequestStreams``).
        public var requestStreams = RequestStreams.whenSupported
        /// An inbound request stream with no request for this long is reset (a requester keeps
        /// idle ones for ``StreamHostConfiguration/requestStreamIdleTimeout``, 30 s, and then
        /// closes them itself; this reclaims the streams of one that does not).
        public var inboundRequestStreamIdleTimeout: TimeAmount = .seconds(120)

        /// The defaults.
        public init() {}
    }

    /// Whether requests travel on kept-open *request streams* rather than on a new stream each.
    ///
    /// A request stream for protocol `P` is an mplex stream negotiated (lazily, with its first
    /// request) as ``StreamMessageTransport/requestStreamsProtocol`` followed by `P`, e.g.
    /// `/msgnet/requests/1.0.0/kv/1.0.0`. The requester writes one framed request, reads one
    /// framed answer, and may then write the next request on the same stream; it never has more
    /// than one request in flight on it. The responder reads request after request, hands each
    /// to `P`'s handler and answers each exactly once: the handler's reply, or an error when the
    /// handler returned without replying, threw, was removed, or the request was over the rate
    /// limit (the requester gets `.remoteError`, `.protocolNotSupported` or `.limitExceeded`,
    /// as on the datagram path, and the stream stays usable). Idle request streams are kept up
    /// to ``StreamHostConfiguration/maxIdleRequestStreams`` per connection and for
    /// ``StreamHostConfiguration/requestStreamIdleTimeout``. Only MsgNet speaks this; protocol
    /// ids that do not start with `/` always use per-request streams. The bytes are in
    /// `docs/api.md` ("Request streams").
    public enum RequestStreams: Sendable, Hashable {
        /// Serve request streams and announce them in identify (as
        /// ``StreamMessageTransport/requestStreamsProtocol``); use them for a peer whose identify
        /// announced them, and per-request streams otherwise (the default).
        case whenSupported
        /// Serve request streams and use them for every peer without checking identify: for
        /// networks of MsgNet nodes (a peer without them answers the proposal with `na`, and the
        /// request is sent again on a stream of its own: one more round trip per request).
        case always
        /// Neither serve nor use them: every request opens its own stream.
        case off
    }

    /// The prefix of request stream protocol ids, and what identify announces for them.
    public static let requestStreamsProtocol = "/msgnet/requests/1.0.0"

    /// The stream host underneath (connections, identify, ping, raw streams).
    public let streamHost: StreamHost
    /// The settings.
    public let configuration: Configuration
    /// Always `.stream`.
    public var path: MessagePath { .stream }
    let logger: Logger

    private struct Key: Hashable {
        let peer: PeerID
        let protocolID: String
    }
    private enum Outbound {
        case opening([CheckedContinuation<StreamChannel, any Error>])
        case open(StreamChannel)
    }
    private struct State {
        var context: MessageTransportContext?
        var handled: Set<String> = []
        var outbound: [Key: Outbound] = [:]
        /// The channel of the last send: a burst of sends to one peer and protocol compares
        /// the key instead of hashing it (PeerID and protocol hashing was the send path's
        /// largest cost).
        var last: (key: Key, channel: StreamChannel)?
        var inboundStreams: [PeerID: Int] = [:]
        var requestStreams: [PeerID: Int] = [:]
        var shutdown = false
        /// Readers waiting, at their stream's end, for the reply to a message an inbox took
        /// (released at shutdown, which would otherwise wait out their reply windows).
        var heldWaits: [ObjectIdentifier: StreamChannel] = [:]
        var blockedSends = 0
        var blockedWaiters: [(after: Int, continuation: CheckedContinuation<Void, Never>)] = []

        /// The streams counted against ``Configuration/maxStreamsPerPeer``, per peer.
        enum Counted {
            case inbound
            case requests
        }

        /// Counts one more stream of `kind` with `peer` within `limit`; returns the context.
        /// - Throws: `.cancelled` once shut down, `.limitExceeded` at the limit.
        mutating func admit(_ kind: Counted, _ peer: PeerID, limit: Int) throws -> MessageTransportContext {
            guard let context, !shutdown else { throw MessageError(.cancelled, "the host is shut down") }
            let count = counts(kind)[peer, default: 0]
            guard count < limit else {
                switch kind {
                case .inbound: throw MessageError(.limitExceeded, "more than \(limit) message streams from \(peer)")
                case .requests: throw MessageError(.limitExceeded, "more than \(limit) requests in flight to \(peer)")
                }
            }
            setCount(kind, peer, count + 1)
            return context
        }

        /// Ends what ``admit(_:_:limit:)`` counted.
        mutating func release(_ kind: Counted, _ peer: PeerID) {
            let remaining = counts(kind)[peer, default: 1] - 1
            setCount(kind, peer, remaining)
        }

        private func counts(_ kind: Counted) -> [PeerID: Int] {
            kind == .inbound ? inboundStreams : requestStreams
        }

        private mutating func setCount(_ kind: Counted, _ peer: PeerID, _ n: Int) {
            switch kind {
            case .inbound: inboundStreams[peer] = n == 0 ? nil : n
            case .requests: requestStreams[peer] = n == 0 ? nil : n
            }
        }
    }
    private let state = NIOLockedValueBox(State())
    private let work: AsyncStream<@Sendable () async -> Void>
    private let workContinuation: AsyncStream<@Sendable () async -> Void>.Continuation

    /// Creates the stream path over `transports` with `security` (e.g. `NoiseSecurity`).
    public init(
        identity: PrivateKey,
        transports: [any StreamTransport],
        security: [any SecurityProtocol],
        peerstore: Peerstore,
        configuration: Configuration = Configuration(),
        logger: Logger = Logger(label: "msgnet.message-host")
    ) {
        self.streamHost = StreamHost(
            identity: identity,
            transports: transports,
            security: security,
            configuration: configuration.streamHost,
            peerstore: peerstore,
            logger: logger
        )
        self.configuration = configuration
        self.logger = logger
        (work, workContinuation) = AsyncStream.makeStream(of: (@Sendable () async -> Void).self)
        if configuration.requestStreams != .off {
            let reader = self.reader
            let state = self.state
            streamHost.setStreamHandler(
                matching: { id in
                    guard let p = Self.requestedProtocol(id) else { return false }
                    return state.withLockedValue { $0.handled.contains(p) }
                },
                advertised: Self.requestStreamsProtocol,
                handler: { stream in try await reader.serveRequests(stream) })
        }
    }

    /// The wire protocol id of `protocolID`'s request streams, or `nil` when it cannot have one
    /// (it does not start with `/`, or the id would be too long for multistream-select).
    static func requestStreamID(_ protocolID: String) -> String? {
        guard protocolID.utf8.first == UInt8(ascii: "/"),
            requestStreamsProtocol.utf8.count + protocolID.utf8.count <= maxRequestStreamIDLength
        else { return nil }
        return requestStreamsProtocol + protocolID
    }

    /// The message protocol a request stream id names, or `nil` when `id` is not one.
    static func requestedProtocol(_ id: String) -> String? {
        let prefix = requestStreamsProtocol.utf8
        let bytes = id.utf8
        guard bytes.count > prefix.count, bytes.starts(with: prefix) else { return nil }
        let rest = bytes.dropFirst(prefix.count)
        guard rest.first == UInt8(ascii: "/") else { return nil }
        return String(rest)
    }

    /// The longest request stream id: fits a multistream-select line (1024 bytes with its
    /// length prefix and newline).
    static let maxRequestStreamIDLength = 1000

    // MARK: Lifetime

    /// Connects this path to its host (called by ``MessageHost``).
    public func attach(to context: MessageTransportContext) {
        state.withLockedValue { $0.context = context }
    }

    /// Runs the stream host and every message stream reader until ``shutdown()``.
    public func run() async throws {
        guard let context = state.withLockedValue({ $0.context }) else {
            throw MessageError(.cancelled, "the transport is not attached to a host")
        }
        await withDiscardingTaskGroup { group in
            group.addTask { await self.streamHost.run() }
            group.addTask {
                for await event in self.streamHost.events {
                    if let mapped = Self.map(event) { context.emit(mapped) }
                }
            }
            for await item in work {
                group.addTask { await item() }
            }
        }
    }

    /// Closes listeners and connections; ``run(context:)`` returns when the readers have.
    public func shutdown() async {
        let (channels, held) = state.withLockedValue { s -> ([StreamChannel], [StreamChannel]) in
            s.shutdown = true
            s.last = nil
            let open = s.outbound.values.compactMap { o -> StreamChannel? in
                if case .open(let c) = o { return c }
                return nil
            }
            defer { s.heldWaits = [:] }
            return (open, Array(s.heldWaits.values))
        }
        for c in held { c.releaseHeld() }
        for c in channels { await c.close() }
        await streamHost.shutdown()
        workContinuation.finish()
    }

    private static func map(_ event: StreamHostEvent) -> MessageHostEvent? {
        func connection(_ info: ConnectionInfo) -> MessageConnection {
            MessageConnection(
                peer: info.remotePeer, remoteAddress: info.remoteAddress, localAddress: info.localAddress,
                direction: info.direction == .inbound ? .inbound : .outbound, path: .stream)
        }
        switch event {
        case .listenStarted(let a): return .listenStarted(a)
        case .listenClosed(let a): return .listenClosed(a)
        case .connectionOpened(let info): return .connectionOpened(connection(info))
        case .connectionClosed(let info): return .connectionClosed(connection(info))
        case .peerIdentified(let info): return .peerIdentified(info)
        case .peerProtocolsUpdated(let peer, let protocols): return .peerProtocolsUpdated(peer, protocols)
        }
    }

    // MARK: Network

    /// Starts listening on `address`.
    public func listen(on address: Multiaddr) async throws -> Multiaddr {
        try await streamHost.listen(on: address)
    }

    /// The addresses we listen on.
    public var listenAddresses: [Multiaddr] { streamHost.listenAddresses }

    /// Whether a transport of this path can handle `address`.
    public func canHandle(_ address: Multiaddr) -> Bool {
        streamHost.transports.contains { $0.canHandle(address.withoutPeerID()) }
    }

    /// Connects to `address` (with `/p2p/<id>`), sharing an in-progress dial to the same peer.
    public func connect(to address: Multiaddr) async throws -> PeerID {
        try await streamHost.connect(to: address)
    }

    /// Whether a connection to `peer` is up.
    public func isConnected(to peer: PeerID) -> Bool { streamHost.isConnected(to: peer) }

    /// Peers with a connection.
    public var connectedPeers: [PeerID] { streamHost.connectedPeers }

    /// Protocols with an open outbound message stream to `peer`.
    public func sessionProtocols(with peer: PeerID) -> [String] {
        state.withLockedValue { s in
            s.outbound.compactMap { key, value -> String? in
                guard key.peer == peer, case .open(let c) = value, c.isUsable else { return nil }
                return key.protocolID
            }.sorted()
        }
    }

    /// Closes the outbound message stream to `peer` on `protocol`.
    public func closeSession(to peer: PeerID, protocol: String) async {
        let key = Key(peer: peer, protocolID: `protocol`)
        let channel = state.withLockedValue { s -> StreamChannel? in
            guard case .open(let c) = s.outbound[key] else { return nil }
            s.outbound[key] = nil
            if s.last?.channel === c { s.last = nil }
            return c
        }
        await channel?.close()
    }

    /// Closes every connection to `peer`.
    public func closePeer(_ peer: PeerID) async {
        await streamHost.disconnect(peer)
    }

    /// Registers (and removes) stream handlers so that exactly `protocols` are negotiable.
    public func setHandledProtocols(_ protocols: Set<String>) {
        let (added, removed) = state.withLockedValue { s -> (Set<String>, Set<String>) in
            let added = protocols.subtracting(s.handled)
            let removed = s.handled.subtracting(protocols)
            s.handled = protocols
            return (added, removed)
        }
        for p in removed { streamHost.removeStreamHandler(p) }
        // The handlers hold the reader (state, settings), not the transport: the stream host
        // they are registered with belongs to the transport. (A weak reference would do too, but
        // it gives the transport a side table, which makes every retain and release of it slow.)
        let reader = self.reader
        for p in added.sorted() {
            streamHost.setStreamHandler(p) { stream in try await reader.serveInbound(stream) }
        }
    }

    // MARK: Inbound

    private var reader: Reader { Reader(state: state, configuration: configuration, logger: logger) }

    /// Serves inbound message streams and reads messages on any channel. Holds no reference to
    /// the transport.
    private struct Reader: Sendable {
        let state: NIOLockedValueBox<State>
        let configuration: Configuration
        let logger: Logger

        func serveInbound(_ stream: NegotiatedStream) async throws {
            let peer = stream.connection.remotePeer
            let context = try state.withLockedValue { s throws in
                try s.admit(.inbound, peer, limit: configuration.maxStreamsPerPeer)
            }
            defer { state.withLockedValue { $0.release(.inbound, peer) } }
            let channel = StreamChannel(
                stream: stream, maxMessageSize: context.maxMessageSize, highWatermark: configuration.writeHighWatermark)
            if await readMessages(on: channel, context: context, inbound: true) {
                await channel.close()
            }
        }

        /// Serves an inbound request stream: each message on it is a request whose handler must
        /// reply before it returns; one that does not ends the stream.
        func serveRequests(_ stream: NegotiatedStream) async throws {
            guard let protocolID = StreamMessageTransport.requestedProtocol(stream.protocolID) else {
                throw MessageError(.protocolNotSupported, "not a request stream: \(stream.protocolID)")
            }
            let peer = stream.connection.remotePeer
            let context = try state.withLockedValue { s throws in
                try s.admit(.inbound, peer, limit: configuration.maxStreamsPerPeer)
            }
            defer { state.withLockedValue { $0.release(.inbound, peer) } }
            let channel = StreamChannel(
                stream: stream, protocolID: protocolID, maxMessageSize: context.maxMessageSize,
                highWatermark: configuration.writeHighWatermark, requests: true)
            let idle = configuration.inboundRequestStreamIdleTimeout
            let check = stream.eventLoop.scheduleRepeatedTask(initialDelay: idle, delay: idle) { _ in
                if channel.isIdle(since: .now() - idle) {
                    channel.reset(MessageError(.timedOut, "no request on the \(protocolID) request stream for \(idle)"))
                }
            }
            defer { check.cancel() }
            if await readMessages(on: channel, context: context, inbound: true) {
                await channel.close()
            }
        }

        /// Waits for the reply to the message an inbox took from `channel` (see
        /// ``StreamChannel/waitForHeldReply()``), but not past shutdown.
        func waitForHeldReply(_ channel: StreamChannel) async {
            let id = ObjectIdentifier(channel)
            let registered = state.withLockedValue { s -> Bool in
                guard !s.shutdown else { return false }
                s.heldWaits[id] = channel
                return true
            }
            guard registered else { return }
            await channel.waitForHeldReply()
            state.withLockedValue { _ = $0.heldWaits.removeValue(forKey: id) }
        }

        /// Reads messages on `channel` and hands each to its handler until the stream ends (on a
        /// request stream, also when a handler returns without replying).
        /// - Returns: whether the stream ended cleanly (otherwise it was reset).
        func readMessages(on channel: StreamChannel, context: MessageTransportContext, inbound: Bool) async -> Bool {
            var reader = FramedReader(maxSize: context.maxMessageSize)
            var cache = DeliveryCache()
            do {
                while true {
                    let data: ByteBuffer
                    switch try reader.nextIfReady(from: channel.stream) {
                    case .message(let ready):
                        data = ready
                    case .end:
                        await waitForHeldReply(channel)
                        return true
                    case .wait:
                        guard let next = try await reader.next(from: channel.stream) else {
                            await waitForHeldReply(channel)
                            return true
                        }
                        data = next
                    }
                    let message = Message(
                        data: data, from: channel.peer, protocol: channel.protocolID, path: .stream,
                        replyChannel: channel, replyToken: channel.nextRequestToken())
                    do {
                        try await context.deliver(message, cache: &cache)
                        if channel.requests {
                            try await channel.replyError(
                                .remoteError, "the handler of \(channel.protocolID) returned without replying")
                        }
                    } catch  where channel.requests && !(error is CancellationError) {
                        // A request stream stays usable: the requester gets the failure as its
                        // answer, as on the datagram path.
                        let e = error as? MessageError
                        let code = e?.code ?? .remoteError
                        try await channel.replyError(
                            [.protocolNotSupported, .limitExceeded].contains(code) ? code : .remoteError,
                            e?.message ?? "the handler of \(channel.protocolID) failed: \(error)")
                    } catch let error as MessageError where error.code == .protocolNotSupported && !inbound {
                        // The peer wrote back on our outbound stream but we have no handler: drop it.
                        logger.debug(
                            "dropping message on an outbound stream without handler",
                            metadata: ["protocol": "\(channel.protocolID)", "from": "\(channel.peer)"])
                    }
                }
            } catch {
                let e = MessageError.from(error)
                if e.code == .messageTooLarge || e.code == .remoteError {
                    context.emit(.messageRejected(from: channel.peer, protocol: channel.protocolID, reason: e))
                }
                logger.debug(
                    "message stream ended",
                    metadata: ["protocol": "\(channel.protocolID)", "remote": "\(channel.peer)", "error": "\(e)"])
                channel.reset(e)
                return false
            }
        }

    }

    // MARK: Outbound

    /// Sends one message on the (peer, protocol) channel, opening it when needed.
    public func send(_ data: ByteBuffer, to peer: PeerID, protocol: String, mode: DeliveryMode) async throws {
        let channel = try await outboundChannel(Key(peer: peer, protocolID: `protocol`))
        try await channel.write(data)
    }

    /// Queues the message on the open (peer, protocol) channel when it has room; false when the
    /// channel must be opened first, is closed, or is over its high watermark.
    public func sendWithoutWaiting(_ data: ByteBuffer, to peer: PeerID, protocol: String, mode: DeliveryMode) throws
        -> Bool
    {
        let channel = state.withLockedValue { s -> StreamChannel? in
            guard !s.shutdown else { return nil }
            if let last = s.last, last.key.peer == peer, last.key.protocolID == `protocol` { return last.channel }
            let key = Key(peer: peer, protocolID: `protocol`)
            guard case .open(let c) = s.outbound[key] else { return nil }
            s.last = (key, c)
            return c
        }
        return channel?.tryWrite(data) ?? false
    }

    /// Opens the (peer, protocol) channel now.
    public func openSession(to peer: PeerID, protocol: String) async throws {
        _ = try await outboundChannel(Key(peer: peer, protocolID: `protocol`))
    }

    private func outboundChannel(_ key: Key) async throws -> StreamChannel {
        enum Step {
            case ready(StreamChannel)
            case wait
            case open(MessageTransportContext)
        }
        let step = try state.withLockedValue { s throws -> Step in
            guard let context = s.context, !s.shutdown else {
                throw MessageError(.cancelled, "the host is shut down")
            }
            if let last = s.last, last.key == key, last.channel.isUsable { return .ready(last.channel) }
            switch s.outbound[key] {
            case .open(let c) where c.isUsable:
                s.last = (key, c)
                return .ready(c)
            case .opening:
                return .wait
            case .open, nil:
                s.outbound[key] = .opening([])
                return .open(context)
            }
        }
        switch step {
        case .ready(let channel):
            return channel
        case .wait:
            return try await withCheckedThrowingContinuation { continuation in
                let ready = state.withLockedValue { s -> Result<StreamChannel, any Error>? in
                    switch s.outbound[key] {
                    case .opening(var waiters):
                        waiters.append(continuation)
                        s.outbound[key] = .opening(waiters)
                        return nil
                    case .open(let c):
                        return .success(c)
                    case nil:
                        return .failure(MessageError(.connectionClosed, "the channel to \(key.peer) closed"))
                    }
                }
                if let ready { continuation.resume(with: ready) }
            }
        case .open(let context):
            let result: Result<StreamChannel, any Error>
            do {
                let stream = try await streamHost.newStream(to: key.peer, protocols: [key.protocolID])
                let channel = StreamChannel(
                    stream: stream, maxMessageSize: context.maxMessageSize,
                    highWatermark: configuration.writeHighWatermark,
                    onBlocked: { [state] in Self.noteBlockedSend(state) })
                result = .success(channel)
            } catch {
                result = .failure(MessageError.from(error))
            }
            let waiters = state.withLockedValue { s -> [CheckedContinuation<StreamChannel, any Error>] in
                guard case .opening(let waiters) = s.outbound[key] else { return [] }
                if case .success(let c) = result { s.outbound[key] = .open(c) } else { s.outbound[key] = nil }
                return waiters
            }
            if case .success(let channel) = result {
                let enqueued = workContinuation.yield { [self] in
                    if await reader.readMessages(on: channel, context: context, inbound: false) {
                        // The peer closed its side: close ours too (after what is queued).
                        await channel.close()
                    }
                    channel.fail(
                        MessageError(.connectionClosed, "the stream to \(key.peer) on \(key.protocolID) ended"))
                    state.withLockedValue { s in
                        if case .open(let c) = s.outbound[key], c === channel { s.outbound[key] = nil }
                        if s.last?.channel === channel { s.last = nil }
                    }
                }
                if case .terminated = enqueued { channel.reset(MessageError(.cancelled, "shutting down")) }
            }
            for w in waiters { w.resume(with: result) }
            return try result.get()
        }
    }

    private static func noteBlockedSend(_ state: NIOLockedValueBox<State>) {
        let waiters = state.withLockedValue { s in
            s.blockedSends += 1
            let ready = s.blockedWaiters.filter { $0.after < s.blockedSends }.map(\.continuation)
            s.blockedWaiters.removeAll { $0.after < s.blockedSends }
            return ready
        }
        for w in waiters { w.resume() }
    }

    /// How many times a send has had to wait for its channel to drain (backpressure), for tests.
    package var blockedSendCount: Int { state.withLockedValue { $0.blockedSends } }

    /// Waits until more than `count` sends have had to wait for their channel to drain
    /// (backpressure), for tests.
    package func waitForBlockedSend(after count: Int = 0) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLockedValue { s -> Bool in
                if s.blockedSends > count { return true }
                s.blockedWaiters.append((count, c))
                return false
            }
            if now { c.resume() }
        }
    }

    /// Sends a request on a new stream and reads exactly one reply.
    public func request(
        _ data: ByteBuffer,
        to peer: PeerID,
        protocol: String,
        timeout: TimeAmount
    ) async throws -> Message {
        let maxSize = try state.withLockedValue { s throws in
            try s.admit(.requests, peer, limit: configuration.maxStreamsPerPeer).maxMessageSize
        }
        defer { state.withLockedValue { $0.release(.requests, peer) } }
        // The deadline counts from here: a dial (bounded by the stream host's dial timeout) and
        // opening the stream use up part of it.
        let deadline = NIODeadline.now() + timeout
        var frame = ByteBuffer()
        frame.reserveCapacity(10 + data.readableBytes)
        UVarint.write(UInt64(data.readableBytes), to: &frame)
        frame.writeImmutableBuffer(data)
        var requestStreamID = useRequestStreams(to: peer) ? Self.requestStreamID(`protocol`) : nil
        var reply: ByteBuffer
        do {
            do {
                reply = try await streamHost.request(
                    to: peer, protocolID: requestStreamID ?? `protocol`, frame: frame,
                    maxReplySize: requestStreamID == nil ? maxSize : maxSize + 1,
                    deadline: deadline, keepStreamOpen: requestStreamID != nil,
                    keepIf: requestStreamID == nil ? nil : Self.isSoundAnswer)
            } catch let error as StreamsError where error.code == .protocolNotSupported && requestStreamID != nil {
                // The peer refused the request stream in negotiation (`na`), so the request was
                // not handled: ask again on a stream of its own (a peer whose announcement we
                // knew from an earlier connection, or `.always` to a peer without them).
                requestStreamID = nil
                reply = try await streamHost.request(
                    to: peer, protocolID: `protocol`, frame: frame, maxReplySize: maxSize, deadline: deadline)
            }
        } catch let error as ReplyTooLargeError {
            throw MessageError(.messageTooLarge, "reply from \(peer) on \(`protocol`): \(error)")
        } catch let error as StreamsError where error.code == .protocolViolation {
            throw MessageError(.remoteError, error.message)
        } catch {
            if Task.isCancelled { throw MessageError(.cancelled, "request to \(peer) on \(`protocol`) cancelled") }
            throw MessageError.from(error)
        }
        if requestStreamID != nil {
            switch reply.readInteger(as: UInt8.self) {
            case RequestStreamStatus.reply?:
                break
            case RequestStreamStatus.error?:
                throw ErrorReply.decode(reply, from: peer)
            default:
                throw MessageError(.remoteError, "malformed answer from \(peer) on \(`protocol`)'s request stream")
            }
        }
        return Message(data: reply, from: peer, protocol: `protocol`, path: .stream)
    }

    /// Whether an answer on a request stream starts with a known status (else the stream is not
    /// kept: it is out of step with this protocol).
    @Sendable private static func isSoundAnswer(_ answer: ByteBuffer) -> Bool {
        guard let status = answer.getInteger(at: answer.readerIndex, as: UInt8.self) else { return false }
        return status == RequestStreamStatus.reply || status == RequestStreamStatus.error
    }

    /// Whether requests to `peer` go on request streams (``Configuration/requestStreams``).
    private func useRequestStreams(to peer: PeerID) -> Bool {
        switch configuration.requestStreams {
        case .off: return false
        case .always: return true
        case .whenSupported: return streamHost.peerstore.announces(Self.requestStreamsProtocol, peer: peer)
        }
    }
}
