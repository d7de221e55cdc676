import Crypto
import MsgNetCore
import MsgNetSecurity
import NIOCore

/// All secure sessions of one local node, as a pure state machine.
///
/// The table parses every datagram, routes it by destination session id (or, for handshake
/// message 1, by the initiator's session id and ephemeral key), creates responder sessions within
/// limits, resolves simultaneous opens, expires idle sessions and sends keep-alives. It never
/// touches a socket or a clock: time enters as `now`, and the returned ``SessionAction``s say what
/// to send, deliver and when to call ``onTimer(now:)``. `Path` is the caller's opaque address of
/// a remote socket (e.g. a `SocketAddress` or a `Multiaddr`).
public struct SessionTable<Path: Hashable & Sendable>: Sendable {
    private struct InitiationKey: Hashable {
        var source: SessionID
        var ephemeral: [UInt8]
    }

    /// The local peer (its identity signs every handshake).
    public let localPeer: PeerID
    /// The numbers and limits in force.
    public let limits: SessionLimits

    private let identity: PrivateKey
    private let staticKey: [UInt8]
    private var random: any RandomNumberGenerator & Sendable
    private var sessions: [SessionID: SessionMachine<Path>] = [:]
    private var initiations: [InitiationKey: SessionID] = [:]
    private var halfOpen: [SessionID: Path] = [:]
    private var halfOpenPerPath: [Path: Int] = [:]
    private var established: [PeerID: [SessionID]] = [:]
    private var preferred: [PeerID: SessionID] = [:]
    private var ownCounters = SessionCounters()
    private var retiredCounters = SessionCounters()
    private var scheduled: NIODeadline?
    /// When each session next needs ``onTimer(now:)``, at the latest: a session's entry is moved
    /// earlier when its machine needs an earlier time, never later (a machine woken early does
    /// nothing and gets its exact next time then). One timer event costs O(log sessions + due),
    /// not a scan of every session.
    private var deadlines = DeadlineQueue<SessionID>()
    /// The key of this table's address tokens (Retry; 32 random bytes): tokens die with the table.
    private let tokenKey: [UInt8] = {
        var system = SystemRandomNumberGenerator()
        return (0..<4).flatMap { _ in Swift.withUnsafeBytes(of: system.next() as UInt64) { Array($0) } }
    }()

    /// Creates an empty table.
    ///
    /// - Parameters:
    ///   - identity: the local libp2p identity.
    ///   - limits: numbers and limits.
    ///   - random: the source of session ids and path-challenge seeds (inject a seeded one in tests).
    public init(
        identity: PrivateKey,
        limits: SessionLimits = SessionLimits(),
        random: any RandomNumberGenerator & Sendable = SystemRandomNumberGenerator()
    ) {
        self.identity = identity
        self.localPeer = identity.peerID
        self.limits = limits
        self.random = random
        self.staticKey = Array(Curve25519.KeyAgreement.PrivateKey().rawRepresentation)
    }

    /// Every counter of the table and its sessions (live and closed). O(sessions).
    public var counters: SessionCounters {
        @_specialize(exported:true,where Path == DatagramPath)
        get {
            var total = ownCounters
            total.add(retiredCounters)
            // By index: iterating the values would copy every machine.
            for index in sessions.values.indices { total.add(sessions.values[index].counters) }
            return total
        }
    }

    /// Sessions in any state.
    public var sessionCount: Int { sessions.count }

    /// Responder handshakes waiting for message 3.
    public var halfOpenCount: Int { halfOpen.count }

    /// The session used to send to `peer`, if one is established.
    public func session(with peer: PeerID) -> SessionID? { preferred[peer] }

    /// The established sessions with `peer` (more than one only briefly, during a simultaneous open).
    public func sessions(with peer: PeerID) -> [SessionID] { established[peer] ?? [] }

    /// The path an established session is bound to.
    @_specialize(exported:true,where Path == DatagramPath)
    public func path(of session: SessionID) -> Path? {
        guard let machine = sessions[session], machine.isEstablished else { return nil }
        return machine.path
    }

    // MARK: Events

    /// Starts a handshake toward a peer, sending message 1 on every path at once (each copy tagged
    /// with its index as transportId); the first path whose answer arrives becomes the session's.
    ///
    /// Returns the existing session when one with `peer` is established or being initiated.
    @_specialize(exported:true,where Path == DatagramPath)
    public mutating func connect(
        to paths: [Path],
        expecting peer: PeerID?,
        now: NIODeadline
    ) throws(SessionError) -> (session: SessionID, actions: [SessionAction<Path>]) {
        if let peer {
            if let existing = preferred[peer] { return (existing, []) }
            if let pending = sessions.first(where: {
                $0.value.expectedPeer == peer && !$0.value.isClosed
                    && $0.value.role == .initiator && !$0.value.isEstablished
            }) {
                return (pending.key, [])
            }
        }
        guard !paths.isEmpty, paths.count <= Int(UInt16.max) + 1 else {
            throw .limitExceeded("between 1 and 65536 paths per handshake, got \(paths.count)")
        }
        guard sessions.count < limits.maxSessions else {
            throw .limitExceeded("\(limits.maxSessions) sessions")
        }
        let id = newSessionID()
        var machine = SessionMachine<Path>(
            initiatorID: id,
            identity: identity,
            staticKey: try! Curve25519.KeyAgreement.PrivateKey(rawRepresentation: staticKey),
            expectedPeer: peer,
            paths: paths,
            limits: limits,
            seed: random.next(),
            now: now
        )
        var actions: [SessionAction<Path>] = []
        machine.start(now: now, actions: &actions)
        sessions[id] = machine
        settle(id, wasEstablished: false, wasConfirmed: false, now: now, actions: &actions)
        return (id, actions)
    }

    /// Feeds one received datagram. Anything malformed, unknown, replayed or unauthenticated is
    /// dropped and counted; nothing is buffered beyond the limits.
    @_specialize(exported:true,where Path == DatagramPath)
    public mutating func onDatagram(_ datagram: ByteBuffer, from path: Path, now: NIODeadline) -> [SessionAction<Path>]
    {
        let size = datagram.readableBytes
        let packet: SessionPacket
        do {
            packet = try SessionPacketCodec.parse(datagram, maxDatagram: limits.maxDatagram)
        } catch {
            ownCounters.malformed += 1
            return []
        }
        var actions: [SessionAction<Path>] = []
        actions.reserveCapacity(4)
        switch packet {
        case .handshake(let handshake) where handshake.type == .handshake1:
            let key = InitiationKey(source: handshake.source, ephemeral: handshake.noise)
            if let id = initiations[key] {
                dispatch(id, now: now, actions: &actions) { machine, actions in
                    machine.onHandshake(handshake, size: size, from: path, now: now, actions: &actions)
                }
            } else if halfOpen.count >= limits.retryWhenHalfOpen,
                !tokenIsValid(handshake.token, path: path, source: handshake.source, now: now)
            {
                // Under load: no state, no Noise work; a Retry (smaller than message 1) asks the
                // sender to prove it receives at this address.
                if !handshake.token.isEmpty { ownCounters.invalidTokens += 1 }
                ownCounters.retriesSent += 1
                let token = token(for: path, source: handshake.source, issued: Self.milliseconds(now))
                actions.append(.send(SessionPacketCodec.retry(destination: handshake.source, token: token), to: path))
            } else {
                accept(handshake, key: key, size: size, from: path, now: now, actions: &actions)
            }
        case .handshake(let handshake):
            guard sessions[handshake.destination] != nil else {
                ownCounters.unknownSession += 1
                return []
            }
            dispatch(handshake.destination, now: now, actions: &actions) { machine, actions in
                machine.onHandshake(handshake, size: size, from: path, now: now, actions: &actions)
            }
        case .retry(let retry):
            guard sessions[retry.destination] != nil else {
                ownCounters.unknownSession += 1
                return []
            }
            dispatch(retry.destination, now: now, actions: &actions) { machine, actions in
                machine.onRetry(retry, from: path, now: now, actions: &actions)
            }
        case .transport(let transport):
            guard let index = sessions.index(forKey: transport.destination) else {
                ownCounters.unknownSession += 1
                return []
            }
            dispatch(transport.destination, at: index, now: now, actions: &actions) { machine, actions in
                machine.onTransport(transport, size: size, from: path, now: now, actions: &actions)
            }
        }
        return actions
    }

    /// Seals `payload` (at most ``SessionLimits/maxPayload`` bytes) for `peer`'s current session.
    @_specialize(exported:true,where Path == DatagramPath)
    public mutating func send(_ payload: ByteBuffer, to peer: PeerID, now: NIODeadline) throws(SessionError)
        -> [SessionAction<Path>]
    {
        guard let id = preferred[peer] else { throw .noSession(peer) }
        return try send(payload, session: id, now: now)
    }

    /// Seals `payload` for one established session.
    @_specialize(exported:true,where Path == DatagramPath)
    public mutating func send(_ payload: ByteBuffer, session id: SessionID, now: NIODeadline) throws(SessionError)
        -> [SessionAction<Path>]
    {
        // Through `values[index]`: mutated in place (the optional subscript moves the machine
        // out and back, a copy of the whole struct each way).
        guard let index = sessions.index(forKey: id) else { throw .unknownSession(id) }
        let before = sessions.values[index].status()
        var actions: [SessionAction<Path>] = []
        actions.reserveCapacity(4)
        try sessions.values[index].send(payload, now: now, actions: &actions)
        settle(
            id, wasEstablished: before.isEstablished, wasConfirmed: before.confirmed, now: now, actions: &actions)
        return actions
    }

    /// Runs every session's due timers: retransmissions, deadlines, keep-alives, idle expiry.
    @_specialize(exported:true,where Path == DatagramPath)
    public mutating func onTimer(now: NIODeadline) -> [SessionAction<Path>] {
        var actions: [SessionAction<Path>] = []
        scheduled = nil
        for id in deadlines.popDue(now: now) where sessions[id] != nil {
            dispatch(id, now: now, schedule: false, actions: &actions) { machine, actions in
                machine.onTimer(now: now, actions: &actions)
            }
        }
        if let next = deadlines.earliest() {
            scheduled = next
            actions.append(.scheduleTimer(at: next))
        }
        return actions
    }

    /// The socket layer reports that the network refused a send to `path` (`reason` is its
    /// error). Sessions still initiating stop sending message 1 there; one whose every path is
    /// refused closes with ``SessionCloseReason/unreachable(_:)``. Established sessions are not
    /// affected.
    @_specialize(exported:true,where Path == DatagramPath)
    public mutating func onSendRefused(to path: Path, reason: String, now: NIODeadline) -> [SessionAction<Path>] {
        var actions: [SessionAction<Path>] = []
        let initiating = sessions.compactMap { entry in
            entry.value.role == .initiator && !entry.value.isEstablished && !entry.value.isClosed ? entry.key : nil
        }
        for id in initiating {
            dispatch(id, now: now, actions: &actions) { machine, actions in
                machine.onPathRefused(path, reason: reason, now: now, actions: &actions)
            }
        }
        return actions
    }

    /// Closes a session (an established one tells its peer with an authenticated Close).
    ///
    /// - Parameter unusedFor: when the session is closed because it carried nothing for this
    ///   long, the Close says so (B.9), and the peer knows that nothing it first sent within that
    ///   time was received; only say it when no messaging payload arrived in that time.
    @_specialize(exported:true,where Path == DatagramPath)
    public mutating func close(
        session id: SessionID, now: NIODeadline, unusedFor: TimeAmount? = nil
    ) -> [SessionAction<Path>] {
        var actions: [SessionAction<Path>] = []
        guard sessions[id] != nil else { return actions }
        dispatch(id, now: now, actions: &actions) { machine, actions in
            machine.close(.localClose, now: now, actions: &actions, unusedFor: unusedFor)
        }
        return actions
    }

    // MARK: Internals

    /// Length of an address token: issue time (8 bytes, milliseconds of the table's clock) and a
    /// 16-byte HMAC-SHA256 tag.
    static var tokenLength: Int { 24 }

    static func milliseconds(_ time: NIODeadline) -> UInt64 { time.uptimeNanoseconds / 1_000_000 }

    /// The address token for an initiator at `path` whose message 1 came from session `source`:
    /// `issued(8) | HMAC-SHA256(key, issued | source | path digest)[0..<16]`. The path digest is
    /// its hash value (stable within the process; tokens never leave it).
    private func token(for path: Path, source: SessionID, issued: UInt64) -> [UInt8] {
        var token = Swift.withUnsafeBytes(of: issued.bigEndian) { Array($0) }
        var input = token
        Swift.withUnsafeBytes(of: source.rawValue.bigEndian) { input += $0 }
        Swift.withUnsafeBytes(of: Int64(path.hashValue).bigEndian) { input += $0 }
        let tag = HMAC<SHA256>.authenticationCode(for: input, using: SymmetricKey(data: tokenKey))
        token += Array(tag).prefix(16)
        return token
    }

    /// Whether `token` was issued by this table for `path` and `source`, within
    /// ``SessionLimits/retryTokenLifetime``.
    private func tokenIsValid(_ token: [UInt8], path: Path, source: SessionID, now: NIODeadline) -> Bool {
        guard token.count == Self.tokenLength else { return false }
        let issued = token[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let nowMs = Self.milliseconds(now)
        guard issued <= nowMs, nowMs - issued <= UInt64(max(limits.retryTokenLifetime.nanoseconds, 0) / 1_000_000)
        else { return false }
        let expected = self.token(for: path, source: source, issued: issued)
        var difference: UInt8 = 0
        for i in 0..<Self.tokenLength { difference |= expected[i] ^ token[i] }
        return difference == 0
    }

    private mutating func accept(
        _ initiation: SessionHandshakePacket,
        key: InitiationKey,
        size: Int,
        from path: Path,
        now: NIODeadline,
        actions: inout [SessionAction<Path>]
    ) {
        guard sessions.count < limits.maxSessions, halfOpen.count < limits.maxHalfOpen,
            halfOpenPerPath[path, default: 0] < limits.maxHalfOpenPerPath
        else {
            ownCounters.limitRejected += 1
            return
        }
        let id = newSessionID()
        guard
            let machine = SessionMachine<Path>(
                responderID: id,
                identity: identity,
                staticKey: try! Curve25519.KeyAgreement.PrivateKey(rawRepresentation: staticKey),
                initiation: initiation,
                size: size,
                path: path,
                limits: limits,
                seed: random.next(),
                now: now,
                actions: &actions
            )
        else {
            ownCounters.handshakeFailed += 1
            return
        }
        sessions[id] = machine
        initiations[key] = id
        halfOpen[id] = path
        halfOpenPerPath[path, default: 0] += 1
        settle(id, wasEstablished: false, wasConfirmed: false, now: now, actions: &actions)
    }

    private mutating func dispatch(
        _ id: SessionID,
        at known: Dictionary<SessionID, SessionMachine<Path>>.Index? = nil,
        now: NIODeadline,
        schedule: Bool = true,
        actions: inout [SessionAction<Path>],
        _ body: (inout SessionMachine<Path>, inout [SessionAction<Path>]) -> Void
    ) {
        let index = known ?? sessions.index(forKey: id)!
        let before = sessions.values[index].status()
        body(&sessions.values[index], &actions)
        settle(
            id,
            at: index,
            wasEstablished: before.isEstablished,
            wasConfirmed: before.confirmed,
            wasHalfOpen: before.isHalfOpen,
            now: now,
            schedule: schedule,
            actions: &actions
        )
    }

    /// Bookkeeping after any event on session `id`.
    ///
    /// `index` is `id`'s index in `sessions` when the caller has it (the machine's event mutated
    /// only values, so it is still valid); `wasHalfOpen` false skips the half-open bookkeeping.
    private mutating func settle(
        _ id: SessionID,
        at index: Dictionary<SessionID, SessionMachine<Path>>.Index? = nil,
        wasEstablished: Bool,
        wasConfirmed: Bool,
        wasHalfOpen: Bool = true,
        now: NIODeadline,
        schedule: Bool = true,
        actions: inout [SessionAction<Path>]
    ) {
        guard let index = index ?? sessions.index(forKey: id) else { return }
        let machine = sessions.values[index].status()
        if machine.isClosed {
            remove(id)
            return
        }
        if wasHalfOpen, !machine.isHalfOpen, let path = halfOpen.removeValue(forKey: id) {
            releaseHalfOpen(path)
        }
        if machine.isEstablished, !wasEstablished, let peer = machine.remotePeer {
            established[peer, default: []].append(id)
            if preferred[peer] == nil { preferred[peer] = id }
        }
        var nextDeadline = machine.nextDeadline
        if machine.isEstablished, machine.confirmed, !wasConfirmed, let peer = machine.remotePeer {
            resolve(peer: peer, newcomer: id, now: now, actions: &actions)
            nextDeadline = sessions[id]?.status().nextDeadline  // resolving may have closed it
        }
        if let deadline = nextDeadline, deadlines.deadline(of: id).map({ deadline < $0 }) ?? true {
            deadlines.set(id, deadline)
        }
        if schedule, let deadline = nextDeadline, scheduled.map({ deadline < $0 }) ?? true {
            scheduled = deadline
            actions.append(.scheduleTimer(at: deadline))
        }
    }

    /// Keeps one confirmed session per peer.
    ///
    /// Two sessions of opposite roles created within ``SessionLimits/handshakeTimeout`` of each
    /// other are a simultaneous open: the one initiated by the peer with the smaller PeerID bytes
    /// wins, on both sides. Otherwise the newer session wins (the peer restarted or reconnected).
    private mutating func resolve(
        peer: PeerID, newcomer: SessionID, now: NIODeadline, actions: inout [SessionAction<Path>]
    ) {
        var winner = newcomer
        for other in established[peer] ?? [] where other != winner {
            guard let a = sessions[winner], let b = sessions[other], b.confirmed else { continue }
            let simultaneous =
                a.role != b.role
                && abs((a.createdAt - b.createdAt).nanoseconds) < limits.handshakeTimeout.nanoseconds
            let keepA: Bool
            if simultaneous {
                let localInitiatedWins = localPeer < peer
                keepA = (a.role == .initiator) == localInitiatedWins
            } else {
                keepA = a.createdAt >= b.createdAt
            }
            let loser = keepA ? other : winner
            if !keepA { winner = other }
            ownCounters.sessionsSuperseded += 1
            sessions[loser]!.close(.superseded, now: now, actions: &actions)
            remove(loser)
        }
        preferred[peer] = winner
    }

    private mutating func remove(_ id: SessionID) {
        guard let machine = sessions.removeValue(forKey: id) else { return }
        deadlines.set(id, nil)
        retiredCounters.add(machine.counters)
        if let path = halfOpen.removeValue(forKey: id) { releaseHalfOpen(path) }
        if machine.role == .responder, let remote = machine.remoteID {
            let key = InitiationKey(source: remote, ephemeral: machine.initiationKey)
            if initiations[key] == id { initiations[key] = nil }
        }
        if let peer = machine.remotePeer, var ids = established[peer] {
            ids.removeAll { $0 == id }
            established[peer] = ids.isEmpty ? nil : ids
            if preferred[peer] == id { preferred[peer] = ids.last }
        }
    }

    private mutating func releaseHalfOpen(_ path: Path) {
        let count = halfOpenPerPath[path, default: 1] - 1
        halfOpenPerPath[path] = count > 0 ? count : nil
    }

    private mutating func newSessionID() -> SessionID {
        while true {
            let id = SessionID(rawValue: random.next())
            if id != .none, sessions[id] == nil { return id }
        }
    }
}
