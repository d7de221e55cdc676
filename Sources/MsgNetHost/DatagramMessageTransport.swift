import DequeModule
import Logging
import MsgNetControl
import MsgNetCore
import MsgNetMultipacket
import MsgNetStreams
import NIOConcurrencyHelpers
import NIOCore
import Synchronization

/// Settings of the datagram path.
public struct DatagramTransportConfiguration: Sendable {
    /// Session layer limits (handshake, keep-alive, idle timeout, session counts).
    public var session = SessionLimits()
    /// Messaging layer limits (reliability, fragmentation, reassembly). Its `maxMessageSize`
    /// (default 1 MiB) is raised to the host's ``MessageHostConfiguration/maxMessageSize`` when
    /// that is larger, so both paths carry the same largest message (the per-peer reassembly
    /// budget, `maxReassemblyBytes`, is raised to at least that size too). A host limit below
    /// it is applied by the host after reassembly: a larger request gets a `messageTooLarge`
    /// error reply, as on the stream path.
    public var messaging = MessagingLimits()
    /// Inbound messages handed to the host and not yet handled, across all peers. Past it,
    /// incoming datagrams are dropped before they are acknowledged, so reliable senders
    /// retransmit later (backpressure without loss).
    public var maxPendingInbound = 4096
    /// The bytes of those messages, across all peers: past it, the same. (4096 messages of up
    /// to 1 MiB would otherwise be 4 GiB held for slow handlers.)
    public var maxPendingInboundBytes = 32 << 20
    /// Reassembly bytes shared by all sessions.
    public var totalReassemblyBytes = 64 << 20
    /// How long a send or request waits for a new session before failing with `dialFailed`
    /// (so the host can fall back to another path). The handshake itself may go on.
    /// `MessageNetwork.connect(to:)` with a UDP address has no other path to fall back to: it
    /// waits for the handshake to finish or fail, up to ``SessionLimits/handshakeTimeout``, as a
    /// TCP dial waits for its connection.
    public var connectTimeout: TimeAmount = .seconds(2)
    /// Where handlers of inbound messages start: by default on the transport's event loop, so
    /// a request is read, handled and answered without a thread switch (see
    /// ``InboundExecution``).
    public var inboundExecution = InboundExecution.eventLoop
    /// A session on which no message was sent and no messaging payload (acknowledgements
    /// included) arrived for this long (keep-alives do not count),
    /// with nothing in progress on it — no request waiting for its reply, no reliable send
    /// waiting for its acknowledgement, no inbound message being handled — is closed, and the
    /// peer is told; the next message opens a new session. This keeps the sessions to the peers
    /// in use: keep-alives alone hold every session while its peer answers, until
    /// ``SessionLimits/maxSessions`` refuses new ones. `nil`: sessions last while the peer
    /// answers keep-alives. Checked every quarter of it.
    public var sessionIdleTimeout: TimeAmount? = .seconds(120)
    /// When a session the peer opened is closed (by either side, or for running out of packet
    /// numbers — not when the peer stopped answering), the address it came from goes to the
    /// peerstore for this long, so a later message to that peer can open a new session there
    /// even if it announced no listen address (a client on an ephemeral socket). Behind a NAT
    /// the address lasts as long as the NAT's mapping does. `nil`: not remembered.
    public var closedSessionAddressTTL: TimeAmount? = .minutes(10)

    /// The defaults.
    public init() {}
}

/// The UDP path: a ``MessageTransport`` that carries messages in multipacket frames over
/// Noise-secured datagram sessions (docs/multipacket.md).
///
/// One socket per listen address serves every peer and protocol. All protocol state (the
/// `SessionTable` and one `MessagingMachine` per session) lives on one event loop; the socket
/// target only moves datagrams.
public final class DatagramMessageTransport: MessageTransport, Sendable {
    public var path: MessagePath { .datagram }

    let identity: PrivateKey
    let datagrams: any DatagramTransport
    let loop: any EventLoop
    let configuration: DatagramTransportConfiguration
    let logger: Logger
    private let core: NIOLoopBoundBox<Core>
    private let mirror = NIOLockedValueBox(Mirror())
    private let handled = HandledProtocols()
    private let inbound: AsyncStream<Inbound>
    private let inboundContinuation: AsyncStream<Inbound>.Continuation

    /// Work for `run()`: the transport's own identify traffic.
    enum Inbound: Sendable {
        case task(@Sendable () async -> Void)
    }
    /// Handlers of inbound messages, started on the event loop; `run()` waits for them.
    private let handlerTasks = InboundTaskSet()
    /// The last request id handed out (ids are unique per transport, taken by the caller).
    private let requestIDs = Atomic<UInt64>(0)
    /// The last token handed to a send (it finds the send when its caller is cancelled).
    private let sendTokens = Atomic<UInt64>(0)
    private let backpressureDropCount = Atomic<UInt64>(0)

    /// Requests on this reserved protocol name carry errors back to a requester: the payload is
    /// one code byte (see ``ErrorReply``) followed by a UTF-8 reason.
    static let errorProtocol = "/msgnet/error/1.0.0"

    /// Unreliable sends queued on the event loop without their caller waiting.
    static let maxUnreliableInFlight = 1024

    /// Protocols the transport answers itself: identify and identify push, as on streams.
    static let builtin: Set<String> = [IdentifyProtocol.id, IdentifyProtocol.pushID]

    /// Our identify message for the datagram path.
    func identifyMessage(observed: Multiaddr?) -> IdentifyMessage {
        let protocols = handled.names.union(Self.builtin).sorted()
        return IdentifyMessage(
            protocolVersion: "ipfs/0.1.0",
            agentVersion: "msgnet/0.1.0",
            publicKey: identity.publicKey.marshaled,
            // A wildcard listen address is announced as this machine's interface addresses.
            listenAddrs: listenAddresses.flatMap { $0.withoutPeerID().dialableForms() }.map(\.bytes),
            observedAddr: observed?.bytes,
            protocols: protocols
        )
    }

    /// Identifies `peer` over the session just established with it and records the answer;
    /// nothing when that session has closed meanwhile (identify never opens a session).
    private func identify(_ peer: PeerID, on session: SessionID) async {
        guard let context = contextBox.withLockedValue({ $0 }) else { return }
        do {
            let reply = try await request(
                ByteBuffer(), to: peer, protocol: IdentifyProtocol.id, timeout: .seconds(10), on: session)
            let remote = try await loop.submit { self.core.value.connections[session]?.remoteAddress }.get()
            let info = try IdentifyProtocol.parse(reply.data, from: peer).reachable(over: remote)
            context.peerstore.setIdentify(info)
            context.emit(.peerIdentified(info))
        } catch is SessionGone {
            return
        } catch {
            logger.debug("datagram identify failed", metadata: ["peer": "\(peer)", "error": "\(error)"])
        }
    }
    private let contextBox = NIOLockedValueBox<MessageTransportContext?>(nil)

    /// A (session, protocol) channel of plain messages.
    struct ChannelKey: Hashable {
        let session: SessionID
        let protocolName: String
    }

    /// An unreliable send handed to the event loop without its caller waiting.
    struct QueuedSend {
        let data: ByteBuffer
        let protocolName: String
        let session: SessionID
    }

    /// Thread-safe copies of what the synchronous API reports.
    struct Mirror {
        var connected: Set<PeerID> = []
        /// The established session per peer (the table's preferred one), for lock-only lookups.
        var sessions: [PeerID: SessionID] = [:]
        /// Unreliable sends handed to the event loop and not yet processed.
        /// Unreliable sends waiting for the event loop, drained in one loop task (bounded by
        /// `maxUnreliableInFlight`).
        var unreliableQueue: [QueuedSend] = []
        var unreliableDrainScheduled = false
        var listenAddresses: [Multiaddr] = []
        var protocols: [PeerID: Set<String>] = [:]
        var counters = SessionCounters()
        var shutdown = false
    }

    /// Creates the datagram path.
    ///
    /// - Parameters:
    ///   - identity: our identity (the same as the host's).
    ///   - datagrams: the socket layer (e.g. `UDPTransport`).
    ///   - eventLoop: the loop all session state lives on.
    public init(
        identity: PrivateKey,
        datagrams: any DatagramTransport,
        eventLoop: any EventLoop,
        configuration: DatagramTransportConfiguration = DatagramTransportConfiguration(),
        logger: Logger = Logger(label: "msgnet.datagram")
    ) {
        self.identity = identity
        self.datagrams = datagrams
        self.loop = eventLoop
        self.configuration = configuration
        self.logger = logger
        let budget = MessagingReassemblyBudget(capacity: configuration.totalReassemblyBytes)
        self.core = NIOLoopBoundBox.makeBoxSendingValue(
            Core(
                identity: identity, configuration: configuration, budget: budget,
                requestDeadlines: RequestDeadlines(loop: eventLoop)),
            eventLoop: eventLoop)
        (inbound, inboundContinuation) = AsyncStream.makeStream(of: Inbound.self)
    }

    // MARK: MessageTransport

    public func canHandle(_ address: Multiaddr) -> Bool { datagrams.canHandle(address) }

    public func attach(to context: MessageTransportContext) {
        contextBox.withLockedValue { $0 = context }
        hostMaxMessageSize.store(context.maxMessageSize, ordering: .releasing)
    }

    /// The attached host's ``MessageHostConfiguration/maxMessageSize``; 0 before attach.
    private let hostMaxMessageSize = Synchronization.Atomic<Int>(0)

    /// The messaging limits sessions use (see ``DatagramTransportConfiguration/messaging``).
    var messagingLimits: MessagingLimits {
        let size = hostMaxMessageSize.load(ordering: .acquiring)
        guard size > configuration.messaging.maxMessageSize else { return configuration.messaging }
        return Self.messagingLimits(configuration.messaging, maxMessageSize: size)
    }

    /// The messaging limits of a new session: the configured ones, raised to carry the host's
    /// largest message (see ``DatagramTransportConfiguration/messaging``).
    static func messagingLimits(_ configured: MessagingLimits, maxMessageSize: Int?) -> MessagingLimits {
        guard let maxMessageSize, maxMessageSize > configured.maxMessageSize else { return configured }
        var limits = configured
        limits.maxMessageSize = maxMessageSize
        limits.maxReassemblyBytes = max(limits.maxReassemblyBytes, maxMessageSize)
        return limits
    }

    public func run() async throws {
        guard contextBox.withLockedValue({ $0 }) != nil else {
            preconditionFailure("a MessageTransport runs only after MessageHost attached it")
        }
        await withDiscardingTaskGroup { group in
            for await item in inbound {
                switch item {
                case .task(let work):
                    group.addTask { await work() }
                }
            }
        }
        await handlerTasks.waitUntilIdle()
    }

    /// Hands one inbound message to the host, answering what the host cannot: identify, an
    /// oversize message, a request its handler did not reply to, a failed handler.
    private func handle(
        _ message: Message, channel: DatagramReplyChannel, isRequest: Bool, context: MessageTransportContext
    ) async {
        switch message.protocol {
        case IdentifyProtocol.id:
            try? await message.reply(ByteBuffer(bytes: identifyMessage(observed: nil).encoded()))
            return
        case IdentifyProtocol.pushID:
            if let parsed = try? IdentifyProtocol.parse(message.data, from: message.from) {
                let session = channel.session
                let remote = try? await loop.submit { self.core.value.connections[session]?.remoteAddress }.get()
                let info = parsed.reachable(over: remote ?? nil)
                context.peerstore.setIdentify(info)
                context.emit(.peerProtocolsUpdated(message.from, info.protocols))
            }
            return
        default:
            break
        }
        if message.data.readableBytes > context.maxMessageSize {
            let error = MessageError(
                .messageTooLarge,
                "message of \(message.data.readableBytes) bytes exceeds the limit of \(context.maxMessageSize)")
            context.emit(.messageRejected(from: message.from, protocol: message.protocol, reason: error))
            if isRequest { try? await channel.replyError(.messageTooLarge, error.message, token: channel.token) }
            return
        }
        do {
            try await context.deliver(message)
            if isRequest && !channel.replied {
                try? await channel.replyError(.remoteError, "the handler did not reply", token: channel.token)
            }
        } catch {
            logger.debug(
                "datagram message not handled", metadata: ["protocol": "\(message.protocol)", "error": "\(error)"])
            if isRequest && !channel.replied {
                let code = (error as? MessageError)?.code ?? .remoteError
                try? await channel.replyError(code, "\(error)", token: channel.token)
            }
        }
    }

    public func shutdown() async {
        mirror.withLockedValue { $0.shutdown = true }
        let sockets = try? await loop.submit { () -> [any DatagramSocket] in
            let core = self.core.value
            var actions: [SessionAction<UDPPath>] = []
            for sid in Array(core.machines.keys) {
                actions += core.table.close(session: sid, now: .now())
            }
            self.perform(actions)
            self.flushSockets()
            core.failAll(MessageError(.cancelled, "the datagram transport is shutting down"))
            core.timer?.cancel()
            core.idleSweep?.cancel()
            core.idleSweep = nil
            let sockets = core.sockets
            core.sockets = []
            return sockets
        }.get()
        for socket in sockets ?? [] { await socket.close() }
        let addresses = mirror.withLockedValue { m -> [Multiaddr] in
            defer { m.listenAddresses = [] }
            return m.listenAddresses
        }
        // Before run() can return: the host ends its events when it does, and dropped these
        // when they came after.
        for address in addresses { contextBox.withLockedValue { $0 }?.emit(.listenClosed(address)) }
        handlerTasks.close()
        inboundContinuation.finish()
    }

    public func listen(on address: Multiaddr) async throws -> Multiaddr {
        guard canHandle(address) else {
            throw MessageError(.listenFailed, "the datagram path cannot listen on \(address)")
        }
        let (socket, _) = try await bind(address)
        let full = socket.localAddress.appending(.p2p(identity.peerID))
        mirror.withLockedValue { $0.listenAddresses.append(full) }
        contextBox.withLockedValue { $0 }?.emit(.listenStarted(full))
        return full
    }

    public var listenAddresses: [Multiaddr] { mirror.withLockedValue { $0.listenAddresses } }

    public func setHandledProtocols(_ protocols: Set<String>) {
        let changed = handled.set(protocols)
        guard changed, let context = contextBox.withLockedValue({ $0 }) else { return }
        // Identify push to connected peers that support it.
        let peers = connectedPeers.filter { context.peerstore.protocols(for: $0).contains(IdentifyProtocol.pushID) }
        guard !peers.isEmpty else { return }
        let message = ByteBuffer(bytes: identifyMessage(observed: nil).encoded())
        inboundContinuation.yield(
            .task { [self] in
                for peer in peers {
                    try? await send(message, to: peer, protocol: IdentifyProtocol.pushID, mode: .reliable)
                }
            })
    }

    /// An unreliable message to a peer with a live session is queued for the event loop without
    /// an async call (see ``queueUnreliable(_:protocol:session:)``).
    public func sendWithoutWaiting(_ data: ByteBuffer, to peer: PeerID, protocol: String, mode: DeliveryMode) throws
        -> Bool
    {
        guard mode == .unreliable, let session = mirror.withLockedValue({ $0.sessions[peer] }) else { return false }
        return queueUnreliable(data, protocol: `protocol`, session: session)
    }

    /// Queues an unreliable message that fits one payload for the event loop without waiting;
    /// one loop task drains whatever has queued up meanwhile. Bounded: past
    /// `maxUnreliableInFlight` queued sends (or for a message too large for one datagram) it
    /// returns false and the caller waits for the loop as a reliable send does.
    private func queueUnreliable(_ data: ByteBuffer, protocol name: String, session: SessionID) -> Bool {
        guard data.readableBytes <= messagingLimits.maxUnreliableLength(protocolNameLength: name.utf8.count)
        else { return false }
        let queued = mirror.withLockedValue { m -> Bool? in
            guard m.unreliableQueue.count < Self.maxUnreliableInFlight else { return nil }
            m.unreliableQueue.append(QueuedSend(data: data, protocolName: name, session: session))
            defer { m.unreliableDrainScheduled = true }
            return !m.unreliableDrainScheduled
        }
        guard let schedule = queued else { return false }
        if schedule { loop.execute { self.drainUnreliable() } }
        return true
    }

    public func send(_ data: ByteBuffer, to peer: PeerID, protocol: String, mode: DeliveryMode) async throws {
        try await onSession(peer) { session in
            if mode == .unreliable, queueUnreliable(data, protocol: `protocol`, session: session) { return }
            let mode: MessagingDeliveryMode = mode == .reliable ? .reliable : .unreliable
            // Cancelling stops the wait for the acknowledgement, not the delivery: the message
            // stays queued in the session and may still arrive (outcome unknown).
            let token = sendTokens.add(1, ordering: .relaxed).newValue
            try await waitOnLoop(
                "send",
                start: { c in
                    self.startSend(
                        data, protocol: `protocol`, mode: mode, kind: .oneWay, session: session, token: token,
                        continuation: c)
                },
                cancel: { self.cancelSend(token, session: session) })
        }
        mirror.withLockedValue { _ = $0.protocols[peer, default: []].insert(`protocol`) }
    }

    public func request(_ data: ByteBuffer, to peer: PeerID, protocol: String, timeout: TimeAmount) async throws
        -> Message
    {
        try await onSession(peer) { session in
            try await request(data, to: peer, protocol: `protocol`, timeout: timeout, on: session)
        }
    }

    /// A request on one session; throws ``SessionGone`` when the session closed before it.
    private func request(
        _ data: ByteBuffer, to peer: PeerID, protocol: String, timeout: TimeAmount, on session: SessionID
    ) async throws -> Message {
        // The id is taken here, so cancellation needs no shared box to find the request.
        let rid = requestIDs.add(1, ordering: .relaxed).newValue
        return try await waitOnLoop(
            "request",
            start: { c in
                self.startRequest(
                    data, id: rid, protocol: `protocol`, session: session, peer: peer, timeout: timeout,
                    continuation: c)
            },
            cancel: { self.cancelRequest(rid) })
    }

    /// Runs `operation` on the session with `peer`, and again on a new session when the one it
    /// was given closed before the operation reached it (closed as idle, or superseded; up to
    /// three attempts in all): nothing was sent then, so going again cannot deliver anything twice.
    private func onSession<T: Sendable>(
        _ peer: PeerID, _ operation: (SessionID) async throws -> T
    ) async throws -> T {
        var attempts = 0
        while true {
            do {
                return try await operation(try await ensureSession(peer))
            } catch is SessionGone {
                attempts += 1
                guard attempts < 3 else {
                    throw MessageError(
                        .connectionClosed, "the datagram session with \(peer) closed before the message left")
                }
            }
        }
    }

    /// Runs `start` on the loop with the caller's continuation and waits until the loop state
    /// resumes it; cancelling the caller runs `cancel` on the loop. A caller already on the loop
    /// (a handler, or a task that prefers the loop as its executor) runs `start` at once, without
    /// a job queued behind the loop's current work: its datagram leaves within the call.
    ///
    /// A task cancelled already (while its session was being set up, say) ran its cancellation
    /// handler at once: that job reaches the loop before `start` and finds nothing to cancel, so
    /// `start` does not run and the wait fails with `cancelled`. The continuation is unchecked:
    /// whatever resumes it (outcome, failure, cancellation, session close) removes it from the
    /// loop state first, so it is resumed once.
    private func waitOnLoop<T: Sendable>(
        _ what: String,
        start: @escaping @Sendable (UnsafeContinuation<T, any Error>) -> Void,
        cancel: @escaping @Sendable () -> Void
    ) async throws -> T {
        try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (c: UnsafeContinuation<T, any Error>) in
                if Task.isCancelled {
                    c.resume(throwing: MessageError(.cancelled, "\(what) cancelled"))
                    return
                }
                if loop.inEventLoop {
                    start(c)
                } else {
                    loop.execute { start(c) }
                }
            }
        } onCancel: {
            loop.execute(cancel)
        }
    }

    public func connect(to address: Multiaddr) async throws -> PeerID {
        guard canHandle(address) else { throw MessageError(.dialFailed, "not a UDP address: \(address)") }
        if let peer = address.peerID {
            contextBox.withLockedValue { $0 }?.peerstore.addAddresses([address.withoutPeerID()], for: peer)
            // An explicit address: nothing to fall back to, so the handshake gets its own time.
            _ = try await ensureSession(
                peer, addresses: [address.withoutPeerID()], timeout: configuration.session.handshakeTimeout)
            return peer
        }
        let session = try await connectSession(
            expecting: nil, addresses: [address], timeout: configuration.session.handshakeTimeout)
        return try await loop.submit { () -> PeerID in
            guard let peer = self.core.value.sessionPeers[session] else {
                throw MessageError(.connectionClosed, "session to \(address) closed")
            }
            return peer
        }.get()
    }

    public func isConnected(to peer: PeerID) -> Bool { mirror.withLockedValue { $0.connected.contains(peer) } }

    public var connectedPeers: [PeerID] { mirror.withLockedValue { Array($0.connected) } }

    /// Opens the session to `peer` (handshake when needed), then probes `protocol`: an empty,
    /// reliable probe that the peer acknowledges when it has a handler and refuses with Reset
    /// otherwise, so `.protocolNotSupported` surfaces here as on the stream path.
    public func openSession(to peer: PeerID, protocol: String) async throws {
        try await onSession(peer) { session in
            let token = sendTokens.add(1, ordering: .relaxed).newValue
            try await waitOnLoop(
                "opening a session",
                start: { c in
                    self.startSend(
                        ByteBuffer(), protocol: `protocol`, mode: .reliable, kind: .probe, session: session,
                        token: token, continuation: c)
                },
                cancel: { self.cancelSend(token, session: session) })
        }
        mirror.withLockedValue { _ = $0.protocols[peer, default: []].insert(`protocol`) }
    }

    public func sessionProtocols(with peer: PeerID) -> [String] {
        mirror.withLockedValue { $0.connected.contains(peer) ? Array($0.protocols[peer] ?? []) : [] }
    }

    public func closeSession(to peer: PeerID, protocol: String) async {
        // A datagram session carries every protocol; only forget the bookkeeping.
        mirror.withLockedValue { _ = $0.protocols[peer]?.remove(`protocol`) }
    }

    public func closePeer(_ peer: PeerID) async {
        try? await loop.submit {
            let core = self.core.value
            let sessions = core.table.sessions(with: peer)
            var actions: [SessionAction<UDPPath>] = []
            for sid in sessions { actions += core.table.close(session: sid, now: .now()) }
            self.perform(actions)
            self.flushSockets()
        }.get()
    }

    /// Drop and event counters of the session layer (for tests and metrics), at most about
    /// 10 ms old: they are summed over every session and published once per 10 ms with traffic,
    /// not per datagram.
    public var sessionCounters: SessionCounters { mirror.withLockedValue { $0.counters } }

    /// Datagrams dropped unread (before they were acknowledged) because undelivered inbound
    /// messages reached ``DatagramTransportConfiguration/maxPendingInbound`` or
    /// ``DatagramTransportConfiguration/maxPendingInboundBytes``: the backpressure on the
    /// peers' reliable senders, which retransmit.
    public var backpressureDrops: UInt64 { backpressureDropCount.load(ordering: .relaxed) }

    // MARK: Sockets

    /// Binds a socket on `address` and adds it to the loop's list; returns it with its index there.
    private func bind(_ address: Multiaddr) async throws -> (socket: any DatagramSocket, index: Int) {
        let index = NIOLockedValueBox(-1)
        let socket = try await datagrams.bind(
            address,
            handler: { [self] data, from in
                let i = index.withLockedValue { $0 }
                if loop.inEventLoop {
                    onDatagram(data, from: UDPPath(socket: i, remote: from))
                } else {
                    loop.execute { self.onDatagram(data, from: UDPPath(socket: i, remote: from)) }
                }
            },
            flush: { [self] in
                if loop.inEventLoop { flushSockets() } else { loop.execute { self.flushSockets() } }
            },
            refused: { [self] destination, error in
                // Reported from inside a socket write (a probe completes in its flush): handled in
                // a loop job of its own, outside whatever was writing.
                let path = UDPPath(socket: index.withLockedValue { $0 }, remote: destination)
                loop.execute { self.sendRefused(path, error) }
            })
        let at = try await loop.submit { () -> Int? in
            // After shutdown's last look at the sockets, a new one would never be closed.
            guard !self.mirror.withLockedValue({ $0.shutdown }) else { return nil }
            let core = self.core.value
            index.withLockedValue { $0 = core.sockets.count }
            core.sockets.append(socket)
            return core.sockets.count - 1
        }.get()
        guard let at else {
            await socket.close()
            throw MessageError(.cancelled, "the datagram transport is shut down")
        }
        return (socket, at)
    }

    /// Whether a session may be opened to `address`: a unicast address and a port. Broadcast,
    /// multicast, unspecified and IPv4-mapped IPv6 addresses (which an IPv6-only socket cannot
    /// reach) and port 0 are never sent to: a peer could announce one in identify, the kernel
    /// refuses most of them, and a refused send makes NIO close the socket (bound again at once,
    /// but the datagrams queued with it are lost).
    static func isDialable(_ address: SocketAddress) -> Bool {
        guard let port = address.port, port != 0 else { return false }
        switch address {
        case .v4(let a):
            let ip = UInt32(bigEndian: a.address.sin_addr.s_addr)
            let first = ip >> 24
            // 0.0.0.0/8 ("this network"), 224.0.0.0/4 (multicast) and 240.0.0.0/4 (reserved,
            // with 255.255.255.255).
            return first != 0 && first < 224
        case .v6(let a):
            let bytes = withUnsafeBytes(of: a.address.sin6_addr) { Array($0) }
            if bytes[0] == 0xFF { return false }  // multicast
            if bytes.allSatisfy({ $0 == 0 }) { return false }  // unspecified
            if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xFF && bytes[11] == 0xFF { return false }
            return true
        case .unixDomainSocket:
            return false
        }
    }

    /// The paths to try for `addresses`: each resolved, dialable socket address from every socket
    /// of its family (binding an ephemeral socket for a family that has none).
    private func paths(for addresses: [Multiaddr]) async throws -> [UDPPath] {
        var out: [UDPPath] = []
        var seen: Set<SocketAddress> = []
        for address in addresses where canHandle(address) {
            let resolved: [SocketAddress]
            do {
                resolved = try await datagrams.resolve(address)
            } catch {
                logger.debug("UDP address not resolved", metadata: ["address": "\(address)", "error": "\(error)"])
                continue
            }
            // A name may resolve to many addresses: the first few are enough for a first contact.
            for remote in resolved.filter(Self.isDialable).prefix(Self.maxAddressesPerName)
            where seen.insert(remote).inserted {
                out += try await paths(to: remote)
            }
        }
        return out
    }

    /// Addresses of one DNS name tried at first contact.
    static let maxAddressesPerName = 8

    /// A path to `remote` from every socket of its family (binding an ephemeral one if none).
    private func paths(to remote: SocketAddress) async throws -> [UDPPath] {
        var matching = try await loop.submit { () -> [Int] in
            self.core.value.sockets.enumerated().compactMap { i, s in
                (try? s.localAddress.socketAddress())?.protocol == remote.protocol ? i : nil
            }
        }.get()
        if matching.isEmpty {
            let any = remote.protocol == .inet6 ? "/ip6/::/udp/0" : "/ip4/0.0.0.0/udp/0"
            // Its own index: another connect may bind a socket meanwhile.
            matching = [try await bind(try Multiaddr(any)).index]
        }
        return matching.map { UDPPath(socket: $0, remote: remote) }
    }

    // MARK: Sessions

    /// The session with `peer`, opened when there is none; waiting for a new one fails with
    /// `dialFailed` after `timeout` (default: ``DatagramTransportConfiguration/connectTimeout``).
    private func ensureSession(
        _ peer: PeerID, addresses: [Multiaddr]? = nil, timeout: TimeAmount? = nil
    ) async throws -> SessionID {
        if let existing = mirror.withLockedValue({ $0.sessions[peer] }) { return existing }
        if let existing = try await loop.submit({ self.core.value.table.session(with: peer) }).get() {
            return existing
        }
        let known = addresses ?? contextBox.withLockedValue({ $0 })?.peerstore.addresses(for: peer) ?? []
        return try await connectSession(
            expecting: peer, addresses: known, timeout: timeout ?? configuration.connectTimeout)
    }

    private func connectSession(
        expecting peer: PeerID?, addresses: [Multiaddr], timeout: TimeAmount
    ) async throws -> SessionID {
        if mirror.withLockedValue({ $0.shutdown }) {
            throw MessageError(.cancelled, "the datagram transport is shut down")
        }
        let paths = try await paths(for: addresses)
        guard !paths.isEmpty else {
            throw MessageError(.dialFailed, "no UDP address known for \(peer.map { "\($0)" } ?? "the peer")")
        }
        return try await withCheckedThrowingContinuation { (c: CheckedContinuation<SessionID, any Error>) in
            loop.execute {
                let core = self.core.value
                // The paths were chosen off the loop: a shutdown since then emptied the sockets.
                guard paths.allSatisfy({ core.sockets.indices.contains($0.socket) }) else {
                    c.resume(throwing: MessageError(.cancelled, "the datagram transport is shut down"))
                    return
                }
                do {
                    // Addresses the network refused a moment ago are not tried again (the socket
                    // would drop the handshake): with none left, the connect fails now.
                    let refusals = paths.map { core.sockets[$0.socket].refusal(of: $0.remote) }
                    let usable = zip(paths, refusals).filter { $0.1 == nil }.map(\.0)
                    if usable.isEmpty, let error = refusals.first ?? nil,
                        peer.map({ core.table.session(with: $0) == nil }) ?? true
                    {
                        let reason = SessionCloseReason.unreachable("\(error)")
                        c.resume(throwing: MessageError(.dialFailed, "datagram session failed: \(reason)"))
                        return
                    }
                    let (sid, actions) = try core.table.connect(
                        to: usable.isEmpty ? paths : usable, expecting: peer, now: .now())
                    if core.machines[sid] != nil {
                        c.resume(returning: sid)
                        return
                    }
                    let waiter = ConnectWaiter(c)
                    core.pendingConnects[sid, default: []].append(waiter)
                    let bound = NIOLoopBound(waiter, eventLoop: self.loop)
                    self.loop.scheduleTask(in: timeout) {
                        bound.value.resume(
                            throwing: MessageError(
                                .dialFailed,
                                "no datagram session with \(peer.map { "\($0)" } ?? "the peer") within \(timeout)"))
                    }
                    self.perform(actions)
                    self.flushSockets()
                } catch {
                    c.resume(throwing: MessageError(.dialFailed, "\(error)"))
                }
            }
        }
    }

    // MARK: Event-loop side

    private func onDatagram(_ data: ByteBuffer, from path: UDPPath) {
        let core = core.value
        if core.readBatch == .none { core.readBatch = .reading }
        // Backpressure: while the host has too many undelivered messages, drop datagrams before
        // they are acknowledged; reliable senders retransmit.
        if core.pendingInbound >= configuration.maxPendingInbound
            || core.pendingInboundBytes >= configuration.maxPendingInboundBytes
        {
            backpressureDropCount.add(1, ordering: .relaxed)
            return
        }
        perform(core.table.onDatagram(data, from: path, now: .now()))
    }

    /// The network refused a send on `path`: handshakes stop trying it (and fail when it was
    /// their last path).
    private func sendRefused(_ path: UDPPath, _ error: any Error) {
        perform(core.value.table.onSendRefused(to: path, reason: "\(error)", now: .now()))
        flushSockets()
    }

    /// Writes what the sockets hold.
    func flushSockets() {
        let core = core.value
        core.readBatch = .none
        for i in core.dirtySockets { core.sockets[i].flush() }
        core.dirtySockets.removeAll(keepingCapacity: true)
    }

    /// How long counter changes wait to be published: long enough that the publishing timer is
    /// rarely the loop's earliest (re-arming the loop's timer is a system call), short enough for
    /// metrics.
    static let counterPublishDelay = TimeAmount.milliseconds(10)

    /// Notes that session counters changed; they are summed over every session and published
    /// ``counterPublishDelay`` later, once for everything that happened in between.
    private func countersChanged() {
        let core = core.value
        guard !core.countersStale else { return }
        core.countersStale = true
        loop.scheduleTask(in: Self.counterPublishDelay) {
            let core = self.core.value
            core.countersStale = false
            let counters = core.table.counters
            self.mirror.withLockedValue { $0.counters = counters }
        }
    }

    private func startSend(
        _ data: ByteBuffer, protocol name: String, mode: MessagingDeliveryMode, kind: MessagingMessageKind,
        session: SessionID, token: UInt64 = 0, continuation: UnsafeContinuation<Void, any Error>?
    ) {
        let core = core.value
        if let continuation, core.earlyCancels.claim(send: token) {
            continuation.resume(throwing: MessageError(.cancelled, "send cancelled before it was queued"))
            return
        }
        guard let index = core.machines.index(forKey: session) else {
            if let continuation {
                continuation.resume(throwing: SessionGone())
            } else {
                core.unsentUnreliable += 1
            }
            return
        }
        do {
            // Mutated in place through `values[index]`: a copy of the machine would make every
            // collection in it copy on write, and the optional subscript moves it out and back.
            let now = NIODeadline.now()
            let result = try core.machines.values[index].send(
                data, protocol: name, mode: mode, kind: kind, now: now)
            if mode == .reliable, let continuation {
                core.pendingSends[session, default: [:]][result.id] = Core.PendingSend(
                    token: token, continuation: continuation, sent: now)
            }
            perform(result.actions, session: session)
            scheduleFlush()
            if mode == .unreliable { continuation?.resume() }
        } catch {
            if let continuation {
                continuation.resume(throwing: Self.map(error))
            } else {
                core.unsentUnreliable += 1
                logger.debug("unreliable message not sent", metadata: ["protocol": "\(name)", "error": "\(error)"])
            }
        }
    }

    /// Reliable sends waiting for their acknowledgement, over every session (for tests).
    package func reliableSendsWaiting() async -> Int {
        (try? await loop.submit { self.core.value.pendingSends.values.reduce(0) { $0 + $1.count } }.get()) ?? 0
    }

    /// Fails the reliable send `token` of `session` with `cancelled`, if it still waits (on the loop).
    private func cancelSend(_ token: UInt64, session: SessionID) {
        let core = core.value
        guard let entry = core.pendingSends[session]?.first(where: { $0.value.token == token }) else {
            core.earlyCancels.note(send: token)
            return
        }
        core.pendingSends[session]?.removeValue(forKey: entry.key)
        entry.value.continuation.resume(
            throwing: MessageError(.cancelled, "send cancelled before its acknowledgement; outcome unknown"))
    }

    /// Fails the request `rid` with `cancelled`, if it still waits (on the loop).
    private func cancelRequest(_ rid: UInt64) {
        let core = core.value
        guard core.requests[rid] != nil else {
            core.earlyCancels.note(request: rid)
            return
        }
        core.finishRequest(rid, .failure(MessageError(.cancelled, "request cancelled")))
    }

    /// Sends the queued unreliable messages (on the loop).
    private func drainUnreliable() {
        let batch = mirror.withLockedValue { m -> [QueuedSend] in
            m.unreliableDrainScheduled = false
            defer { m.unreliableQueue.removeAll(keepingCapacity: true) }
            return m.unreliableQueue
        }
        for q in batch {
            startSend(
                q.data, protocol: q.protocolName, mode: .unreliable, kind: .oneWay, session: q.session,
                continuation: nil)
        }
    }

    /// Flushes the sockets once, after every send already queued on the loop has run, when a
    /// write waits for a flush. (Inside a socket's read batch the batch's own flush usually comes
    /// first; this one then finds nothing. Relying on it alone would leave writes unflushed if the
    /// socket closed mid-read.) Nothing is scheduled when every write has left already, as a
    /// handler's reply inside a read batch has: it is flushed at once (see `perform`).
    private func scheduleFlush() {
        let core = core.value
        guard !core.flushPending, !core.dirtySockets.isEmpty else { return }
        core.flushPending = true
        loop.execute {
            self.core.value.flushPending = false
            self.flushSockets()
        }
    }

    private func startRequest(
        _ data: ByteBuffer, id rid: UInt64, protocol name: String, session: SessionID, peer: PeerID,
        timeout: TimeAmount, continuation: UnsafeContinuation<Message, any Error>
    ) {
        let core = core.value
        if core.earlyCancels.claim(request: rid) {
            continuation.resume(throwing: MessageError(.cancelled, "request cancelled before it was sent"))
            return
        }
        guard let index = core.machines.index(forKey: session) else {
            continuation.resume(throwing: SessionGone())
            return
        }
        do {
            let now = NIODeadline.now()
            let result = try core.machines.values[index].send(
                data, protocol: name, mode: .reliable, kind: .request(id: rid), now: now)
            // One timer keeps every request's deadline, not a scheduled task each.
            let deadlineToken = core.requestDeadlines.add(now + timeout) {
                self.core.value.finishRequest(
                    rid, .failure(MessageError(.timedOut, "no reply from \(peer) on \(name) within \(timeout)")))
            }
            core.requests[rid] = Core.PendingRequest(
                session: session, peer: peer, sendID: result.id, continuation: continuation,
                deadlineToken: deadlineToken, sent: now)
            core.use[session]?.inProgress += 1
            perform(result.actions, session: session)
            // A request is one loop job of its own: its datagram leaves at the end of it, as a
            // raw socket write would, rather than after a flush job queued behind it. (Made by a
            // handler inside a socket's read batch, it leaves with the batch's writes instead.)
            if core.readBatch == .none { flushSockets() } else { scheduleFlush() }
        } catch {
            continuation.resume(throwing: Self.map(error))
        }
    }

    /// Sends a handler's reply (to request `requestID`, or a plain message back).
    ///
    /// Returns once the reply is queued in the session (it is sent reliably, but the handler does
    /// not wait for its acknowledgement), as a reply on the stream path returns once written.
    func reply(_ data: ByteBuffer, to requestID: UInt64?, session: SessionID, protocol name: String) async throws {
        let kind: MessagingMessageKind = requestID.map { .reply(to: $0) } ?? .oneWay
        if loop.inEventLoop {
            try queueReply(data, protocol: name, kind: kind, session: session)
            return
        }
        try await loop.submit {
            try self.queueReply(data, protocol: name, kind: kind, session: session)
        }.get()
    }

    /// Hands a reply to the session's machine (on the loop); throws when that fails at once.
    private func queueReply(
        _ data: ByteBuffer, protocol name: String, kind: MessagingMessageKind, session: SessionID
    ) throws {
        let core = core.value
        guard let index = core.machines.index(forKey: session) else {
            throw MessageError(.connectionClosed, "the datagram session closed")
        }
        do {
            let result = try core.machines.values[index].send(
                data, protocol: name, mode: .reliable, kind: kind, now: .now())
            perform(result.actions, session: session)
            scheduleFlush()
        } catch {
            throw Self.map(error)
        }
    }

    private func perform(_ actions: [SessionAction<UDPPath>]) {
        let core = core.value
        for action in actions {
            switch action {
            case .send(let datagram, let path):
                guard path.socket >= 0, path.socket < core.sockets.count else { continue }
                core.sockets[path.socket].write(datagram, to: path.remote)
                if core.readBatch == .reading {
                    // The first datagram a read batch causes (typically a handler's reply)
                    // leaves at once: a lone request is answered without waiting for the rest of
                    // the batch. Later ones wait for the batch's end and leave together, so a busy
                    // socket makes at most one extra write call per read batch.
                    core.readBatch = .flushedOnce
                    core.sockets[path.socket].flush()
                } else {
                    core.dirtySockets.insert(path.socket)
                }
            case .deliver(let payload, let peer, let session):
                guard let index = core.machines.index(forKey: session) else { continue }
                let result = core.machines.values[index].onPayload(payload, now: .now())
                _ = peer
                perform(result, session: session)
            case .established(let info):
                sessionEstablished(info)
            case .closed(let session, let peer, let reason):
                closed(session, peer: peer, reason: reason)
            case .scheduleTimer(let deadline):
                core.tableWakeup = deadline
                armTimer()
            }
        }
        countersChanged()
    }

    private func perform(_ actions: [MessagingAction], session: SessionID) {
        let core = core.value
        for action in actions {
            switch action {
            case .sendPayload(let payload, _):
                do {
                    perform(try core.table.send(payload, session: session, now: .now()))
                } catch {
                    logger.debug("datagram payload not sent", metadata: ["error": "\(error)"])
                }
            case .deliver(let inbound):
                deliver(inbound, session: session)
            case .delivered(let id):
                core.pendingSends[session]?.removeValue(forKey: id)?.continuation.resume()
            case .failed(let id, let error):
                let mapped = Self.map(error)
                if let send = core.pendingSends[session]?.removeValue(forKey: id) {
                    send.continuation.resume(throwing: mapped)
                } else if let rid = core.requests.first(where: { $0.value.session == session && $0.value.sendID == id }
                )?.key {
                    core.finishRequest(rid, .failure(mapped))
                }
            case .transportAcknowledged:
                break
            case .scheduleWakeup(let deadline):
                core.machineWakeups.set(session, deadline)
                armTimer()
            }
        }
    }

    private func deliver(_ inbound: MessagingInboundMessage, session: SessionID) {
        let core = core.value
        guard let peer = core.sessionPeers[session] else { return }
        switch inbound.kind {
        case .reply(let rid):
            guard let pending = core.requests[rid], pending.peer == peer else { return }
            if inbound.protocolName == Self.errorProtocol {
                core.finishRequest(rid, .failure(ErrorReply.decode(inbound.data, from: peer)))
            } else {
                core.finishRequest(
                    rid,
                    .success(Message(data: inbound.data, from: peer, protocol: inbound.protocolName, path: .datagram)))
            }
        case .probe:
            return  // never delivered (the machine answers probes itself)
        case .oneWay, .request:
            var rid: UInt64 = 0
            var isRequest = false
            if case .request(let id) = inbound.kind {
                rid = id
                isRequest = true
            }
            let size = inbound.data.readableBytes
            core.inboundStarted(session, bytes: size)
            // A reply to a request travels back as its reply; a reply to a plain message is a
            // plain message back on the same protocol.
            let channel = DatagramReplyChannel(
                transport: self, session: session, protocol: inbound.protocolName, isRequest: isRequest, token: rid)
            var built = Message(
                data: inbound.data, from: peer, protocol: inbound.protocolName, path: .datagram,
                replyChannel: channel, replyToken: rid)
            if isRequest { built.answerWatch = AnswerWatch() }
            let message = built
            if !isRequest, configuration.inboundExecution == .eventLoop {
                // Plain messages of one (session, protocol) channel are handled one after
                // another by one task, as a stream's messages are: a burst costs one task.
                let key = ChannelKey(session: session, protocolName: inbound.protocolName)
                if core.plainQueues[key] != nil {
                    core.plainQueues[key]!.append((message, channel))
                    return
                }
                core.plainQueues[key] = [(message, channel)]
                let started = handlerTasks.start(on: loop, .eventLoop) { await self.servePlain(key) }
                if !started {
                    core.plainQueues[key] = nil
                    core.inboundFinished(session, bytes: size)
                }
                return
            }
            // A request's handler starts at once, inside this read (no task job to wait for): a
            // reply it sends before suspending leaves in the flush that ends this read batch.
            let started = handlerTasks.start(on: loop, configuration.inboundExecution, immediately: true) {
                if let context = self.contextBox.withLockedValue({ $0 }) {
                    await self.handle(message, channel: channel, isRequest: channel.isRequest, context: context)
                }
                if self.loop.inEventLoop {
                    self.core.value.inboundFinished(session, bytes: size)
                } else {
                    self.loop.execute { self.core.value.inboundFinished(session, bytes: size) }
                }
            }
            if !started { core.inboundFinished(session, bytes: size) }
        }
    }

    /// Handles the queued plain messages of one channel in order, until none is left. Runs in a
    /// task on the loop (the queue lives in loop state).
    private func servePlain(_ key: ChannelKey) async {
        guard let context = contextBox.withLockedValue({ $0 }) else {
            for (message, _) in core.value.plainQueues.removeValue(forKey: key) ?? [] {
                core.value.inboundFinished(key.session, bytes: message.data.readableBytes)
            }
            return
        }
        while true {
            let core = core.value
            guard let (message, channel) = core.plainQueues[key]?.popFirst() else {
                core.plainQueues[key] = nil
                return
            }
            let size = message.data.readableBytes
            await handle(message, channel: channel, isRequest: false, context: context)
            self.core.value.inboundFinished(key.session, bytes: size)
        }
    }

    private func sessionEstablished(_ e: SessionEstablished<UDPPath>) {
        let core = core.value
        if core.machines[e.localID] == nil {
            core.machines[e.localID] = MessagingMachine(
                limits: messagingLimits, budget: core.budget, hasHandler: handled.predicate(on: loop))
            core.sessionPeers[e.localID] = e.remotePeer
            core.use[e.localID] = Core.Use(since: .now())
            startIdleSweep()
        }
        let preferred = core.table.session(with: e.remotePeer)
        mirror.withLockedValue {
            _ = $0.connected.insert(e.remotePeer)
            $0.sessions[e.remotePeer] = preferred
        }
        for c in core.pendingConnects.removeValue(forKey: e.localID) ?? [] { c.resume(returning: e.localID) }
        for c in core.waitingForPeer.removeValue(forKey: e.remotePeer) ?? [] { c.resume(returning: e.localID) }
        let remote =
            core.sockets.indices.contains(e.path.socket)
            ? try? Multiaddr(socketAddress: e.path.remote, transport: .udp) : nil
        let local = core.sockets.indices.contains(e.path.socket) ? core.sockets[e.path.socket].localAddress : nil
        let connection = MessageConnection(
            peer: e.remotePeer, remoteAddress: remote, localAddress: local,
            direction: e.role == .initiator ? .outbound : .inbound, path: .datagram)
        core.connections[e.localID] = connection
        contextBox.withLockedValue { $0 }?.emit(.connectionOpened(connection))
        let peer = e.remotePeer
        let session = e.localID
        inboundContinuation.yield(.task { [self] in await identify(peer, on: session) })
    }

    private func closed(_ session: SessionID, peer: PeerID?, reason: SessionCloseReason) {
        let core = core.value
        let waiters = core.pendingConnects.removeValue(forKey: session) ?? []
        if reason == .superseded, let peer, !waiters.isEmpty {
            // Simultaneous open: the other handshake wins; wait for it.
            if let winner = core.table.session(with: peer), core.machines[winner] != nil {
                for c in waiters { c.resume(returning: winner) }
            } else {
                core.waitingForPeer[peer, default: []] += waiters
            }
        } else {
            for c in waiters { c.resume(throwing: MessageError(.dialFailed, "datagram session failed: \(reason)")) }
        }
        if var machine = core.machines.removeValue(forKey: session) {
            _ = machine.close()
        }
        let error = MessageError(.connectionClosed, "the datagram session closed (\(reason)); outcome unknown")
        // The peer closed the session as unused for `unused`: what we handed to it within that
        // time never reached the peer, so it goes again on a new session (`onSession`).
        var quietSince: NIODeadline?
        if case .remoteCloseUnused(let unused) = reason { quietSince = .now() - unused }
        func failure(sent: NIODeadline) -> any Error {
            if let quietSince, sent >= quietSince { return SessionGone() }
            return error
        }
        for (_, send) in core.pendingSends.removeValue(forKey: session) ?? [:] {
            send.continuation.resume(throwing: failure(sent: send.sent))
        }
        for (rid, request) in core.requests where request.session == session {
            core.finishRequest(rid, .failure(failure(sent: request.sent)))
        }
        core.machineWakeups.set(session, nil)
        core.sessionPeers[session] = nil
        core.use[session] = nil
        rememberAddress(of: session, peer: peer, reason: reason)
        if let peer {
            let preferred = core.table.session(with: peer)
            mirror.withLockedValue {
                $0.sessions[peer] = preferred
                if preferred == nil {
                    $0.connected.remove(peer)
                    $0.protocols[peer] = nil
                }
            }
        }
        if let connection = core.connections.removeValue(forKey: session) {
            contextBox.withLockedValue { $0 }?.emit(.connectionClosed(connection))
        }
    }

    /// Keeps the address of a closed inbound session whose peer is likely still there (see
    /// ``DatagramTransportConfiguration/closedSessionAddressTTL``).
    private func rememberAddress(of session: SessionID, peer: PeerID?, reason: SessionCloseReason) {
        guard let peer, let ttl = configuration.closedSessionAddressTTL,
            !mirror.withLockedValue({ $0.shutdown }),
            let connection = core.value.connections[session], connection.direction == .inbound,
            let address = connection.remoteAddress
        else { return }
        switch reason {
        case .localClose, .remoteClose, .remoteCloseUnused, .packetNumbersExhausted:
            contextBox.withLockedValue { $0 }?.peerstore.addAddresses([address], for: peer, ttl: .duration(ttl))
        case .idleTimeout, .handshakeTimeout, .handshakeFailed, .superseded, .unreachable:
            return
        }
    }

    /// Starts the idle-session check (on the loop), once.
    private func startIdleSweep() {
        let core = core.value
        guard let idle = configuration.sessionIdleTimeout, core.idleSweep == nil,
            !mirror.withLockedValue({ $0.shutdown })
        else { return }
        let period = TimeAmount.nanoseconds(max(idle.nanoseconds / 4, 1_000_000))
        core.idleSweep = loop.scheduleRepeatedTask(initialDelay: period, delay: period) { _ in
            self.sweepIdleSessions(idle: idle)
        }
    }

    /// Closes the sessions unused for `idle` with nothing in progress (see
    /// ``DatagramTransportConfiguration/sessionIdleTimeout``).
    private func sweepIdleSessions(idle: TimeAmount) {
        let core = core.value
        core.idleSweeps += 1
        let now = NIODeadline.now()
        var unused: [(SessionID, TimeAmount)] = []
        for (sid, use) in core.use {
            guard use.inProgress <= 0, core.pendingSends[sid]?.isEmpty ?? true else { continue }
            let index = core.machines.index(forKey: sid)
            let last = index.flatMap { core.machines.values[$0].lastActivity }.map { max($0, use.since) } ?? use.since
            if last + idle <= now { unused.append((sid, now - last)) }
        }
        guard !unused.isEmpty else { return }
        var actions: [SessionAction<UDPPath>] = []
        // The Close says how long the session carried nothing: the peer resends, on a new
        // session, what it sent within that time (it crossed the Close).
        for (sid, time) in unused { actions += core.table.close(session: sid, now: now, unusedFor: time) }
        perform(actions)
        flushSockets()
    }

    /// Idle-session checks run so far (for tests).
    package func idleSweepCount() async -> Int {
        (try? await loop.submit { self.core.value.idleSweeps }.get()) ?? 0
    }

    private func armTimer() {
        let core = core.value
        var next = core.tableWakeup
        if let w = core.machineWakeups.earliest(), next == nil || w < next! { next = w }
        guard let next else { return }
        if let armed = core.timerDeadline, armed <= next { return }
        core.timer?.cancel()
        core.timerDeadline = next
        core.timer = loop.scheduleTask(deadline: next) { self.onTimer() }
    }

    private func onTimer() {
        let core = core.value
        core.timer = nil
        core.timerDeadline = nil
        let now = NIODeadline.now()
        if let w = core.tableWakeup, w <= now {
            core.tableWakeup = nil
            perform(core.table.onTimer(now: now))
        }
        for session in core.machineWakeups.popDue(now: now) {
            guard let index = core.machines.index(forKey: session) else { continue }
            let actions = core.machines.values[index].onTimer(now: now)
            perform(actions, session: session)
        }
        flushSockets()
        armTimer()
    }

    static func map(_ error: any Error) -> MessageError {
        if let e = error as? MessageError { return e }
        if let e = error as? MessagingError {
            switch e.code {
            case .messageTooLarge: return MessageError(.messageTooLarge, e.description)
            case .limitExceeded: return MessageError(.limitExceeded, e.description)
            case .timedOut: return MessageError(.timedOut, "\(e.description); outcome unknown")
            case .protocolNotSupported: return MessageError(.protocolNotSupported, e.description)
            case .closed: return MessageError(.connectionClosed, "\(e.description); outcome unknown")
            default: return MessageError(.remoteError, e.description)
            }
        }
        if let e = error as? SessionError {
            switch e {
            case .payloadTooLarge: return MessageError(.messageTooLarge, "\(e)")
            case .limitExceeded: return MessageError(.limitExceeded, "\(e)")
            default: return MessageError(.connectionClosed, "\(e)")
            }
        }
        return MessageError(.remoteError, "\(error)")
    }

    /// Where the loop is relative to a socket read batch.
    enum ReadBatch {
        /// Not inside one.
        case none
        /// Inside one, nothing flushed yet: the first datagram it causes leaves at once.
        case reading
        /// Inside one, its first datagram already flushed: later ones wait for its end.
        case flushedOnce
    }

    /// The event-loop state.
    final class Core {
        struct PendingRequest {
            let session: SessionID
            let peer: PeerID
            let sendID: MessagingSendID
            let continuation: UnsafeContinuation<Message, any Error>
            /// The request's entry in `requestDeadlines`.
            let deadlineToken: UInt64
            /// When the request was handed to the session's machine.
            let sent: NIODeadline
        }

        var table: SessionTable<UDPPath>
        var sockets: [any DatagramSocket] = []
        var dirtySockets = Set<Int>()
        /// Where the loop is relative to a socket read batch (from its first datagram to the
        /// flush that ends it).
        var readBatch = ReadBatch.none
        /// Session events happened since the counters were last published (see `countersChanged()`).
        var countersStale = false
        var machines: [SessionID: MessagingMachine] = [:]
        var sessionPeers: [SessionID: PeerID] = [:]
        var connections: [SessionID: MessageConnection] = [:]
        var pendingConnects: [SessionID: [ConnectWaiter]] = [:]
        var waitingForPeer: [PeerID: [ConnectWaiter]] = [:]
        /// A reliable send waiting for its acknowledgement; `token` lets a cancelled caller find it.
        struct PendingSend {
            let token: UInt64
            let continuation: UnsafeContinuation<Void, any Error>
            /// When the message was handed to the session's machine.
            let sent: NIODeadline
        }
        var pendingSends: [SessionID: [MessagingSendID: PendingSend]] = [:]
        var requests: [UInt64: PendingRequest] = [:]
        /// The requests' timeouts, on one timer.
        let requestDeadlines: RequestDeadlines
        var tableWakeup: NIODeadline?
        /// When each session's messaging machine wants `onTimer`, earliest first.
        var machineWakeups = DeadlineQueue<SessionID>()
        var timer: Scheduled<Void>?
        var timerDeadline: NIODeadline?
        var pendingInbound = 0
        var pendingInboundBytes = 0
        /// Per session: when it was established, and how many of its requests (ours waiting for
        /// replies) and inbound messages (being handled) are in progress. When a message last
        /// went either way is its messaging machine's `lastActivity`.
        struct Use {
            let since: NIODeadline
            var inProgress = 0
        }
        var use: [SessionID: Use] = [:]
        /// The idle-session check (see `sweepIdleSessions`), once a session exists.
        var idleSweep: RepeatedTask?
        /// Idle checks run so far (for tests).
        var idleSweeps = 0
        /// Plain messages waiting for their channel's handler task (see `servePlain`).
        var plainQueues: [ChannelKey: Deque<(Message, DatagramReplyChannel)>] = [:]
        var flushPending = false
        /// Cancellations that reached the loop before their operation's start job.
        var earlyCancels = EarlyCancels()
        var unsentUnreliable: UInt64 = 0
        let budget: MessagingReassemblyBudget

        init(
            identity: PrivateKey, configuration: DatagramTransportConfiguration, budget: MessagingReassemblyBudget,
            requestDeadlines: RequestDeadlines
        ) {
            table = SessionTable(identity: identity, limits: configuration.session)
            self.budget = budget
            self.requestDeadlines = requestDeadlines
        }

        /// An inbound message of `session` (`bytes` long) was handed to a handler.
        func inboundStarted(_ session: SessionID, bytes: Int) {
            pendingInbound += 1
            pendingInboundBytes += bytes
            use[session]?.inProgress += 1
        }

        /// Its handler finished with it.
        func inboundFinished(_ session: SessionID, bytes: Int) {
            pendingInbound -= 1
            pendingInboundBytes -= bytes
            use[session]?.inProgress -= 1
        }

        func finishRequest(_ id: UInt64, _ result: Result<Message, any Error>) {
            guard let pending = requests.removeValue(forKey: id) else { return }
            requestDeadlines.remove(pending.deadlineToken)
            use[pending.session]?.inProgress -= 1
            switch result {
            case .success(let m): pending.continuation.resume(returning: m)
            case .failure(let e): pending.continuation.resume(throwing: e)
            }
        }

        func failAll(_ error: MessageError) {
            for (_, list) in pendingConnects { for c in list { c.resume(throwing: error) } }
            pendingConnects = [:]
            for (_, list) in waitingForPeer { for c in list { c.resume(throwing: error) } }
            waitingForPeer = [:]
            for (_, sends) in pendingSends { for (_, send) in sends { send.continuation.resume(throwing: error) } }
            pendingSends = [:]
            for id in Array(requests.keys) { finishRequest(id, .failure(error)) }
        }
    }
}

/// Cancellations that found nothing to cancel on the loop (event-loop confined).
///
/// A caller's operation reaches the loop as a start job; its cancellation as another job. When
/// the task is cancelled just as it enqueues the start, the cancellation's job can run first:
/// it is noted here, and the start job claims it and fails with `cancelled` instead of sending.
/// A note nobody claims (the operation had already finished) expires after ``lifetime``; at most
/// ``capacity`` are kept.
struct EarlyCancels {
    static let lifetime = TimeAmount.seconds(10)
    static let capacity = 1024

    private var requests: [UInt64: NIODeadline] = [:]
    private var sends: [UInt64: NIODeadline] = [:]

    /// Entries kept now (for tests).
    var count: Int { requests.count + sends.count }

    mutating func note(request id: UInt64, now: NIODeadline = .now()) { Self.note(id, in: &requests, now: now) }
    mutating func note(send token: UInt64, now: NIODeadline = .now()) { Self.note(token, in: &sends, now: now) }

    /// Whether request `id` was cancelled before its start (and forgets it).
    mutating func claim(request id: UInt64) -> Bool { !requests.isEmpty && requests.removeValue(forKey: id) != nil }
    /// Whether the send `token` was cancelled before its start (and forgets it).
    mutating func claim(send token: UInt64) -> Bool { !sends.isEmpty && sends.removeValue(forKey: token) != nil }

    private static func note(_ id: UInt64, in table: inout [UInt64: NIODeadline], now: NIODeadline) {
        if table.count >= capacity / 2 {
            let cutoff = now - lifetime
            table = table.filter { $0.value > cutoff }
        }
        guard table.count < capacity else { return }
        table[id] = now
    }
}

/// A send or request found its session closed before reaching it: nothing was sent, so it may
/// go on a new session (see `DatagramMessageTransport.onSession`).
struct SessionGone: Error {}

/// A caller waiting for a session; resumed once, by the session or by its deadline.
/// Event-loop confined.
final class ConnectWaiter {
    private var continuation: CheckedContinuation<SessionID, any Error>?
    init(_ continuation: CheckedContinuation<SessionID, any Error>) { self.continuation = continuation }
    func resume(returning session: SessionID) {
        continuation?.resume(returning: session)
        continuation = nil
    }
    func resume(throwing error: any Error) {
        continuation?.resume(throwing: error)
        continuation = nil
    }
}

/// A datagram path: which of our sockets, and the remote socket address.
typealias UDPPath = DatagramPath

/// Replies to a message that arrived on a datagram session: a request's reply, or a plain
/// message back on the same protocol.
final class DatagramReplyChannel: MessageReplyChannel {
    let transport: DatagramMessageTransport
    let session: SessionID
    let `protocol`: String
    let isRequest: Bool
    let token: UInt64
    /// Set by the first reply (a request gets exactly one).
    private let done = Synchronization.Atomic<Bool>(false)

    init(transport: DatagramMessageTransport, session: SessionID, protocol: String, isRequest: Bool, token: UInt64) {
        self.transport = transport
        self.session = session
        self.protocol = `protocol`
        self.isRequest = isRequest
        self.token = token
    }

    /// Whether a reply was sent (requests get exactly one).
    var replied: Bool { done.load(ordering: .acquiring) }

    /// Claims the one reply a request gets; false when it was already sent.
    private func claim() -> Bool {
        done.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged
    }

    func reply(_ data: ByteBuffer, token: UInt64) async throws {
        if isRequest {
            guard claim() else { throw MessageError(.remoteError, "this request was already answered") }
        }
        try await transport.reply(data, to: isRequest ? token : nil, session: session, protocol: `protocol`)
    }

    /// Fails the requester's call with `code` (see ``ErrorReply``).
    func replyError(_ code: MessageError.Code, _ reason: String, token: UInt64) async throws {
        guard isRequest, claim() else { return }
        try await transport.reply(
            ErrorReply.encode(code, reason), to: token, session: session,
            protocol: DatagramMessageTransport.errorProtocol)
    }
}

/// An error carried back to a requester on the datagram path: a reply on the reserved protocol
/// name `/msgnet/error/1.0.0` whose payload is one code byte and a UTF-8 reason.
package enum ErrorReply {
    package static let codes: [MessageError.Code] = [
        .remoteError, .messageTooLarge, .protocolNotSupported, .limitExceeded,
    ]

    package static func encode(_ code: MessageError.Code, _ reason: String) -> ByteBuffer {
        var b = ByteBuffer()
        b.writeInteger(UInt8(codes.firstIndex(of: code) ?? 0))
        b.writeString(String(reason.prefix(512)))
        return b
    }

    /// The longest reason kept, in bytes (a peer cannot make our error messages large).
    package static let maxReasonBytes = 512

    /// The error a payload carries. Never fails: an empty payload or an unknown code byte is
    /// `.remoteError`, invalid UTF-8 is repaired, and the reason is cut at ``maxReasonBytes``.
    package static func decode(_ payload: ByteBuffer, from peer: PeerID) -> MessageError {
        var b = payload
        let index = Int(b.readInteger(as: UInt8.self) ?? 0)
        let reason = b.readString(length: min(b.readableBytes, maxReasonBytes)) ?? ""
        return MessageError(codes.indices.contains(index) ? codes[index] : .remoteError, "\(peer): \(reason)")
    }
}

/// The protocols this transport has handlers for. Every session's messaging machine asks for
/// each inbound data frame whether its protocol has a handler; the predicate remembers its last
/// answer until the set changes, so a stream of requests on one protocol costs an atomic load
/// and a string comparison per frame instead of a lock and two hashed lookups.
package final class HandledProtocols: Sendable {
    private let current = NIOLockedValueBox<Set<String>>([])
    /// Bumped on every change (after the set is replaced).
    private let version = Atomic<UInt64>(0)

    /// An empty set.
    package init() {}

    /// The current set.
    package var names: Set<String> { current.withLockedValue { $0 } }

    /// Replaces the set; true when it changed.
    package func set(_ protocols: Set<String>) -> Bool {
        let changed = current.withLockedValue { old -> Bool in
            defer { old = protocols }
            return old != protocols
        }
        if changed { version.add(1, ordering: .releasing) }
        return changed
    }

    /// Whether `name` is built in or has a handler, without the memo.
    package func contains(_ name: String) -> Bool {
        DatagramMessageTransport.builtin.contains(name) || current.withLockedValue { $0.contains(name) }
    }

    /// The last answer of one predicate (confined to its event loop).
    private final class Memo {
        var version = UInt64.max
        var name = ""
        var answer = false
    }

    /// A predicate for machines on `loop` (call it only there). A set changed between the
    /// version check and the lookup is seen at the next call, as a lookup just before the change
    /// would have been.
    package func predicate(on loop: any EventLoop) -> MessagingMachine.HandlerPredicate {
        let memo = NIOLoopBoundBox.makeBoxSendingValue(Memo(), eventLoop: loop)
        return { name in
            let version = self.version.load(ordering: .acquiring)
            let last = memo.value
            if last.version == version, last.name == name { return last.answer }
            let answer = self.contains(name)
            last.version = version
            last.name = name
            last.answer = answer
            return answer
        }
    }
}
