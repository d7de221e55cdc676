import NIOCore
import NIOEmbedded
import NIOPosix
import Testing

@testable import MsgNetCore

@Suite("Request deadlines on one timer")
struct RequestDeadlinesTests {
    @Test("each deadline fires at its time, in any order of adding; removed ones never fire")
    func firesAtEachDeadline() {
        let loop = EmbeddedEventLoop()
        let deadlines = RequestDeadlines(loop: loop)
        var fired: [String] = []
        let start = loop.now
        _ = deadlines.add(start + .seconds(10)) { fired.append("late") }
        _ = deadlines.add(start + .seconds(2)) { fired.append("early") }
        let removed = deadlines.add(start + .seconds(1)) { fired.append("removed") }
        _ = deadlines.add(start + .seconds(5)) { fired.append("middle") }
        deadlines.remove(removed)

        loop.advanceTime(by: .seconds(1))
        #expect(fired.isEmpty)
        loop.advanceTime(by: .seconds(1))
        #expect(fired == ["early"])
        loop.advanceTime(by: .seconds(3))
        #expect(fired == ["early", "middle"])
        // An earlier deadline added while a later one is armed is still kept.
        _ = deadlines.add(loop.now + .seconds(1)) { fired.append("added later, due sooner") }
        loop.advanceTime(by: .seconds(1))
        #expect(fired == ["early", "middle", "added later, due sooner"])
        loop.advanceTime(by: .seconds(10))
        #expect(fired == ["early", "middle", "added later, due sooner", "late"])
        // Nothing left: no timer stays armed.
        loop.advanceTime(by: .seconds(60))
        #expect(fired.count == 4)
    }

    @Test("created off its loop (as a transport is), used on it")
    func createdOffTheLoop() async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let deadlines = RequestDeadlines(loop: loop)
        let expired = loop.makePromise(of: Bool.self)
        try await loop.submit {
            _ = deadlines.add(loop.now + .milliseconds(1)) { expired.succeed(loop.inEventLoop) }
        }.get()
        #expect(try await expired.futureResult.get())
    }
}
