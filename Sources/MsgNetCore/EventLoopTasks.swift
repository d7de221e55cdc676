import NIOConcurrencyHelpers
import NIOCore

/// A task executor that runs jobs on a NIO event loop.
///
/// MsgNet starts inbound work (a stream's reader and handler, a datagram request's handler) in a
/// task that prefers this executor (SE-0417 task executor preference), so every nonisolated
/// async function the task calls — MsgNet's, the handler's, NIO's — runs on the loop the bytes
/// arrived on, and a continuation resumed by the loop resumes the task there, without a round
/// trip through the global executor.
public final class EventLoopTaskExecutor: TaskExecutor, Sendable {
    /// The loop that runs the jobs.
    public let eventLoop: any EventLoop

    /// An executor on `eventLoop`.
    public init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// Runs `job` on the loop (as a task queued on it).
    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        eventLoop.execute { job.runSynchronously(on: executor) }
    }
}

/// Where tasks that serve inbound work (stream handlers, message handlers) start.
public enum InboundExecution: Sendable, Hashable {
    /// On the event loop the work arrived on (the default): no thread switch between reading a
    /// message, running its handler and writing the reply. Handlers share the loop with the
    /// connection's I/O, so a handler that computes for long should move that work elsewhere
    /// (another task, or an actor of its own).
    case eventLoop
    /// On Swift's global concurrent executor: handlers may compute without holding up I/O, at
    /// the cost of two thread switches per inbound exchange.
    case concurrent
}

/// The tasks a component started for inbound work, so that its `run()` can outlive them all:
/// tasks start on an event loop when the loop has the work (which a task group cannot do from
/// outside its scope), and ``waitUntilIdle()`` returns once every task has finished after
/// ``close()``.
public final class InboundTaskSet: Sendable {
    private struct State {
        var running = 0
        var closed = false
        var idleWaiters: [CheckedContinuation<Void, Never>] = []
        /// One executor per loop, made on first use (a loop is a long-lived object; a program
        /// has a handful).
        var executors: [ObjectIdentifier: EventLoopTaskExecutor] = [:]
    }
    private let state = NIOLockedValueBox(State())

    /// An empty set.
    public init() {}

    /// Tasks running now.
    public var count: Int { state.withLockedValue { $0.running } }

    /// Starts `body` in a new task: for `.eventLoop` one that prefers `loop` as its executor
    /// (``EventLoopTaskExecutor``), else an ordinary task on the global executor.
    ///
    /// With `immediately` and `.eventLoop`, called on `loop`, the task starts at once: `body`
    /// runs on the calling thread, inside this call, until it first suspends (SE-0472), instead
    /// of waiting for the loop to reach a queued job. The caller must be ready for `body` to
    /// run before `start` returns (no exclusive access held, state consistent).
    /// - Returns: false (and `body` does not run) once the set is closed.
    @discardableResult
    public func start(
        on loop: any EventLoop,
        _ execution: InboundExecution = .eventLoop,
        immediately: Bool = false,
        _ body: @escaping @Sendable () async -> Void
    ) -> Bool {
        let admitted = state.withLockedValue { s -> EventLoopTaskExecutor? in
            guard !s.closed else { return nil }
            s.running += 1
            let key = ObjectIdentifier(loop)
            if let executor = s.executors[key] { return executor }
            let executor = EventLoopTaskExecutor(loop)
            s.executors[key] = executor
            return executor
        }
        guard let executor = admitted else { return false }
        switch execution {
        case .concurrent:
            Task(executorPreference: globalConcurrentExecutor) {
                await body()
                self.finished()
            }
        case .eventLoop:
            if immediately, loop.inEventLoop, #available(macOS 26, *) {
                Task.immediate(executorPreference: executor) {
                    await body()
                    self.finished()
                }
            } else {
                Task(executorPreference: executor) {
                    await body()
                    self.finished()
                }
            }
        }
        return true
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
