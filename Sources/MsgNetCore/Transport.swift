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
