import MsgNetCore
import MsgNetHost
import MsgNetStreams
import NIOCore
import Testing

@Suite("Peerstore")
struct PeerstoreTests {
    @Test("addresses expire after their TTL; permanent ones stay")
    func ttl() throws {
        let clock = ManualClock()
        let store = Peerstore(now: clock.now)
        let peer = PrivateKey.generate().peerID
        let a1 = try Multiaddr("/ip4/10.0.0.1/tcp/1")
        let a2 = try Multiaddr("/ip4/10.0.0.2/tcp/2")
        store.addAddresses([a1], for: peer, ttl: .duration(.seconds(10)))
        store.addAddresses([a2], for: peer)
        #expect(store.addresses(for: peer) == [a1, a2])
        clock.advance(.seconds(9))
        #expect(store.addresses(for: peer) == [a1, a2])
        // Re-adding extends the TTL.
        store.addAddresses([a1], for: peer, ttl: .duration(.seconds(10)))
        clock.advance(.seconds(5))
        #expect(store.addresses(for: peer) == [a1, a2])
        clock.advance(.seconds(6))
        #expect(store.addresses(for: peer) == [a2])
        store.removeAddresses([a2], for: peer)
        #expect(store.addresses(for: peer).isEmpty)
    }

    @Test("identify addresses get the identify TTL; keys and latency")
    func identifyAndLatency() throws {
        let clock = ManualClock()
        let store = Peerstore(identifyAddressTTL: .duration(.minutes(1)), now: clock.now)
        let key = PrivateKey.generate()
        let peer = key.peerID
        let a = try Multiaddr("/ip4/10.0.0.3/tcp/3")
        store.setIdentify(
            IdentifyInfo(
                peer: peer, publicKey: key.publicKey, protocolVersion: nil, agentVersion: "x",
                listenAddresses: [a], protocols: ["/p/1"], observedAddress: nil))
        #expect(store.protocols(for: peer) == ["/p/1"])
        #expect(store.announces("/p/1", peer: peer))
        #expect(!store.announces("/p/2", peer: peer))
        #expect(!store.announces("/p/1", peer: PrivateKey.generate().peerID))
        #expect(store.publicKey(for: peer) == key.publicKey)
        #expect(store.addresses(for: peer) == [a])
        clock.advance(.minutes(2))
        #expect(store.addresses(for: peer).isEmpty)
        #expect(store.latency(for: peer) == nil)
        store.recordLatency(.milliseconds(8), for: peer)
        store.recordLatency(.milliseconds(16), for: peer)
        #expect(store.latency(for: peer) == .milliseconds(9))
    }

    @Test("snapshot and restore keep addresses with their remaining TTL, identify and latency")
    func snapshotRestore() throws {
        let clock = ManualClock()
        let store = Peerstore(now: clock.now)
        let key = PrivateKey.generate()
        let peer = key.peerID
        let a1 = try Multiaddr("/ip4/10.0.0.1/tcp/1")
        let a2 = try Multiaddr("/ip4/10.0.0.2/tcp/2")
        let gone = try Multiaddr("/ip4/10.0.0.9/tcp/9")
        store.addAddresses([a1], for: peer, ttl: .duration(.seconds(100)))
        store.addAddresses([a2], for: peer)
        store.addAddresses([gone], for: peer, ttl: .duration(.seconds(5)))
        store.recordLatency(.milliseconds(3), for: peer)
        clock.advance(.seconds(40))
        let snapshot = store.snapshot()
        #expect(snapshot.count == 1)
        #expect(
            snapshot.first?.addresses == [
                .init(address: a1, ttl: .duration(.seconds(60))), .init(address: a2, ttl: .permanent),
            ])
        let later = ManualClock()
        let restored = Peerstore(now: later.now)
        restored.restore(snapshot)
        #expect(restored.addresses(for: peer) == [a1, a2])
        #expect(restored.latency(for: peer) == .milliseconds(3))
        later.advance(.seconds(61))
        #expect(restored.addresses(for: peer) == [a2])
    }

    @Test("a flood of identified peers keeps the store within maxPeers; dialed peers stay")
    func boundedByMaxPeers() throws {
        let clock = ManualClock()
        let store = Peerstore(maxPeers: 64, identifyAddressTTL: .duration(.minutes(1)), now: clock.now)
        // Peers the application gave addresses for (permanent) outlive any flood.
        let dialed = (0..<8).map { _ in PrivateKey.generate().peerID }
        for (i, peer) in dialed.enumerated() {
            store.addAddresses([try Multiaddr("/ip4/10.0.1.\(i)/udp/1")], for: peer)
        }
        var flood: [PeerID] = []
        for i in 0..<1000 {
            let key = PrivateKey.generate()
            flood.append(key.peerID)
            store.setIdentify(
                IdentifyInfo(
                    peer: key.peerID, publicKey: key.publicKey, protocolVersion: nil, agentVersion: nil,
                    listenAddresses: [try Multiaddr("/ip4/10.1.\(i / 256).\(i % 256)/udp/1")],
                    protocols: ["/p/1"], observedAddress: nil))
            #expect(store.count <= 64)
            // The peer just written is never the one forgotten.
            #expect(store.announces("/p/1", peer: key.peerID))
        }
        #expect(store.evictedPeers == 8 + 1000 - store.count)
        for peer in dialed { #expect(store.addresses(for: peer).count == 1) }
        // The survivors of the flood are its latest peers, oldest forgotten first.
        let kept = Set(store.peers)
        let survivors = flood.filter { kept.contains($0) }
        #expect(survivors == Array(flood.suffix(survivors.count)))
        #expect(survivors.count == store.count - dialed.count)
    }

    @Test("when the store is full, a peer with no live address goes before one with a live address")
    func evictsExpiredFirst() throws {
        let clock = ManualClock()
        let store = Peerstore(maxPeers: 8, now: clock.now)
        let stale = PrivateKey.generate().peerID
        let fresh = (0..<7).map { _ in PrivateKey.generate().peerID }
        // Written last but expired: it goes before the older peers whose addresses still live.
        for (i, peer) in fresh.enumerated() {
            store.addAddresses([try Multiaddr("/ip4/10.0.2.\(i)/tcp/1")], for: peer, ttl: .duration(.minutes(10)))
        }
        store.addAddresses([try Multiaddr("/ip4/10.0.3.1/tcp/1")], for: stale, ttl: .duration(.seconds(1)))
        clock.advance(.seconds(2))
        store.recordLatency(.milliseconds(1), for: PrivateKey.generate().peerID)
        #expect(store.count == 7)
        #expect(store.evictedPeers == 2)
        #expect(!store.peers.contains(stale))
        // Then the least recently written among those with live addresses.
        #expect(!store.peers.contains(fresh[0]))
        for peer in fresh.dropFirst() { #expect(store.addresses(for: peer).count == 1) }
    }

    @Test("an oversized identify result is stored trimmed")
    func identifyTrimmed() throws {
        let store = Peerstore(maxAddressesPerPeer: 4)
        let key = PrivateKey.generate()
        let addresses = try (0..<40).map { try Multiaddr("/ip4/10.3.0.\($0)/udp/1") }
        // 100 protocols of 100 bytes: 81 fit in 8 KiB. One too long for multistream is skipped.
        let protocols = (0..<100).map { i in
            let digits = String(i)
            return "/p/" + String(repeating: "0", count: 3 - digits.count) + digits + String(repeating: "x", count: 94)
        }
        let announced = [String(repeating: "y", count: 2000)] + protocols
        store.setIdentify(
            IdentifyInfo(
                peer: key.peerID, publicKey: key.publicKey, protocolVersion: "ipfs/0.1.0",
                agentVersion: "agent/" + String(repeating: "é", count: 500), listenAddresses: addresses,
                protocols: announced, observedAddress: nil))
        let stored = try #require(store.identify(for: key.peerID))
        #expect(stored.listenAddresses == Array(addresses.prefix(4)))
        #expect(store.addresses(for: key.peerID) == Array(addresses.prefix(4)))
        #expect(stored.protocols == Array(protocols.prefix(81)))
        #expect(store.announces(protocols[80], peer: key.peerID))
        #expect(!store.announces(protocols[81], peer: key.peerID))
        #expect(stored.protocolVersion == "ipfs/0.1.0")
        // Cut on a character boundary: "agent/" and 125 two-byte characters.
        #expect(stored.agentVersion == "agent/" + String(repeating: "é", count: 125))
    }

    @Test("a peer reached from elsewhere keeps its loopback listen addresses only if reached over loopback")
    func loopbackAddressesFiltered() throws {
        let key = PrivateKey.generate()
        let listen = [
            try Multiaddr("/ip4/192.0.2.7/udp/4001"), try Multiaddr("/ip4/127.0.0.1/udp/4001"),
            try Multiaddr("/ip6/::1/udp/4001"),
        ]
        let info = IdentifyInfo(
            peer: key.peerID, publicKey: key.publicKey, protocolVersion: nil, agentVersion: nil,
            listenAddresses: listen, protocols: [], observedAddress: nil)
        #expect(info.reachable(over: try Multiaddr("/ip4/192.0.2.7/udp/4001")).listenAddresses == [listen[0]])
        #expect(info.reachable(over: nil).listenAddresses == [listen[0]])
        #expect(info.reachable(over: try Multiaddr("/ip4/127.0.0.1/udp/4001")).listenAddresses == listen)
    }

    @Test("restore obeys maxPeers")
    func restoreBounded() throws {
        let big = Peerstore()
        for i in 0..<100 {
            big.addAddresses([try Multiaddr("/ip4/10.2.0.\(i)/tcp/1")], for: PrivateKey.generate().peerID)
        }
        let small = Peerstore(maxPeers: 16)
        small.restore(big.snapshot())
        #expect(small.count <= 16)
        #expect(small.evictedPeers == 100 - small.count)
    }

    @Test("a host does not dial expired addresses")
    func hostSkipsExpired() async throws {
        let clock = ManualClock()
        let factory = TransportFactory.tcp
        let a = factory.host(peerstore: Peerstore(now: clock.now))
        let b = factory.host()
        b.setMessageHandler(for: "/x/1") { try await $0.reply($0.data) }
        try await running([a, b]) {
            let address = try await b.network.listen(on: factory.listenAddress())
            a.peerstore.addAddresses([address], for: b.peerID, ttl: .duration(.seconds(30)))
            clock.advance(.seconds(31))
            await #expect {
                _ = try await a.request(bytes("x"), to: b.peerID, protocol: "/x/1")
            } throws: { code($0) == .dialFailed }
            a.peerstore.addAddresses([address], for: b.peerID, ttl: .duration(.seconds(30)))
            #expect(String(buffer: try await a.request(bytes("x"), to: b.peerID, protocol: "/x/1").data) == "x")
        }
    }
}
