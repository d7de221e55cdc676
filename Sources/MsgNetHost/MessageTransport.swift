import MsgNetCore
import MsgNetStreams
import NIOCore

/// One path to peers, seen from the message API: it speaks in peers, protocols and messages,
/// never in streams or datagrams. ``StreamMessageTransport`` is the stream path (libp2p over
/// TCP); the datagram path (multipacket over UDP) conforms to the same protocol.
///
/// A transport is driven by its ``MessageHost``: the host calls ``run(context:)`` inside its own
/// ``MessageHost/run()`` and hands inbound messages' handling back through the context.
public protocol MessageTransport: Sendable {
    /// The path this transport carries messages on.
    var path: MessagePath { get }

    /// Whether this transport can listen on or dial `address`.
    func canHandle(_ address: Multiaddr) -> Bool

    /// Connects the transport to its host: called once, by ``MessageHost``'s initializer,
    /// before anything else. Inbound messages and events go to `context`.
    func attach(to context: MessageTransportContext)

    /// Runs the transport until ``shutdown()``: serves connections and delivers inbound
    /// messages to the attached context. Returns only after every task the transport started
    /// (connection work, inbound handlers) has finished.
    func run() async throws

    /// Stops listening, closes every connection and makes ``run(context:)`` return.
    func shutdown() async

    /// Starts listening on `address` (port 0 picks a free port).
    /// - Returns: the bound address with `/p2p/<our id>`.
    func listen(on address: Multiaddr) async throws -> Multiaddr

    /// The addresses we listen on, each with `/p2p/<our id>`.
    var listenAddresses: [Multiaddr] { get }

    /// The host now handles exactly `protocols`: peers proposing others are refused
    /// (“not supported”), and the transport may tell connected peers.
    func setHandledProtocols(_ protocols: Set<String>)

    /// Sends one message to `peer` on `protocol`, connecting first if needed.
    /// Returns once the message is queued on the channel to the peer (with backpressure).
    func send(_ data: ByteBuffer, to peer: PeerID, protocol: String, mode: DeliveryMode) async throws

    /// Sends one message without suspending, when that is possible now: the channel to the
    /// peer is open and has room (no backpressure). Returns false when the caller must use
    /// ``send(_:to:protocol:mode:)`` instead (nothing was sent). The host tries this first, so
    /// that a burst of sends costs no async calls. Optional: the default returns false.
    func sendWithoutWaiting(_ data: ByteBuffer, to peer: PeerID, protocol: String, mode: DeliveryMode) throws -> Bool

    /// Sends one message and waits for exactly one reply.
    func request(_ data: ByteBuffer, to peer: PeerID, protocol: String, timeout: TimeAmount) async throws -> Message

    /// Connects to `address` (with `/p2p/<id>`) unless already connected; returns the peer.
    func connect(to address: Multiaddr) async throws -> PeerID

    /// Whether a live session (connection) to `peer` exists.
    func isConnected(to peer: PeerID) -> Bool

    /// Peers with a live session.
    var connectedPeers: [PeerID] { get }

    /// Opens (or reuses) the message channel to `peer` on `protocol`, connecting first if
    /// needed, so that errors such as `.protocolNotSupported` surface now.
    func openSession(to peer: PeerID, protocol: String) async throws

    /// Protocols with an open message channel to `peer`.
    func sessionProtocols(with peer: PeerID) -> [String]

    /// Closes our message channel to `peer` on `protocol` (the next send opens a new one).
    func closeSession(to peer: PeerID, protocol: String) async

    /// Closes every session with `peer`.
    func closePeer(_ peer: PeerID) async
}

extension MessageTransport {
    /// Never sends without waiting (see the requirement).
    public func sendWithoutWaiting(_ data: ByteBuffer, to peer: PeerID, protocol: String, mode: DeliveryMode) throws
        -> Bool
    { false }
}

/// What a ``MessageTransport`` reaches the host through: inbound delivery (with backpressure
/// and limits), lifecycle events, settings.
public final class MessageTransportContext: Sendable {
    private let dispatch: MessageDispatch
    /// The largest message payload accepted, in bytes.
    public let maxMessageSize: Int
    /// The host's peerstore.
    public let peerstore: Peerstore

    init(dispatch: MessageDispatch, peerstore: Peerstore) {
        self.dispatch = dispatch
        self.maxMessageSize = dispatch.configuration.maxMessageSize
        self.peerstore = peerstore
    }

    /// Whether a handler is registered for `protocol`.
    public func handles(_ protocol: String) -> Bool { dispatch.handles(`protocol`) }

    /// Hands `message` to its protocol's handler. Suspends while that protocol is at its
    /// concurrency limit or its inbox is full: a transport reading in a loop thereby stops
    /// reading (backpressure). Returns when the handler has finished with the message.
    ///
    /// - Throws: ``MessageError`` `.protocolNotSupported` (no handler), `.limitExceeded`
    ///   (inbound rate limit; the message was dropped), or the handler's error. The transport
    ///   then closes the channel the message came on.
    public func deliver(_ message: Message) async throws {
        var cache = DeliveryCache()
        try await dispatch.deliver(message, cache: &cache)
    }

    /// Like ``deliver(_:)``, for a transport that delivers many messages of one channel in a
    /// row: `cache` remembers the handler looked up for the channel's protocol until handlers
    /// change, so each message skips the lookup. Keep one cache per channel.
    public func deliver(_ message: Message, cache: inout DeliveryCache) async throws {
        try await dispatch.deliver(message, cache: &cache)
    }

    /// Reports a lifecycle event.
    public func emit(_ event: MessageHostEvent) { dispatch.emit(event) }
}

/// The handler a channel's messages went to last (see
/// ``MessageTransportContext/deliver(_:cache:)``). Opaque.
public struct DeliveryCache: Sendable {
    var generation = -1
    var protocolID = ""
    var slot: MessageHost.Slot?

    /// An empty cache.
    public init() {}

    init(generation: Int, protocolID: String, slot: MessageHost.Slot?) {
        self.generation = generation
        self.protocolID = protocolID
        self.slot = slot
    }
}

/// A connection (session) to a peer on some path.
public struct MessageConnection: Sendable, Hashable {
    /// Whether we dialed or accepted.
    public enum Direction: Sendable, Hashable {
        /// We dialed.
        case outbound
        /// We accepted.
        case inbound
    }
    /// The authenticated remote peer.
    public let peer: PeerID
    /// The remote's address, when known.
    public let remoteAddress: Multiaddr?
    /// Our local address, when known.
    public let localAddress: Multiaddr?
    /// Whether we dialed or accepted.
    public let direction: Direction
    /// The path.
    public let path: MessagePath

    /// Creates a connection description.
    public init(
        peer: PeerID, remoteAddress: Multiaddr?, localAddress: Multiaddr?, direction: Direction, path: MessagePath
    ) {
        self.peer = peer
        self.remoteAddress = remoteAddress
        self.localAddress = localAddress
        self.direction = direction
        self.path = path
    }
}

/// Lifecycle events of a ``MessageHost``: the connection-lifecycle table (opened, closed,
/// listen, listen closed), identify's (identified, protocols updated) and dropped messages.
public enum MessageHostEvent: Sendable {
    /// We started listening on an address (with `/p2p`).
    case listenStarted(Multiaddr)
    /// We stopped listening on an address.
    case listenClosed(Multiaddr)
    /// A connection to a peer is up (secured and multiplexed).
    case connectionOpened(MessageConnection)
    /// A connection closed.
    case connectionClosed(MessageConnection)
    /// Identify told us about a peer (stored in the peerstore too).
    case peerIdentified(IdentifyInfo)
    /// A peer announced a new protocol list.
    case peerProtocolsUpdated(PeerID, [String])
    /// An inbound message was refused (too large, over the rate limit, no handler); the channel
    /// it came on was closed.
    case messageRejected(from: PeerID, protocol: String, reason: MessageError)
}
