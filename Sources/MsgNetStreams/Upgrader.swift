import Logging
import MsgNetCore
import MsgNetMplex
import MsgNetMultistream
import MsgNetSecurity
import NIOCore

/// Which side of a negotiation a connection runs.
public enum ConnectionDirection: Sendable, Hashable {
    /// We dialed.
    case outbound
    /// We accepted.
    case inbound
}

/// Turns a raw byte channel into a secured, multiplexed libp2p connection:
/// multistream-select → security (`/noise` or `/plaintext/2.0.0`) → multistream-select →
/// muxer (`/mplex/6.7.0`).
///
/// Normally the dialer runs the initiator side of both negotiations and the listener the
/// responder side. A dial with `dialAsListener` (hole punching, DCUtR) runs the responder side
/// instead, against a peer that runs the initiator side over a connection it accepted.
public struct ConnectionUpgrader: Sendable {
    /// Security protocols in preference order (the first is proposed first).
    public var security: [any SecurityProtocol]
    /// Muxer configuration.
    public var mplex: MplexConfiguration
    /// Time allowed for the whole upgrade (both negotiations and the handshake).
    public var timeout: TimeAmount

    static let mplexProtocolID = "/mplex/6.7.0"

    /// Creates an upgrader.
    public init(
        security: [any SecurityProtocol],
        mplex: MplexConfiguration = MplexConfiguration(),
        timeout: TimeAmount = .seconds(10)
    ) {
        precondition(!security.isEmpty, "at least one security protocol is needed")
        self.security = security
        self.mplex = mplex
        self.timeout = timeout
    }

    /// Upgrades `channel`, which must be active (or about to become active) and have nothing
    /// else in its pipeline. Must be called on the channel's event loop.
    ///
    /// - Parameters:
    ///   - initiator: whether this side runs the initiator side of the negotiations. A normal
    ///     dial passes `true`, an accepted connection `false`; a dial "as listener" passes `false`.
    ///   - expectedPeer: when set, the handshake fails unless the remote proves this identity.
    ///   - logger: where negotiation and muxer errors are logged.
    ///   - onInboundStream: called on the event loop for each stream the remote opens.
    /// - Returns: the upgraded connection. On failure or timeout the channel is closed.
    public func upgrade(
        channel: any Channel,
        initiator: Bool,
        expectedPeer: PeerID?,
        logger: Logger = Logger(label: "msgnet.upgrader"),
        onInboundStream: @escaping @Sendable (MplexStream) -> Void
    ) -> EventLoopFuture<UpgradedConnection> {
        let loop = channel.eventLoop
        loop.preconditionInEventLoop()
        let done = loop.makePromise(of: UpgradedConnection.self)
        let stage = NIOLoopBoundBox(UpgradeStage.securityNegotiation, eventLoop: loop)
        let timer = loop.scheduleTask(in: timeout) {
            done.fail(StreamsError(.timedOut, "connection upgrade timed out during \(stage.value)"))
            channel.close(promise: nil)
        }
        channel.closeFuture.whenComplete { _ in
            done.fail(StreamsError(.connectionClosed, "connection closed during \(stage.value)"))
        }
        done.futureResult.whenComplete { _ in timer.cancel() }

        let securityIDs = security.map(\.protocolID)
        let role: SecurityRole = initiator ? .initiator : .responder
        let pipeline = channel.pipeline.syncOperations
        let security = self.security
        let mplexConfiguration = self.mplex
        let timeout = self.timeout
        func fail(_ error: any Error) {
            done.fail(Self.classify(error, stage: stage.value))
            channel.close(promise: nil)
        }
        do {
            // 1. Security negotiation on the raw channel.
            let secProtocolPromise = loop.makePromise(of: String.self)
            let ms1 = MultistreamHandler(
                machine: Self.machine(initiator: initiator, protocols: securityIDs),
                promise: secProtocolPromise,
                timeout: timeout,
                logger: logger
            )
            try pipeline.addHandler(ms1)
            secProtocolPromise.futureResult.assumeIsolated().whenComplete { result in
                guard case .success(let securityID) = result else {
                    if case .failure(let error) = result { fail(error) }
                    return
                }
                // 2. The handshake. The muxer negotiation handler goes in behind the security
                // handler at once, so decrypted bytes that arrive with the last handshake
                // message have somewhere to go.
                stage.value = .securityHandshake(securityID)
                guard let chosen = security.first(where: { $0.protocolID == securityID }) else {
                    fail(StreamsError(.protocolViolation, "negotiated unknown security \(securityID)"))
                    return
                }
                let handshake = loop.makePromise(of: SecuredConnectionInfo.self)
                let securityHandler = chosen.makeHandler(
                    role: role, expectedRemotePeer: expectedPeer, promise: handshake)
                let muxerPromise = loop.makePromise(of: String.self)
                let ms2 = MultistreamHandler(
                    machine: Self.machine(initiator: initiator, protocols: [Self.mplexProtocolID]),
                    promise: muxerPromise,
                    timeout: timeout,
                    logger: logger
                )
                do {
                    try pipeline.addHandler(securityHandler, position: .after(ms1))
                    try pipeline.addHandler(ms2, position: .after(securityHandler))
                    pipeline.removeHandler(ms1, promise: nil)
                } catch {
                    fail(error)
                    return
                }
                handshake.futureResult.assumeIsolated().whenComplete { result in
                    let info: SecuredConnectionInfo
                    switch result {
                    case .success(let i): info = i
                    case .failure(let error):
                        fail(error)
                        return
                    }
                    stage.value = .muxerNegotiation
                    muxerPromise.futureResult.assumeIsolated().whenComplete { result in
                        switch result {
                        case .failure(let error):
                            fail(error)
                        case .success(let muxerID):
                            guard muxerID == Self.mplexProtocolID else {
                                fail(StreamsError(.protocolViolation, "negotiated unknown muxer \(muxerID)"))
                                return
                            }
                            // 3. The muxer.
                            let mplex = MplexHandler(
                                configuration: mplexConfiguration, logger: logger,
                                inboundStreamInitializer: onInboundStream)
                            do {
                                try pipeline.addHandler(mplex, position: .after(ms2))
                                pipeline.removeHandler(ms2, promise: nil)
                            } catch {
                                fail(error)
                                return
                            }
                            done.succeed(
                                UpgradedConnection(
                                    channel: channel,
                                    security: info,
                                    muxer: mplex.connection,
                                    ranInitiatorSide: initiator
                                ))
                        }
                    }
                }
            }
        } catch {
            fail(error)
        }
        return done.futureResult
    }

    static func machine(initiator: Bool, protocols: [String]) -> MultistreamMachine {
        if initiator {
            return .initiator(proposals: protocols, optimistic: false)
        }
        var selector = ProtocolSelector()
        for p in protocols { selector.add(p) }
        return .responder(selector: selector)
    }

    static func classify(_ error: any Error, stage: UpgradeStage) -> StreamsError {
        if let e = error as? StreamsError { return e }
        if let e = error as? MultistreamError {
            switch e {
            case .noProtocolInCommon, .protocolRejected:
                return StreamsError(.protocolNotSupported, "\(stage): \(e)")
            case .timeout:
                return StreamsError(.timedOut, "\(stage): \(e)")
            default:
                return StreamsError(.protocolViolation, "\(stage): \(e)")
            }
        }
        if let e = error as? NoiseError, case .peerIDMismatch = e {
            return StreamsError(.peerIDMismatch, "\(stage): \(e)")
        }
        if error is ChannelError { return StreamsError(.connectionClosed, "\(stage): connection closed (\(error))") }
        return StreamsError(.protocolViolation, "\(stage): \(error)")
    }
}

enum UpgradeStage: CustomStringConvertible, Sendable {
    case securityNegotiation
    case securityHandshake(String)
    case muxerNegotiation
    /// Not a connection stage: the protocol negotiation on one stream.
    case streamNegotiation

    var description: String {
        switch self {
        case .securityNegotiation: return "security negotiation"
        case .securityHandshake(let id): return "\(id) handshake"
        case .muxerNegotiation: return "muxer negotiation"
        case .streamNegotiation: return "stream protocol negotiation"
        }
    }
}

/// A secured, multiplexed connection to one peer.
public struct UpgradedConnection: Sendable {
    /// The underlying channel (TCP socket).
    public let channel: any Channel
    /// What the security handshake established (remote peer id and key, protocol).
    public let security: SecuredConnectionInfo
    /// The stream multiplexer.
    public let muxer: MplexConnection
    /// Whether this side ran the initiator side of the negotiations (normally: we dialed).
    public let ranInitiatorSide: Bool
}
