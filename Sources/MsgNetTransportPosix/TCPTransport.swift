import Logging
import MsgNetCore
import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// TCP over IPv4 and IPv6 on NIOPosix: `/ip4/…/tcp/…`, `/ip6/…/tcp/…` and
/// `/dns|dns4|dns6/…/tcp/…` (resolved when dialing).
public struct TCPTransport: StreamTransport {
    /// The event loops sockets run on.
    public let group: any EventLoopGroup
    /// Listen backlog.
    public var backlog: Int32 = 256

    /// Creates a TCP transport on `group`.
    public init(group: any EventLoopGroup) {
        self.group = group
    }

    public func canHandle(_ address: Multiaddr) -> Bool {
        (try? TCPEndpoint(address)) != nil
    }

    public func listen(
        on address: Multiaddr,
        initializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>
    ) async throws -> any StreamListener {
        let endpoint = try TCPEndpoint(address)
        guard case .socket(let socketAddress) = endpoint.target else {
            throw TransportError("listening needs an IP address, not a DNS name: \(address)")
        }
        var bootstrap = ServerBootstrap(group: group)
        if socketAddress.protocol == .inet6 { bootstrap = bootstrap.serverChannelOption(.ipv6Only, value: 1) }
        let channel =
            try await bootstrap
            .serverChannelOption(.backlog, value: backlog)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { initializer($0) }
            .bind(to: socketAddress)
            .get()
        guard let local = channel.localAddress, let bound = try? Multiaddr(tcpSocketAddress: local) else {
            channel.close(promise: nil)
            throw TransportError("listener on \(address) has no local address")
        }
        return TCPListener(channel: channel, localAddress: bound)
    }

    public func dial(
        _ address: Multiaddr,
        timeout: TimeAmount,
        initializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>
    ) async throws -> any Channel {
        let endpoint = try TCPEndpoint(address)
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelInitializer { initializer($0) }
        do {
            switch endpoint.target {
            case .socket(let socketAddress):
                return try await bootstrap.connect(to: socketAddress).get()
            case .host(let host, let port, .any):
                return try await bootstrap.connect(host: host, port: port).get()
            case .host(let host, let port, let family):
                // /dns4 and /dns6 restrict the address family: resolve, then try each address.
                let addresses = try await Resolver.resolve(host: host, port: port, family: family)
                var lastError: (any Error)?
                for candidate in addresses {
                    do {
                        return try await bootstrap.connect(to: candidate).get()
                    } catch {
                        lastError = error
                    }
                }
                throw lastError ?? TransportError("\(host) has no \(family == .v4 ? "IPv4" : "IPv6") address")
            }
        } catch {
            throw TransportError("dial \(address) failed: \(error)")
        }
    }
}

/// An error opening or using a socket.
public struct TransportError: Error, CustomStringConvertible, Sendable {
    /// What went wrong.
    public var description: String
    init(_ description: String) { self.description = description }
}

struct TCPListener: StreamListener {
    let channel: any Channel
    let localAddress: Multiaddr

    func close() async {
        try? await channel.close()
    }
}

/// A TCP target parsed from a multiaddr: `ip/tcp` or `dns/tcp`, optionally followed by `/p2p/…`.
struct TCPEndpoint {
    enum Target {
        case socket(SocketAddress)
        case host(String, port: Int, family: Resolver.Family)
    }
    let target: Target

    init(_ address: Multiaddr) throws {
        var parts = address.components[...]
        while case .p2p = parts.last { parts = parts.dropLast() }
        guard parts.count == 2, case .tcp(let port) = parts.last else {
            throw TransportError("not a TCP address: \(address)")
        }
        switch parts.first! {
        case .ip4, .ip6:
            target = .socket(try Multiaddr(components: Array(parts)).socketAddress())
        case .dns(let host): target = .host(host, port: Int(port), family: .any)
        case .dns4(let host): target = .host(host, port: Int(port), family: .v4)
        case .dns6(let host): target = .host(host, port: Int(port), family: .v6)
        default: throw TransportError("not a TCP address: \(address)")
        }
    }
}

extension Multiaddr {
    /// The `/ip4|ip6/…/tcp/<port>` address of a socket address.
    init(tcpSocketAddress address: SocketAddress) throws {
        self = try Multiaddr(socketAddress: address, transport: .tcp)
    }
}
