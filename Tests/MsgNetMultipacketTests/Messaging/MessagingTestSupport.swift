import MsgNetTestSupport
import NIOCore

@testable import MsgNetMultipacket

func messagingBytes(_ array: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: array) }

/// Deterministic message contents: `length` bytes derived from `tag`.
func messagingPattern(_ tag: Int, length: Int) -> ByteBuffer {
    var rng = SplitMix64(seed: UInt64(tag) &* 7919 &+ 1)
    var out: [UInt8] = []
    out.reserveCapacity(length)
    while out.count < length {
        let word = rng.next()
        for shift in stride(from: 0, to: 64, by: 8) where out.count < length {
            out.append(UInt8(truncatingIfNeeded: word >> shift))
        }
    }
    return ByteBuffer(bytes: out)
}

enum MessagingSide: Hashable {
    case a
    case b

    var other: MessagingSide { self == .a ? .b : .a }
}

enum MessagingOutcome: Hashable {
    case delivered
    case failed(MessagingError.Code)
}

/// Two machines back to back over an in-memory link with seeded loss, duplication, reordering and delay,
/// driven by a fake clock.
struct MessagingLossyLink {
    var machines: [MessagingSide: MessagingMachine]
    var now = NIODeadline.uptimeNanoseconds(1_000_000_000)
    var rng: SplitMix64
    var loss: Double
    var duplicate: Double
    var minDelay: TimeAmount
    var maxDelay: TimeAmount
    /// Datagrams in flight, sorted by (arrival time, order).
    var packets: [(at: NIODeadline, order: Int, to: MessagingSide, payload: ByteBuffer)] = []
    var order = 0
    var wakeups: [MessagingSide: NIODeadline] = [:]
    var deliveries: [MessagingSide: [MessagingInboundMessage]] = [.a: [], .b: []]
    var outcomes: [MessagingSide: [MessagingSendID: [MessagingOutcome]]] = [.a: [:], .b: [:]]
    var transportAcks: [MessagingSide: [UInt16]] = [.a: [], .b: []]
    var payloadsSent = 0
    /// Per side: transport ids of payloads it emitted.
    var transportTags: [MessagingSide: [UInt16?]] = [.a: [], .b: []]

    init(
        a: MessagingMachine,
        b: MessagingMachine,
        seed: UInt64,
        loss: Double = 0,
        duplicate: Double = 0,
        minDelay: TimeAmount = .milliseconds(10),
        maxDelay: TimeAmount = .milliseconds(10)
    ) {
        machines = [.a: a, .b: b]
        rng = SplitMix64(seed: seed)
        self.loss = loss
        self.duplicate = duplicate
        self.minDelay = minDelay
        self.maxDelay = maxDelay
    }

    mutating func delay() -> TimeAmount {
        let span = maxDelay.nanoseconds - minDelay.nanoseconds
        guard span > 0 else { return minDelay }
        return .nanoseconds(minDelay.nanoseconds + Int64(rng.next() % UInt64(span)))
    }

    mutating func handle(_ actions: [MessagingAction], from side: MessagingSide) {
        for action in actions {
            switch action {
            case .sendPayload(let payload, let transportId):
                payloadsSent += 1
                transportTags[side, default: []].append(transportId)
                precondition(payload.readableBytes <= machines[side]!.limits.maxPayload)
                let copies = rng.chance(duplicate) ? 2 : 1
                for _ in 0..<copies where !rng.chance(loss) {
                    order += 1
                    let packet = (at: now + delay(), order: order, to: side.other, payload: payload)
                    // Kept sorted by (arrival, order): the next one is always first.
                    var low = 0
                    var high = packets.count
                    while low < high {
                        let mid = (low + high) / 2
                        if (packets[mid].at, packets[mid].order) < (packet.at, packet.order) {
                            low = mid + 1
                        } else {
                            high = mid
                        }
                    }
                    packets.insert(packet, at: low)
                }
            case .deliver(let message):
                deliveries[side, default: []].append(message)
            case .delivered(let id):
                outcomes[side, default: [:]][id, default: []].append(.delivered)
            case .failed(let id, let error):
                outcomes[side, default: [:]][id, default: []].append(.failed(error.code))
            case .transportAcknowledged(let id):
                transportAcks[side, default: []].append(id)
            case .scheduleWakeup(let at):
                wakeups[side] = at
            }
        }
    }

    @discardableResult
    mutating func send(
        from side: MessagingSide,
        _ data: ByteBuffer,
        protocol name: String = "/test/1",
        mode: MessagingDeliveryMode = .reliable,
        kind: MessagingMessageKind = .oneWay,
        deadline: NIODeadline? = nil
    ) throws(MessagingError) -> MessagingSendID {
        let result = try machines[side]!.send(
            data, protocol: name, mode: mode, kind: kind, deadline: deadline, now: now)
        handle(result.actions, from: side)
        return result.id
    }

    /// Runs events in time order until nothing is left or `limit` passes.
    mutating func run(for limit: TimeAmount = .seconds(120)) {
        let end = now + limit
        while true {
            var next: NIODeadline?
            for (_, at) in wakeups { next = next.map { min($0, at) } ?? at }
            let packetIndex = packets.isEmpty ? nil : 0
            if let i = packetIndex { next = next.map { min($0, packets[i].at) } ?? packets[i].at }
            guard let time = next, time <= end else {
                now = max(now, end)
                return
            }
            now = max(now, time)
            if let i = packetIndex, packets[i].at <= now {
                let packet = packets.remove(at: i)
                let actions = machines[packet.to]!.onPayload(packet.payload, now: now)
                handle(actions, from: packet.to)
                continue
            }
            for side in [MessagingSide.a, .b] {
                if let at = wakeups[side], at <= now {
                    wakeups[side] = nil
                    let actions = machines[side]!.onTimer(now: now)
                    handle(actions, from: side)
                }
            }
        }
    }
}
