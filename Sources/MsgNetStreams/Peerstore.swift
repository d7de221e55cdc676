import MsgNetCore
import NIOConcurrencyHelpers
import NIOCore

/// What identify told us about a peer.
public struct IdentifyInfo: Sendable, Hashable {
    /// The peer (its id matches `publicKey`).
    public var peer: PeerID
    /// The peer's public key.
    public var publicKey: PublicKey
    /// E.g. `"ipfs/0.1.0"`.
    public var protocolVersion: String?
    /// E.g. `"msgnet/0.1.0"`, `"py-libp2p/0.8.1"`.
    public var agentVersion: String?
    /// The addresses it listens on (malformed ones are dropped).
    public var listenAddresses: [Multiaddr]
    /// The protocols it supports.
    public var protocols: [String]
    /// The address it sees us at, when it said.
    public var observedAddress: Multiaddr?

    /// Creates an identify result.
    public init(
        peer: PeerID,
        publicKey: PublicKey,
        protocolVersion: String?,
        agentVersion: String?,
        listenAddresses: [Multiaddr],
        protocols: [String],
        observedAddress: Multiaddr?
    ) {
        self.peer = peer
        self.publicKey = publicKey
        self.protocolVersion = protocolVersion
        self.agentVersion = agentVersion
        self.listenAddresses = listenAddresses
        self.protocols = protocols
        self.observedAddress = observedAddress
    }
}

/// In-memory knowledge about peers: addresses with time-to-live, public keys, identify results
/// (protocols) and measured latency.
///
/// Thread-safe. Time comes from the injected `now` function, so tests can expire addresses
/// without waiting. A persistent store can replace this later behind the same methods.
public final class Peerstore: Sendable {
    /// How long an address stays known.
    public enum AddressTTL: Sendable, Hashable {
        /// Until removed (addresses the application gave us, addresses we connected to).
        case permanent
        /// For this long after it was (last) added.
        case duration(TimeAmount)
    }

    private struct Address {
        var address: Multiaddr
        /// `nil` = permanent.
        var expires: NIODeadline?
    }

    private struct Entry {
        var addresses: [Address] = []
        var identify: IdentifyInfo?
        var latency: TimeAmount?
    }
    private let state = NIOLockedValueBox<[PeerID: Entry]>([:])
    private let now: @Sendable () -> NIODeadline
    /// At most this many addresses are kept per peer (oldest dropped first).
    public let maxAddressesPerPeer: Int
    /// The TTL of addresses learned from identify.
    public let identifyAddressTTL: AddressTTL

    /// Creates an empty peerstore.
    /// - Parameters:
    ///   - maxAddressesPerPeer: addresses kept per peer.
    ///   - identifyAddressTTL: how long addresses a peer announced in identify are kept.
    ///   - now: the clock (inject one in tests).
    public init(
        maxAddressesPerPeer: Int = 32,
        identifyAddressTTL: AddressTTL = .duration(.hours(1)),
        now: @escaping @Sendable () -> NIODeadline = { NIODeadline.now() }
    ) {
        self.maxAddressesPerPeer = maxAddressesPerPeer
        self.identifyAddressTTL = identifyAddressTTL
        self.now = now
    }

    /// Records addresses for `peer` (without `/p2p`). A known address gets the later of its old
    /// and new expiry.
    public func addAddresses(_ addresses: [Multiaddr], for peer: PeerID, ttl: AddressTTL = .permanent) {
        let current = now()
        let expires: NIODeadline?
        switch ttl {
        case .permanent: expires = nil
        case .duration(let amount): expires = current + amount
        }
        state.withLockedValue { all in
            var entry = all[peer] ?? Entry()
            entry.addresses.removeAll { $0.expires.map { $0 <= current } ?? false }
            for a in addresses.map({ $0.withoutPeerID() }) {
                if let i = entry.addresses.firstIndex(where: { $0.address == a }) {
                    if let old = entry.addresses[i].expires {
                        entry.addresses[i].expires = expires.map { max($0, old) }
                    }
                } else {
                    entry.addresses.append(Address(address: a, expires: expires))
                }
            }
            if entry.addresses.count > maxAddressesPerPeer {
                entry.addresses.removeFirst(entry.addresses.count - maxAddressesPerPeer)
            }
            all[peer] = entry
        }
    }

    /// Forgets `addresses` of `peer`.
    public func removeAddresses(_ addresses: [Multiaddr], for peer: PeerID) {
        let remove = Set(addresses.map { $0.withoutPeerID() })
        state.withLockedValue { $0[peer]?.addresses.removeAll { remove.contains($0.address) } }
    }

    /// Known, unexpired addresses of `peer`.
    public func addresses(for peer: PeerID) -> [Multiaddr] {
        let current = now()
        return state.withLockedValue { all in
            guard var entry = all[peer] else { return [] }
            let before = entry.addresses.count
            entry.addresses.removeAll { $0.expires.map { $0 <= current } ?? false }
            if entry.addresses.count != before { all[peer] = entry }
            return entry.addresses.map(\.address)
        }
    }

    /// Stores an identify result; its listen addresses get ``identifyAddressTTL``.
    public func setIdentify(_ info: IdentifyInfo) {
        addAddresses(info.listenAddresses, for: info.peer, ttl: identifyAddressTTL)
        state.withLockedValue { $0[info.peer, default: Entry()].identify = info }
    }

    /// The last identify result for `peer`.
    public func identify(for peer: PeerID) -> IdentifyInfo? {
        state.withLockedValue { $0[peer]?.identify }
    }

    /// The protocols `peer` announced, if identified.
    public func protocols(for peer: PeerID) -> [String] {
        identify(for: peer)?.protocols ?? []
    }

    /// The public key of `peer`: from identify, or inlined in its id (Ed25519).
    public func publicKey(for peer: PeerID) -> PublicKey? {
        identify(for: peer)?.publicKey ?? peer.publicKey
    }

    /// Records a round-trip time to `peer`; the stored latency is a moving average
    /// (new samples weigh 1/8).
    public func recordLatency(_ rtt: TimeAmount, for peer: PeerID) {
        state.withLockedValue { all in
            let old = all[peer]?.latency
            all[peer, default: Entry()].latency =
                old.map { .nanoseconds(($0.nanoseconds * 7 + rtt.nanoseconds) / 8) } ?? rtt
        }
    }

    /// The smoothed round-trip time to `peer`, when measured.
    public func latency(for peer: PeerID) -> TimeAmount? {
        state.withLockedValue { $0[peer]?.latency }
    }

    /// Every peer we know something about.
    public var peers: [PeerID] {
        state.withLockedValue { Array($0.keys) }
    }
}
