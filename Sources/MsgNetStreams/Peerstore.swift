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

extension IdentifyInfo {
    /// This result with the listen addresses a peer reached over `remote` can be dialed at:
    /// loopback addresses are kept only when `remote` is loopback too. Seen from another
    /// machine, a peer's `127.0.0.1` (announced for its wildcard listener) is our own machine.
    public func reachable(over remote: Multiaddr?) -> IdentifyInfo {
        guard remote?.isLoopback != true else { return self }
        var out = self
        out.listenAddresses.removeAll(where: \.isLoopback)
        return out
    }
}

/// In-memory knowledge about peers: addresses with time-to-live, public keys, identify results
/// (protocols) and measured latency.
///
/// Thread-safe. Time comes from the injected `now` function, so tests can expire addresses
/// without waiting. Persistence: save ``snapshot()`` and ``restore(_:)`` it on the next start.
///
/// **Bounded.** Every peer that opens a session is identified, and peer ids cost nothing to
/// make, so the store keeps at most ``maxPeers`` peers. When a write takes it past that, it
/// forgets peers down to seven eighths of the bound (amortized: one pass per `maxPeers / 8` new
/// peers), counted in ``evictedPeers``. Forgotten first: peers without a permanent address
/// (what the application gave us or we dialed) before those with one; among those, peers with
/// no unexpired address; then the least recently written (an address added, identify stored,
/// a latency recorded — reads do not count). The peer just written is never forgotten by its
/// own write.
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
        /// The store's write sequence number when this entry was last written.
        var written: UInt64 = 0
    }

    /// The entries and the bookkeeping of the bound.
    private struct Entries {
        var peers: [PeerID: Entry] = [:]
        /// Incremented by every write (orders entries for eviction).
        var sequence: UInt64 = 0
        var evicted = 0

        /// The entry of `peer` (created if new), marked as just written.
        mutating func write(_ peer: PeerID, _ body: (inout Entry) -> Void) {
            sequence += 1
            var entry = peers.removeValue(forKey: peer) ?? Entry()
            body(&entry)
            entry.written = sequence
            peers[peer] = entry
        }

        /// Forgets peers down to 7/8 of `limit` when there are more than `limit`, never `keep`.
        mutating func trim(to limit: Int, keep: PeerID, now: NIODeadline) {
            guard peers.count > limit else { return }
            let target = max(1, limit - limit / 8)
            // Rank: no permanent address first, then no live address, then least recently written.
            let ranked = peers.filter { $0.key != keep }.map { peer, entry in
                let permanent = entry.addresses.contains { $0.expires == nil }
                let live = permanent || entry.addresses.contains { $0.expires.map { $0 > now } ?? true }
                return (peer: peer, rank: (permanent ? 1 : 0, live ? 1 : 0, entry.written))
            }.sorted { $0.rank < $1.rank }
            for victim in ranked.prefix(peers.count - target) {
                peers.removeValue(forKey: victim.peer)
                evicted += 1
            }
        }
    }

    private let state = NIOLockedValueBox(Entries())
    private let now: @Sendable () -> NIODeadline
    /// At most this many addresses are kept per peer (oldest dropped first).
    public let maxAddressesPerPeer: Int
    /// At most this many peers are kept (see the type's documentation for which are forgotten).
    public let maxPeers: Int
    /// The TTL of addresses learned from identify.
    public let identifyAddressTTL: AddressTTL

    /// Creates an empty peerstore.
    /// - Parameters:
    ///   - maxAddressesPerPeer: addresses kept per peer.
    ///   - maxPeers: peers kept (at least 1).
    ///   - identifyAddressTTL: how long addresses a peer announced in identify are kept.
    ///   - now: the clock (inject one in tests).
    public init(
        maxAddressesPerPeer: Int = 32,
        maxPeers: Int = 10_000,
        identifyAddressTTL: AddressTTL = .duration(.hours(1)),
        now: @escaping @Sendable () -> NIODeadline = { NIODeadline.now() }
    ) {
        self.maxAddressesPerPeer = maxAddressesPerPeer
        self.maxPeers = max(1, maxPeers)
        self.identifyAddressTTL = identifyAddressTTL
        self.now = now
    }

    /// How many peers the store knows something about.
    public var count: Int { state.withLockedValue { $0.peers.count } }

    /// How many peers were forgotten to keep the store within ``maxPeers``.
    public var evictedPeers: Int { state.withLockedValue { $0.evicted } }

    /// Records addresses for `peer` (without `/p2p`). A known address gets the later of its old
    /// and new expiry.
    public func addAddresses(_ addresses: [Multiaddr], for peer: PeerID, ttl: AddressTTL = .permanent) {
        let current = now()
        let expires: NIODeadline?
        switch ttl {
        case .permanent: expires = nil
        case .duration(let amount): expires = current + amount
        }
        let maxAddresses = maxAddressesPerPeer
        state.withLockedValue { all in
            all.write(peer) { entry in
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
                if entry.addresses.count > maxAddresses {
                    entry.addresses.removeFirst(entry.addresses.count - maxAddresses)
                }
            }
            all.trim(to: maxPeers, keep: peer, now: current)
        }
    }

    /// Forgets `addresses` of `peer`.
    public func removeAddresses(_ addresses: [Multiaddr], for peer: PeerID) {
        let remove = Set(addresses.map { $0.withoutPeerID() })
        state.withLockedValue { $0.peers[peer]?.addresses.removeAll { remove.contains($0.address) } }
    }

    /// Known, unexpired addresses of `peer`.
    public func addresses(for peer: PeerID) -> [Multiaddr] {
        let current = now()
        return state.withLockedValue { all in
            guard var entry = all.peers[peer] else { return [] }
            let before = entry.addresses.count
            entry.addresses.removeAll { $0.expires.map { $0 <= current } ?? false }
            if entry.addresses.count != before { all.peers[peer] = entry }
            return entry.addresses.map(\.address)
        }
    }

    /// Protocols of an identify result kept, in the order announced, while their UTF-8 bytes
    /// add up to at most this (and no single one is longer than a multistream frame allows).
    public static let maxStoredIdentifyProtocolBytes = 8 * 1024
    /// An identify result's agent and protocol versions are kept up to this many UTF-8 bytes.
    public static let maxStoredIdentifyVersionBytes = 256

    /// Stores an identify result; its listen addresses get ``identifyAddressTTL``.
    ///
    /// What is stored is trimmed so that one peer costs little, whatever it announced (identify
    /// messages may be 64 KiB): at most ``maxAddressesPerPeer`` listen addresses, protocols up
    /// to ``maxStoredIdentifyProtocolBytes``, version strings up to
    /// ``maxStoredIdentifyVersionBytes``.
    public func setIdentify(_ info: IdentifyInfo) {
        let stored = trimmed(info)
        addAddresses(stored.listenAddresses, for: info.peer, ttl: identifyAddressTTL)
        let current = now()
        state.withLockedValue { all in
            all.write(info.peer) { $0.identify = stored }
            all.trim(to: maxPeers, keep: info.peer, now: current)
        }
    }

    private func trimmed(_ info: IdentifyInfo) -> IdentifyInfo {
        var out = info
        out.listenAddresses = Array(info.listenAddresses.prefix(maxAddressesPerPeer))
        var budget = Self.maxStoredIdentifyProtocolBytes
        out.protocols = []
        for p in info.protocols {
            let size = p.utf8.count
            guard size < 1024 else { continue }  // no multistream frame could carry it
            guard size <= budget else { break }
            budget -= size
            out.protocols.append(p)
        }
        out.agentVersion = info.agentVersion.map { Self.prefix($0, utf8Bytes: Self.maxStoredIdentifyVersionBytes) }
        out.protocolVersion = info.protocolVersion.map {
            Self.prefix($0, utf8Bytes: Self.maxStoredIdentifyVersionBytes)
        }
        return out
    }

    /// The longest prefix of whole characters of `text` within `utf8Bytes` bytes.
    private static func prefix(_ text: String, utf8Bytes: Int) -> String {
        guard text.utf8.count > utf8Bytes else { return text }
        var size = 0
        return String(
            text.prefix { c in
                size += c.utf8.count
                return size <= utf8Bytes
            })
    }

    /// The last identify result for `peer`.
    public func identify(for peer: PeerID) -> IdentifyInfo? {
        state.withLockedValue { $0.peers[peer]?.identify }
    }

    /// The protocols `peer` announced, if identified.
    public func protocols(for peer: PeerID) -> [String] {
        identify(for: peer)?.protocols ?? []
    }

    /// Whether `peer`'s identify announced `protocolID` (checked in place: no copy of its
    /// identify data, for a check made on every request).
    public func announces(_ protocolID: String, peer: PeerID) -> Bool {
        state.withLockedValue { $0.peers[peer]?.identify?.protocols.contains(protocolID) ?? false }
    }

    /// The public key of `peer`: from identify, or inlined in its id (Ed25519).
    public func publicKey(for peer: PeerID) -> PublicKey? {
        identify(for: peer)?.publicKey ?? peer.publicKey
    }

    /// Records a round-trip time to `peer`; the stored latency is a moving average
    /// (new samples weigh 1/8).
    public func recordLatency(_ rtt: TimeAmount, for peer: PeerID) {
        let current = now()
        state.withLockedValue { all in
            all.write(peer) { entry in
                entry.latency = entry.latency.map { .nanoseconds(($0.nanoseconds * 7 + rtt.nanoseconds) / 8) } ?? rtt
            }
            all.trim(to: maxPeers, keep: peer, now: current)
        }
    }

    /// The smoothed round-trip time to `peer`, when measured.
    public func latency(for peer: PeerID) -> TimeAmount? {
        state.withLockedValue { $0.peers[peer]?.latency }
    }

    /// Every peer we know something about.
    public var peers: [PeerID] {
        state.withLockedValue { Array($0.peers.keys) }
    }

    // MARK: Persistence

    /// Everything known about one peer, in a form that outlives the process: address TTLs are
    /// the time remaining. A persistent store saves ``snapshot()`` and feeds it to
    /// ``restore(_:)`` on the next start.
    public struct Record: Sendable, Hashable {
        /// The peer.
        public var peer: PeerID
        /// Its unexpired addresses with their remaining time to live.
        public var addresses: [AddressRecord]
        /// The last identify result.
        public var identify: IdentifyInfo?
        /// The smoothed round-trip time.
        public var latency: TimeAmount?

        /// Creates a record.
        public init(peer: PeerID, addresses: [AddressRecord], identify: IdentifyInfo?, latency: TimeAmount?) {
            self.peer = peer
            self.addresses = addresses
            self.identify = identify
            self.latency = latency
        }
    }

    /// An address and its remaining time to live.
    public struct AddressRecord: Sendable, Hashable {
        /// The address (without `/p2p`).
        public var address: Multiaddr
        /// The time left (or permanent).
        public var ttl: AddressTTL

        /// Creates an address record.
        public init(address: Multiaddr, ttl: AddressTTL) {
            self.address = address
            self.ttl = ttl
        }
    }

    /// Everything this peerstore knows, with expired addresses left out.
    public func snapshot() -> [Record] {
        let current = now()
        return state.withLockedValue { all in
            all.peers.map { peer, entry in
                Record(
                    peer: peer,
                    addresses: entry.addresses.compactMap { a in
                        guard let expires = a.expires else { return AddressRecord(address: a.address, ttl: .permanent) }
                        guard expires > current else { return nil }
                        return AddressRecord(address: a.address, ttl: .duration(expires - current))
                    },
                    identify: entry.identify,
                    latency: entry.latency
                )
            }.sorted { $0.peer < $1.peer }
        }
    }

    /// Adds `records` (from a snapshot) to what this peerstore knows.
    public func restore(_ records: [Record]) {
        for record in records {
            for a in record.addresses { addAddresses([a.address], for: record.peer, ttl: a.ttl) }
            let current = now()
            state.withLockedValue { all in
                all.write(record.peer) { entry in
                    if let identify = record.identify { entry.identify = identify }
                    if let latency = record.latency { entry.latency = latency }
                }
                all.trim(to: maxPeers, keep: record.peer, now: current)
            }
        }
    }
}
