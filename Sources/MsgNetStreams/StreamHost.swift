import Logging
import MsgNetCore
import MsgNetMplex
import MsgNetMultistream
import MsgNetSecurity
import NIOConcurrencyHelpers
import NIOCore

/// Handles one inbound stream after its protocol was negotiated. Returning closes our side of
/// the stream; throwing resets it.
public typealias StreamHandler = @Sendable (NegotiatedStream) async throws -> Void

/// Lifecycle events of a ``StreamHost`` (the connection-lifecycle spec's events plus identify's).
public enum StreamHostEvent: Sendable {
    /// A listener is accepting on this address (with `/p2p`).
    case listenStarted(Multiaddr)
    /// A listener stopped.
    case listenClosed(Multiaddr)
    /// A connection finished its upgrade.
    case connectionOpened(ConnectionInfo)
    /// A connection closed.
    case connectionClosed(ConnectionInfo)
    /// Identify completed for a peer.
    case peerIdentified(IdentifyInfo)
    /// A peer pushed a new protocol list (identify push).
    case peerProtocolsUpdated(PeerID, [String])
}

/// Settings of a ``StreamHost``.
public struct StreamHostConfiguration: Sendable {
    /// Sent in identify.
    public var agentVersion = "msgnet/0.1.0"
    /// Sent in identify.
    public var protocolVersion = "ipfs/0.1.0"
    /// Time to dial a TCP address.
    public var dialTimeout: TimeAmount = .seconds(10)
    /// Time for the whole connection upgrade.
    public var upgradeTimeout: TimeAmount = .seconds(10)
    /// Time to negotiate the protocol of a new stream.
    public var streamNegotiationTimeout: TimeAmount = .seconds(10)
    /// Accepted connections beyond this are closed at once.
    public var maxInboundConnections = 1024
    /// Inbound streams waiting for negotiation or a handler beyond this are reset.
    public var maxPendingInboundStreams = 4096
    /// Run identify on every new connection.
    public var identifyOnConnect = true
    /// The muxer's limits.
    public var mplex = MplexConfiguration()
    /// Idle request streams kept open per connection, over all protocols, for later requests
    /// (requests with `keepStreamOpen`, e.g. MsgNet's request streams); one returned beyond this
    /// is closed.
    public var maxIdleRequestStreams = 32
    /// A kept request stream idle this long is closed.
    public var requestStreamIdleTimeout: TimeAmount = .seconds(30)
    /// Where inbound streams are served: by default on their connection's event loop, so a
    /// handler reads, answers and finishes without a thread switch (see ``InboundExecution``).
    public var inboundExecution = InboundExecution.eventLoop

    /// The defaults.
    public init() {}
}

/// A libp2p node on the stream path: listens and dials over a ``StreamTransport``, upgrades
/// connections (multistream, security, mplex), negotiates protocols on streams and dispatches
/// them to handlers. Serves identify (`/ipfs/id/1.0.0`, `/ipfs/id/push/1.0.0`) and ping
/// (`/ipfs/ping/1.0.0`) itself.
///
/// Lifetime: call ``run()`` in a task (it returns after ``shutdown()``, once every inbound
/// handler has returned). Inbound streams are served in tasks started on their connection's
/// event loop (``StreamHostConfiguration/inboundExecution``) that `run()` waits for.
public final class StreamHost: Sendable {
    /// Our identity.
    public let identity: PrivateKey
    /// Our peer id.
    public var peerID: PeerID { identity.peerID }
    /// What we know about other peers.
    public let peerstore: Peerstore
    /// The settings.
    public let configuration: StreamHostConfiguration
    package let transports: [any StreamTransport]
    let upgrader: ConnectionUpgrader
    let logger: Logger

    private struct Handlers {
        var exact: [String: StreamHandler] = [:] {
            didSet { cachedSelector = nil }
        }
        var matchers: [(advertised: String, match: @Sendable (String) -> Bool, handler: StreamHandler)] = [] {
            didSet { cachedSelector = nil }
        }
        /// The selector for inbound negotiation, built once per change of the handlers rather
        /// than once per inbound stream.
        var cachedSelector: ProtocolSelector?
    }

    private struct State {
        var listeners: [(listener: any StreamListener, address: Multiaddr)] = []
        var connections: [PeerID: [ConnectionRecord]] = [:]
        var inboundConnections = 0
        var pendingInboundStreams = 0
        /// Dials in progress, by peer: later callers wait for the first dial instead of dialing again.
        var dialing: [PeerID: [CheckedContinuation<ConnectionRecord, any Error>]] = [:]
        var shutdown = false
    }

    private let handlers = NIOLockedValueBox(Handlers())
    private let state = NIOLockedValueBox(State())
    private let work: AsyncStream<@Sendable () async -> Void>
    private let workContinuation: AsyncStream<@Sendable () async -> Void>.Continuation
    private let inboundTasks = InboundTaskSet()
    /// Lifecycle events. One consumer; events are dropped when nobody reads (buffer of 1024).
    public let events: AsyncStream<StreamHostEvent>
    private let eventContinuation: AsyncStream<StreamHostEvent>.Continuation

    /// Creates a host. It does nothing until ``run()`` and ``listen(on:)`` are called.
    public init(
        identity: PrivateKey,
        transports: [any StreamTransport],
        security: [any SecurityProtocol],
        configuration: StreamHostConfiguration = StreamHostConfiguration(),
        peerstore: Peerstore = Peerstore(),
        logger: Logger = Logger(label: "msgnet.host")
    ) {
        self.identity = identity
        self.transports = transports
        self.configuration = configuration
        self.peerstore = peerstore
        self.upgrader = ConnectionUpgrader(
            security: security, mplex: configuration.mplex, timeout: configuration.upgradeTimeout)
        var l = logger
        l[metadataKey: "peer"] = "\(identity.peerID)"
        self.logger = l
        (work, workContinuation) = AsyncStream.makeStream(of: (@Sendable () async -> Void).self)
        (events, eventContinuation) = AsyncStream.makeStream(
            of: StreamHostEvent.self, bufferingPolicy: .bufferingNewest(1024))
        registerBuiltins()
    }

    // MARK: Lifetime

    /// Runs the host's inbound work (stream handlers, identify) until ``shutdown()``.
    public func run() async {
        await withDiscardingTaskGroup { group in
            for await item in work {
                group.addTask { await item() }
            }
        }
        await inboundTasks.waitUntilIdle()
    }

    /// Stops listening, closes every connection and ends ``run()`` once running handlers return.
    public func shutdown() async {
        let (listeners, connections) = state.withLockedValue { s in
            s.shutdown = true
            let l = s.listeners
            s.listeners = []
            return (l, s.connections.values.flatMap { $0 })
        }
        for (listener, address) in listeners {
            await listener.close()
            eventContinuation.yield(.listenClosed(address))
        }
        for c in connections {
            try? await c.connection.channel.close()
        }
        inboundTasks.close()
        workContinuation.finish()
        eventContinuation.finish()
    }

    private func submit(_ item: @escaping @Sendable () async -> Void) -> Bool {
        if case .enqueued = workContinuation.yield(item) { return true }
        return false
    }

    // MARK: Handlers

    /// Handles inbound streams that negotiate exactly `protocolID`. Replaces any earlier handler
    /// for it and announces the new protocol list to connected peers (identify push).
    public func setStreamHandler(_ protocolID: String, handler: @escaping StreamHandler) {
        handlers.withLockedValue { $0.exact[protocolID] = handler }
        pushIdentifyToAll()
    }

    /// Handles inbound streams whose proposed protocol satisfies `match` (e.g. any version of
    /// `/chat/1.*`). `advertised` is what identify and `ls` report for it.
    public func setStreamHandler(
        matching match: @escaping @Sendable (String) -> Bool,
        advertised: String,
        handler: @escaping StreamHandler
    ) {
        handlers.withLockedValue { $0.matchers.append((advertised, match, handler)) }
        pushIdentifyToAll()
    }

    /// Removes the handler for `protocolID` (exact or advertised id of a match handler).
    public func removeStreamHandler(_ protocolID: String) {
        handlers.withLockedValue {
            $0.exact[protocolID] = nil
            $0.matchers.removeAll { $0.advertised == protocolID }
        }
        pushIdentifyToAll()
    }

    /// Protocol ids we serve (as identify announces them).
    public var protocols: [String] {
        handlers.withLockedValue { $0.exact.keys.sorted() + $0.matchers.map(\.advertised) }
    }

    private func selector() -> ProtocolSelector {
        handlers.withLockedValue { h in
            if let cached = h.cachedSelector { return cached }
            var s = ProtocolSelector()
            for id in h.exact.keys.sorted() { s.add(id) }
            for m in h.matchers { s.add(matching: m.match, advertised: m.advertised) }
            h.cachedSelector = s
            return s
        }
    }

    private func handler(for protocolID: String) -> StreamHandler? {
        handlers.withLockedValue { h in
            h.exact[protocolID] ?? h.matchers.first(where: { $0.match(protocolID) })?.handler
        }
    }

    // MARK: Listening

    /// Addresses we listen on, each with `/p2p/<our id>`.
    public var listenAddresses: [Multiaddr] {
        state.withLockedValue { $0.listeners.map(\.address) }
    }

    /// Starts listening on `address` (port 0 picks a free port).
    /// - Returns: the bound address with `/p2p/<our id>`.
    @discardableResult
    public func listen(on address: Multiaddr) async throws -> Multiaddr {
        guard let transport = transports.first(where: { $0.canHandle(address) }) else {
            throw StreamsError(.dialFailed, "no transport can listen on \(address)")
        }
        let listener = try await transport.listen(on: address) { [self] channel in
            acceptInbound(channel)
        }
        let full = listener.localAddress.appending(.p2p(peerID))
        let accepted = state.withLockedValue { s -> Bool in
            guard !s.shutdown else { return false }
            s.listeners.append((listener, full))
            return true
        }
        guard accepted else {
            await listener.close()
            throw StreamsError(.shutdown, "host is shut down")
        }
        logger.info("listening", metadata: ["address": "\(full)"])
        eventContinuation.yield(.listenStarted(full))
        return full
    }

    private func acceptInbound(_ channel: any Channel) -> EventLoopFuture<Void> {
        let admitted = state.withLockedValue { s -> Bool in
            guard !s.shutdown, s.inboundConnections < configuration.maxInboundConnections else { return false }
            s.inboundConnections += 1
            return true
        }
        guard admitted else {
            logger.warning("refusing inbound connection: limit reached or shutting down")
            return channel.close()
        }
        channel.closeFuture.whenComplete { [self] _ in
            state.withLockedValue { $0.inboundConnections -= 1 }
        }
        _ = upgradeChannel(channel, initiator: false, expectedPeer: nil, direction: .inbound)
        return channel.eventLoop.makeSucceededVoidFuture()
    }

    // MARK: Connections

    /// Connects to `address`, which should end in `/p2p/<peer id>` (the handshake then must
    /// prove that identity). Reuses an existing connection to that peer unless
    /// `dialAsListener` is set.
    ///
    /// - Parameter dialAsListener: run the listener side of security and muxer negotiation on
    ///   this outbound connection (hole punching: the remote was told to act as the dialer).
    /// - Returns: the remote peer id.
    @discardableResult
    public func connect(to address: Multiaddr, dialAsListener: Bool = false) async throws -> PeerID {
        let expected = address.peerID
        if let expected, !dialAsListener {
            let record = try await deduplicatedDial(expected) { [self] in
                try await dial(address, expectedPeer: expected, dialAsListener: false)
            }
            return record.info.remotePeer
        }
        let record = try await dial(address, expectedPeer: expected, dialAsListener: dialAsListener)
        return record.info.remotePeer
    }

    /// Whether we have a live connection to `peer`.
    public func isConnected(to peer: PeerID) -> Bool { connection(to: peer) != nil }

    /// Peers we have live connections to.
    public var connectedPeers: [PeerID] {
        state.withLockedValue { Array($0.connections.keys) }
    }

    /// Closes every connection to `peer`.
    public func disconnect(_ peer: PeerID) async {
        let records = state.withLockedValue { $0.connections[peer] ?? [] }
        for r in records { try? await r.connection.channel.close() }
    }

    func connection(to peer: PeerID) -> ConnectionRecord? {
        state.withLockedValue { $0.connections[peer]?.first(where: { $0.connection.channel.isActive }) }
    }

    private func dial(_ address: Multiaddr, expectedPeer: PeerID?, dialAsListener: Bool) async throws
        -> ConnectionRecord
    {
        if state.withLockedValue({ $0.shutdown }) { throw StreamsError(.shutdown, "host is shut down") }
        let target = address.withoutPeerID()
        guard let transport = transports.first(where: { $0.canHandle(target) }) else {
            throw StreamsError(.dialFailed, "no transport can dial \(address)")
        }
        // The upgrade handlers go in from the channel initializer, before the first read: a
        // peer running the initiator side (dial as listener) may speak first.
        let upgrade = NIOLockedValueBox<EventLoopFuture<ConnectionRecord>?>(nil)
        do {
            _ = try await transport.dial(target, timeout: configuration.dialTimeout) { [self] channel in
                let future = upgradeChannel(
                    channel, initiator: !dialAsListener, expectedPeer: expectedPeer, direction: .outbound)
                upgrade.withLockedValue { $0 = future }
                return channel.eventLoop.makeSucceededVoidFuture()
            }
        } catch {
            // The upgrade's deadline runs from the channel's creation: when it passed before the
            // connect completed, it closed the channel, and the connect's error ("I/O on closed
            // channel") would hide that the dial timed out.
            if let future = upgrade.withLockedValue({ $0 }) {
                do { _ = try await future.get() } catch let upgradeError as StreamsError
                    where upgradeError.code == .timedOut
                {
                    throw upgradeError
                } catch {}
            }
            throw StreamsError(.dialFailed, "\(error)")
        }
        guard let future = upgrade.withLockedValue({ $0 }) else {
            throw StreamsError(.dialFailed, "dial \(address): channel was not initialized")
        }
        let record = try await future.get()
        if let expectedPeer { peerstore.addAddresses([target], for: expectedPeer) }
        return record
    }

    /// Upgrades a channel and registers the connection. Runs on the channel's event loop.
    private func upgradeChannel(
        _ channel: any Channel,
        initiator: Bool,
        expectedPeer: PeerID?,
        direction: ConnectionDirection
    ) -> EventLoopFuture<ConnectionRecord> {
        let infoBox = NIOLockedValueBox<ConnectionInfo?>(nil)
        return upgrader.upgrade(
            channel: channel, initiator: initiator, expectedPeer: expectedPeer, logger: logger
        ) {
            [self] stream in
            acceptStream(stream, info: infoBox)
        }.map { [self] upgraded in
            let info = ConnectionInfo(
                remotePeer: upgraded.security.remotePeer,
                remoteAddress: channel.remoteAddress.flatMap { try? Multiaddr(socketAddress: $0, transport: .tcp) },
                localAddress: channel.localAddress.flatMap { try? Multiaddr(socketAddress: $0, transport: .tcp) },
                direction: direction,
                securityProtocol: upgraded.security.protocolID
            )
            infoBox.withLockedValue { $0 = info }
            let record = ConnectionRecord(
                connection: upgraded, info: info, requestDeadlines: RequestDeadlines(loop: channel.eventLoop),
                requestStreams: RequestStreamPool(
                    loop: channel.eventLoop, maxIdle: configuration.maxIdleRequestStreams,
                    idleTimeout: configuration.requestStreamIdleTimeout))
            register(record)
            return record
        }.flatMapErrorThrowing { [self] error in
            // An outbound failure reaches the dialer as the thrown error; only inbound failures
            // (nobody else hears of them) are worth a warning.
            logger.log(
                level: direction == .inbound ? .warning : .debug,
                "connection upgrade failed",
                metadata: [
                    "remote": "\(channel.remoteAddress.map { "\($0)" } ?? "?")", "error": "\(error)",
                ])
            throw error
        }
    }

    private func register(_ record: ConnectionRecord) {
        let peer = record.info.remotePeer
        state.withLockedValue { $0.connections[peer, default: []].append(record) }
        logger.debug(
            "connection opened",
            metadata: ["remote": "\(peer)", "direction": "\(record.info.direction)"])
        eventContinuation.yield(.connectionOpened(record.info))
        record.connection.channel.closeFuture.whenComplete { [self] _ in
            state.withLockedValue { s in
                s.connections[peer]?.removeAll { $0.id == record.id }
                if s.connections[peer]?.isEmpty == true { s.connections[peer] = nil }
            }
            eventContinuation.yield(.connectionClosed(record.info))
        }
        if configuration.identifyOnConnect {
            _ = submit { [self] in
                do {
                    _ = try await identify(record)
                } catch {
                    logger.debug("identify failed", metadata: ["remote": "\(peer)", "error": "\(error)"])
                }
            }
        }
    }

    // MARK: Streams

    private func acceptStream(_ stream: MplexStream, info: NIOLockedValueBox<ConnectionInfo?>) {
        let admitted = state.withLockedValue { s -> Bool in
            guard !s.shutdown, s.pendingInboundStreams < configuration.maxPendingInboundStreams else { return false }
            s.pendingInboundStreams += 1
            return true
        }
        guard admitted else {
            Task { await stream.reset() }
            return
        }
        // Called once the read that opened the stream is processed (its first bytes are
        // buffered): with `.eventLoop` the task starts at once and usually negotiates, handles
        // and answers the stream before this returns.
        let enqueued = inboundTasks.start(on: stream.eventLoop, configuration.inboundExecution, immediately: true) {
            defer { self.state.withLockedValue { $0.pendingInboundStreams -= 1 } }
            guard let connection = info.withLockedValue({ $0 }) else {
                await stream.reset()
                return
            }
            await self.serveInbound(stream, connection: connection)
        }
        if !enqueued {
            state.withLockedValue { $0.pendingInboundStreams -= 1 }
            Task { await stream.reset() }
        }
    }

    private func serveInbound(_ stream: MplexStream, connection: ConnectionInfo) async {
        let protocolID: String
        let leftover: ByteBuffer
        do {
            (protocolID, leftover) = try await StreamNegotiation.inbound(
                stream, selector: selector(), timeout: configuration.streamNegotiationTimeout)
        } catch {
            logger.debug(
                "inbound stream negotiation failed",
                metadata: ["remote": "\(connection.remotePeer)", "error": "\(error)"])
            return
        }
        guard let handler = handler(for: protocolID) else {
            // Removed between negotiation and dispatch.
            await stream.reset()
            return
        }
        let negotiated = NegotiatedStream(
            protocolID: protocolID, connection: connection, stream: stream, leftover: leftover)
        do {
            try await handler(negotiated)
            if stream.eventLoop.inEventLoop {
                // Flushed by the end of the read or the loop pass the handler finished in, with
                // whatever else was written meanwhile.
                stream.closeWriteOnEventLoop(flush: false)
            } else {
                try? await stream.closeWrite()
            }
        } catch {
            logger.debug(
                "stream handler failed",
                metadata: ["protocol": "\(protocolID)", "remote": "\(connection.remotePeer)", "error": "\(error)"])
            await stream.reset()
        }
    }

    /// Opens a stream to `peer` and negotiates the first of `protocols` it supports.
    /// Dials the peer from the peerstore when not connected.
    public func newStream(to peer: PeerID, protocols: [String]) async throws -> NegotiatedStream {
        let record = try await connectionOrDial(peer)
        return try await newStream(on: record, protocols: protocols)
    }

    /// Connects to `address` (ending in `/p2p/<id>`) if needed and opens a stream on it.
    public func newStream(to address: Multiaddr, protocols: [String]) async throws -> NegotiatedStream {
        let record: ConnectionRecord
        if let peer = address.peerID {
            record = try await deduplicatedDial(peer) { [self] in
                try await dial(address, expectedPeer: peer, dialAsListener: false)
            }
        } else {
            record = try await dial(address, expectedPeer: nil, dialAsListener: false)
        }
        return try await newStream(on: record, protocols: protocols)
    }

    func newStream(on record: ConnectionRecord, protocols: [String]) async throws -> NegotiatedStream {
        let stream: MplexStream
        let muxer = record.connection.muxer
        let pool = record.requestStreams
        do {
            if muxer.eventLoop.inEventLoop {
                stream = try Self.openStream(on: muxer, evictingFrom: pool, flush: true)
            } else {
                stream = try await muxer.eventLoop.submit {
                    try Self.openStream(on: muxer, evictingFrom: pool, flush: true)
                }.get()
            }
        } catch let error as MplexError where error.code == .tooManyStreams {
            throw StreamsError(.limitExceeded, "too many streams to \(record.info.remotePeer): \(error)")
        } catch {
            throw StreamsError(.connectionClosed, "cannot open a stream to \(record.info.remotePeer): \(error)")
        }
        let (id, leftover) = try await StreamNegotiation.outbound(
            stream, protocols: protocols, timeout: configuration.streamNegotiationTimeout)
        return NegotiatedStream(protocolID: id, connection: record.info, stream: stream, leftover: leftover)
    }

    func connectionOrDial(_ peer: PeerID) async throws -> ConnectionRecord {
        if let existing = connection(to: peer) { return existing }
        return try await deduplicatedDial(peer) { [self] in
            let addresses = peerstore.addresses(for: peer)
            guard !addresses.isEmpty else {
                throw StreamsError(.dialFailed, "no known addresses for \(peer)")
            }
            var errors: [String] = []
            for address in addresses {
                do {
                    return try await dial(address, expectedPeer: peer, dialAsListener: false)
                } catch {
                    errors.append("\(address): \(error)")
                }
            }
            throw StreamsError(.dialFailed, "could not reach \(peer): \(errors.joined(separator: "; "))")
        }
    }

    /// Runs `dial` for `peer` unless a dial to it is already in progress, in which case this
    /// waits for that dial's outcome: concurrent callers share one connection attempt.
    private func deduplicatedDial(
        _ peer: PeerID,
        _ dial: @Sendable () async throws -> ConnectionRecord
    ) async throws -> ConnectionRecord {
        enum Role {
            case dialer
            case waiter
            case connected(ConnectionRecord)
        }
        // Decide under the lock whether we dial, so two callers never both dial.
        let role = state.withLockedValue { s -> Role in
            if let live = s.connections[peer]?.first(where: { $0.connection.channel.isActive }) {
                return .connected(live)
            }
            if s.dialing[peer] != nil { return .waiter }
            s.dialing[peer] = []
            return .dialer
        }
        switch role {
        case .connected(let record):
            return record
        case .waiter:
            return try await withCheckedThrowingContinuation { continuation in
                let waiting = state.withLockedValue { s -> Bool in
                    guard s.dialing[peer] != nil else { return false }
                    s.dialing[peer]!.append(continuation)
                    return true
                }
                // The dial finished between the two locks: look again.
                if !waiting {
                    if let live = connection(to: peer) {
                        continuation.resume(returning: live)
                    } else {
                        continuation.resume(throwing: StreamsError(.dialFailed, "dial to \(peer) failed"))
                    }
                }
            }
        case .dialer:
            let result: Result<ConnectionRecord, any Error>
            do {
                result = .success(try await dial())
            } catch {
                result = .failure(error)
            }
            let waiters = state.withLockedValue { s in s.dialing.removeValue(forKey: peer) ?? [] }
            for waiter in waiters { waiter.resume(with: result) }
            return try result.get()
        }
    }

    /// Idle kept request streams for `protocolID` (all protocols when `nil`) on the live
    /// connection to `peer` (for tests).
    package func idleRequestStreams(to peer: PeerID, protocolID: String?) async throws -> Int {
        guard let record = connection(to: peer) else { return 0 }
        let pool = record.requestStreams
        return try await pool.loop.submit { pool.idleCount(protocolID) }.get()
    }

    func yieldEvent(_ event: StreamHostEvent) { eventContinuation.yield(event) }
    func enqueue(_ item: @escaping @Sendable () async -> Void) { _ = submit(item) }
    var allConnections: [ConnectionRecord] {
        state.withLockedValue { $0.connections.values.flatMap { $0 } }
    }
}

/// A live connection and what we know about it.
struct ConnectionRecord: Sendable {
    let connection: UpgradedConnection
    let info: ConnectionInfo
    /// The timeouts of requests on this connection (see `StreamHost.request`).
    let requestDeadlines: RequestDeadlines
    /// Request streams kept open between requests (`StreamHost.request(…keepStreamOpen: true)`).
    let requestStreams: RequestStreamPool
    /// Identifies the connection (its channel) while it lives.
    var id: ObjectIdentifier { ObjectIdentifier(connection.channel) }
}
