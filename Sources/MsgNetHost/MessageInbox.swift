import NIOConcurrencyHelpers

/// Inbound messages of one protocol as an `AsyncSequence` (see ``MessageHost/messages(for:)``).
///
/// Bounded: when `capacity` messages wait unread, delivery suspends, which on the stream path
/// stops reading the stream (TCP backpressure). Ends when the handler is removed or the host
/// shuts down. One consumer.
public final class MessageInbox: AsyncSequence, Sendable {
    /// The element type.
    public typealias Element = Message

    private struct State {
        var buffer: [Message] = []
        var head = 0
        var finished = false
        var consumer: CheckedContinuation<Message?, Never>?
        var producers: [CheckedContinuation<Bool, Never>] = []
        var peak = 0
        var count: Int { buffer.count - head }
    }
    private let state = NIOLockedValueBox(State())
    /// The most messages held unread.
    public let capacity: Int

    /// The most messages that were ever held unread at once (for tests and metrics).
    package var bufferedPeak: Int { state.withLockedValue { $0.peak } }

    init(capacity: Int) {
        self.capacity = Swift.max(1, capacity)
    }

    /// Adds a message, waiting while the inbox is full. Returns false when the inbox is finished.
    func push(_ message: Message) async -> Bool {
        while true {
            enum Step {
                case done(Bool)
                case resume(CheckedContinuation<Message?, Never>)
                case wait
            }
            let step = state.withLockedValue { s -> Step in
                if s.finished { return .done(false) }
                if let consumer = s.consumer {
                    s.consumer = nil
                    return .resume(consumer)
                }
                if s.count < capacity {
                    s.buffer.append(message)
                    s.peak = Swift.max(s.peak, s.count)
                    return .done(true)
                }
                return .wait
            }
            switch step {
            case .done(let accepted):
                return accepted
            case .resume(let consumer):
                consumer.resume(returning: message)
                return true
            case .wait:
                let open = await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
                    let immediate = state.withLockedValue { s -> Bool? in
                        if s.finished { return false }
                        if s.count < capacity || s.consumer != nil { return true }
                        s.producers.append(c)
                        return nil
                    }
                    if let immediate { c.resume(returning: immediate) }
                }
                if !open { return false }
            }
        }
    }

    /// Ends the sequence after the buffered messages; waiting producers are released.
    func finish() {
        let (consumer, producers) = state.withLockedValue { s in
            s.finished = true
            let c = s.count == 0 ? s.consumer : nil
            if c != nil { s.consumer = nil }
            let p = s.producers
            s.producers = []
            return (c, p)
        }
        consumer?.resume(returning: nil)
        for p in producers { p.resume(returning: false) }
    }

    private static func pop(_ s: inout State) -> Message {
        let m = s.buffer[s.head]
        s.head += 1
        if s.head == s.buffer.count {
            s.buffer.removeAll(keepingCapacity: true)
            s.head = 0
        }
        return m
    }

    fileprivate func next() async -> Message? {
        await withCheckedContinuation { (c: CheckedContinuation<Message?, Never>) in
            let (ready, producer) = state.withLockedValue {
                s -> (Message??, CheckedContinuation<Bool, Never>?) in
                let producer = s.producers.isEmpty ? nil : s.producers.removeFirst()
                if s.count > 0 { return (.some(Self.pop(&s)), producer) }
                if s.finished { return (.some(nil), producer) }
                s.consumer = c
                return (nil, producer)
            }
            producer?.resume(returning: true)
            if let ready { c.resume(returning: ready) }
        }
    }

    /// The iterator.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let inbox: MessageInbox
        /// The next message, or `nil` once the inbox is finished and drained.
        public mutating func next() async -> Message? { await inbox.next() }
    }

    /// Makes the (single) iterator.
    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(inbox: inbox) }
    private var inbox: MessageInbox { self }
}
