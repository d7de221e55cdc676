import Logging
import MsgNetControl
import MsgNetCore
import NIOCore

/// Identify (`/ipfs/id/1.0.0`) and identify push (`/ipfs/id/push/1.0.0`).
///
/// The responder writes one `uvarint(length) || Identify` message and closes its side; the
/// pusher does the same on a push stream. See docs/identify.md.
public enum IdentifyProtocol {
    /// The identify request protocol id.
    public static let id = "/ipfs/id/1.0.0"
    /// The identify push protocol id.
    public static let pushID = "/ipfs/id/push/1.0.0"
    /// Identify messages larger than this are refused.
    public static let maxMessageSize = IdentifyMessage.maxEncodedSize

    /// Parses and checks an identify message from `peer`: the public key must be present and
    /// derive `peer`. Malformed listen addresses are dropped.
    public static func parse(_ bytes: ByteBuffer, from peer: PeerID) throws -> IdentifyInfo {
        let message: IdentifyMessage
        do {
            message = try IdentifyMessage(bytes: bytes.readableBytesView)
        } catch {
            throw StreamsError(.protocolViolation, "identify from \(peer): \(error)")
        }
        guard let keyBytes = message.publicKey, let key = try? PublicKey(marshaled: keyBytes) else {
            throw StreamsError(.protocolViolation, "identify from \(peer) carries no valid public key")
        }
        guard key.peerID == peer else {
            throw StreamsError(.peerIDMismatch, "identify from \(peer) carries the key of \(key.peerID)")
        }
        return IdentifyInfo(
            peer: peer,
            publicKey: key,
            protocolVersion: message.protocolVersion,
            agentVersion: message.agentVersion,
            listenAddresses: message.listenAddrs.compactMap { try? Multiaddr(bytes: $0) },
            protocols: message.protocols,
            observedAddress: message.observedAddr.flatMap { try? Multiaddr(bytes: $0) }
        )
    }
}

extension StreamHost {
    func registerBuiltins() {
        setStreamHandler(IdentifyProtocol.id) { stream in
            let message = self.identifyMessage(observed: stream.connection.remoteAddress)
            try await stream.writeLengthPrefixed(ByteBuffer(bytes: message.encoded()))
        }
        setStreamHandler(IdentifyProtocol.pushID) { stream in
            let peer = stream.connection.remotePeer
            guard let body = try await stream.readLengthPrefixed(maxSize: IdentifyProtocol.maxMessageSize) else {
                return
            }
            // A push may omit fields it does not change; merge onto what we knew.
            var info = try IdentifyProtocol.parseLenient(body, from: peer, base: self.peerstore.identify(for: peer))
                .reachable(over: stream.connection.remoteAddress)
            info.peer = peer
            self.peerstore.setIdentify(info)
            self.yieldEvent(.peerProtocolsUpdated(peer, info.protocols))
        }
        setStreamHandler(PingProtocol.id) { stream in
            try await PingProtocol.serve(stream)
        }
    }

    /// Our identify message as sent to a peer that connects from `observed`.
    func identifyMessage(observed: Multiaddr?) -> IdentifyMessage {
        IdentifyMessage(
            protocolVersion: configuration.protocolVersion,
            agentVersion: configuration.agentVersion,
            publicKey: identity.publicKey.marshaled,
            // A wildcard listen address is announced as this machine's interface addresses.
            listenAddrs: listenAddresses.flatMap { $0.withoutPeerID().dialableForms() }.map(\.bytes),
            observedAddr: observed?.bytes,
            protocols: protocols
        )
    }

    /// Asks `peer` who it is (dialing it if needed) and records the answer in the peerstore.
    public func identify(_ peer: PeerID) async throws -> IdentifyInfo {
        let stream = try await newStream(to: peer, protocols: [IdentifyProtocol.id])
        return try await finishIdentify(stream)
    }

    /// Connects to `address` and identifies the peer there.
    public func identify(_ address: Multiaddr) async throws -> IdentifyInfo {
        let stream = try await newStream(to: address, protocols: [IdentifyProtocol.id])
        return try await finishIdentify(stream)
    }

    func identify(_ record: ConnectionRecord) async throws -> IdentifyInfo {
        let stream = try await newStream(on: record, protocols: [IdentifyProtocol.id])
        return try await finishIdentify(stream)
    }

    private func finishIdentify(_ stream: NegotiatedStream) async throws -> IdentifyInfo {
        let peer = stream.connection.remotePeer
        let body: ByteBuffer?
        do {
            body = try await stream.readLengthPrefixed(maxSize: IdentifyProtocol.maxMessageSize)
        } catch {
            await stream.reset()
            throw error
        }
        try? await stream.closeWrite()
        guard let body else {
            throw StreamsError(.protocolViolation, "identify stream from \(peer) closed without a message")
        }
        let info = try IdentifyProtocol.parse(body, from: peer).reachable(over: stream.connection.remoteAddress)
        peerstore.setIdentify(info)
        yieldEvent(.peerIdentified(info))
        return info
    }

    /// Sends our current identify message to every connected peer (`/ipfs/id/push/1.0.0`),
    /// in the background; peers that do not support push are skipped.
    func pushIdentifyToAll() {
        let records = allConnections
        guard !records.isEmpty else { return }
        enqueue { [self] in
            for record in records
            where peerstore.protocols(for: record.info.remotePeer).contains(IdentifyProtocol.pushID) {
                do {
                    let stream = try await newStream(on: record, protocols: [IdentifyProtocol.pushID])
                    let message = identifyMessage(observed: record.info.remoteAddress)
                    try await stream.writeLengthPrefixed(ByteBuffer(bytes: message.encoded()))
                    try await stream.closeWrite()
                } catch {
                    logger.debug(
                        "identify push failed", metadata: ["remote": "\(record.info.remotePeer)", "error": "\(error)"])
                }
            }
        }
    }
}

extension IdentifyProtocol {
    /// Parses a push message: fields it leaves out keep their values from `base`.
    static func parseLenient(_ bytes: ByteBuffer, from peer: PeerID, base: IdentifyInfo?) throws -> IdentifyInfo {
        let message: IdentifyMessage
        do {
            message = try IdentifyMessage(bytes: bytes.readableBytesView)
        } catch {
            throw StreamsError(.protocolViolation, "identify push from \(peer): \(error)")
        }
        var key = base?.publicKey ?? peer.publicKey
        if let keyBytes = message.publicKey {
            guard let k = try? PublicKey(marshaled: keyBytes), k.peerID == peer else {
                throw StreamsError(.peerIDMismatch, "identify push from \(peer) carries a foreign key")
            }
            key = k
        }
        guard let key else { throw StreamsError(.protocolViolation, "identify push from \(peer) without a known key") }
        return IdentifyInfo(
            peer: peer,
            publicKey: key,
            protocolVersion: message.protocolVersion ?? base?.protocolVersion,
            agentVersion: message.agentVersion ?? base?.agentVersion,
            listenAddresses: message.listenAddrs.isEmpty
                ? (base?.listenAddresses ?? []) : message.listenAddrs.compactMap { try? Multiaddr(bytes: $0) },
            protocols: message.protocols.isEmpty ? (base?.protocols ?? []) : message.protocols,
            observedAddress: message.observedAddr.flatMap { try? Multiaddr(bytes: $0) } ?? base?.observedAddress
        )
    }
}
