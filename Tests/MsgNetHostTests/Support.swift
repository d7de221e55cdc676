import Logging
import MsgNetCore
import MsgNetHost
import MsgNetSecurity
import MsgNetStreams
import MsgNetTransportPosix
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

/// Makes hosts on one path. The handler suite takes this as its parameter, so the datagram
/// path runs the same tests by adding a factory to ``all``.
struct TransportFactory: Sendable, CustomStringConvertible {
    let name: String
    /// The address to listen on (port 0).
    let listenAddress: @Sendable () -> Multiaddr
    let make:
        @Sendable (
            _ identity: PrivateKey, _ configuration: MessageHostConfiguration, _ limits: PathLimits,
            _ peerstore: Peerstore
        ) -> MessageHost

    var description: String { name }
    /// Whether the path has streams (and so per-peer stream limits).
    var hasStreams: Bool { name.hasPrefix("tcp") }

    /// The stream path: TCP, Noise, mplex; a new stream per request (as with a libp2p peer).
    static let tcp = stream(name: "tcp", requestStreams: .off)

    /// The stream path with kept-open request streams between the two MsgNet hosts.
    static let tcpRequestStreams = stream(name: "tcp-request-streams", requestStreams: .always)

    static func stream(
        name: String, requestStreams: StreamMessageTransport.RequestStreams,
        configure: @escaping @Sendable (inout StreamMessageTransport.Configuration) -> Void = { _ in }
    ) -> TransportFactory {
        TransportFactory(
            name: name,
            listenAddress: { try! Multiaddr("/ip4/127.0.0.1/tcp/0") },
            make: { identity, configuration, limits, peerstore in
                var stream = StreamMessageTransport.Configuration()
                stream.requestStreams = requestStreams
                configure(&stream)
                if let n = limits.maxStreamsPerPeer { stream.maxStreamsPerPeer = n }
                if let e = limits.inboundExecution { stream.streamHost.inboundExecution = e }
                return MessageHost(
                    identity: identity,
                    streamTransports: [TCPTransport(group: MultiThreadedEventLoopGroup.singleton)],
                    configuration: configuration,
                    streamConfiguration: stream,
                    peerstore: peerstore
                )
            }
        )
    }

    /// The datagram path: UDP, Noise XX sessions, multipacket frames.
    static let udp = TransportFactory(
        name: "udp",
        listenAddress: { try! Multiaddr("/ip4/127.0.0.1/udp/0") },
        make: { identity, configuration, limits, peerstore in
            let loop = MultiThreadedEventLoopGroup.singleton.next()
            var datagram = DatagramTransportConfiguration()
            // As long as the TCP factory's dial timeout (10 s): the suite starts hundreds of tests
            // at once on 2 cores, and a cold CI run has stalled every test for ~10 s; the default
            // 2 s (a production choice, for falling back to TCP quickly) then failed handshakes.
            datagram.connectTimeout = .seconds(10)
            // Likewise the reliable delivery deadline (10 s by default).
            datagram.messaging.deliveryTimeout = .seconds(30)
            if let e = limits.inboundExecution { datagram.inboundExecution = e }
            if let n = limits.maxPendingInboundBytes { datagram.maxPendingInboundBytes = n }
            let transport = DatagramMessageTransport(
                identity: identity,
                datagrams: UDPTransport(group: loop),
                eventLoop: loop,
                configuration: datagram
            )
            return MessageHost(
                identity: identity, transports: [transport], peerstore: peerstore, configuration: configuration)
        }
    )

    static let all: [TransportFactory] = [.tcp, .tcpRequestStreams, .udp]

    /// Waits until a send from `sender` to `receiver` on this path has had to wait: on streams,
    /// for its channel to drain; on datagrams, for the receiver to take datagrams again (it
    /// drops them unacknowledged while its undelivered messages are at their bound).
    func waitForBlockedSend(from sender: MessageHost, to receiver: MessageHost) async {
        for transport in sender.transports {
            if let stream = transport as? StreamMessageTransport { await stream.waitForBlockedSend() }
        }
        for case let datagram as DatagramMessageTransport in receiver.transports {
            while datagram.backpressureDrops == 0, !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(5))
            }
        }
    }

    func host(
        identity: PrivateKey = .generate(),
        limits: PathLimits = PathLimits(),
        peerstore: Peerstore = Peerstore(),
        configure: (inout MessageHostConfiguration) -> Void = { _ in }
    ) -> MessageHost {
        var c = MessageHostConfiguration()
        // Three times the production default (10 s): the suite starts hundreds of tests at once
        // on 2 cores, and a test's ten sequential requests have taken 10 s there. Tests of the
        // timeout itself set their own.
        c.defaultRequestTimeout = .seconds(30)
        configure(&c)
        return make(identity, c, limits, peerstore)
    }
}

/// Path-specific limits the suite sets (each path maps them onto its own configuration).
struct PathLimits: Sendable {
    var maxStreamsPerPeer: Int?
    /// The datagram path's bound on undelivered inbound bytes (its default when `nil`).
    var maxPendingInboundBytes: Int?
    /// Where inbound handlers start (the path's default when `nil`).
    var inboundExecution: InboundExecution?
}

/// A clock tests move by hand.
final class ManualClock: Sendable {
    private let value = NIOLockedValueBox(NIODeadline.uptimeNanoseconds(1_000_000_000))
    var now: @Sendable () -> NIODeadline { { self.value.withLockedValue { $0 } } }
    func advance(_ amount: TimeAmount) { value.withLockedValue { $0 = $0 + amount } }
}

/// Runs `hosts` for the duration of `body`, then shuts them down.
func running<R: Sendable>(
    _ hosts: [MessageHost],
    _ body: @Sendable () async throws -> R
) async throws -> R {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for h in hosts { group.addTask { try await h.run() } }
        do {
            let r = try await body()
            for h in hosts { await h.shutdown() }
            try await group.waitForAll()
            return r
        } catch {
            for h in hosts { await h.shutdown() }
            try? await group.waitForAll()
            throw error
        }
    }
}

/// Lets `b` be dialed by `a`: `b` listens, `a` learns its address.
func introduce(_ a: MessageHost, to b: MessageHost, on factory: TransportFactory) async throws -> Multiaddr {
    let address = try await b.network.listen(on: factory.listenAddress())
    a.peerstore.addAddresses([address], for: b.peerID)
    return address
}

/// Collects events until `predicate` matches one; returns it.
func firstEvent(
    _ host: MessageHost,
    where predicate: (MessageHostEvent) -> Bool
) async -> MessageHostEvent? {
    for await event in host.events where predicate(event) { return event }
    return nil
}

func bytes(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

func code(_ error: any Error) -> MessageError.Code? { (error as? MessageError)?.code }
