import MsgNetCore
import NIOCore
import Testing

@testable import MsgNetMultipacket

/// A path as the tests see it: the remote address and the local socket it goes through.
struct Route: Hashable, Sendable, CustomStringConvertible {
    var remote: String
    var local: String
    var description: String { "\(local)->\(remote)" }
}

/// A lossy in-memory network of session tables with a fake clock, driven by a seeded PRNG.
struct SessionTestNetwork {
    struct InFlight {
        var at: NIODeadline
        var sequence: Int
        var source: String
        var destination: String
        var bytes: ByteBuffer
    }

    var tables: [String: SessionTable<Route>] = [:]
    var identities: [String: PrivateKey] = [:]
    /// Address → node owning it.
    var owner: [String: String] = [:]
    /// NAT: a node's local address → the source address others see.
    var nat: [String: String] = [:]
    var queue: [InFlight] = []
    var timers: [String: NIODeadline] = [:]
    var now = NIODeadline.uptimeNanoseconds(1_000_000_000)
    var random: SessionSplitMix64
    var loss = 0.0
    var duplicate = 0.0
    var baseDelay = TimeAmount.milliseconds(10)
    var jitter = TimeAmount.milliseconds(0)
    /// Extra delay toward particular destination addresses.
    var extraDelay: [String: TimeAmount] = [:]
    var sequence = 0

    var delivered: [String: [(payload: ByteBuffer, from: PeerID, session: SessionID)]] = [:]
    var established: [String: [SessionEstablished<Route>]] = [:]
    var closed: [String: [(session: SessionID, reason: SessionCloseReason)]] = [:]
    /// Bytes put on the wire toward each destination address.
    var bytesTo: [String: Int] = [:]
    /// Every datagram sent, with its source and destination address (for captures).
    var log: [(source: String, destination: String, bytes: ByteBuffer)] = []
    /// Datagrams to attacker-owned addresses (no table).
    var sinks: [String: [ByteBuffer]] = [:]

    init(seed: UInt64, limits: SessionLimits = SessionLimits(), nodes: [String] = ["A", "B"]) {
        random = SessionSplitMix64(seed: seed)
        for (index, node) in nodes.enumerated() {
            let identity = try! PrivateKey(seed: [UInt8](repeating: UInt8(index + 1), count: 32))
            identities[node] = identity
            tables[node] = SessionTable(
                identity: identity,
                limits: limits,
                random: SessionSplitMix64(seed: seed &+ UInt64(index) &* 7919)
            )
            owner[node] = node
        }
    }

    func peer(_ node: String) -> PeerID { identities[node]!.peerID }

    mutating func chance(_ p: Double) -> Bool {
        guard p > 0 else { return false }
        return Double(random.next() % 1_000_000) / 1_000_000 < p
    }

    mutating func perform(_ node: String, _ actions: [SessionAction<Route>]) {
        for action in actions {
            switch action {
            case .send(let bytes, let route):
                let source = nat[route.local] ?? route.local
                transmit(bytes, from: source, to: route.remote)
            case .deliver(let payload, let from, let session):
                delivered[node, default: []].append((payload, from, session))
            case .established(let info):
                established[node, default: []].append(info)
            case .closed(let session, _, let reason):
                closed[node, default: []].append((session, reason))
            case .scheduleTimer(let at):
                timers[node] = timers[node].map { min($0, at) } ?? at
            }
        }
    }

    /// Puts a datagram on the wire (subject to loss, duplication, delay).
    mutating func transmit(_ bytes: ByteBuffer, from source: String, to destination: String) {
        bytesTo[destination, default: 0] += bytes.readableBytes
        log.append((source, destination, bytes))
        let copies = chance(duplicate) ? 2 : 1
        for _ in 0..<copies where !chance(loss) {
            var delay = baseDelay + (extraDelay[destination] ?? .zero)
            if jitter > .zero {
                delay = delay + .nanoseconds(Int64(random.next() % UInt64(jitter.nanoseconds)))
            }
            sequence += 1
            queue.append(
                InFlight(at: now + delay, sequence: sequence, source: source, destination: destination, bytes: bytes))
        }
    }

    /// Injects a datagram straight into a node's table, as if from `source` to `local`.
    mutating func inject(_ bytes: ByteBuffer, into node: String, from source: String, local: String? = nil) {
        let actions = tables[node]!.onDatagram(bytes, from: Route(remote: source, local: local ?? node), now: now)
        perform(node, actions)
    }

    mutating func connect(_ node: String, to remotes: [String], expecting peer: PeerID?) -> SessionID {
        let result = try! tables[node]!.connect(
            to: remotes.map { Route(remote: $0, local: node) },
            expecting: peer,
            now: now
        )
        perform(node, result.actions)
        return result.session
    }

    mutating func send(_ text: String, from node: String, to peer: PeerID) throws(SessionError) {
        let actions = try tables[node]!.send(ByteBuffer(string: text), to: peer, now: now)
        perform(node, actions)
    }

    /// Runs events in time order until `duration` passes or `maxSteps` events ran.
    mutating func run(for duration: TimeAmount, maxSteps: Int = 200_000) {
        let end = now + duration
        var steps = 0
        while steps < maxSteps {
            steps += 1
            let nextDatagram = queue.indices.min {
                (queue[$0].at, queue[$0].sequence) < (queue[$1].at, queue[$1].sequence)
            }
            let nextTimer = timers.min { $0.value < $1.value }
            let datagramAt = nextDatagram.map { queue[$0].at }
            if let timer = nextTimer, timer.value <= end, datagramAt.map({ timer.value < $0 }) ?? true {
                now = max(now, timer.value)
                timers[timer.key] = nil
                perform(timer.key, tables[timer.key]!.onTimer(now: now))
            } else if let index = nextDatagram, queue[index].at <= end {
                let item = queue.remove(at: index)
                now = max(now, item.at)
                guard let node = owner[item.destination] else {
                    sinks[item.destination, default: []].append(item.bytes)
                    continue
                }
                // Undo the NAT on the way back in: the node sees its own local address.
                let local = nat.first { $0.value == item.destination }?.key ?? item.destination
                let actions = tables[node]!.onDatagram(
                    item.bytes,
                    from: Route(remote: item.source, local: local),
                    now: now
                )
                perform(node, actions)
            } else {
                break
            }
        }
        now = max(now, end)
    }

    func payloads(at node: String) -> [String] {
        (delivered[node] ?? []).map { String(buffer: $0.payload) }
    }
}
