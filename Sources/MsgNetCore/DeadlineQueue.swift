import HeapModule
import NIOCore

/// The deadlines of many keys (sessions, say) behind one timer: setting one and finding the
/// earliest cost O(log n), instead of a scan of every key on each timer event.
///
/// Each key has at most one deadline in force. A replaced or removed deadline stays in the heap
/// as a stale entry until it reaches the top (or the heap is rebuilt once it holds more than
/// twice the live entries), so memory stays within a constant factor of the keys.
package struct DeadlineQueue<Key: Hashable & Sendable>: Sendable {
    private struct Entry: Comparable, Sendable {
        var deadline: NIODeadline
        var key: Key

        static func < (a: Entry, b: Entry) -> Bool { a.deadline < b.deadline }
        static func == (a: Entry, b: Entry) -> Bool { a.deadline == b.deadline && a.key == b.key }
    }

    private var heap = Heap<Entry>()
    private var current: [Key: NIODeadline] = [:]

    /// An empty queue.
    package init() {}

    /// Keys with a deadline in force.
    package var count: Int { current.count }

    /// Entries held, stale ones included (for tests: bounded by about twice ``count``).
    package var storedEntries: Int { heap.count }

    /// The deadline in force for `key`.
    package func deadline(of key: Key) -> NIODeadline? { current[key] }

    /// Sets the deadline of `key`, replacing the one in force; `nil` removes it.
    package mutating func set(_ key: Key, _ deadline: NIODeadline?) {
        guard let deadline else {
            current[key] = nil
            compactIfNeeded()
            return
        }
        if current.updateValue(deadline, forKey: key) == deadline { return }
        heap.insert(Entry(deadline: deadline, key: key))
        compactIfNeeded()
    }

    /// The earliest deadline in force.
    package mutating func earliest() -> NIODeadline? {
        dropStaleTop()
        return heap.min?.deadline
    }

    /// Removes and returns the keys whose deadline is at or before `now`, earliest first.
    package mutating func popDue(now: NIODeadline) -> [Key] {
        var due: [Key] = []
        while true {
            dropStaleTop()
            guard let top = heap.min, top.deadline <= now else { return due }
            heap.removeMin()
            current[top.key] = nil
            due.append(top.key)
        }
    }

    private func isLive(_ entry: Entry) -> Bool { current[entry.key] == entry.deadline }

    private mutating func dropStaleTop() {
        while let top = heap.min, !isLive(top) { heap.removeMin() }
    }

    private mutating func compactIfNeeded() {
        guard heap.count > 2 * current.count + 32 else { return }
        heap = Heap(current.map { Entry(deadline: $1, key: $0) })
    }
}
