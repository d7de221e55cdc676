import MsgNetCore
import MsgNetSecurity
import NIOCore

/// A session id: 8 bytes chosen by the receiving side of each direction (like a QUIC connection
/// id). Zero is reserved ("no id yet", used as the destination of handshake message 1).
public struct SessionID: Hashable, Sendable, CustomStringConvertible {
    /// The id as a big-endian 64-bit integer (its wire form is these 8 bytes, big-endian).
    public let rawValue: UInt64

    /// Wraps a raw id.
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// The reserved zero id.
    public static let none = SessionID(rawValue: 0)

    /// Sixteen hex digits.
    public var description: String {
        let hex = String(rawValue, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}

/// Numbers and limits of the session layer. All times are durations; the clock is the caller's.
public struct SessionLimits: Sendable {
    /// The largest payload ``SessionTable/send(_:to:now:)`` accepts (default 1200 bytes, so the
    /// datagram stays within 1232 bytes).
    public var maxPayload: Int = 1200
    /// The largest datagram accepted or produced (default 1232 = 1280 − 48 bytes of IPv6/UDP).
    public var maxDatagram: Int = 1232
    /// Handshake message 1 is padded to this many bytes, so that the responder's 3× budget covers
    /// message 2 and its retransmissions (default 1200).
    public var initiationPaddedSize: Int = 1200
    /// The first handshake retransmission delay (default 250 ms); doubles each time.
    public var handshakeRetransmitInitial: TimeAmount = .milliseconds(250)
    /// The cap of the handshake retransmission delay (default 2 s).
    public var handshakeRetransmitMax: TimeAmount = .seconds(2)
    /// A handshake not confirmed by then fails (default 10 s). Also the window within which two
    /// handshakes of opposite roles with the same peer count as a simultaneous open.
    public var handshakeTimeout: TimeAmount = .seconds(10)
    /// An established session that receives no authenticated packet for this long expires
    /// (default 30 s).
    public var idleTimeout: TimeAmount = .seconds(30)
    /// When set, an established session that sent nothing for this long sends a Ping (which the
    /// peer answers with a Pong). Default 10 s; `nil` disables keep-alives.
    public var keepAliveInterval: TimeAmount? = .seconds(10)
    /// Path challenge retransmission delay (default 500 ms).
    public var pathChallengeInterval: TimeAmount = .milliseconds(500)
    /// Path challenges sent to one candidate path before it is given up (default 3).
    public var pathChallengeAttempts: Int = 3
    /// Most sessions of a table, in any state (default 4096).
    public var maxSessions: Int = 4096
    /// Most responder handshakes in progress (half-open) at once (default 256).
    public var maxHalfOpen: Int = 256
    /// Most responder handshakes in progress from one source path (default 4).
    public var maxHalfOpenPerPath: Int = 4
    /// From this many half-open handshakes on (default 64), a message 1 without a valid address
    /// token is answered with a Retry carrying one, and no state is kept: a flood from spoofed
    /// addresses cannot fill the half-open slots, since only a real address gets the token.
    /// 0 retries every first contact.
    public var retryWhenHalfOpen: Int = 64
    /// How long an address token from a Retry is accepted (default 10 s).
    public var retryTokenLifetime: TimeAmount = .seconds(10)
    /// Transport packets a responder holds while it waits for handshake message 3 (default 8).
    public var maxEarlyPackets: Int = 8
    /// Packet numbers run from 0 to this value (default 2^48 − 1, the 6-byte wire field); a
    /// session that would need more closes with ``SessionCloseReason/packetNumbersExhausted``.
    public var maxPacketNumber: UInt64 = (1 << 48) - 1

    /// The defaults.
    public init() {}
}

/// Why a session ended.
public enum SessionCloseReason: Equatable, Sendable, CustomStringConvertible {
    /// ``SessionTable/close(session:now:)`` was called.
    case localClose
    /// The peer sent an authenticated Close.
    case remoteClose
    /// The peer sent an authenticated Close saying the session had carried nothing for the given
    /// time (it closed the session as unused): no messaging payload of ours reached it in that
    /// time, so nothing we first sent within it was received.
    case remoteCloseUnused(TimeAmount)
    /// No authenticated packet arrived for ``SessionLimits/idleTimeout``.
    case idleTimeout
    /// The handshake did not complete (and get confirmed) within ``SessionLimits/handshakeTimeout``.
    case handshakeTimeout
    /// The handshake failed to authenticate the peer (bad signature, wrong peer, bad key).
    case handshakeFailed(SecurityError)
    /// Another session with the same peer won (simultaneous open, or a newer session).
    case superseded
    /// The packet number space is used up; a new session is needed.
    case packetNumbersExhausted
    /// The network refused sends on every path of the handshake (no route, a firewall, a
    /// broadcast address…); the socket layer's error is given.
    case unreachable(String)

    /// A human-readable explanation.
    public var description: String {
        switch self {
        case .localClose: return "closed locally"
        case .remoteClose: return "closed by the peer"
        case .remoteCloseUnused(let time): return "closed by the peer, unused for \(time.nanoseconds / 1_000_000) ms"
        case .idleTimeout: return "idle timeout"
        case .handshakeTimeout: return "handshake timed out"
        case .handshakeFailed(let error): return "handshake failed: \(error)"
        case .superseded: return "superseded by another session with the same peer"
        case .packetNumbersExhausted: return "packet numbers exhausted"
        case .unreachable(let error): return "every address refused by the network (\(error))"
        }
    }
}

/// Errors of the session layer (this module's session half).
public enum SessionError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A datagram does not parse; it is dropped (and counted).
    case malformed(String)
    /// A payload larger than ``SessionLimits/maxPayload``.
    case payloadTooLarge(size: Int, limit: Int)
    /// No established session with this peer.
    case noSession(PeerID)
    /// No session with this id, or it is not established yet.
    case unknownSession(SessionID)
    /// The session closed (for this reason).
    case closed(SessionCloseReason)
    /// A table limit (sessions) is reached.
    case limitExceeded(String)

    /// A human-readable explanation.
    public var description: String {
        switch self {
        case .malformed(let reason): return "malformed session packet: \(reason)"
        case .payloadTooLarge(let size, let limit): return "payload of \(size) bytes exceeds the limit of \(limit)"
        case .noSession(let peer): return "no established session with \(peer)"
        case .unknownSession(let id): return "no established session \(id)"
        case .closed(let reason): return "session closed: \(reason)"
        case .limitExceeded(let what): return "limit exceeded: \(what)"
        }
    }
}

/// Counters of everything the session layer dropped or did (all monotonic).
public struct SessionCounters: Equatable, Sendable {
    /// Datagrams that do not parse (bad type/version, truncated, oversize, bad lengths).
    public var malformed: UInt64 = 0
    /// Packets addressed to a session id we do not have.
    public var unknownSession: UInt64 = 0
    /// Transport packets whose number was already seen.
    public var replayed: UInt64 = 0
    /// Transport packets older than the replay window.
    public var tooOld: UInt64 = 0
    /// Transport packets that failed AEAD authentication.
    public var decryptFailed: UInt64 = 0
    /// Datagrams not sent because a path is not validated and its 3× budget is spent.
    public var amplificationLimited: UInt64 = 0
    /// Handshake messages that failed (malformed Noise message, decryption, authentication).
    public var handshakeFailed: UInt64 = 0
    /// Handshakes that timed out.
    public var handshakeTimeouts: UInt64 = 0
    /// Duplicate handshake messages (retransmissions, or copies on other paths).
    public var handshakeDuplicates: UInt64 = 0
    /// Handshake packets sent again by a retransmission timer.
    public var handshakeRetransmits: UInt64 = 0
    /// Handshake paths given up because the network refused sends on them.
    public var pathsRefused: UInt64 = 0
    /// Handshake message 1 packets refused by a limit (sessions, half-open, per path).
    public var limitRejected: UInt64 = 0
    /// Retries sent (message 1 without a valid token while many handshakes were half-open).
    public var retriesSent: UInt64 = 0
    /// Retries honoured (message 1 sent again with the token).
    public var retriesReceived: UInt64 = 0
    /// Message 1 packets whose token was invalid (forged, expired, or for another address).
    public var invalidTokens: UInt64 = 0
    /// Transport packets dropped because the session was not ready (early buffer full, wrong state).
    public var earlyDropped: UInt64 = 0
    /// Packets of a valid type that arrived in a state or on a path that does not accept them.
    public var unexpected: UInt64 = 0
    /// Path validations that gave up.
    public var pathValidationFailures: UInt64 = 0
    /// Sessions that moved to a new, validated path.
    public var pathMigrations: UInt64 = 0
    /// Keep-alive pings sent.
    public var keepAlivesSent: UInt64 = 0
    /// Sessions established (keys agreed).
    public var sessionsEstablished: UInt64 = 0
    /// Sessions closed as the loser of a simultaneous open (or replaced by a newer one).
    public var sessionsSuperseded: UInt64 = 0
    /// Sessions expired by the idle timeout.
    public var idleExpirations: UInt64 = 0

    /// All zero.
    public init() {}

    mutating func add(_ other: SessionCounters) {
        malformed &+= other.malformed
        unknownSession &+= other.unknownSession
        replayed &+= other.replayed
        tooOld &+= other.tooOld
        decryptFailed &+= other.decryptFailed
        amplificationLimited &+= other.amplificationLimited
        handshakeFailed &+= other.handshakeFailed
        handshakeTimeouts &+= other.handshakeTimeouts
        handshakeDuplicates &+= other.handshakeDuplicates
        handshakeRetransmits &+= other.handshakeRetransmits
        pathsRefused &+= other.pathsRefused
        limitRejected &+= other.limitRejected
        retriesSent &+= other.retriesSent
        retriesReceived &+= other.retriesReceived
        invalidTokens &+= other.invalidTokens
        earlyDropped &+= other.earlyDropped
        unexpected &+= other.unexpected
        pathValidationFailures &+= other.pathValidationFailures
        pathMigrations &+= other.pathMigrations
        keepAlivesSent &+= other.keepAlivesSent
        sessionsEstablished &+= other.sessionsEstablished
        sessionsSuperseded &+= other.sessionsSuperseded
        idleExpirations &+= other.idleExpirations
    }
}

/// What an established session is.
public struct SessionEstablished<Path: Hashable & Sendable>: Sendable {
    /// Our session id (the peer addresses its transport packets to it).
    public var localID: SessionID
    /// The peer's session id (we address our transport packets to it).
    public var remoteID: SessionID
    /// The authenticated remote peer.
    public var remotePeer: PeerID
    /// Which side of the handshake we played.
    public var role: SecurityRole
    /// The path the session is bound to.
    public var path: Path
    /// The transportId of the handshake copy that won (transport consolidation; the index of the
    /// path in ``SessionTable/connect(to:expecting:now:)`` for an initiator).
    public var transportID: UInt16
}

/// What the driver of a ``SessionTable`` must do, in order.
public enum SessionAction<Path: Hashable & Sendable>: Sendable {
    /// Send this datagram to this path.
    case send(ByteBuffer, to: Path)
    /// An authenticated, non-replayed payload arrived from `from` on `session`.
    case deliver(ByteBuffer, from: PeerID, session: SessionID)
    /// A session finished its handshake (keys agreed; data may flow).
    case established(SessionEstablished<Path>)
    /// A session ended; `peer` is nil when it ended before the peer was authenticated.
    case closed(session: SessionID, peer: PeerID?, reason: SessionCloseReason)
    /// Call ``SessionTable/onTimer(now:)`` at (or after) this deadline. A later call replaces
    /// an earlier one only if earlier; firing early is harmless.
    case scheduleTimer(at: NIODeadline)
}

/// A path on a real UDP stack: which of the transport's sockets, and the remote address. The
/// session table's public entry points are specialized for it (`@_specialize`), so the UDP
/// transport does not pay for generic dispatch per datagram; tests use their own path types.
public struct DatagramPath: Hashable, Sendable {
    /// The index of the local socket.
    public let socket: Int
    /// The remote address.
    public let remote: SocketAddress

    /// A path through `socket` to `remote`.
    public init(socket: Int, remote: SocketAddress) {
        self.socket = socket
        self.remote = remote
    }
}
