import MsgNetCore
import NIOCore
import Testing

@testable import MsgNetHost

/// The per-peer token bucket behind `MessageHostConfiguration.inboundMessageRate`.
@Suite("Rate limiter")
struct RateLimiterTests {
    @Test("a peer gets its burst, then one message per 1/rate seconds")
    func bucket() {
        var limiter = RateLimiter(rate: 10, burst: 3)
        let peer = PrivateKey.generate().peerID
        let other = PrivateKey.generate().peerID
        let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)
        let admitted = (0..<5).map { _ in limiter.admit(peer, now: t0) }
        #expect(admitted == [true, true, true, false, false])
        // Buckets are per peer.
        let ok1 = limiter.admit(other, now: t0)
        #expect(ok1)
        let ok2 = limiter.admit(peer, now: t0 + .milliseconds(50))
        #expect(!ok2)
        let ok3 = limiter.admit(peer, now: t0 + .milliseconds(150))
        #expect(ok3)
        let ok4 = limiter.admit(peer, now: t0 + .milliseconds(160))
        #expect(!ok4)
        // A long pause refills to the burst, not beyond.
        let later = t0 + .seconds(60)
        let refilled = (0..<4).map { _ in limiter.admit(peer, now: later) }
        #expect(refilled == [true, true, true, false])
    }

    @Test("many busy peers never hold more than maxPeers buckets")
    func boundedWhenEveryPeerIsBusy() {
        var limiter = RateLimiter(rate: 1, burst: 4, maxPeers: 32)
        let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)
        var peers: [PeerID] = []
        for i in 0..<200 {
            let peer = PrivateKey.generate().peerID
            peers.append(peer)
            let now = t0 + .milliseconds(Int64(i))
            // Two messages each: no bucket has refilled when the next peer arrives.
            let ok5 = limiter.admit(peer, now: now)
            #expect(ok5)
            let ok6 = limiter.admit(peer, now: now)
            #expect(ok6)
            #expect(limiter.trackedPeers <= 32)
        }
        // The latest peer kept its bucket: two of its four tokens are spent.
        let last = peers[peers.count - 1]
        let now = t0 + .milliseconds(199)
        let rest = (0..<3).map { _ in limiter.admit(last, now: now) }
        #expect(rest == [true, true, false])
    }

    @Test("idle peers' buckets are dropped first when the table is full")
    func idleDroppedFirst() {
        var limiter = RateLimiter(rate: 1, burst: 2, maxPeers: 4)
        let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)
        let busy = PrivateKey.generate().peerID
        // The busy peer empties its bucket; three others take one token each, long ago.
        for _ in 0..<2 { _ = limiter.admit(busy, now: t0 + .seconds(9)) }
        for _ in 0..<3 { _ = limiter.admit(PrivateKey.generate().peerID, now: t0) }
        #expect(limiter.trackedPeers == 4)
        // At t0 + 9.5 s the three have refilled; the busy one has not.
        _ = limiter.admit(PrivateKey.generate().peerID, now: t0 + .milliseconds(9500))
        #expect(limiter.trackedPeers == 2)
        // The busy peer is still limited: its bucket was kept.
        let ok7 = limiter.admit(busy, now: t0 + .milliseconds(9500))
        #expect(!ok7)
    }
}
