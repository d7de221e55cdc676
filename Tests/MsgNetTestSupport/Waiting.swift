import NIOConcurrencyHelpers

// Helpers shared by the test targets (not part of the library).

/// A one-shot signal a test can wait for (bounded by the test's time limit).
public final class Signal: Sendable {
    public init() {}
    private let state = NIOLockedValueBox<(fired: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))
    public func fire() {
        let waiters = state.withLockedValue { s -> [CheckedContinuation<Void, Never>] in
            s.fired = true
            let w = s.waiters
            s.waiters = []
            return w
        }
        for w in waiters { w.resume() }
    }
    /// Whether ``fire()`` was called.
    public var isFired: Bool { state.withLockedValue { $0.fired } }
    public func wait() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let fired = state.withLockedValue { s -> Bool in
                if s.fired { return true }
                s.waiters.append(c)
                return false
            }
            if fired { c.resume() }
        }
    }
}

/// Counts up and lets tests wait for a value.
public final class Counter: Sendable {
    public init() {}
    private let state = NIOLockedValueBox<(value: Int, peak: Int, waiters: [(Int, CheckedContinuation<Void, Never>)])>(
        (0, 0, []))
    public var value: Int { state.withLockedValue { $0.value } }
    public var peak: Int { state.withLockedValue { $0.peak } }
    public func add(_ n: Int = 1) {
        let ready = state.withLockedValue { s -> [CheckedContinuation<Void, Never>] in
            s.value += n
            s.peak = max(s.peak, s.value)
            let ready = s.waiters.filter { $0.0 <= s.value }.map(\.1)
            s.waiters.removeAll { $0.0 <= s.value }
            return ready
        }
        for c in ready { c.resume() }
    }
    public func wait(atLeast n: Int) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let done = state.withLockedValue { s -> Bool in
                if s.value >= n { return true }
                s.waiters.append((n, c))
                return false
            }
            if done { c.resume() }
        }
    }
}

/// Whether `condition` holds within `limit`, checking it every 10 ms: for state another party
/// changes on its own time (a close that follows a reply on the wire, say). The limit bounds a
/// wait; it is not a timing assertion, so make it generous.
public func eventually(
    within limit: Duration = .seconds(10), _ condition: () async throws -> Bool
) async throws -> Bool {
    let deadline = ContinuousClock.now + limit
    while true {
        if try await condition() { return true }
        if ContinuousClock.now >= deadline { return false }
        try await Task.sleep(for: .milliseconds(10))
    }
}
