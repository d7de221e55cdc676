import Crypto
import MsgNetCore
import MsgNetSecurity
import NIOCore

/// One secure session with one remote peer, either role, as a pure state machine.
///
/// Owned and driven by a ``SessionTable`` (which parses datagrams, routes them here by session id
/// or handshake, and aggregates timers). Events append ``SessionAction``s to `actions`; the
/// machine never touches a socket or a clock. See docs/multipacket.md (Part B) for the protocol.
struct SessionMachine<Path: Hashable & Sendable>: Sendable {
    private enum State {
        /// Initiator: message 1 sent on every path, waiting for message 2.
        case initiating
        /// Responder: message 2 sent, waiting for message 3.
        case responding
        /// Keys agreed. An initiator is unconfirmed until an authenticated packet arrives.
        case established
        case closed
    }

    private struct Candidate {
        var path: Path
        var token: UInt64
        var received = 0
        var sent = 0
        var attempts = 0
        var retransmitAt: NIODeadline
    }

    let localID: SessionID
    let role: SecurityRole
    let expectedPeer: PeerID?
    /// When the machine was created (simultaneous-open window).
    let createdAt: NIODeadline
    private(set) var remoteID: SessionID?
    private(set) var remotePeer: PeerID?
    /// The path the session is bound to (an initiator's is set by message 2).
    private(set) var path: Path?
    private(set) var transportID: UInt16 = 0
    private(set) var counters = SessionCounters()
    private(set) var closeReason: SessionCloseReason?

    private var state: State
    private let limits: SessionLimits
    private var noise: NoiseHandshake
    private var random: SessionSplitMix64

    // Handshake.
    private var initiationPaths: [Path] = []
    /// Indices of initiation paths given up: message 2 on them named another peer (another node
    /// answered at that address), or the network refused sends to them. They get no more
    /// message 1s, and the handshake fails only once all are given up.
    private var refusedPaths: Set<Int> = []
    /// Address tokens the responder sent in a Retry, by initiation path index; message 1 carries
    /// them from then on.
    private var tokens: [Int: [UInt8]] = [:]
    /// Retries accepted per initiation path (at most ``maxRetriesPerPath``).
    private var retries: [Int: Int] = [:]
    /// Retries honoured per path: a responder still refusing after these is not answering.
    static var maxRetriesPerPath: Int { 3 }
    private var message1: [UInt8] = []
    private var cachedReply: ByteBuffer?
    private var handshakeDeadline: NIODeadline?
    private var retransmitAt: NIODeadline?
    private var retransmitDelay: TimeAmount
    private var early: [(packet: SessionTransportPacket, path: Path, size: Int)] = []
    /// The Noise ephemeral key of message 1 (the responder's duplicate key).
    private(set) var initiationKey: [UInt8] = []

    // Transport.
    private var sender: NoiseCipherState?
    private var receiver: NoiseCipherState?
    private var nextPacketNumber: UInt64 = 0
    private var window = SessionReplayWindow()
    private(set) var confirmed = false
    private var lastReceived: NIODeadline
    private var lastSent: NIODeadline

    // Anti-amplification on the bound path until it is validated.
    private var pathValidated = false
    private var pathReceived = 0
    private var pathSent = 0
    private var candidate: Candidate?

    /// Creates an initiator; call ``start(now:actions:)`` next.
    init(
        initiatorID: SessionID,
        identity: PrivateKey,
        staticKey: Curve25519.KeyAgreement.PrivateKey,
        expectedPeer: PeerID?,
        paths: [Path],
        limits: SessionLimits,
        seed: UInt64,
        now: NIODeadline
    ) {
        localID = initiatorID
        role = .initiator
        self.expectedPeer = expectedPeer
        createdAt = now
        state = .initiating
        self.limits = limits
        noise = NoiseHandshake(
            role: .initiator,
            identity: identity,
            expectedRemotePeer: expectedPeer,
            staticKey: staticKey
        )
        random = SessionSplitMix64(seed: seed)
        initiationPaths = paths
        retransmitDelay = limits.handshakeRetransmitInitial
        lastReceived = now
        lastSent = now
    }

    /// Creates a responder for a fresh message 1 received on `path`; `nil` if message 1 is unusable.
    init?(
        responderID: SessionID,
        identity: PrivateKey,
        staticKey: Curve25519.KeyAgreement.PrivateKey,
        initiation: SessionHandshakePacket,
        size: Int,
        path: Path,
        limits: SessionLimits,
        seed: UInt64,
        now: NIODeadline,
        actions: inout [SessionAction<Path>]
    ) {
        localID = responderID
        role = .responder
        expectedPeer = nil
        createdAt = now
        state = .responding
        self.limits = limits
        noise = NoiseHandshake(role: .responder, identity: identity, staticKey: staticKey)
        random = SessionSplitMix64(seed: seed)
        retransmitDelay = limits.handshakeRetransmitInitial
        lastReceived = now
        lastSent = now
        self.path = path
        remoteID = initiation.source
        transportID = initiation.transportID
        initiationKey = initiation.noise
        pathReceived = size
        _ = noise.start()
        guard case .send(let message2)? = noise.onMessage(initiation.noise).first else { return nil }
        let reply = SessionPacketCodec.handshake(
            .handshake2,
            destination: initiation.source,
            source: responderID,
            transportID: initiation.transportID,
            noise: message2
        )
        cachedReply = reply
        handshakeDeadline = now + limits.handshakeTimeout
        emit(reply, to: path, now: now, actions: &actions)
    }

    /// What the table needs to know after an event, read in place: `mutating` only so that
    /// `sessions.values[index].status()` goes through the dictionary's in-place accessor instead
    /// of copying the machine (a copy retains and releases every reference it holds).
    mutating func status() -> SessionStatus {
        SessionStatus(
            isClosed: isClosed, isHalfOpen: isHalfOpen, isEstablished: isEstablished, confirmed: confirmed,
            remotePeer: remotePeer, nextDeadline: nextDeadline)
    }

    var isClosed: Bool {
        if case .closed = state { return true }
        return false
    }

    var isEstablished: Bool {
        if case .established = state { return true }
        return false
    }

    /// Responder still waiting for message 3.
    var isHalfOpen: Bool {
        if case .responding = state { return true }
        return false
    }

    /// The earliest time ``onTimer(now:actions:)`` has work to do.
    var nextDeadline: NIODeadline? {
        switch state {
        case .closed:
            return nil
        case .initiating, .responding:
            return earliest(handshakeDeadline, retransmitAt)
        case .established:
            var deadline = lastReceived + limits.idleTimeout
            if !confirmed { deadline = earliest(deadline, earliest(handshakeDeadline, retransmitAt))! }
            if let keepAlive = limits.keepAliveInterval { deadline = min(deadline, lastSent + keepAlive) }
            if let candidate { deadline = min(deadline, candidate.retransmitAt) }
            return deadline
        }
    }

    // MARK: Events

    /// Initiator: sends message 1 on every path, tagged with the path's index as transportId.
    mutating func start(now: NIODeadline, actions: inout [SessionAction<Path>]) {
        guard case .initiating = state, message1.isEmpty else { return }
        guard case .send(let message)? = noise.start().first else {
            close(.handshakeTimeout, now: now, actions: &actions)
            return
        }
        message1 = message
        handshakeDeadline = now + limits.handshakeTimeout
        retransmitAt = now + retransmitDelay
        sendInitiations(now: now, actions: &actions)
    }

    /// A parsed handshake packet routed to this session.
    mutating func onHandshake(
        _ packet: SessionHandshakePacket,
        size: Int,
        from source: Path,
        now: NIODeadline,
        actions: inout [SessionAction<Path>]
    ) {
        switch (packet.type, state, role) {
        case (.handshake1, .responding, _):
            // A retransmitted message 1: answer again, on the handshake path only.
            counters.handshakeDuplicates += 1
            guard source == path, let cachedReply else { return }
            pathReceived += size
            emit(cachedReply, to: source, now: now, actions: &actions)
        case (.handshake1, _, .responder):
            counters.handshakeDuplicates += 1
        case (.handshake2, .initiating, .initiator):
            guard let index = Int(exactly: packet.transportID), index < initiationPaths.count else {
                counters.unexpected += 1
                return
            }
            var attempt = noise
            let result = attempt.onMessage(packet.noise)
            guard case .send(let message3)? = result.first, case .completed(let keys)? = result.last else {
                // Another node at one of the peer's addresses (its private address is also ours,
                // both on one port): that path is out, the others may still reach the peer. The
                // handshake state is untouched (the attempt was a copy).
                if Self.namesAnotherPeer(result), initiationPaths.count > 1 {
                    refusedPaths.insert(index)
                    if refusedPaths.count < initiationPaths.count {
                        counters.handshakeFailed += 1
                        return
                    }
                }
                handshakeFailure(result, now: now, actions: &actions)
                return
            }
            noise = attempt
            remoteID = packet.source
            path = source
            transportID = packet.transportID
            pathValidated = true
            let finish = SessionPacketCodec.handshake(
                .handshake3,
                destination: packet.source,
                source: localID,
                transportID: packet.transportID,
                noise: message3
            )
            cachedReply = finish
            retransmitDelay = limits.handshakeRetransmitInitial
            retransmitAt = now + retransmitDelay
            establish(keys, now: now, actions: &actions)
            emit(finish, to: source, now: now, actions: &actions)
        case (.handshake2, .established, .initiator):
            // Message 3 was lost (message 2 retransmitted): send it again.
            counters.handshakeDuplicates += 1
            guard !confirmed, source == path, let cachedReply else { return }
            emit(cachedReply, to: source, now: now, actions: &actions)
        case (.handshake3, .responding, .responder):
            guard source == path, packet.source == remoteID else {
                counters.unexpected += 1
                return
            }
            var attempt = noise
            let result = attempt.onMessage(packet.noise)
            guard case .completed(let keys)? = result.first else {
                handshakeFailure(result, now: now, actions: &actions)
                return
            }
            noise = attempt
            pathReceived += size
            pathValidated = true  // message 3 proves the initiator got message 2 on this path
            cachedReply = nil
            establish(keys, now: now, actions: &actions)
            // Confirm at once so the initiator stops retransmitting message 3.
            sendTransport(.pong, payload: ByteBuffer(), to: source, now: now, actions: &actions)
            let held = early
            early = []
            for item in held {
                onTransport(item.packet, size: item.size, from: item.path, now: now, actions: &actions)
            }
        case (.handshake3, .established, .responder):
            counters.handshakeDuplicates += 1
            guard source == path else { return }
            sendTransport(.pong, payload: ByteBuffer(), to: source, now: now, actions: &actions)
        default:
            counters.unexpected += 1
        }
    }

    /// A parsed transport packet routed to this session.
    mutating func onTransport(
        _ packet: SessionTransportPacket,
        size: Int,
        from source: Path,
        now: NIODeadline,
        actions: inout [SessionAction<Path>]
    ) {
        switch state {
        case .responding:
            // Data may overtake message 3: hold a few packets until the keys exist.
            if early.count < limits.maxEarlyPackets {
                early.append((packet, source, size))
            } else {
                counters.earlyDropped += 1
            }
            return
        case .initiating, .closed:
            counters.earlyDropped += 1
            return
        case .established:
            break
        }
        guard packet.packetNumber <= limits.maxPacketNumber, let receiver else {
            counters.malformed += 1
            return
        }
        switch window.check(packet.packetNumber) {
        case .duplicate:
            counters.replayed += 1
            return
        case .tooOld:
            counters.tooOld += 1
            return
        case .fresh:
            break
        }
        let payload: ByteBuffer
        do {
            payload = try packet.header.withUnsafeReadableBytes { ad in
                try receiver.decrypt(packet.ciphertext, nonce: packet.packetNumber, adBytes: ad)
            }
        } catch {
            counters.decryptFailed += 1
            return
        }
        window.commit(packet.packetNumber)
        lastReceived = now
        if !confirmed {
            confirmed = true
            cachedReply = nil
            retransmitAt = nil
        }
        if source == path {
            if !pathValidated { pathReceived += size }
        } else {
            trackCandidate(source, size: size, now: now, actions: &actions)
        }
        switch packet.type {
        case .data:
            actions.append(.deliver(payload, from: remotePeer!, session: localID))
        case .ping:
            sendTransport(.pong, payload: ByteBuffer(), to: path!, now: now, actions: &actions)
        case .pong:
            break
        case .pathChallenge:
            guard payload.readableBytes == 8 else {
                counters.malformed += 1
                return
            }
            sendTransport(.pathResponse, payload: payload, to: source, now: now, actions: &actions)
        case .pathResponse:
            guard let candidate, candidate.path == source,
                payload.getInteger(at: payload.readerIndex, as: UInt64.self) == candidate.token
            else {
                counters.unexpected += 1
                return
            }
            path = source
            pathValidated = true
            pathReceived = 0
            pathSent = 0
            self.candidate = nil
            counters.pathMigrations += 1
        case .close:
            close(Self.closeReason(payload), now: now, actions: &actions, notifyPeer: false)
        case .handshake1, .handshake2, .handshake3, .retry:
            counters.unexpected += 1
        }
    }

    /// Seals `payload` into one Data packet to the bound path.
    mutating func send(
        _ payload: ByteBuffer,
        now: NIODeadline,
        actions: inout [SessionAction<Path>]
    ) throws(SessionError) {
        guard payload.readableBytes <= limits.maxPayload else {
            throw .payloadTooLarge(size: payload.readableBytes, limit: limits.maxPayload)
        }
        switch state {
        case .established:
            break
        case .closed:
            throw .closed(closeReason ?? .localClose)
        case .initiating, .responding:
            throw .unknownSession(localID)
        }
        sendTransport(.data, payload: payload, to: path!, now: now, actions: &actions)
    }

    /// A Retry arrived on `source`: the responder is under load and wants message 1 again with
    /// the token, from the same address. An initiator still handshaking sends it at once on that
    /// path (and carries the token in later retransmissions there), at most
    /// ``maxRetriesPerPath`` times per path. Anything else ignores it (counted as unexpected).
    mutating func onRetry(
        _ packet: SessionRetryPacket, from source: Path, now: NIODeadline, actions: inout [SessionAction<Path>]
    ) {
        guard case .initiating = state, role == .initiator,
            let index = initiationPaths.firstIndex(of: source), !refusedPaths.contains(index),
            retries[index, default: 0] < Self.maxRetriesPerPath
        else {
            counters.unexpected += 1
            return
        }
        retries[index, default: 0] += 1
        tokens[index] = packet.token
        counters.retriesReceived += 1
        actions.append(.send(initiation(on: index), to: source))
    }

    /// The network refused a send to `refused` (the socket layer's report, `reason` its error).
    /// An initiator still handshaking sends no more message 1s there; once every path is given
    /// up, the handshake fails (``SessionCloseReason/unreachable(_:)``). Any other state ignores
    /// it: an established session keeps its path (the peer may move; reliable sends time out).
    mutating func onPathRefused(_ refused: Path, reason: String, now: NIODeadline, actions: inout [SessionAction<Path>])
    {
        guard case .initiating = state, role == .initiator else { return }
        var changed = false
        for (index, path) in initiationPaths.enumerated() where path == refused {
            if refusedPaths.insert(index).inserted { changed = true }
        }
        guard changed else { return }
        counters.pathsRefused += 1
        if refusedPaths.count == initiationPaths.count {
            close(.unreachable(reason), now: now, actions: &actions, notifyPeer: false)
        }
    }

    mutating func onTimer(now: NIODeadline, actions: inout [SessionAction<Path>]) {
        switch state {
        case .closed:
            return
        case .initiating, .responding:
            if let handshakeDeadline, now >= handshakeDeadline {
                counters.handshakeTimeouts += 1
                close(.handshakeTimeout, now: now, actions: &actions, notifyPeer: false)
                return
            }
            if case .initiating = state, let at = retransmitAt, now >= at {
                counters.handshakeRetransmits += UInt64(initiationPaths.count - refusedPaths.count)
                backOff(now: now)
                sendInitiations(now: now, actions: &actions)
            }
        case .established:
            if now >= lastReceived + limits.idleTimeout {
                counters.idleExpirations += 1
                close(.idleTimeout, now: now, actions: &actions, notifyPeer: false)
                return
            }
            if !confirmed {
                if let handshakeDeadline, now >= handshakeDeadline {
                    counters.handshakeTimeouts += 1
                    close(.handshakeTimeout, now: now, actions: &actions, notifyPeer: false)
                    return
                }
                if let at = retransmitAt, now >= at, let cachedReply, let path {
                    counters.handshakeRetransmits += 1
                    backOff(now: now)
                    emit(cachedReply, to: path, now: now, actions: &actions)
                }
            }
            if var candidate, now >= candidate.retransmitAt {
                if candidate.attempts >= limits.pathChallengeAttempts {
                    counters.pathValidationFailures += 1
                    self.candidate = nil
                } else {
                    candidate.retransmitAt = now + limits.pathChallengeInterval
                    self.candidate = candidate
                    sendChallenge(now: now, actions: &actions)
                }
            }
            if let keepAlive = limits.keepAliveInterval, now >= lastSent + keepAlive, let path {
                counters.keepAlivesSent += 1
                sendTransport(.ping, payload: ByteBuffer(), to: path, now: now, actions: &actions)
            }
        }
    }

    /// Closes the session; an established one tells the peer with an authenticated Close, which
    /// says so when the session is closed as unused (`unusedFor`, see ``closePayload(unusedFor:)``).
    mutating func close(
        _ reason: SessionCloseReason,
        now: NIODeadline,
        actions: inout [SessionAction<Path>],
        notifyPeer: Bool = true,
        unusedFor: TimeAmount? = nil
    ) {
        if case .closed = state { return }
        if notifyPeer, case .established = state, let path {
            sendTransport(
                .close, payload: Self.closePayload(unusedFor: unusedFor), to: path, now: now, actions: &actions)
        }
        state = .closed
        closeReason = reason
        candidate = nil
        early = []
        actions.append(.closed(session: localID, peer: remotePeer, reason: reason))
    }

    /// The Close payload (B.9): empty, or when the session is closed as unused, `0x01` and the
    /// time it carried nothing, in milliseconds (u32, big-endian; capped at 2^32 − 1).
    static func closePayload(unusedFor: TimeAmount?) -> ByteBuffer {
        guard let unusedFor else { return ByteBuffer() }
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt8(1))
        let ms = max(0, unusedFor.nanoseconds / 1_000_000)
        buffer.writeInteger(UInt32(clamping: ms))
        return buffer
    }

    /// What a received Close payload says: unused for a time, or nothing (any other payload is
    /// ignored, as an empty one).
    static func closeReason(_ payload: ByteBuffer) -> SessionCloseReason {
        guard payload.readableBytes == 5, payload.getInteger(at: payload.readerIndex, as: UInt8.self) == 1,
            let ms = payload.getInteger(at: payload.readerIndex + 1, as: UInt32.self)
        else { return .remoteClose }
        return .remoteCloseUnused(.milliseconds(Int64(ms)))
    }

    // MARK: Internals

    private mutating func establish(
        _ keys: NoiseHandshakeResult, now: NIODeadline, actions: inout [SessionAction<Path>]
    ) {
        sender = keys.sendingCipher
        receiver = keys.receivingCipher
        remotePeer = keys.remotePeer
        state = .established
        confirmed = role == .responder
        lastReceived = now
        lastSent = now
        counters.sessionsEstablished += 1
        actions.append(
            .established(
                SessionEstablished(
                    localID: localID,
                    remoteID: remoteID!,
                    remotePeer: keys.remotePeer,
                    role: role,
                    path: path!,
                    transportID: transportID
                )
            )
        )
    }

    /// Whether a failed message decrypted but the peer is not who it must be (as opposed to
    /// corrupt or forged bytes).
    private static func namesAnotherPeer(_ result: [NoiseHandshake.Action]) -> Bool {
        guard case .failed(let error)? = result.last else { return false }
        switch error {
        case .badSignature, .peerIDMismatch, .invalidKey, .unsupportedKeyType, .malformedPayload: return true
        default: return false
        }
    }

    private mutating func handshakeFailure(
        _ result: [NoiseHandshake.Action],
        now: NIODeadline,
        actions: inout [SessionAction<Path>]
    ) {
        counters.handshakeFailed += 1
        guard case .failed(let error)? = result.last else { return }
        if Self.namesAnotherPeer(result) {
            // The message decrypted, so it came from whoever holds the keys of this handshake:
            // the peer is not who it must be. Fail now.
            close(.handshakeFailed(error), now: now, actions: &actions, notifyPeer: false)
        }
        // Otherwise corrupt or forged bytes: drop them and keep waiting for the real message.
    }

    private mutating func backOff(now: NIODeadline) {
        retransmitDelay = min(retransmitDelay * 2, limits.handshakeRetransmitMax)
        retransmitAt = now + retransmitDelay
    }

    /// Message 1 for initiation path `index` (with that path's token, if it has one).
    private func initiation(on index: Int) -> ByteBuffer {
        SessionPacketCodec.handshake(
            .handshake1,
            destination: .none,
            source: localID,
            transportID: UInt16(truncatingIfNeeded: index),
            noise: message1,
            token: tokens[index] ?? [],
            paddedTo: limits.initiationPaddedSize
        )
    }

    private mutating func sendInitiations(now: NIODeadline, actions: inout [SessionAction<Path>]) {
        for (index, path) in initiationPaths.enumerated() where !refusedPaths.contains(index) {
            actions.append(.send(initiation(on: index), to: path))
        }
        lastSent = now
    }

    private mutating func trackCandidate(
        _ source: Path,
        size: Int,
        now: NIODeadline,
        actions: inout [SessionAction<Path>]
    ) {
        if candidate?.path == source {
            candidate!.received += size
            return
        }
        // A new path: validate it before moving. Traffic stays on the old path meanwhile.
        candidate = Candidate(
            path: source,
            token: random.next(),
            received: size,
            retransmitAt: now + limits.pathChallengeInterval
        )
        sendChallenge(now: now, actions: &actions)
    }

    private mutating func sendChallenge(now: NIODeadline, actions: inout [SessionAction<Path>]) {
        guard let candidate else { return }
        self.candidate!.attempts += 1
        var token = ByteBuffer()
        token.writeInteger(candidate.token)
        sendTransport(.pathChallenge, payload: token, to: candidate.path, now: now, actions: &actions)
    }

    /// Seals and emits one transport packet (subject to the amplification budget of `target`).
    private mutating func sendTransport(
        _ type: SessionPacketType,
        payload: ByteBuffer,
        to target: Path,
        now: NIODeadline,
        actions: inout [SessionAction<Path>]
    ) {
        guard let sender, let remoteID else { return }
        let number = nextPacketNumber
        guard number <= limits.maxPacketNumber else {
            close(.packetNumbersExhausted, now: now, actions: &actions, notifyPeer: false)
            return
        }
        let size = SessionTransportPacket.overhead + payload.readableBytes
        guard spendBudget(size, on: target) else { return }
        nextPacketNumber += 1
        let header = SessionTransportHeader(type, destination: remoteID, packetNumber: number)
        var datagram = ByteBufferAllocator().buffer(capacity: size)
        _ = header.withUnsafeBytes { datagram.writeBytes($0) }
        do {
            try header.withUnsafeBytes { ad in try sender.encrypt(payload, nonce: number, adBytes: ad, into: &datagram)
            }
        } catch {
            close(.packetNumbersExhausted, now: now, actions: &actions, notifyPeer: false)
            return
        }
        lastSent = now
        actions.append(.send(datagram, to: target))
        if nextPacketNumber > limits.maxPacketNumber {
            // That was the last packet number: the session cannot send again (no rekeying in v1).
            close(.packetNumbersExhausted, now: now, actions: &actions, notifyPeer: false)
        }
    }

    /// Sends a handshake datagram, within the amplification budget.
    private mutating func emit(
        _ datagram: ByteBuffer, to target: Path, now: NIODeadline, actions: inout [SessionAction<Path>]
    ) {
        guard spendBudget(datagram.readableBytes, on: target) else { return }
        lastSent = now
        actions.append(.send(datagram, to: target))
        if nextPacketNumber > limits.maxPacketNumber {
            // That was the last packet number: the session cannot send again (no rekeying in v1).
            close(.packetNumbersExhausted, now: now, actions: &actions, notifyPeer: false)
        }
    }

    /// Anti-amplification: to a path not yet validated, at most 3× the bytes received from it.
    private mutating func spendBudget(_ size: Int, on target: Path) -> Bool {
        if target == path {
            if pathValidated { return true }
            guard pathSent + size <= 3 * pathReceived else {
                counters.amplificationLimited += 1
                return false
            }
            pathSent += size
            return true
        }
        if var candidate, candidate.path == target {
            guard candidate.sent + size <= 3 * candidate.received else {
                counters.amplificationLimited += 1
                return false
            }
            candidate.sent += size
            self.candidate = candidate
            return true
        }
        counters.amplificationLimited += 1
        return false
    }
}

private func earliest(_ a: NIODeadline?, _ b: NIODeadline?) -> NIODeadline? {
    switch (a, b) {
    case (nil, nil): return nil
    case (let a?, nil): return a
    case (nil, let b?): return b
    case (let a?, let b?): return min(a, b)
    }
}

/// A session machine's state as the table sees it (see ``SessionMachine/status()``).
struct SessionStatus {
    let isClosed: Bool
    let isHalfOpen: Bool
    let isEstablished: Bool
    let confirmed: Bool
    let remotePeer: PeerID?
    let nextDeadline: NIODeadline?
}
