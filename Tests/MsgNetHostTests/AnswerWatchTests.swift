import MsgNetTestSupport
import NIOCore
import Testing

@testable import MsgNetHost

/// The reply window of a request handed on to an inbox.
@Suite("Answer watch", .timeLimit(.minutes(1)))
struct AnswerWatchTests {
    /// Waits (bounded by yields) until `n` tasks wait on `watch`.
    static func waitForWaiters(_ watch: AnswerWatch, _ n: Int) async throws {
        for _ in 0..<1_000_000 where watch.waiting < n { await Task.yield() }
        try #require(watch.waiting == n)
    }

    @Test("every task waiting is released by the answer")
    func severalWaiters() async throws {
        let watch = AnswerWatch()
        let released = Counter()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<3 {
                group.addTask {
                    await watch.wait(upTo: .seconds(60))
                    released.add()
                }
            }
            try await Self.waitForWaiters(watch, 3)
            #expect(released.value == 0)
            watch.answered()
            try await group.waitForAll()
        }
        #expect(released.value == 3)
        #expect(watch.waiting == 0)
        // Answered: a later wait returns at once, until the watch is reset for a new request.
        await watch.wait(upTo: .seconds(60))
    }

    @Test("a cancelled waiter leaves, and the others still get the answer")
    func cancelledWaiter() async throws {
        let watch = AnswerWatch()
        let cancelled = Task { await watch.wait(upTo: .seconds(60)) }
        let other = Task { await watch.wait(upTo: .seconds(60)) }
        try await Self.waitForWaiters(watch, 2)
        cancelled.cancel()
        await cancelled.value
        #expect(watch.waiting == 1)
        watch.answered()
        await other.value
        #expect(watch.waiting == 0)
    }

    @Test("an unanswered wait ends with its window")
    func windowEnds() async {
        let watch = AnswerWatch()
        watch.reset()
        await watch.wait(upTo: .milliseconds(1))
        #expect(watch.waiting == 0)
    }
}
