import MsgNetCore
import MsgNetStreams
import NIOCore

/// The network side of a ``MessageHost``: listening, connections (sessions), peers and the
/// peerstore. Obtain it from ``MessageHost/network``; it is a view of the host, cheap to copy.
public struct MessageNetwork: Sendable {
    /// The host this network belongs to.
    public let host: MessageHost

    /// Our peer id.
    public var localPeer: PeerID { host.peerID }

    /// What we know about peers.
    public var peerstore: Peerstore { host.peerstore }

    /// The paths, in order of preference (``MessageHostConfiguration/pathPreference``).
    public var transports: [any MessageTransport] { host.transports }

    /// Starts listening on `address` with the first transport that can (port 0 picks a free port).
    /// - Returns: the bound address with `/p2p/<our id>`.
    /// - Throws: ``MessageError`` `.dialFailed` when no transport handles the address.
    @discardableResult
    public func listen(on address: Multiaddr) async throws -> Multiaddr {
        guard let transport = host.transports.first(where: { $0.canHandle(address) }) else {
            throw MessageError(.listenFailed, "no transport can listen on \(address)")
        }
        do {
            return try await transport.listen(on: address)
        } catch {
            let mapped = MessageError.from(error)
            // A port in use, an address not ours: the socket's own error, named as a listen failure.
            guard mapped.code != .cancelled, mapped.code != .listenFailed else { throw mapped }
            throw MessageError(.listenFailed, "\(address): \(mapped.message)")
        }
    }

    /// Starts listening on each of `addresses`; returns the bound addresses.
    @discardableResult
    public func listen(on addresses: [Multiaddr]) async throws -> [Multiaddr] {
        var bound: [Multiaddr] = []
        for a in addresses { bound.append(try await listen(on: a)) }
        return bound
    }

    /// The bound sockets we listen on.
    public var sockets: [Socket] {
        host.transports.flatMap { t in t.listenAddresses.map { Socket(localAddress: $0, path: t.path) } }
    }

    /// The addresses we listen on, each with `/p2p/<our id>`.
    public var listenAddresses: [Multiaddr] { host.transports.flatMap(\.listenAddresses) }

    /// Connects to `address` (ending in `/p2p/<id>`) unless connected, and records the address.
    /// - Returns: the peer id.
    @discardableResult
    public func connect(to address: Multiaddr) async throws -> PeerID {
        guard let transport = host.transports.first(where: { $0.canHandle(address.withoutPeerID()) }) else {
            throw MessageError(.dialFailed, "no transport can dial \(address)")
        }
        do {
            return try await transport.connect(to: address)
        } catch {
            throw MessageError.from(error)
        }
    }

    /// Closes every session with `peer` (in-flight requests fail with `.connectionClosed`).
    public func closePeer(_ peer: PeerID) async {
        for t in host.transports { await t.closePeer(peer) }
    }

    /// Whether we have a live session (connection) with `peer` on any path.
    public func hasSession(with peer: PeerID) -> Bool {
        host.transports.contains { $0.isConnected(to: peer) }
    }

    /// Peers with a live session.
    public var peers: [PeerID] {
        Array(Set(host.transports.flatMap(\.connectedPeers)))
    }

    /// The open message channels with `peer`, one per path and protocol.
    public func sessions(with peer: PeerID) -> [SocketSession] {
        host.transports.flatMap { t in
            t.sessionProtocols(with: peer).map { SocketSession(host: host, transport: t, remote: peer, protocol: $0) }
        }
    }

    /// A session with `peer` on `protocol`: connects and opens the channel now, so errors such
    /// as `.dialFailed` or `.protocolNotSupported` surface here. The path is chosen as for a
    /// send: a live session's path, else the preferred path that can reach the peer, falling
    /// back to the next on `.dialFailed` (see ``MessageHostConfiguration/pathPreference``).
    public func newSession(to peer: PeerID, protocol: String) async throws -> SocketSession {
        try await host.withPath(to: peer) { transport in
            do {
                try await transport.openSession(to: peer, protocol: `protocol`)
            } catch {
                throw MessageError.from(error)
            }
            return SocketSession(host: host, transport: transport, remote: peer, protocol: `protocol`)
        }
    }

    /// Shuts the host down (same as ``MessageHost/shutdown()``).
    public func close() async { await host.shutdown() }
}

/// A bound local endpoint of a transport (a listening TCP socket, a bound UDP socket).
public struct Socket: Sendable, Hashable {
    /// The bound address, with `/p2p/<our id>`.
    public let localAddress: Multiaddr
    /// The path it serves.
    public let path: MessagePath
}

/// The per-peer, per-protocol message channel: the message analog of a stream. Over streams it
/// is the one outbound stream MsgNet keeps per peer and protocol (reopened transparently after
/// it closes); messages the peer sends back on it reach this protocol's handler.
public struct SocketSession: Sendable {
    let host: MessageHost
    let transport: any MessageTransport
    /// The peer.
    public let remote: PeerID
    /// The protocol id.
    public let `protocol`: String

    /// The path this session uses.
    public var path: MessagePath { transport.path }

    /// The peer's known addresses.
    public var remoteAddresses: [Multiaddr] { host.peerstore.addresses(for: remote) }

    /// Sends one message on this session (see ``MessageHost/send(_:to:protocol:mode:)-(ByteBuffer,_,_,_)``).
    public func send(_ data: ByteBuffer, mode: DeliveryMode = .reliable) async throws {
        try await host.send(data, to: remote, protocol: `protocol`, mode: mode)
    }

    /// Sends `bytes` as one message.
    public func send(_ bytes: some Sequence<UInt8>, mode: DeliveryMode = .reliable) async throws {
        try await send(ByteBuffer(bytes: bytes), mode: mode)
    }

    /// Sends a request and waits for its reply (see ``MessageHost/request(_:to:protocol:timeout:)-(ByteBuffer,_,_,_)``).
    public func request(_ data: ByteBuffer, timeout: Duration? = nil) async throws -> Message {
        try await host.request(data, to: remote, protocol: `protocol`, timeout: timeout)
    }

    /// Closes the channel (after the messages queued on it); the next send opens a new one.
    public func close() async {
        await transport.closeSession(to: remote, protocol: `protocol`)
    }
}
