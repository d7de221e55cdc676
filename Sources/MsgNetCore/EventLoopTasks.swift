import NIOConcurrencyHelpers
import NIOCore

/// An actor whose executor is a NIO event loop: code isolated to it runs on that loop's thread.
///
/// MsgNet starts inbound work (a stream's reader, a handler answering a datagram request) on
/// the event loop the bytes arrived on, so a handler can read, reply and finish without
/// switching threads. The library's async functions run on their caller's executor
/// (SE-0461, `nonisolated(nonsending)`), so they stay on the loop too.
public actor EventLoopIsolation {
    /// The loop whose thread runs this actor.
    public nonisolated let eventLoop: any EventLoop

    /// Isolation to `eventLoop`.
    public init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// The loop as this actor's executor.
    public nonisolated var unownedExecutor: UnownedSerialExecutor {
        eventLoop.executor.asUnownedSerialExecutor()
    }
}

/// Where tasks that serve inbound work (stream handlers, message handlers) start.
public enum InboundExecution: Sendable, Hashable {
    /// On the event loop the work arrived on (the default): no thread switch between reading a
    /// message, running its handler and writing the reply. Handlers share the loop with the
    /// connection's I/O, so a handler that computes for long should move that work elsewhere
    /// (a `@concurrent` function or another task).
    case eventLoop
    /// On Swift's global concurrent executor: handlers may compute without holding up I/O, at
    /// the cost of two thread switches per inbound exchange.
    case concurrent
}

/// Work started by ``InboundTaskSet``: it runs on the executor of the task that calls it (the
/// event loop, for ``InboundExecution/eventLoop``).
public typealias InboundWork = nonisolated(nonsending) @Sendable () async -> Void

/// The tasks a component started for inbound work, so that its `run()` can outlive them all:
/// tasks start directly on an event loop (which a task group cannot do from outside its
/// scope), and ``waitUntilIdle()`` returns once every task has finished after ``close()``.
public final class InboundTaskSet: Sendable {
    private struct State {
        var running = 0
        var closed = false
        var idleWaiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state = NIOLockedValueBox(State())

    /// An empty set.
    public init() {}

    /// Tasks running now.
    public var count: Int { state.withLockedValue { $0.running } }

    /// Starts `body` in a new task, on `loop` for `.eventLoop` (without a thread switch when
    /// called on `loop`), else on the global executor.
    /// - Returns: false (and `body` does not run) once the set is closed.
    @discardableResult
    public func start(
        on loop: any EventLoop,
        _ execution: InboundExecution = .eventLoop,
        _ body: @escaping InboundWork
    ) -> Bool {
        let admitted = state.withLockedValue { s -> Bool in
            guard !s.closed else { return false }
            s.running += 1
            return true
        }
        guard admitted else { return false }
        switch execution {
        case .concurrent:
            Task { @concurrent in
                await body()
                self.finished()
            }
        case .eventLoop:
            let isolation = EventLoopIsolation(loop)
            if loop.inEventLoop {
                isolation.assumeIsolated { Self.startIsolated($0, body, done: self.finished) }
            } else {
                loop.execute {
                    isolation.assumeIsolated { Self.startIsolated($0, body, done: self.finished) }
                }
            }
        }
        return true
    }

    private static func startIsolated(
        _ isolation: isolated EventLoopIsolation,
        _ body: @escaping InboundWork,
        done: @escaping @Sendable () -> Void
    ) {
        // The closure captures the isolated parameter, so the task starts on the loop itself.
        Task {
            _ = isolation
            await body()
            done()
        }
    }

    private func finished() {
        let waiters = state.withLockedValue { s -> [CheckedContinuation<Void, Never>] in
            s.running -= 1
            guard s.running == 0, s.closed else { return [] }
            defer { s.idleWaiters = [] }
            return s.idleWaiters
        }
        for w in waiters { w.resume() }
    }

    /// Refuses new tasks from now on.
    public func close() {
        state.withLockedValue { $0.closed = true }
    }

    /// Returns once the set is closed and every task in it has finished.
    public func waitUntilIdle() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLockedValue { s -> Bool in
                if s.closed && s.running == 0 { return true }
                s.idleWaiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }
}

extension EventLoopFuture where Value: Sendable {
    /// The future's value, awaited on the caller's executor.
    ///
    /// NIO's `get()` is a concurrent async function: awaited from a task running on an event
    /// loop it would move the task to the global executor and back, two thread switches. This
    /// one suspends in place and resumes on the caller's executor.
    public func value() async throws -> Value {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Value, any Error>) in
            whenComplete { c.resume(with: $0) }
        }
    }
}
