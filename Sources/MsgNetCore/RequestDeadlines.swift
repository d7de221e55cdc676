import NIOCore

/// The deadlines of requests served by one event loop (a connection's, a datagram transport's),
/// kept by one timer instead of a scheduled task per request.
///
/// The timer is armed at the earliest deadline when one is added; when requests finish first
/// it fires early, finds nothing due and re-arms at the next one. All methods but `init` run on
/// the loop.
package final class RequestDeadlines: Sendable {
    private struct State {
        var entries: [UInt64: (deadline: NIODeadline, onExpire: () -> Void)] = [:]
        var nextToken: UInt64 = 0
        var armed: (task: Scheduled<Void>, deadline: NIODeadline)?
    }

    private let loop: any EventLoop
    private let state: NIOLoopBoundBox<State>

    /// A registry for `loop`; may be created on any thread, used only on `loop`.
    package init(loop: any EventLoop) {
        self.loop = loop
        self.state = NIOLoopBoundBox.makeBoxSendingValue(State(), eventLoop: loop)
    }

    /// Calls `onExpire` (on the loop) at `deadline` unless ``remove(_:)`` comes first.
    /// - Returns: the token for ``remove(_:)``.
    package func add(_ deadline: NIODeadline, onExpire: @escaping () -> Void) -> UInt64 {
        state.value.nextToken &+= 1
        let token = state.value.nextToken
        state.value.entries[token] = (deadline, onExpire)
        arm(for: deadline)
        return token
    }

    /// Forgets the deadline of `token` (its request finished).
    package func remove(_ token: UInt64) {
        state.value.entries[token] = nil
    }

    private func arm(for deadline: NIODeadline) {
        if let armed = state.value.armed, armed.deadline <= deadline { return }
        state.value.armed?.task.cancel()
        let task = loop.scheduleTask(deadline: deadline) { [self] in fire() }
        state.value.armed = (task, deadline)
    }

    private func fire() {
        state.value.armed = nil
        let now = loop.now
        var due: [() -> Void] = []
        var next: NIODeadline?
        for (token, entry) in state.value.entries {
            if entry.deadline <= now {
                due.append(entry.onExpire)
                state.value.entries[token] = nil
            } else if next.map({ entry.deadline < $0 }) ?? true {
                next = entry.deadline
            }
        }
        if let next { arm(for: next) }
        for expire in due { expire() }
    }
}
