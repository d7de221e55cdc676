import NIOCore

/// A transport that carries byte streams (TCP today). Implementations live in
/// `MsgNetTransportPosix`, the only target that opens sockets; the stream layer sees only this
/// protocol, so tests can substitute an in-memory transport.
public protocol StreamTransport: Sendable {
    /// Whether this transport can dial or listen on `address` (e.g. `/ip4/…/tcp/…`).
    func canHandle(_ address: Multiaddr) -> Bool

    /// Starts listening on `address`. `initializer` runs on each accepted channel's event loop
    /// before it becomes active for reads.
    func listen(
        on address: Multiaddr,
        initializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>
    ) async throws -> any StreamListener

    /// Dials `address` (without its `/p2p` part). `initializer` runs on the new channel before
    /// the connection completes.
    func dial(
        _ address: Multiaddr,
        timeout: TimeAmount,
        initializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>
    ) async throws -> any Channel
}

/// A listening socket opened by a ``StreamTransport``.
public protocol StreamListener: Sendable {
    /// The bound address (port 0 replaced by the real port), without `/p2p`.
    var localAddress: Multiaddr { get }
    /// Stops accepting connections. Established connections are not affected.
    func close() async
}

/// A transport that carries datagrams (UDP today), for the multipacket path. Implemented in
/// `MsgNetTransportPosix`.
public protocol DatagramTransport: Sendable {
    /// Whether this transport can bind or send to `address` (e.g. `/ip4/…/udp/…`).
    func canHandle(_ address: Multiaddr) -> Bool

    /// Binds a socket on `address` (port 0 picks a free port). `handler` receives every
    /// datagram on the socket's event loop, then `flush` once per batch of reads.
    func bind(
        _ address: Multiaddr,
        handler: @escaping @Sendable (_ datagram: ByteBuffer, _ from: SocketAddress) -> Void,
        flush: @escaping @Sendable () -> Void
    ) async throws -> any DatagramSocket

    /// The socket addresses to send to for `address`: one for an IP address; for a DNS name
    /// (`/dns|dns4|dns6/<name>/udp/<port>`), what it resolves to.
    func resolve(_ address: Multiaddr) async throws -> [SocketAddress]

    /// Binds a socket as ``bind(_:handler:flush:)`` does, and also reports destinations the
    /// network refuses: `refused` is called (on the socket's event loop) with the destination and
    /// the error when a send to it fails (`ENETUNREACH`, `EACCES`, `EPERM`, …). While it stays
    /// refused, ``DatagramSocket/refusal(of:)`` says so.
    ///
    /// The default implementation binds without reporting anything.
    func bind(
        _ address: Multiaddr,
        handler: @escaping @Sendable (_ datagram: ByteBuffer, _ from: SocketAddress) -> Void,
        flush: @escaping @Sendable () -> Void,
        refused: @escaping @Sendable (_ destination: SocketAddress, _ error: any Error) -> Void
    ) async throws -> any DatagramSocket
}

extension DatagramTransport {
    /// Binds without reporting refused destinations.
    public func bind(
        _ address: Multiaddr,
        handler: @escaping @Sendable (_ datagram: ByteBuffer, _ from: SocketAddress) -> Void,
        flush: @escaping @Sendable () -> Void,
        refused: @escaping @Sendable (_ destination: SocketAddress, _ error: any Error) -> Void
    ) async throws -> any DatagramSocket {
        try await bind(address, handler: handler, flush: flush)
    }

    /// IP addresses only (no DNS).
    public func resolve(_ address: Multiaddr) async throws -> [SocketAddress] {
        [try address.withoutPeerID().socketAddress()]
    }
}

/// A bound datagram socket.
public protocol DatagramSocket: Sendable {
    /// The bound address (port 0 replaced by the real port).
    var localAddress: Multiaddr { get }
    /// The event loop the socket's reads are delivered on; sends may come from any thread.
    var eventLoop: any EventLoop { get }
    /// Queues a datagram; it is sent at the next ``flush()``.
    func write(_ datagram: ByteBuffer, to address: SocketAddress)
    /// Sends every queued datagram.
    func flush()
    /// Closes the socket.
    func close() async
    /// The error with which the network refused a recent send to `destination`, while sends to
    /// it are dropped because of it; nil when it is not known to be refused.
    func refusal(of destination: SocketAddress) -> (any Error)?
}

extension DatagramSocket {
    /// Never known to be refused.
    public func refusal(of destination: SocketAddress) -> (any Error)? { nil }

    /// Queues a datagram to `address` (`/ip4|ip6/…/udp/<port>`, a trailing `/p2p` is ignored):
    /// the seed's `Socket.WriteMessage`, addressed by multiaddr.
    /// - Throws: ``CoreError`` when `address` is not an IP + port address.
    public func write(_ datagram: ByteBuffer, to address: Multiaddr) throws {
        write(datagram, to: try address.withoutPeerID().socketAddress())
    }
}
