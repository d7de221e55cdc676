import Logging
import MsgNetCore
import MsgNetSecurity
import MsgNetStreams
import NIOConcurrencyHelpers
import NIOCore
import Synchronization

/// Settings of a ``MessageHost`` that hold on every path.
public struct MessageHostConfiguration: Sendable {
    /// The largest message payload sent or accepted, in bytes (default 1 MiB). Larger outbound
    /// messages fail with `.messageTooLarge`; a larger inbound one closes its channel.
    public var maxMessageSize = 1 << 20
    /// Handler invocations running at once per protocol. Further messages wait, and their
    /// channels stop being read (backpressure).
    public var maxConcurrentHandlersPerProtocol = 64
    /// Messages held unread per ``MessageHost/messages(for:)`` sequence before delivery waits.
    public var inboxCapacity = 64
    /// Inbound messages accepted per peer and second, over all protocols; `nil` = no limit.
    /// Messages over the limit are dropped, their channel is closed and a
    /// ``MessageHostEvent/messageRejected(from:protocol:reason:)`` is emitted.
    public var maxInboundMessagesPerSecondPerPeer: Double?
    /// The burst the inbound rate limit allows.
    public var inboundMessageBurst = 100
    /// Timeout of ``MessageHost/request(_:to:protocol:timeout:)`` when none is given.
    public var defaultRequestTimeout: Duration = .seconds(10)
    /// The order in which paths are tried for a peer with no live session (see
    /// ``MessageHost/transports``): by default the datagram path (UDP) first, the stream path
    /// (TCP) as fallback when the datagram path cannot reach the peer within its connect
    /// deadline. Transports whose path is not listed come last, in the order given.
    public var pathPreference: [MessagePath] = [.datagram, .stream]
    /// The clock of rate limits (inject one in tests).
    public var now: @Sendable () -> NIODeadline = { NIODeadline.now() }

    /// The defaults.
    public init() {}
}

/// A message-first peer-to-peer node: register handlers for protocol ids, send messages and
/// requests to peers by id. The host picks a path (``MessageTransport``) per peer, dials it
/// from the peerstore when needed, and delivers the same ``Message`` to the same handler
/// whatever path it came on.
///
/// Lifetime: call ``run()`` in a task; it owns all of the host's work and returns after
/// ``shutdown()`` (graceful: listeners close, connections close, running handlers finish).
///
/// ```swift
/// let host = MessageHost(identity: .generate(), streamTransports: [TCPTransport(group: group)])
/// host.setMessageHandler(for: "/echo/1.0.0") { message in try await message.reply(message.data) }
/// ```
public final class MessageHost: Sendable {
    /// Our identity.
    public let identity: PrivateKey
    /// Our peer id.
    public var peerID: PeerID { identity.peerID }
    /// What we know about peers (addresses, keys, protocols, latency).
    public let peerstore: Peerstore
    /// The settings.
    public let configuration: MessageHostConfiguration
    /// The paths, in order of preference: the transports given to ``init(identity:transports:peerstore:configuration:logger:)``
    /// ordered by ``MessageHostConfiguration/pathPreference`` (a stable order: two transports of
    /// one path keep theirs).
    public let transports: [any MessageTransport]
    let logger: Logger

    final class Slot: Sendable {
        let handler: MessageHandler
        let gate: AsyncGate
        let inbox: MessageInbox?
        init(handler: @escaping MessageHandler, limit: Int, inbox: MessageInbox?) {
            self.handler = handler
            self.gate = AsyncGate(limit: limit)
            self.inbox = inbox
        }
    }

    struct State {
        var slots: [String: Slot] = [:]
        var limiter: RateLimiter?
        var running = false
    }
    /// Handlers, delivery and events: the part the transports call back into.
    let dispatch: MessageDispatch
    private var state: NIOLockedValueBox<State> { dispatch.state }
    /// Set once by ``shutdown()`` (under the state lock, so `run()` sees it consistently); read
    /// without the lock on every send.
    private let isShutDown = Synchronization.Atomic<Bool>(false)

    /// Lifecycle events (connections, listeners, identify, rejected messages). One consumer;
    /// the newest 1024 are kept when nobody reads.
    public let events: AsyncStream<MessageHostEvent>
    private var eventContinuation: AsyncStream<MessageHostEvent>.Continuation { dispatch.eventContinuation }

    /// Creates a host over the given paths. Give every transport the same `peerstore`. The
    /// order of `transports` does not matter across paths: ``MessageHostConfiguration/pathPreference``
    /// decides which path is tried first.
    public init(
        identity: PrivateKey,
        transports: [any MessageTransport],
        peerstore: Peerstore,
        configuration: MessageHostConfiguration = MessageHostConfiguration(),
        logger: Logger = Logger(label: "msgnet.message-host")
    ) {
        precondition(!transports.isEmpty, "a MessageHost needs at least one transport")
        self.identity = identity
        self.transports = Self.ordered(transports, by: configuration.pathPreference)
        self.peerstore = peerstore
        self.configuration = configuration
        var l = logger
        l[metadataKey: "peer"] = "\(identity.peerID)"
        self.logger = l
        var initial = State()
        if let rate = configuration.maxInboundMessagesPerSecondPerPeer {
            initial.limiter = RateLimiter(rate: rate, burst: configuration.inboundMessageBurst)
        }
        let (events, continuation) = AsyncStream.makeStream(
            of: MessageHostEvent.self, bufferingPolicy: .bufferingNewest(1024))
        self.events = events
        dispatch = MessageDispatch(
            state: NIOLockedValueBox(initial), events: continuation, configuration: configuration, logger: l)
        let context = MessageTransportContext(dispatch: dispatch, peerstore: peerstore)
        for transport in transports { transport.attach(to: context) }
    }

    /// Creates a host on the stream path (libp2p: multistream, Noise, mplex) over
    /// `streamTransports` (e.g. `TCPTransport`).
    ///
    /// - Parameter security: the security protocols offered, in order; Noise when `nil`.
    public convenience init(
        identity: PrivateKey,
        streamTransports: [any StreamTransport],
        security: [any SecurityProtocol]? = nil,
        configuration: MessageHostConfiguration = MessageHostConfiguration(),
        streamConfiguration: StreamMessageTransport.Configuration = StreamMessageTransport.Configuration(),
        peerstore: Peerstore = Peerstore(),
        logger: Logger = Logger(label: "msgnet.message-host")
    ) {
        let transport = StreamMessageTransport(
            identity: identity,
            transports: streamTransports,
            security: security ?? [NoiseSecurity(identity: identity)],
            peerstore: peerstore,
            configuration: streamConfiguration,
            logger: logger
        )
        self.init(
            identity: identity, transports: [transport], peerstore: peerstore, configuration: configuration,
            logger: logger)
    }

    /// The network: listening, sessions, peers, the peerstore.
    public var network: MessageNetwork { MessageNetwork(host: self) }

    // MARK: Lifetime

    /// Runs the host until ``shutdown()``: every transport, connection and inbound handler
    /// lives within this call, which returns only after all of them have finished.
    public func run() async throws {
        let proceed = state.withLockedValue { s -> Bool in
            guard !isShutDown.load(ordering: .acquiring), !s.running else { return false }
            s.running = true
            return true
        }
        guard proceed else { return }
        defer { eventContinuation.finish() }
        try await withThrowingDiscardingTaskGroup { group in
            for transport in transports {
                group.addTask { try await transport.run() }
            }
        }
    }

    /// Shuts down gracefully: stops listening, closes every connection and finishes
    /// ``messages(for:)`` sequences; ``run()`` returns (and ``events`` ends) once running
    /// handlers have returned. Idempotent.
    public func shutdown() async {
        let (inboxes, running) = state.withLockedValue { s -> ([MessageInbox], Bool) in
            isShutDown.store(true, ordering: .releasing)
            return (s.slots.values.compactMap(\.inbox), s.running)
        }
        for transport in transports { await transport.shutdown() }
        for inbox in inboxes { inbox.finish() }
        // A running host finishes its events when run() returns, after the transports' last ones.
        if !running { eventContinuation.finish() }
    }

    // MARK: Handlers

    /// Handles inbound messages on `protocol` with `handler`, replacing an earlier handler.
    /// Peers proposing a protocol without handler are told it is not supported.
    public func setMessageHandler(for protocol: String, _ handler: @escaping MessageHandler) {
        install(`protocol`, Slot(handler: handler, limit: configuration.maxConcurrentHandlersPerProtocol, inbox: nil))
    }

    /// Removes the handler (or ``messages(for:)`` sequence) of `protocol`; messages already being
    /// handled finish.
    public func removeMessageHandler(for protocol: String) {
        let (old, protocols) = state.withLockedValue { s in
            (s.slots.removeValue(forKey: `protocol`), Set(s.slots.keys))
        }
        dispatch.handlerGeneration.add(1, ordering: .releasing)
        old?.inbox?.finish()
        for t in transports { t.setHandledProtocols(protocols) }
    }

    /// Inbound messages on `protocol` as a bounded `AsyncSequence` (replacing any handler for it).
    /// When ``MessageHostConfiguration/inboxCapacity`` messages wait unread, the channels they
    /// come on stop being read. The sequence ends on ``removeMessageHandler(for:)`` or shutdown.
    ///
    /// A request taken from the sequence can be replied to with ``Message/reply(_:)`` while its
    /// requester waits: its delivery stays open until the reply, for at most
    /// ``MessageHostConfiguration/defaultRequestTimeout`` (then the requester gets `.remoteError`),
    /// and counts against ``MessageHostConfiguration/maxConcurrentHandlersPerProtocol`` until
    /// then. On a per-request stream (a request from a libp2p peer, or from a MsgNet peer
    /// before identify) the delivery does not wait; the stream stays open for the reply instead,
    /// for the same time, after the requester has closed its side.
    public func messages(for protocol: String) -> MessageInbox {
        let inbox = MessageInbox(capacity: configuration.inboxCapacity)
        let slot = Slot(
            handler: { [replyWindow = configuration.defaultRequestTimeout.timeAmount] message in
                // The reply window opens before the consumer can see the message.
                let held = message.holdForReply(window: replyWindow)
                guard await inbox.push(message) else {
                    held?.release()
                    throw MessageError(.protocolNotSupported, "the inbox of \(message.protocol) is closed")
                }
                // A request stays open for its reply until the consumer gives it (bounded).
                await held?.wait()
            },
            limit: configuration.maxConcurrentHandlersPerProtocol,
            inbox: inbox)
        install(`protocol`, slot)
        return inbox
    }

    /// Protocols with a handler.
    public var handledProtocols: [String] {
        state.withLockedValue { $0.slots.keys.sorted() }
    }

    private func install(_ protocolID: String, _ slot: Slot) {
        let (old, protocols) = state.withLockedValue { s in
            let old = s.slots.updateValue(slot, forKey: protocolID)
            return (old, Set(s.slots.keys))
        }
        dispatch.handlerGeneration.add(1, ordering: .releasing)
        old?.inbox?.finish()
        for t in transports { t.setHandledProtocols(protocols) }
    }

    func emit(_ event: MessageHostEvent) { dispatch.emit(event) }

    // MARK: Sending

    /// Sends `data` to `peer` on `protocol`. Connects first when needed (from the peerstore's
    /// addresses; concurrent sends share one connection attempt).
    ///
    /// Returns once the message is queued on the channel to the peer, like a socket write:
    /// sends wait when too much is queued (backpressure). Messages on one channel arrive in
    /// order. Use ``request(_:to:protocol:timeout:)`` to learn that the peer handled a message.
    /// On the datagram path a reliable send returns once the peer acknowledged it. Cancelling the
    /// calling task ends either wait (for the stream to drain, or for the acknowledgement) with
    /// `.cancelled`; the outcome is unknown: the message is queued and may still arrive.
    ///
    /// - Throws: ``MessageError``: `.messageTooLarge`, `.dialFailed`, `.protocolNotSupported`,
    ///   `.connectionClosed`, `.limitExceeded`, `.cancelled`.
    public func send(
        _ data: ByteBuffer,
        to peer: PeerID,
        protocol: String,
        mode: DeliveryMode = .reliable
    ) async throws {
        try checkSendable(data, protocol: `protocol`)
        do {
            // A channel that is open and has room takes the message without an async call.
            if let live = transports.count == 1 ? transports[0] : transports.first(where: { $0.isConnected(to: peer) }),
                try live.sendWithoutWaiting(data, to: peer, protocol: `protocol`, mode: mode)
            {
                return
            }
            try await withPath(to: peer) { try await $0.send(data, to: peer, protocol: `protocol`, mode: mode) }
        } catch {
            throw MessageError.from(error)
        }
    }

    /// Sends `bytes` (see ``send(_:to:protocol:mode:)-(ByteBuffer,_,_,_)``).
    public func send(
        _ bytes: some Sequence<UInt8>,
        to peer: PeerID,
        protocol: String,
        mode: DeliveryMode = .reliable
    ) async throws {
        try await send(ByteBuffer(bytes: bytes), to: peer, protocol: `protocol`, mode: mode)
    }

    /// Sends `data` to `peer` on `protocol` and waits for exactly one reply (the peer's handler
    /// calls ``Message/reply(_:)``). Over streams each request in flight has its own stream, so
    /// concurrent requests do not wait for each other: a new one per request to a libp2p peer
    /// (as libp2p request/response protocols expect), a kept-open request stream reused between
    /// requests to a MsgNet peer (``StreamMessageTransport/RequestStreams``).
    ///
    /// Cancelling the calling task abandons the request (its stream is reset).
    ///
    /// - Parameter timeout: the longest wait for the reply, counted from the call (a dial
    ///   needed first is bounded by the path's own dial timeout); the configuration's
    ///   ``MessageHostConfiguration/defaultRequestTimeout`` when `nil`.
    /// - Returns: the reply (``Message/canReply`` is false).
    /// - Throws: ``MessageError``: `.timedOut` and `.connectionClosed` (outcome unknown),
    ///   `.protocolNotSupported`, `.messageTooLarge`, `.dialFailed`, `.limitExceeded`,
    ///   `.remoteError`, `.cancelled`.
    public func request(
        _ data: ByteBuffer,
        to peer: PeerID,
        protocol: String,
        timeout: Duration? = nil
    ) async throws -> Message {
        try checkSendable(data, protocol: `protocol`)
        let limit = (timeout ?? configuration.defaultRequestTimeout).timeAmount
        do {
            return try await withPath(to: peer) {
                try await $0.request(data, to: peer, protocol: `protocol`, timeout: limit)
            }
        } catch {
            throw MessageError.from(error)
        }
    }

    /// Sends `bytes` and waits for one reply (see ``request(_:to:protocol:timeout:)-(ByteBuffer,_,_,_)``).
    public func request(
        _ bytes: some Sequence<UInt8>,
        to peer: PeerID,
        protocol: String,
        timeout: Duration? = nil
    ) async throws -> Message {
        try await request(ByteBuffer(bytes: bytes), to: peer, protocol: `protocol`, timeout: timeout)
    }

    private func checkSendable(_ data: ByteBuffer, protocol protocolID: String) throws {
        if data.readableBytes > configuration.maxMessageSize {
            throw MessageError(
                .messageTooLarge,
                "message of \(data.readableBytes) bytes on \(protocolID) exceeds the limit of \(configuration.maxMessageSize)"
            )
        }
        if isShutDown.load(ordering: .acquiring) { throw MessageError(.cancelled, "the host is shut down") }
        if Task.isCancelled { throw MessageError(.cancelled, "cancelled") }
    }

    /// Runs `body` on the path for `peer` (see ``paths(for:)``). When the peer has no live
    /// session and the preferred path cannot reach it (`dialFailed` — the datagram path gives up
    /// after its short connect deadline), the next path that knows an address of the peer is
    /// tried, in the order of ``transports`` (``MessageHostConfiguration/pathPreference``; by
    /// default UDP first, TCP as fallback).
    func withPath<R>(to peer: PeerID, _ body: (any MessageTransport) async throws -> R) async throws -> R {
        let candidates = paths(for: peer)
        for (i, transport) in candidates.enumerated() {
            do {
                return try await body(transport)
            } catch {
                let e = MessageError.from(error)
                guard e.code == .dialFailed, i + 1 < candidates.count else { throw e }
                logger.debug(
                    "path failed, falling back",
                    metadata: ["peer": "\(peer)", "path": "\(transport.path)", "error": "\(e)"])
            }
        }
        return try await body(transports[0])
    }

    /// `transports` in the order of `preference` (stable; unlisted paths last).
    static func ordered(_ transports: [any MessageTransport], by preference: [MessagePath]) -> [any MessageTransport] {
        func rank(_ t: any MessageTransport) -> Int { preference.firstIndex(of: t.path) ?? preference.count }
        return transports.enumerated()
            .sorted { a, b in (rank(a.element), a.offset) < (rank(b.element), b.offset) }
            .map(\.element)
    }

    /// The paths to try for `peer`, best first: one with a live session alone; else every path
    /// that can dial one of its known addresses, in preference order; else the first path.
    func paths(for peer: PeerID) -> [any MessageTransport] {
        if transports.count == 1 { return transports }
        if let connected = transports.first(where: { $0.isConnected(to: peer) }) { return [connected] }
        let addresses = peerstore.addresses(for: peer)
        let usable = transports.filter { t in addresses.contains(where: t.canHandle) }
        return usable.isEmpty ? [transports[0]] : usable
    }
}

/// The part of a ``MessageHost`` its transports call back into: the handler table, delivery
/// (limits, concurrency gates) and lifecycle events.
///
/// Transports hold it strongly through their ``MessageTransportContext``. It holds neither the
/// host nor the transports, so there is no reference cycle to break with a weak reference (a
/// weak reference gives its target a side table, which makes every retain and release of the
/// host slow, on every send and every delivered message).
final class MessageDispatch: Sendable {
    let state: NIOLockedValueBox<MessageHost.State>
    /// Bumped whenever the handler set changes (``DeliveryCache`` entries older than it are stale).
    let handlerGeneration = Synchronization.Atomic<Int>(0)
    let eventContinuation: AsyncStream<MessageHostEvent>.Continuation
    let configuration: MessageHostConfiguration
    let logger: Logger

    init(
        state: NIOLockedValueBox<MessageHost.State>,
        events: AsyncStream<MessageHostEvent>.Continuation,
        configuration: MessageHostConfiguration,
        logger: Logger
    ) {
        self.state = state
        self.eventContinuation = events
        self.configuration = configuration
        self.logger = logger
    }

    func handles(_ protocolID: String) -> Bool {
        state.withLockedValue { $0.slots[protocolID] != nil }
    }

    /// Runs the handler of `message.protocol` (see ``MessageTransportContext/deliver(_:)``).
    func deliver(_ message: Message, cache: inout DeliveryCache) async throws {
        let now = configuration.maxInboundMessagesPerSecondPerPeer == nil ? nil : configuration.now()
        let lookup: (MessageHost.Slot?, Bool)
        let generation = handlerGeneration.load(ordering: .acquiring)
        if now == nil, cache.generation == generation, cache.protocolID == message.protocol {
            lookup = (cache.slot, true)
        } else {
            lookup = state.withLockedValue { s -> (MessageHost.Slot?, Bool) in
                guard let slot = s.slots[message.protocol] else { return (nil, true) }
                if let now, s.limiter != nil, !s.limiter!.admit(message.from, now: now) { return (slot, false) }
                return (slot, true)
            }
            cache = DeliveryCache(generation: generation, protocolID: message.protocol, slot: lookup.0)
        }
        guard let slot = lookup.0 else {
            throw MessageError(.protocolNotSupported, "no handler for \(message.protocol)")
        }
        guard lookup.1 else {
            let error = MessageError(
                .limitExceeded, "inbound message rate limit reached for \(message.from) on \(message.protocol)")
            emit(.messageRejected(from: message.from, protocol: message.protocol, reason: error))
            throw error
        }
        if !slot.gate.tryAcquire() { await slot.gate.acquire() }
        defer { slot.gate.release() }
        do {
            try await slot.handler(message)
        } catch {
            logger.debug(
                "message handler failed",
                metadata: ["protocol": "\(message.protocol)", "from": "\(message.from)", "error": "\(error)"])
            throw error
        }
    }

    func emit(_ event: MessageHostEvent) { eventContinuation.yield(event) }
}
