import MsgNetTestSupport
import NIOCore
import Testing

@testable import MsgNetCore

/// The deadline queue behind the datagram path's timers (sessions, messaging machines).
@Suite("Deadline queue")
struct DeadlineQueueTests {
    func at(_ ms: Int64) -> NIODeadline { .uptimeNanoseconds(UInt64(1_000_000 + ms * 1_000_000)) }

    @Test func dueKeysComeOutEarliestFirstAndOnlyOnce() {
        var queue = DeadlineQueue<String>()
        queue.set("a", at(30))
        queue.set("b", at(10))
        queue.set("c", at(20))
        #expect(queue.earliest() == at(10))
        #expect(queue.popDue(now: at(5)).isEmpty)
        #expect(queue.popDue(now: at(25)) == ["b", "c"])
        #expect(queue.popDue(now: at(25)).isEmpty)
        #expect(queue.earliest() == at(30))
        #expect(queue.count == 1)
        #expect(queue.deadline(of: "b") == nil)
        #expect(queue.popDue(now: at(30)) == ["a"])
        #expect(queue.earliest() == nil)
        #expect(queue.count == 0)
    }

    @Test func aReplacedDeadlineCountsAndTheOldOneIsForgotten() {
        var queue = DeadlineQueue<Int>()
        queue.set(1, at(10))
        queue.set(1, at(50))
        #expect(queue.deadline(of: 1) == at(50))
        #expect(queue.earliest() == at(50))
        #expect(queue.popDue(now: at(20)).isEmpty)
        queue.set(1, at(5))
        #expect(queue.earliest() == at(5))
        // Back to a value it had before: still due once.
        queue.set(1, at(50))
        queue.set(1, at(5))
        #expect(queue.popDue(now: at(100)) == [1])
        #expect(queue.popDue(now: at(100)).isEmpty)
    }

    @Test func aRemovedKeyIsNeverDue() {
        var queue = DeadlineQueue<Int>()
        queue.set(1, at(10))
        queue.set(2, at(20))
        queue.set(1, nil)
        #expect(queue.deadline(of: 1) == nil)
        #expect(queue.earliest() == at(20))
        #expect(queue.popDue(now: at(100)) == [2])
    }

    @Test func staleEntriesStayWithinTwiceTheLiveOnes() {
        var queue = DeadlineQueue<Int>()
        for i in 0..<10_000 {
            queue.set(i % 3, at(Int64(i)))
            #expect(queue.storedEntries <= 2 * queue.count + 33)
        }
        for i in 0..<10_000 {
            queue.set(i, at(Int64(10_000 - i)))
            if i % 2 == 0 { queue.set(i, nil) }
        }
        #expect(queue.count == 5_000)  // the odd keys (the first loop's 0, 1, 2 were set again)
        #expect(queue.storedEntries <= 2 * queue.count + 33)
    }

    /// Random sets, removals and pops against a dictionary: the queue yields exactly the keys
    /// the dictionary says are due, in deadline order.
    @Test(arguments: [UInt64(1), 2, 3, 4])
    func agreesWithASimpleModel(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        var queue = DeadlineQueue<Int>()
        var model: [Int: NIODeadline] = [:]
        var now: Int64 = 0
        for _ in 0..<20_000 {
            let key = Int(random.next() % 200)
            switch random.next() % 10 {
            case 0:
                queue.set(key, nil)
                model[key] = nil
            case 1, 2:
                now += Int64(random.next() % 20)
                let due = queue.popDue(now: at(now))
                let expected = model.filter { $0.value <= at(now) }
                #expect(Set(due) == Set(expected.keys))
                #expect(due.count == expected.count)
                #expect(due.map { expected[$0]! } == due.map { expected[$0]! }.sorted())
                for k in due { model[k] = nil }
            default:
                let deadline = at(now + Int64(random.next() % 100))
                queue.set(key, deadline)
                model[key] = deadline
            }
            #expect(queue.earliest() == model.values.min())
            #expect(queue.count == model.count)
        }
    }
}
