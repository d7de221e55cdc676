import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import MsgNetCore

@Suite("Inbound tasks on an event loop", .timeLimit(.minutes(1)))
struct InboundTaskSetTests {
    let loop = MultiThreadedEventLoopGroup.singleton.next()

    @Test("a task started on the loop runs there, also after it suspends")
    func runsOnTheLoop() async throws {
        let tasks = InboundTaskSet()
        let seen = NIOLockedValueBox<[Bool]>([])
        let loop = self.loop
        let started = try await loop.submit {
            tasks.start(on: loop, .eventLoop) {
                seen.withLockedValue { $0.append(loop.inEventLoop) }
                // A real suspension, resumed from the loop: the task comes back to the loop.
                let promise = loop.makePromise(of: Void.self)
                loop.scheduleTask(in: .milliseconds(1)) { promise.succeed() }
                try? await promise.futureResult.get()
                seen.withLockedValue { $0.append(loop.inEventLoop) }
            }
        }.get()
        #expect(started)
        tasks.close()
        await tasks.waitUntilIdle()
        #expect(seen.withLockedValue { $0 } == [true, true])
    }

    @Test("immediately, on the loop: the body runs inside start until it suspends, then resumes on the loop")
    func immediateStart() async throws {
        let tasks = InboundTaskSet()
        let steps = NIOLockedValueBox<[String]>([])
        let loop = self.loop
        try await loop.submit {
            tasks.start(on: loop, .eventLoop, immediately: true) {
                steps.withLockedValue { $0.append("body \(loop.inEventLoop)") }
                let promise = loop.makePromise(of: Void.self)
                loop.execute { promise.succeed() }
                try? await promise.futureResult.get()
                steps.withLockedValue { $0.append("resumed \(loop.inEventLoop)") }
            }
            steps.withLockedValue { $0.append("start returned") }
        }.get()
        tasks.close()
        await tasks.waitUntilIdle()
        #expect(steps.withLockedValue { $0 } == ["body true", "start returned", "resumed true"])

        // Off the loop, `immediately` changes nothing: the body runs on the loop, later.
        let later = InboundTaskSet()
        let seen = NIOLockedValueBox<Bool?>(nil)
        #expect(later.start(on: loop, .eventLoop, immediately: true) { seen.withLockedValue { $0 = loop.inEventLoop } })
        later.close()
        await later.waitUntilIdle()
        #expect(seen.withLockedValue { $0 } == true)
    }

    @Test("started off the loop, .eventLoop still runs the body on the loop; .concurrent does not")
    func placement() async {
        let tasks = InboundTaskSet()
        let seen = NIOLockedValueBox<[String: Bool]>([:])
        let loop = self.loop
        #expect(tasks.start(on: loop, .eventLoop) { seen.withLockedValue { $0["loop"] = loop.inEventLoop } })
        #expect(tasks.start(on: loop, .concurrent) { seen.withLockedValue { $0["concurrent"] = loop.inEventLoop } })
        tasks.close()
        await tasks.waitUntilIdle()
        #expect(seen.withLockedValue { $0 } == ["loop": true, "concurrent": false])
    }

    @Test("close refuses new tasks; waitUntilIdle waits for running ones")
    func closeAndDrain() async {
        let tasks = InboundTaskSet()
        let gate = NIOLockedValueBox<CheckedContinuation<Void, Never>?>(nil)
        let finished = NIOLockedValueBox(false)
        let entered = NIOLockedValueBox<CheckedContinuation<Void, Never>?>(nil)
        await withCheckedContinuation { (ready: CheckedContinuation<Void, Never>) in
            entered.withLockedValue { $0 = ready }
            tasks.start(on: loop, .concurrent) {
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                    gate.withLockedValue { $0 = c }
                    entered.withLockedValue { $0 }?.resume()
                }
                finished.withLockedValue { $0 = true }
            }
        }
        #expect(tasks.count == 1)
        tasks.close()
        #expect(!tasks.start(on: loop, .concurrent) { Issue.record("ran after close") })
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await tasks.waitUntilIdle() }
            gate.withLockedValue { $0 }?.resume()
            await group.waitForAll()
        }
        #expect(finished.withLockedValue { $0 })
        #expect(tasks.count == 0)
    }
}
