import MsgNetCore
import NIOConcurrencyHelpers

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
}

/// In-memory knowledge about peers: addresses, keys, identify results.
///
/// Thread-safe. The message layer extends this with TTLs and latency; a persistent store can
/// replace it later behind the same methods.
public final class Peerstore: Sendable {
    private struct Entry {
        var addresses: [Multiaddr] = []
        var identify: IdentifyInfo?
    }
    private let state = NIOLockedValueBox<[PeerID: Entry]>([:])
    /// At most this many addresses are kept per peer (oldest dropped first).
    public let maxAddressesPerPeer: Int

    /// Creates an empty peerstore.
    public init(maxAddressesPerPeer: Int = 32) {
        self.maxAddressesPerPeer = maxAddressesPerPeer
    }

    /// Records addresses for `peer` (without `/p2p`; duplicates are ignored).
    public func addAddresses(_ addresses: [Multiaddr], for peer: PeerID) {
        state.withLockedValue { all in
            var entry = all[peer] ?? Entry()
            for a in addresses.map({ $0.withoutPeerID() }) where !entry.addresses.contains(a) {
                entry.addresses.append(a)
            }
            if entry.addresses.count > maxAddressesPerPeer {
                entry.addresses.removeFirst(entry.addresses.count - maxAddressesPerPeer)
            }
            all[peer] = entry
        }
    }

    /// Known addresses of `peer`.
    public func addresses(for peer: PeerID) -> [Multiaddr] {
        state.withLockedValue { $0[peer]?.addresses ?? [] }
    }

    /// Stores an identify result (and its listen addresses).
    public func setIdentify(_ info: IdentifyInfo) {
        addAddresses(info.listenAddresses, for: info.peer)
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

    /// Every peer we know something about.
    public var peers: [PeerID] {
        state.withLockedValue { Array($0.keys) }
    }
}
