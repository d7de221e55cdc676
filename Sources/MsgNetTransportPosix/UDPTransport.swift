import Logging
import MsgNetCore
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// UDP over IPv4 and IPv6 on NIOPosix (`/ip4/…/udp/…`, `/ip6/…/udp/…`).
///
/// Sockets get a large receive buffer (so bursts are not dropped by the kernel) and vector reads
/// (many datagrams per system call); writes are queued and flushed once per batch.
///
/// A destination the socket has not sent to yet is tried alone first (its datagram is flushed
/// on its own, with a completion): when the network refuses it (`ENETUNREACH`, `EACCES`,
/// `EPERM`, …), that destination is reported (see
/// ``DatagramTransport/bind(_:handler:flush:refused:)``) and sends to it are dropped for
/// ``refusalTTL`` instead of reaching the kernel again. NIO closes a datagram channel on most
/// send errors; the socket then binds again at once, on the same port, so one bad peer address
/// never silences the socket for the others.
public struct UDPTransport: DatagramTransport {
    /// The event loops sockets run on.
    public let group: any EventLoopGroup
    /// Requested `SO_RCVBUF` / `SO_SNDBUF` (the kernel may cap it at `net.core.rmem_max`).
    public var socketBufferSize = 8 << 20
    /// Datagrams read per system call.
    public var vectorReadCount = 64
    /// How long sends to a destination the network refused are dropped without trying it again.
    public var refusalTTL = TimeAmount.seconds(30)
    /// Where refused destinations and a socket bound again after a send error are reported.
    public var logger = Logger(label: "msgnet.udp")

    /// Creates a UDP transport on `group`.
    public init(group: any EventLoopGroup) {
        self.group = group
    }

    /// `/ip4|ip6/…/udp/<port>`, and for sending `/dns|dns4|dns6/<name>/udp/<port>` (resolved
    /// when a session is opened; a socket binds to IP addresses only).
    public func canHandle(_ address: Multiaddr) -> Bool {
        var parts = address.components[...]
        while case .p2p = parts.last { parts = parts.dropLast() }
        guard parts.count == 2, case .udp = parts.last else { return false }
        switch parts.first! {
        case .ip4, .ip6, .dns, .dns4, .dns6: return true
        default: return false
        }
    }

    /// The socket addresses for `address`: itself for an IP address, getaddrinfo's answers (on
    /// NIO's thread pool) for a DNS name, restricted to IPv4 for `/dns4` and IPv6 for `/dns6`.
    public func resolve(_ address: Multiaddr) async throws -> [SocketAddress] {
        var parts = address.components[...]
        while case .p2p = parts.last { parts = parts.dropLast() }
        guard parts.count == 2, case .udp(let port) = parts.last else {
            throw TransportError("not a UDP address: \(address)")
        }
        switch parts.first! {
        case .dns(let host):
            return try await Resolver.resolve(host: host, port: Int(port), family: .any, datagram: true)
        case .dns4(let host):
            return try await Resolver.resolve(host: host, port: Int(port), family: .v4, datagram: true)
        case .dns6(let host):
            return try await Resolver.resolve(host: host, port: Int(port), family: .v6, datagram: true)
        default: return [try Multiaddr(components: Array(parts)).socketAddress()]
        }
    }

    public func bind(
        _ address: Multiaddr,
        handler: @escaping @Sendable (ByteBuffer, SocketAddress) -> Void,
        flush: @escaping @Sendable () -> Void
    ) async throws -> any DatagramSocket {
        try await bind(address, handler: handler, flush: flush, refused: { _, _ in })
    }

    public func bind(
        _ address: Multiaddr,
        handler: @escaping @Sendable (ByteBuffer, SocketAddress) -> Void,
        flush: @escaping @Sendable () -> Void,
        refused: @escaping @Sendable (SocketAddress, any Error) -> Void
    ) async throws -> any DatagramSocket {
        guard canHandle(address), let socketAddress = try? address.withoutPeerID().socketAddress() else {
            throw TransportError("a UDP socket binds to an IP address and port, not \(address)")
        }
        let make = channelMaker(handler: handler, flush: flush)
        let channel = try await make(socketAddress, group.next()).get()
        guard let local = channel.localAddress else {
            try? await channel.close()
            throw TransportError("UDP socket on \(address) has no local address")
        }
        return UDPSocket(
            channel: channel, bound: local, localAddress: try Multiaddr(socketAddress: local, transport: .udp),
            make: make, refusalTTL: refusalTTL, refused: refused, logger: logger)
    }

    /// Binds a channel with this transport's settings (also used to bind a socket again).
    private func channelMaker(
        handler: @escaping @Sendable (ByteBuffer, SocketAddress) -> Void,
        flush: @escaping @Sendable () -> Void
    ) -> @Sendable (SocketAddress, any EventLoop) -> EventLoopFuture<any Channel> {
        let bufferSize = socketBufferSize
        let vectorReadCount = vectorReadCount
        return { socketAddress, loop in
            // No SO_REUSEADDR: on Linux it lets UDP sockets share a port (even one picked for
            // port 0), and unicast datagrams then go to one of them only; a port in use must be
            // refused.
            var bootstrap = DatagramBootstrap(group: loop)
            if socketAddress.protocol == .inet6 { bootstrap = bootstrap.channelOption(.ipv6Only, value: 1) }
            return
                bootstrap
                .channelOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(bufferSize))
                .channelOption(.socketOption(.so_sndbuf), value: SocketOptionValue(bufferSize))
                .channelOption(.datagramVectorReadMessageCount, value: vectorReadCount)
                .channelOption(.maxMessagesPerRead, value: 16)
                // Vector reads split one buffer between the messages: size it for all of them.
                .channelOption(
                    .recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: vectorReadCount * 2048)
                )
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(DatagramReader(handler: handler, flush: flush))
                    }
                }
                .bind(to: socketAddress)
        }
    }
}

/// A bound UDP socket that outlives send errors and remembers refused destinations.
///
/// **Refused destinations.** A destination not yet confirmed (no send to it has completed since
/// the socket was bound) is *probed*: what is queued is flushed first, then its datagram is
/// written and flushed on its own, with a completion. Success confirms the destination (later
/// datagrams to it are queued and flushed in batches). An error (`ENETUNREACH`, `EACCES`,
/// `EPERM`, `EHOSTUNREACH`, …; not `EMSGSIZE`, which is about the datagram) marks it refused for
/// `refusalTTL`: it is reported through `refused`, ``refusal(of:)`` returns the error, and
/// datagrams to it are dropped (counted in ``refusedDrops``) instead of reaching the kernel. Both
/// sets are bounded (``maxConfirmed``, ``maxRefused``).
///
/// **Closed under us.** NIO closes a datagram channel when a send fails with anything but
/// `EMSGSIZE` or `EHOSTUNREACH`, and one unsendable destination must not cut off every peer the
/// socket serves. When the channel closes without ``close()``, the socket binds again to the same
/// address (same port) on the same event loop and carries on; datagrams queued in between are
/// lost (the reliable layer above resends what needs it), and every destination is probed again
/// (a confirmed one may be the one that failed in a batch). Counted in ``recoveries``; a rebind
/// that fails is retried every 100 ms up to 50 times, then logged.
final class UDPSocket: DatagramSocket {
    /// At most this many confirmed destinations are remembered; past it, an arbitrary one is
    /// forgotten (and probed again when next used) for each new one.
    static let maxConfirmed = 4096
    /// At most this many refused destinations are remembered; past it, expired ones go first,
    /// then those whose refusal ends soonest.
    static let maxRefused = 1024

    let localAddress: Multiaddr
    let eventLoop: any EventLoop
    private let bound: SocketAddress
    private let make: @Sendable (SocketAddress, any EventLoop) -> EventLoopFuture<any Channel>
    private let refusalTTL: TimeAmount
    private let refused: @Sendable (SocketAddress, any Error) -> Void
    private let logger: Logger

    private struct Refusal {
        var until: NIODeadline
        var error: IOError
    }

    private struct State {
        var channel: any Channel
        var closed = false
        var recoveries = 0
        var confirmed = Set<SocketAddress>()
        var refused: [SocketAddress: Refusal] = [:]
        var refusedDrops = 0
        var refusals = 0
    }
    private let state: NIOLockedValueBox<State>

    private enum Route {
        case queue
        case probe
        case drop
    }

    init(
        channel: any Channel, bound: SocketAddress, localAddress: Multiaddr,
        make: @escaping @Sendable (SocketAddress, any EventLoop) -> EventLoopFuture<any Channel>,
        refusalTTL: TimeAmount,
        refused: @escaping @Sendable (SocketAddress, any Error) -> Void,
        logger: Logger
    ) {
        self.localAddress = localAddress
        self.eventLoop = channel.eventLoop
        self.bound = bound
        self.make = make
        self.refusalTTL = refusalTTL
        self.refused = refused
        self.logger = logger
        state = NIOLockedValueBox(State(channel: channel))
        watch(channel)
    }

    /// How many times the socket was bound again after its channel closed under it.
    var recoveries: Int { state.withLockedValue { $0.recoveries } }
    /// Datagrams dropped because their destination was refused.
    var refusedDrops: Int { state.withLockedValue { $0.refusedDrops } }
    /// Destinations confirmed (sends to them are batched).
    var confirmedCount: Int { state.withLockedValue { $0.confirmed.count } }
    /// Sends the network refused (each makes a destination refused for `refusalTTL`).
    var refusals: Int { state.withLockedValue { $0.refusals } }
    func refusal(of destination: SocketAddress) -> (any Error)? {
        state.withLockedValue { s in
            guard let refusal = s.refused[destination], NIODeadline.now() < refusal.until else { return nil }
            return refusal.error
        }
    }

    func write(_ datagram: ByteBuffer, to address: SocketAddress) {
        let (channel, route) = state.withLockedValue { s -> (any Channel, Route) in
            if s.confirmed.contains(address) { return (s.channel, .queue) }
            if !s.refused.isEmpty, let refusal = s.refused[address] {
                if NIODeadline.now() < refusal.until {
                    s.refusedDrops += 1
                    return (s.channel, .drop)
                }
                s.refused[address] = nil
            }
            return (s.channel, .probe)
        }
        let envelope = AddressedEnvelope(remoteAddress: address, data: datagram)
        switch route {
        case .queue:
            if channel.eventLoop.inEventLoop {
                // On the loop, through the synchronous pipeline with a concretely typed `NIOAny`:
                // the generic `Channel.write` wraps its value after a dynamic cast per datagram.
                channel.pipeline.syncOperations.write(NIOAny(envelope), promise: nil)
            } else {
                channel.write(envelope, promise: nil)
            }
        case .probe:
            if eventLoop.inEventLoop {
                probe(envelope, on: channel)
            } else {
                eventLoop.execute { self.probe(envelope, on: channel) }
            }
        case .drop:
            return
        }
    }

    /// Sends one datagram to an unconfirmed destination on its own (on the loop), so that an
    /// error is this destination's.
    private func probe(_ envelope: AddressedEnvelope<ByteBuffer>, on channel: any Channel) {
        channel.flush()
        let promise = eventLoop.makePromise(of: Void.self)
        channel.pipeline.syncOperations.write(NIOAny(envelope), promise: promise)
        channel.flush()
        promise.futureResult.whenComplete { result in
            self.probed(envelope.remoteAddress, on: channel, result)
        }
    }

    private func probed(_ address: SocketAddress, on channel: any Channel, _ result: Result<Void, any Error>) {
        switch result {
        case .success:
            state.withLockedValue { s in
                guard s.channel === channel else { return }
                // Full: one arbitrary destination makes room (it will be probed again when next
                // used), so a socket serving more peers than the bound pays one extra flush per
                // eviction, not a probe of every peer at once.
                if s.confirmed.count >= Self.maxConfirmed, let any = s.confirmed.first { s.confirmed.remove(any) }
                s.confirmed.insert(address)
            }
        case .failure(let error):
            // Only the kernel's answer counts: a closed channel (the rebind is under way) or an
            // oversize datagram says nothing about the destination.
            guard let error = error as? IOError, error.errnoCode != EMSGSIZE else { return }
            let now = NIODeadline.now()
            state.withLockedValue { s in
                if s.refused.count >= Self.maxRefused, s.refused[address] == nil {
                    s.refused = s.refused.filter { $0.value.until > now }
                    if s.refused.count >= Self.maxRefused,
                        let soonest = s.refused.min(by: { $0.value.until < $1.value.until })
                    {
                        s.refused[soonest.key] = nil
                    }
                }
                s.refused[address] = Refusal(until: now + refusalTTL, error: error)
                s.refusals += 1
            }
            logger.debug(
                "UDP destination refused",
                metadata: ["address": "\(localAddress)", "destination": "\(address)", "error": "\(error)"])
            refused(address, error)
        }
    }

    func flush() {
        state.withLockedValue { $0.channel }.flush()
    }

    func close() async {
        let channel = state.withLockedValue { s -> any Channel in
            s.closed = true
            return s.channel
        }
        try? await channel.close()
    }

    private func watch(_ channel: any Channel) {
        channel.closeFuture.whenComplete { _ in self.closedUnderUs(channel, attempt: 0) }
    }

    private func closedUnderUs(_ channel: any Channel, attempt: Int) {
        let current = state.withLockedValue { s in !s.closed && s.channel === channel }
        guard current else { return }
        if attempt == 0 {
            logger.warning(
                "UDP socket closed by a send error; binding it again", metadata: ["address": "\(localAddress)"])
        }
        make(bound, eventLoop).whenComplete { result in
            switch result {
            case .success(let fresh):
                let keep = self.state.withLockedValue { s -> Bool in
                    guard !s.closed else { return false }
                    s.channel = fresh
                    s.recoveries += 1
                    s.confirmed.removeAll()
                    return true
                }
                if keep { self.watch(fresh) } else { fresh.close(promise: nil) }
            case .failure(let error):
                guard attempt < 50 else {
                    self.logger.error(
                        "UDP socket could not be bound again",
                        metadata: ["address": "\(self.localAddress)", "error": "\(error)"])
                    return
                }
                self.eventLoop.scheduleTask(in: .milliseconds(100)) {
                    self.closedUnderUs(channel, attempt: attempt + 1)
                }
            }
        }
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
