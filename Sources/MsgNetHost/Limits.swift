import MsgNetCore
import NIOConcurrencyHelpers
import NIOCore

/// Admits at most `limit` holders at once; the rest wait in order. Cheap when uncontended
/// (one lock, no allocation).
final class AsyncGate: Sendable {
    private struct State {
        var available: Int
        var waiters: [CheckedContinuation<Void, Never>] = []
        var head = 0
    }
    private let state: NIOLockedValueBox<State>

    init(limit: Int) {
        state = NIOLockedValueBox(State(available: max(1, limit)))
    }

    /// Takes a slot if one is free now.
    func tryAcquire() -> Bool {
        state.withLockedValue { s -> Bool in
            guard s.available > 0 else { return false }
            s.available -= 1
            return true
        }
    }

    func acquire() async {
        let admitted = state.withLockedValue { s -> Bool in
            if s.available > 0 {
                s.available -= 1
                return true
            }
            return false
        }
        if admitted { return }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLockedValue { s -> Bool in
                if s.available > 0 {
                    s.available -= 1
                    return true
                }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }

    func release() {
        let next = state.withLockedValue { s -> CheckedContinuation<Void, Never>? in
            if s.head < s.waiters.count {
                let c = s.waiters[s.head]
                s.head += 1
                if s.head == s.waiters.count {
                    s.waiters.removeAll(keepingCapacity: true)
                    s.head = 0
                }
                return c  // the slot passes straight to the waiter
            }
            s.available += 1
            return nil
        }
        next?.resume()
    }
}

/// A token bucket per peer: `rate` messages per second, bursts of up to `burst`.
/// Time comes from the injected clock. Pure bookkeeping; the caller decides what to do.
struct RateLimiter: Sendable {
    let rate: Double
    let burst: Double
    private var buckets: [PeerID: (tokens: Double, last: NIODeadline)] = [:]
    /// Buckets kept at most. When a new peer finds them full, buckets that have refilled (idle
    /// peers) are dropped; when none has, the least recently used one is (its peer starts again
    /// with a full bucket: the bound on memory wins over the bound on that one peer).
    let maxPeers: Int

    init(rate: Double, burst: Int, maxPeers: Int = 4096) {
        self.rate = rate
        self.burst = Double(max(1, burst))
        self.maxPeers = max(1, maxPeers)
    }

    /// Peers with a bucket.
    var trackedPeers: Int { buckets.count }

    /// Takes one token for `peer` at `now`; false when the bucket is empty.
    mutating func admit(_ peer: PeerID, now: NIODeadline) -> Bool {
        var bucket = buckets[peer] ?? (burst, now)
        let elapsed = Double(max(0, (now - bucket.last).nanoseconds)) / 1e9
        bucket.tokens = min(burst, bucket.tokens + elapsed * rate)
        bucket.last = now
        guard bucket.tokens >= 1 else {
            buckets[peer] = bucket
            return false
        }
        bucket.tokens -= 1
        if buckets[peer] == nil && buckets.count >= maxPeers {
            // A bucket that would be full by now holds nothing a new bucket would not.
            buckets = buckets.filter { _, b in
                b.tokens + Double(max(0, (now - b.last).nanoseconds)) / 1e9 * rate < burst
            }
            if buckets.count >= maxPeers, let oldest = buckets.min(by: { $0.value.last < $1.value.last }) {
                buckets[oldest.key] = nil
            }
        }
        buckets[peer] = bucket
        return true
    }
}

extension Duration {
    /// The same span as a NIO `TimeAmount` (saturating).
    var timeAmount: TimeAmount {
        let (seconds, attoseconds) = components
        let (ns, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return .nanoseconds(seconds < 0 ? .min : .max) }
        return .nanoseconds(ns &+ attoseconds / 1_000_000_000)
    }
}
