import MsgNetCore
import NIOCore
import NIOPosix

/// UDP over IPv4 and IPv6 on NIOPosix (`/ip4/…/udp/…`, `/ip6/…/udp/…`).
///
/// Sockets get a large receive buffer (so bursts are not dropped by the kernel) and vector reads
/// (many datagrams per system call); writes are queued and flushed once per batch.
public struct UDPTransport: DatagramTransport {
    /// The event loops sockets run on.
    public let group: any EventLoopGroup
    /// Requested `SO_RCVBUF` / `SO_SNDBUF` (the kernel may cap it at `net.core.rmem_max`).
    public var socketBufferSize = 8 << 20
    /// Datagrams read per system call.
    public var vectorReadCount = 64

    /// Creates a UDP transport on `group`.
    public init(group: any EventLoopGroup) {
        self.group = group
    }

    public func canHandle(_ address: Multiaddr) -> Bool {
        var parts = address.components[...]
        while case .p2p = parts.last { parts = parts.dropLast() }
        guard parts.count == 2, case .udp = parts.last else { return false }
        switch parts.first! {
        case .ip4, .ip6: return true
        default: return false
        }
    }

    public func bind(
        _ address: Multiaddr,
        handler: @escaping @Sendable (ByteBuffer, SocketAddress) -> Void,
        flush: @escaping @Sendable () -> Void
    ) async throws -> any DatagramSocket {
        guard canHandle(address) else { throw TransportError("not a UDP address: \(address)") }
        let socketAddress = try address.withoutPeerID().socketAddress()
        // No SO_REUSEADDR: on Linux it lets UDP sockets share a port (even one picked for port
        // 0), and unicast datagrams then go to one of them only; a port in use must be refused.
        var bootstrap = DatagramBootstrap(group: group)
        if socketAddress.protocol == .inet6 { bootstrap = bootstrap.channelOption(.ipv6Only, value: 1) }
        let channel =
            try await bootstrap
            .channelOption(.socketOption(.so_rcvbuf), value: socketBufferSize)
            .channelOption(.socketOption(.so_sndbuf), value: socketBufferSize)
            .channelOption(.datagramVectorReadMessageCount, value: vectorReadCount)
            .channelOption(.maxMessagesPerRead, value: 16)
            // Vector reads split one buffer between the messages: size it for all of them.
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: vectorReadCount * 2048))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(DatagramReader(handler: handler, flush: flush))
                }
            }
            .bind(to: socketAddress)
            .get()
        guard let local = channel.localAddress else {
            try? await channel.close()
            throw TransportError("UDP socket on \(address) has no local address")
        }
        return UDPSocket(channel: channel, localAddress: try Multiaddr(socketAddress: local, transport: .udp))
    }
}

struct UDPSocket: DatagramSocket {
    let channel: any Channel
    let localAddress: Multiaddr
    var eventLoop: any EventLoop { channel.eventLoop }

    func write(_ datagram: ByteBuffer, to address: SocketAddress) {
        let envelope = AddressedEnvelope(remoteAddress: address, data: datagram)
        if channel.eventLoop.inEventLoop {
            // On the loop, through the synchronous pipeline with a concretely typed `NIOAny`: the
            // generic `Channel.write` wraps its value after a dynamic cast per datagram.
            channel.pipeline.syncOperations.write(NIOAny(envelope), promise: nil)
        } else {
            channel.write(envelope, promise: nil)
        }
    }

    func flush() {
        channel.flush()
    }

    func close() async {
        try? await channel.close()
    }
}

final class DatagramReader: ChannelInboundHandler, Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let handler: @Sendable (ByteBuffer, SocketAddress) -> Void
    let flush: @Sendable () -> Void

    init(handler: @escaping @Sendable (ByteBuffer, SocketAddress) -> Void, flush: @escaping @Sendable () -> Void) {
        self.handler = handler
        self.flush = flush
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        handler(envelope.data, envelope.remoteAddress)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flush()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // ICMP errors (port unreachable) surface here on a connected-less UDP socket; they are
        // not fatal for a socket serving many peers.
    }
}

extension ChannelOption where Self == ChannelOptions.Types.SocketOption {
    /// `IPV6_V6ONLY`, set to 1 on IPv6 sockets (NIO makes them dual-stack): an `/ip6/…`
    /// address takes IPv6 traffic only, as in libp2p, so `/ip4/0.0.0.0/…/P` and `/ip6/::/…/P`
    /// can both be listened on. IPv4 sockets do not accept the option.
    static var ipv6Only: Self { .init(level: .ipv6, name: .ipv6_v6only) }
}
