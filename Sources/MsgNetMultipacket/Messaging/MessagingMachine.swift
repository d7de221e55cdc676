import DequeModule
import MsgNetCore
import NIOCore

/// Identifies one `MessagingMachine.send`; outcome actions name it.
package struct MessagingSendID: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The raw value, unique per machine.
    package let rawValue: UInt64

    /// Wraps a raw value.
    package init(rawValue: UInt64) { self.rawValue = rawValue }

    package static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }

    /// `"send#<n>"`.
    package var description: String { "send#\(rawValue)" }
}

/// How a message travels.
package enum MessagingDeliveryMode: Hashable, Sendable {
    /// Acknowledged, retransmitted, deduplicated, fragmented when large; ends in `.delivered` or `.failed`.
    case reliable
    /// One best-effort payload, never delivered twice; no outcome action.
    case unreliable
}

/// A message received from the peer, ready for its handler.
package struct MessagingInboundMessage: Hashable, Sendable {
    /// The protocol the peer named for it.
    package var protocolName: String
    /// The message bytes.
    package var data: ByteBuffer
    /// One-way, request (with id) or reply (with the id of our request).
    package var kind: MessagingMessageKind
    /// How it travelled.
    package var mode: MessagingDeliveryMode

    /// Creates a message.
    package init(protocolName: String, data: ByteBuffer, kind: MessagingMessageKind, mode: MessagingDeliveryMode) {
        self.protocolName = protocolName
        self.data = data
        self.kind = kind
        self.mode = mode
    }
}

/// What the shell must do after an event.
package enum MessagingAction: Hashable, Sendable {
    /// Seal and send this payload. `transportId` is nil for the chosen (or only) path; while probing
    /// transports (`probeTransports`), one copy per probed id is emitted, to be sent on that path.
    case sendPayload(ByteBuffer, transportId: UInt16?)
    /// Hand this message to the handler of its protocol.
    case deliver(MessagingInboundMessage)
    /// Every fragment of this reliable send was acknowledged.
    case delivered(MessagingSendID)
    /// This reliable send failed; it will never be delivered by this machine.
    case failed(MessagingSendID, MessagingError)
    /// The peer acknowledged our Init copy tagged with this transport id first: stick to that path.
    case transportAcknowledged(UInt16)
    /// Call `onTimer(now:)` at (or after) this time. Replaces any earlier request.
    case scheduleWakeup(NIODeadline)
}

/// The result of `MessagingMachine.send`.
package struct MessagingSendResult: Sendable {
    /// The id later outcome actions name (reliable sends only).
    package var id: MessagingSendID
    /// Payloads to send now (and possibly a wakeup).
    package var actions: [MessagingAction]
}

/// The messaging layer of one authenticated multipacket session: frames, protocol naming
/// (Init / Continuation / Reset), reliability (acks, RTO, dedup, windows, deadlines), fragmentation,
/// request/reply correlation and transport consolidation. A pure state machine: no clock, no I/O;
/// time enters as `now`, timers leave as `.scheduleWakeup`.
///
/// Every reliable `send` that does not throw ends in exactly one `.delivered(id)` or `.failed(id, error)`.
/// Delivery is unordered (see `docs/multipacket.md (Part C)`).
package struct MessagingMachine: Sendable {
    /// Tells whether a local handler exists for a protocol name.
    package typealias HandlerPredicate = @Sendable (String) -> Bool

    private enum State {
        case open
        case closed
    }

    private struct OutboundProtocol {
        var protocolInt: UInt16
        var confirmed: Bool
        var epoch: UInt32
    }

    private struct OutboundMessage {
        var protocolName: String
        var kind: MessagingMessageKind
        var data: ByteBuffer
        var fragmentCount: Int
        var firstSequence: UInt64?
        var nextFragment: Int
        var acknowledged: Int
        var deadline: NIODeadline
    }

    private struct InFlight {
        var sequence: UInt64
        var id: MessagingSendID
        var fragmentIndex: Int
        var lastSent: NIODeadline
        var retransmitAt: NIODeadline
        var transmissions: Int
        var epoch: UInt32
        var sentAsInit: Bool
        /// The fragment's data bytes (what the congestion window counts).
        var size: Int
    }

    private struct Partial {
        var protocolName: String
        var kind: MessagingMessageKind
        var count: Int
        var totalLength: Int
        var received: Int
        var buffer: ByteBuffer
        var expires: NIODeadline
    }

    /// Encodes frames into payloads of at most `maxPayload` bytes, first fit into the current payload.
    private struct PayloadBuilder {
        var payloads: [(buffer: ByteBuffer, initOffsets: [Int])] = []
        var current: ByteBuffer?
        var currentOffsets: [Int] = []
        let maxPayload: Int
        let allocator: ByteBufferAllocator
        /// Whether Init frames' transportId offsets are noted (only while probing transports).
        let recordsOffsets: Bool

        init(maxPayload: Int, allocator: ByteBufferAllocator, recordsOffsets: Bool) {
            self.maxPayload = maxPayload
            self.allocator = allocator
            self.recordsOffsets = recordsOffsets
        }

        var isEmpty: Bool { payloads.isEmpty && current == nil }

        mutating func append(_ frame: MultipacketFrame) {
            let length = MultipacketFrameCodec.encodedLength(frame)
            if let used = current?.readableBytes, used + length > maxPayload { closeCurrent() }
            if current == nil { current = allocator.buffer(capacity: maxPayload) }
            if let offset = MultipacketFrameCodec.encode(frame, into: &current!), recordsOffsets {
                currentOffsets.append(offset)
            }
        }

        mutating func closeCurrent() {
            if let buffer = current { payloads.append((buffer, currentOffsets)) }
            current = nil
            currentOffsets = []
        }
    }

    // MARK: Configuration and state

    private var state: State = .open
    /// The limits this machine enforces.
    package let limits: MessagingLimits
    private let codec: MultipacketFrameCodec
    private let hasHandler: HandlerPredicate
    private let budget: (any MessagingReassemblyAccountant)?
    private let allocator = ByteBufferAllocator()
    /// Drop and event counters.
    package private(set) var counters = MessagingCounters()
    /// When a message was last accepted for sending or a payload last arrived (`nil`: neither
    /// yet). The transport closes sessions that stay unused (`sessionIdleTimeout`).
    package private(set) var lastActivity: NIODeadline?
    /// The round-trip estimator (RFC 6298).
    package private(set) var rttEstimator: MessagingRTTEstimator

    private var outboundProtocols: [String: OutboundProtocol] = [:]
    private var outboundNames: [UInt16: String] = [:]
    private var nextProtocolInt: UInt16 = 1

    private var messages: [MessagingSendID: OutboundMessage] = [:]
    private var queuedBytes = 0
    private var transmitQueue: Deque<MessagingSendID> = []
    private var inFlight: [InFlight] = []
    /// Data bytes of `inFlight` (congestion control).
    private var bytesInFlight = 0
    /// The congestion window and slow-start threshold, in bytes (see
    /// ``MessagingLimits/congestionControl``).
    private var congestionWindow: Int
    private var slowStartThreshold = Int.max
    /// When the window was last reduced: losses of fragments sent before it do not reduce it again.
    private var recoveryStart: NIODeadline?
    private var nextReliableSequence: UInt64 = 0
    private var nextUnreliableSequence: UInt64 = 0
    private var nextSendID: UInt64 = 0

    private var inboundProtocols: [UInt16: String] = [:]
    private var inboundOrder: Deque<UInt16> = []
    private var received: MessagingSequenceSet
    private var receivedUnreliable: MessagingReplayWindow
    private var largestReceivedAt: NIODeadline?
    private var ackElicitingPending = 0
    private var ackImmediately = false
    private var ackDeadline: NIODeadline?
    private var recentSequences: [UInt64] = []
    private var partials: [UInt64: Partial] = [:]
    private var reassemblyBytes = 0
    private var abandoned: Set<UInt64> = []
    private var abandonedOrder: Deque<UInt64> = []
    private var pendingControl: [MultipacketFrame] = []
    private var pendingUnreliable: [(name: String, header: MultipacketMessageHeader, data: ByteBuffer)] = []

    private var probedTransports: [UInt16] = []
    /// The transport id the peer acknowledged first, once it has.
    package private(set) var selectedTransport: UInt16?

    private var retransmitNow = false
    private var scheduledWakeup: NIODeadline?
    private var wakeupChanged = false

    /// Creates a machine for one session.
    ///
    /// - Parameters:
    ///   - limits: sizes, windows and timeouts (both peers should agree).
    ///   - budget: the reassembly budget shared by all machines of the node, if any.
    ///   - hasHandler: whether a handler exists for a protocol; asked for every inbound Init and Continuation.
    package init(
        limits: MessagingLimits = MessagingLimits(),
        budget: (any MessagingReassemblyAccountant)? = nil,
        hasHandler: @escaping HandlerPredicate
    ) {
        self.limits = limits
        self.codec = MultipacketFrameCodec(limits: limits)
        self.budget = budget
        self.hasHandler = hasHandler
        self.rttEstimator = MessagingRTTEstimator(
            initialRTO: limits.initialRTO,
            minRTO: limits.minRTO,
            maxRTO: limits.maxRTO
        )
        self.congestionWindow = limits.initialCongestionWindow
        self.received = MessagingSequenceSet(maxRanges: limits.maxReceivedRanges)
        self.receivedUnreliable = MessagingReplayWindow(size: limits.unreliableWindow)
    }

    // MARK: Introspection

    /// Reliable fragments sent and not yet acknowledged.
    package var inFlightCount: Int { inFlight.count }
    /// Data bytes of the reliable fragments in flight.
    package var inFlightBytes: Int { bytesInFlight }
    /// The congestion window, in bytes (meaningful with ``MessagingLimits/congestionControl``).
    package var currentCongestionWindow: Int { congestionWindow }
    /// The slow-start threshold, in bytes (`Int.max` until the first loss).
    package var currentSlowStartThreshold: Int { slowStartThreshold }

    /// Whether the congestion window lets one more fragment go (it may overshoot by one).
    private var windowOpen: Bool {
        inFlight.count < limits.maxInFlightFragments && (!limits.congestionControl || bytesInFlight < congestionWindow)
    }
    /// Reliable sends not finished yet.
    package var pendingSendCount: Int { messages.count }
    /// Partially reassembled inbound messages.
    package var partialMessageCount: Int { partials.count }
    /// Bytes reserved for reassembly by this machine.
    package var reassemblyBytesInUse: Int { reassemblyBytes }
    /// Protocol bindings the peer has made with Init that we remember.
    package var inboundProtocolCount: Int { inboundProtocols.count }
    /// Remembered reliable sequence ranges (dedup state).
    package var receivedRangeCount: Int { received.ranges.count }
    /// The wakeup last requested, if any.
    package var nextWakeup: NIODeadline? { scheduledWakeup }

    // MARK: Transport consolidation

    /// Starts probing several paths (seed "transport consolidation"): until the peer acknowledges one,
    /// every payload is emitted once per id, Inits tagged with it, and protocols are named with Init.
    /// Ids must be non-zero (0 means "not probing"); zeros and duplicates are ignored.
    package mutating func probeTransports(_ transportIds: [UInt16]) {
        var ids: [UInt16] = []
        for id in transportIds where id != 0 && !ids.contains(id) { ids.append(id) }
        probedTransports = ids
        if !ids.isEmpty { selectedTransport = nil }
    }

    // MARK: Sending

    /// Sends a message: `enqueue` followed by `flush`.
    ///
    /// - Parameters:
    ///   - message: the bytes (its readable bytes are sent).
    ///   - protocolName: the protocol; named once per direction with Init, then by its 2-byte int.
    ///   - mode: `.reliable` (default) or `.unreliable` (must fit one payload).
    ///   - kind: one-way, request or reply.
    ///   - deadline: when a reliable send fails with `.timedOut`; default and cap: `now + limits.deliveryTimeout`.
    ///   - now: the current time.
    /// - Returns: the send id and the payloads to send now.
    /// - Throws: `MessagingError` (`.messageTooLarge`, `.limitExceeded`, `.invalidArgument`, `.closed`);
    ///   a send that throws produces no outcome action.
    package mutating func send(
        _ message: ByteBuffer,
        protocol protocolName: String,
        mode: MessagingDeliveryMode = .reliable,
        kind: MessagingMessageKind = .oneWay,
        deadline: NIODeadline? = nil,
        now: NIODeadline
    ) throws(MessagingError) -> MessagingSendResult {
        let id = try enqueue(message, protocol: protocolName, mode: mode, kind: kind, deadline: deadline, now: now)
        return MessagingSendResult(id: id, actions: flush(now: now))
    }

    /// Emits everything enqueued (packed several small messages to a payload), plus pending acks.
    package mutating func flush(now: NIODeadline) -> [MessagingAction] {
        guard case .open = state else { return [] }
        var actions: [MessagingAction] = []
        var builder = makeBuilder()
        finish(now: now, builder: &builder, actions: &actions)
        return actions
    }

    /// Accepts a message like `send` but emits nothing until the next `flush` (or any other event),
    /// so a burst of small messages shares payloads. Same parameters, errors and outcomes as `send`.
    package mutating func enqueue(
        _ message: ByteBuffer,
        protocol protocolName: String,
        mode: MessagingDeliveryMode = .reliable,
        kind: MessagingMessageKind = .oneWay,
        deadline: NIODeadline? = nil,
        now: NIODeadline
    ) throws(MessagingError) -> MessagingSendID {
        guard case .open = state else { throw MessagingError(.closed, "the messaging machine is closed") }
        let nameLength = protocolName.utf8.count
        guard nameLength >= 1, nameLength <= limits.maxProtocolNameLength else {
            throw MessagingError(
                .invalidArgument,
                "protocol name of \(nameLength) bytes not in 1...\(limits.maxProtocolNameLength)"
            )
        }
        switch kind {
        case .oneWay: break
        case .request(let id), .reply(let id):
            guard id < 1 << 63 else { throw MessagingError(.invalidArgument, "correlation id \(id) over 2^63 − 1") }
        case .probe:
            guard mode == .reliable, message.readableBytes == 0 else {
                throw MessagingError(.invalidArgument, "a probe is reliable and carries no data")
            }
        }
        let length = message.readableBytes
        let room = limits.maxPayload - limits.initHeaderBound(nameLength: nameLength, kind: kind)
        guard room >= 1 else {
            throw MessagingError(.messageTooLarge, "protocol name too long for a \(limits.maxPayload)-byte payload")
        }
        let id = MessagingSendID(rawValue: nextSendID)
        lastActivity = now
        switch mode {
        case .unreliable:
            guard length <= room else {
                throw MessagingError(
                    .messageTooLarge,
                    "unreliable message of \(length) bytes over the \(room) bytes one payload holds"
                )
            }
            guard pendingUnreliable.count < limits.maxQueuedMessages else {
                counters.sendsRefused += 1
                throw MessagingError(.limitExceeded, "\(pendingUnreliable.count) unreliable messages waiting for flush")
            }
            _ = try protocolEntry(for: protocolName)
            nextSendID += 1
            let header = MultipacketMessageHeader(sequence: nextUnreliableSequence, reliable: false, kind: kind)
            nextUnreliableSequence += 1
            pendingUnreliable.append((protocolName, header, message))
        case .reliable:
            guard length <= limits.maxMessageSize else {
                throw MessagingError(.messageTooLarge, "message of \(length) bytes over \(limits.maxMessageSize)")
            }
            let count = length <= room ? 1 : (length + room - 1) / room
            guard count <= limits.maxFragmentCount else {
                throw MessagingError(
                    .messageTooLarge,
                    "message of \(length) bytes needs \(count) fragments, over \(limits.maxFragmentCount)"
                )
            }
            guard messages.count < limits.maxQueuedMessages, queuedBytes + length <= limits.maxQueuedBytes else {
                counters.sendsRefused += 1
                throw MessagingError(
                    .limitExceeded, "send queue full (\(messages.count) messages, \(queuedBytes) bytes)")
            }
            _ = try protocolEntry(for: protocolName)
            nextSendID += 1
            let cap = now + limits.deliveryTimeout
            let due = deadline.map { min($0, cap) } ?? cap
            messages[id] = OutboundMessage(
                protocolName: protocolName,
                kind: kind,
                data: message,
                fragmentCount: count,
                firstSequence: nil,
                nextFragment: 0,
                acknowledged: 0,
                deadline: due
            )
            queuedBytes += length
            transmitQueue.append(id)
            noteWakeup(due)
        }
        return id
    }

    /// Fails every unfinished send with `.closed`, frees reassembly memory; later events do nothing.
    package mutating func close() -> [MessagingAction] {
        guard case .open = state else { return [] }
        state = .closed
        var actions: [MessagingAction] = []
        for id in messages.keys.sorted() {
            actions.append(.failed(id, MessagingError(.closed, "the session closed before \(id) was acknowledged")))
        }
        messages = [:]
        pendingUnreliable = []
        inFlight = []
        bytesInFlight = 0
        transmitQueue = []
        queuedBytes = 0
        if let budget { for partial in partials.values { budget.release(partial.totalLength) } }
        partials = [:]
        reassemblyBytes = 0
        scheduledWakeup = nil
        return actions
    }

    // MARK: Inbound

    /// Handles one decrypted payload from the session layer.
    package mutating func onPayload(_ payload: ByteBuffer, now: NIODeadline) -> [MessagingAction] {
        guard case .open = state else {
            counters.payloadsAfterClose += 1
            return []
        }
        lastActivity = now
        let frames: [MultipacketFrame]
        do {
            frames = try codec.decode(payload)
        } catch {
            if error.code == .unknownFrameType {
                counters.unknownFrameTypes += 1
            } else {
                counters.malformedPayloads += 1
            }
            return []
        }
        var actions: [MessagingAction] = []
        actions.reserveCapacity(4)
        var builder = makeBuilder()
        for frame in frames {
            switch frame {
            case .padding:
                break
            case .ack(let ack):
                processAck(ack, now: now, actions: &actions)
            case .transportAck(let transportId):
                if probedTransports.contains(transportId) {
                    probedTransports = []
                    selectedTransport = transportId
                    actions.append(.transportAcknowledged(transportId))
                } else {
                    counters.ignoredTransportAcks += 1
                }
            case .reset(let protocolInt, let reason):
                processReset(protocolInt, reason: reason, now: now, builder: &builder, actions: &actions)
            case .initiate(let transportId, let name, let protocolInt, let header, let data):
                // A reply answers our own request: it needs no handler of its protocol.
                guard header.kind.isReply || hasHandler(name) else {
                    counters.unsupportedProtocols += 1
                    unbindInbound(protocolInt)
                    queueControl(.reset(protocolInt: protocolInt, reason: .protocolNotSupported))
                    continue
                }
                bindInbound(protocolInt, to: name)
                let accepted = receiveData(name, header: header, data: data, now: now, actions: &actions)
                if accepted && transportId != 0 { queueControl(.transportAck(transportId: transportId)) }
            case .continuation(let protocolInt, let header, let data):
                guard let name = inboundProtocols[protocolInt] else {
                    counters.unknownProtocolInts += 1
                    queueControl(.reset(protocolInt: protocolInt, reason: .unknownProtocolInt))
                    continue
                }
                guard header.kind.isReply || hasHandler(name) else {
                    counters.unsupportedProtocols += 1
                    unbindInbound(protocolInt)
                    queueControl(.reset(protocolInt: protocolInt, reason: .protocolNotSupported))
                    continue
                }
                _ = receiveData(name, header: header, data: data, now: now, actions: &actions)
            }
        }
        if retransmitNow {
            retransmitNow = false
            retransmitDue(now: now, builder: &builder)
        }
        finish(now: now, builder: &builder, actions: &actions)
        return actions
    }

    /// Handles the wakeup requested by `.scheduleWakeup`: delayed acks, retransmissions, deadlines,
    /// reassembly timeouts. Calling it early or late is harmless.
    package mutating func onTimer(now: NIODeadline) -> [MessagingAction] {
        guard case .open = state else { return [] }
        var actions: [MessagingAction] = []
        var builder = makeBuilder()
        if let due = ackDeadline, due <= now {
            ackImmediately = true
            ackDeadline = nil
        }
        // Deadlines.
        var expired: [MessagingSendID] = []
        for (id, message) in messages where message.deadline <= now { expired.append(id) }
        if !expired.isEmpty {
            expired.sort()
            counters.sendTimeouts += expired.count
            fail(
                Set(expired),
                error: { MessagingError(.timedOut, "\($0) not acknowledged before its deadline (outcome unknown)") },
                actions: &actions
            )
        }
        retransmitDue(now: now, builder: &builder)
        // Reassembly timeouts.
        var stale: [UInt64] = []
        for (id, partial) in partials where partial.expires <= now { stale.append(id) }
        for id in stale {
            guard let partial = partials.removeValue(forKey: id) else { continue }
            counters.reassemblyTimeouts += 1
            releaseReassembly(partial.totalLength)
            abandon(id)
        }
        scheduledWakeup = nil
        wakeupChanged = false
        finish(now: now, builder: &builder, actions: &actions)
        // Replace whatever `finish` requested with the exact earliest time.
        if case .scheduleWakeup = actions.last { actions.removeLast() }
        var next = ackDeadline
        for record in inFlight { next = earlier(next, record.retransmitAt) }
        for message in messages.values { next = earlier(next, message.deadline) }
        for partial in partials.values { next = earlier(next, partial.expires) }
        scheduledWakeup = next
        wakeupChanged = false
        if let next { actions.append(.scheduleWakeup(next)) }
        return actions
    }

    // MARK: Outbound internals

    /// Upper bound of an Init frame's bytes other than the message data.

    private mutating func protocolEntry(for name: String) throws(MessagingError) -> OutboundProtocol {
        if let entry = outboundProtocols[name] { return entry }
        if outboundProtocols.count >= limits.maxOutboundProtocols {
            // Forget a binding no unfinished send uses.
            var used = Set<String>()
            for message in messages.values { used.insert(message.protocolName) }
            guard let victim = outboundProtocols.first(where: { !used.contains($0.key) }) else {
                counters.sendsRefused += 1
                throw MessagingError(.limitExceeded, "\(outboundProtocols.count) protocols in use at once")
            }
            outboundProtocols.removeValue(forKey: victim.key)
            outboundNames.removeValue(forKey: victim.value.protocolInt)
        }
        var candidate = nextProtocolInt
        while candidate == 0 || outboundNames[candidate] != nil { candidate &+= 1 }
        nextProtocolInt = candidate &+ 1
        let entry = OutboundProtocol(protocolInt: candidate, confirmed: false, epoch: 0)
        outboundProtocols[name] = entry
        outboundNames[candidate] = name
        return entry
    }

    private func dataFrame(
        _ name: String,
        _ entry: OutboundProtocol,
        header: MultipacketMessageHeader,
        data: ByteBuffer
    ) -> (frame: MultipacketFrame, isInit: Bool) {
        if entry.confirmed && probedTransports.isEmpty {
            return (.continuation(protocolInt: entry.protocolInt, header: header, data: data), false)
        }
        return (
            .initiate(transportId: 0, protocolName: name, protocolInt: entry.protocolInt, header: header, data: data),
            true
        )
    }

    /// Builds the frame of fragment `index` of `message` with sequence `sequence`.
    private func fragmentFrame(
        _ message: OutboundMessage,
        index: Int,
        sequence: UInt64,
        entry: OutboundProtocol
    ) -> (frame: MultipacketFrame, isInit: Bool, size: Int) {
        let total = message.data.readableBytes
        var fragment: MultipacketFragmentInfo?
        var data = message.data
        if message.fragmentCount > 1 {
            let info = MultipacketFragmentInfo(index: index, count: message.fragmentCount, totalLength: total)
            data = message.data.getSlice(at: message.data.readerIndex + info.offset, length: info.length)!
            fragment = info
        }
        let header = MultipacketMessageHeader(
            sequence: sequence, reliable: true, kind: message.kind, fragment: fragment)
        let (frame, isInit) = dataFrame(message.protocolName, entry, header: header, data: data)
        return (frame, isInit, data.readableBytes)
    }

    /// Puts first transmissions of queued fragments into `builder`, in send order, within the window.
    private mutating func pump(now: NIODeadline, builder: inout PayloadBuilder) {
        var sentAny = false
        while let id = transmitQueue.first {
            // Mutated in place through its index: one lookup, no copy of the message out and back.
            guard let slot = messages.index(forKey: id),
                let entry = outboundProtocols[messages.values[slot].protocolName]
            else {
                transmitQueue.removeFirst()
                continue
            }
            let first: UInt64
            if let assigned = messages.values[slot].firstSequence {
                first = assigned
            } else {
                first = nextReliableSequence
                messages.values[slot].firstSequence = first
                nextReliableSequence += UInt64(messages.values[slot].fragmentCount)
            }
            let rto = rttEstimator.backedOff(0)
            let count = messages.values[slot].fragmentCount
            while messages.values[slot].nextFragment < count && windowOpen {
                let index = messages.values[slot].nextFragment
                let sequence = first + UInt64(index)
                let (frame, isInit, size) = fragmentFrame(
                    messages.values[slot], index: index, sequence: sequence, entry: entry)
                builder.append(frame)
                bytesInFlight += size
                inFlight.append(
                    InFlight(
                        sequence: sequence,
                        id: id,
                        fragmentIndex: index,
                        lastSent: now,
                        retransmitAt: now + rto,
                        transmissions: 1,
                        epoch: entry.epoch,
                        sentAsInit: isInit,
                        size: size
                    )
                )
                messages.values[slot].nextFragment += 1
                sentAny = true
            }
            guard messages.values[slot].nextFragment == count else { break }
            transmitQueue.removeFirst()
        }
        if sentAny { noteWakeup(now + rttEstimator.backedOff(0)) }
    }

    /// Retransmits every in-flight fragment whose timer has expired. `lost`: the timers mean
    /// loss (an RTO or a fast retransmit), which reduces the congestion window; false for
    /// fragments re-sent with Init after a Reset.
    private mutating func retransmitDue(now: NIODeadline, lost: Bool = true, builder: inout PayloadBuilder) {
        for i in inFlight.indices where inFlight[i].retransmitAt <= now {
            let record = inFlight[i]
            guard let message = messages[record.id], let entry = outboundProtocols[message.protocolName] else {
                continue
            }
            if lost { onLoss(of: record, now: now) }
            let (frame, isInit, _) = fragmentFrame(
                message,
                index: record.fragmentIndex,
                sequence: record.sequence,
                entry: entry
            )
            builder.append(frame)
            counters.retransmissions += 1
            inFlight[i].transmissions += 1
            inFlight[i].lastSent = now
            inFlight[i].retransmitAt = now + rttEstimator.backedOff(record.transmissions)
            inFlight[i].epoch = entry.epoch
            inFlight[i].sentAsInit = isInit
            noteWakeup(inFlight[i].retransmitAt)
        }
    }

    /// Congestion response to the loss of `record` (about to be retransmitted): the window
    /// halves, once per round trip (a fragment sent before the last reduction was in the flight
    /// that caused it).
    private mutating func onLoss(of record: InFlight, now: NIODeadline) {
        guard limits.congestionControl else { return }
        if let recoveryStart, record.lastSent <= recoveryStart { return }
        slowStartThreshold = max(congestionWindow / 2, limits.minCongestionWindow)
        congestionWindow = slowStartThreshold
        recoveryStart = now
        counters.congestionEvents += 1
    }

    /// Congestion window growth for `size` newly acknowledged bytes of a fragment sent at `sent`,
    /// while `inFlightBefore` bytes were in flight.
    private mutating func onAcknowledged(size: Int, sent: NIODeadline, inFlightBefore: Int) {
        guard limits.congestionControl else { return }
        // No growth for fragments of the recovery period, or while the window is not used (an
        // application sending little would otherwise earn a window it never tested).
        if let recoveryStart, sent <= recoveryStart { return }
        guard inFlightBefore * 2 >= congestionWindow else { return }
        let ceiling = limits.maxInFlightFragments * limits.maxPayload
        if congestionWindow < slowStartThreshold {
            congestionWindow = min(congestionWindow + size, ceiling)
        } else {
            congestionWindow = min(congestionWindow + max(limits.maxPayload * size / congestionWindow, 1), ceiling)
        }
    }

    private mutating func processAck(_ ack: MultipacketAckFrame, now: NIODeadline, actions: inout [MessagingAction]) {
        guard let top = ack.ranges.first else { return }
        guard top.upperBound < nextReliableSequence else {
            counters.invalidAcks += 1
            return
        }
        let ackDelay = TimeAmount.microseconds(Int64(min(ack.ackDelayMicroseconds, UInt64(Int64.max / 1000))))
        var rangeIndex = ack.ranges.count - 1
        var write = 0
        var largestSent: NIODeadline?
        let inFlightBefore = bytesInFlight
        for read in inFlight.indices {
            let record = inFlight[read]
            while rangeIndex >= 0 && ack.ranges[rangeIndex].upperBound < record.sequence { rangeIndex -= 1 }
            guard rangeIndex >= 0 && ack.ranges[rangeIndex].lowerBound <= record.sequence else {
                inFlight[write] = record
                write += 1
                continue
            }
            // Newly acknowledged.
            bytesInFlight -= record.size
            onAcknowledged(size: record.size, sent: record.lastSent, inFlightBefore: inFlightBefore)
            if record.sequence == top.upperBound { largestSent = record.lastSent }
            if record.sequence == top.upperBound && record.transmissions == 1 {
                let sample = now - record.lastSent
                let delay = min(ackDelay, limits.maxAckDelay)
                rttEstimator.addSample(sample - delay > .zero ? sample - delay : sample)
            }
            guard let slot = messages.index(forKey: record.id) else { continue }
            if record.sentAsInit {
                let name = messages.values[slot].protocolName
                if var entry = outboundProtocols[name], entry.epoch == record.epoch, !entry.confirmed {
                    entry.confirmed = true
                    outboundProtocols[name] = entry
                }
            }
            messages.values[slot].acknowledged += 1
            if messages.values[slot].acknowledged == messages.values[slot].fragmentCount {
                queuedBytes -= messages.remove(at: slot).value.data.readableBytes
                actions.append(.delivered(record.id))
            }
        }
        inFlight.removeLast(inFlight.count - write)
        // Fast retransmit: a fragment sent no later than the newly acknowledged highest one, at least
        // `fastRetransmitThreshold` numbers below it ...
        guard limits.fastRetransmit, let largestSent, let srtt = rttEstimator.smoothedRTT,
            top.upperBound >= Self.fastRetransmitThreshold
        else { return }
        let threshold = top.upperBound - Self.fastRetransmitThreshold
        // Only gaps among the leading (unbroken) ranges are known to be gaps.
        let knownFrom = ack.ranges[min(ack.ranges.count, Self.ackTopRanges) - 1].lowerBound
        // ... is due for retransmission SRTT + 2·RTTVAR after it was sent (at once if that has passed),
        // instead of a full (backed-off) RTO; mere reordering rarely lasts that long.
        let wait = TimeAmount.nanoseconds(srtt.nanoseconds + 4 * rttEstimator.rttVariation.nanoseconds)
        for i in inFlight.indices {
            guard inFlight[i].sequence <= threshold else { break }
            guard inFlight[i].sequence > knownFrom && inFlight[i].lastSent <= largestSent else { continue }
            let due = max(inFlight[i].lastSent + wait, now)
            if due < inFlight[i].retransmitAt {
                inFlight[i].retransmitAt = due
                counters.fastRetransmissions += 1
                if due <= now { retransmitNow = true } else { noteWakeup(due) }
            }
        }
    }

    /// Packet-reordering threshold of the fast retransmit (as QUIC's kPacketThreshold).
    static let fastRetransmitThreshold: UInt64 = 3
    /// An Ack starts with the receiver's highest `ackTopRanges` ranges, none skipped.
    static let ackTopRanges = 16

    private mutating func processReset(
        _ protocolInt: UInt16,
        reason: MultipacketResetReason,
        now: NIODeadline,
        builder: inout PayloadBuilder,
        actions: inout [MessagingAction]
    ) {
        guard let name = outboundNames[protocolInt], var entry = outboundProtocols[name] else {
            counters.ignoredResets += 1
            return
        }
        switch reason {
        case .protocolNotSupported:
            outboundProtocols.removeValue(forKey: name)
            outboundNames.removeValue(forKey: protocolInt)
            var victims = Set<MessagingSendID>()
            for (id, message) in messages where message.protocolName == name { victims.insert(id) }
            fail(
                victims,
                error: { MessagingError(.protocolNotSupported, "the peer has no handler for \(name) (\($0))") },
                actions: &actions
            )
        case .unknownProtocolInt:
            guard entry.confirmed else {
                // Our frames for it already carry Init: a stale Reset for an earlier Continuation.
                counters.ignoredResets += 1
                return
            }
            entry.confirmed = false
            entry.epoch &+= 1
            outboundProtocols[name] = entry
            // Re-send the fragments in flight for it at once, now with Init.
            for i in inFlight.indices {
                if let message = messages[inFlight[i].id], message.protocolName == name {
                    inFlight[i].retransmitAt = now
                }
            }
            retransmitDue(now: now, lost: false, builder: &builder)
        }
    }

    /// Fails `ids` (those still unfinished), in id order, and forgets their fragments.
    private mutating func fail(
        _ ids: Set<MessagingSendID>,
        error: (MessagingSendID) -> MessagingError,
        actions: inout [MessagingAction]
    ) {
        guard !ids.isEmpty else { return }
        for id in ids.sorted() {
            guard let message = messages.removeValue(forKey: id) else { continue }
            queuedBytes -= message.data.readableBytes
            actions.append(.failed(id, error(id)))
        }
        inFlight.removeAll { record in
            guard ids.contains(record.id) else { return false }
            bytesInFlight -= record.size
            return true
        }
    }

    /// Ends every event: piggybacks control frames and acks, sends new fragments, emits payloads and wakeups.
    private mutating func finish(now: NIODeadline, builder: inout PayloadBuilder, actions: inout [MessagingAction]) {
        for pending in pendingUnreliable {
            // The binding may have been forgotten (Reset) since enqueue: the message is dropped (best effort).
            guard let entry = outboundProtocols[pending.name] else { continue }
            builder.append(dataFrame(pending.name, entry, header: pending.header, data: pending.data).frame)
        }
        pendingUnreliable.removeAll(keepingCapacity: true)
        pump(now: now, builder: &builder)
        for frame in pendingControl { builder.append(frame) }
        pendingControl.removeAll(keepingCapacity: true)
        if ackElicitingPending > 0 || ackImmediately {
            if ackImmediately || ackElicitingPending >= 2 || !builder.isEmpty {
                if let ack = makeAck(now: now) { builder.append(.ack(ack)) }
                ackElicitingPending = 0
                ackImmediately = false
                ackDeadline = nil
                recentSequences.removeAll(keepingCapacity: true)
            } else if ackDeadline == nil {
                let due = now + limits.maxAckDelay
                ackDeadline = due
                noteWakeup(due)
            }
        }
        builder.closeCurrent()
        for (buffer, offsets) in builder.payloads {
            if probedTransports.isEmpty {
                actions.append(.sendPayload(buffer, transportId: nil))
            } else {
                for transportId in probedTransports {
                    var copy = buffer
                    for offset in offsets { copy.setInteger(transportId, at: offset) }
                    actions.append(.sendPayload(copy, transportId: transportId))
                }
            }
        }
        builder.payloads = []
        if wakeupChanged, let wakeup = scheduledWakeup {
            actions.append(.scheduleWakeup(wakeup))
            wakeupChanged = false
        }
    }

    private func makeBuilder() -> PayloadBuilder {
        PayloadBuilder(maxPayload: limits.maxPayload, allocator: allocator, recordsOffsets: !probedTransports.isEmpty)
    }

    private mutating func noteWakeup(_ time: NIODeadline) {
        if let current = scheduledWakeup, current <= time { return }
        scheduledWakeup = time
        wakeupChanged = true
    }

    private func earlier(_ a: NIODeadline?, _ b: NIODeadline) -> NIODeadline {
        guard let a else { return b }
        return min(a, b)
    }

    // MARK: Inbound internals

    private mutating func queueControl(_ frame: MultipacketFrame) {
        if !pendingControl.contains(frame) { pendingControl.append(frame) }
    }

    private mutating func bindInbound(_ protocolInt: UInt16, to name: String) {
        if inboundProtocols.updateValue(name, forKey: protocolInt) == nil {
            inboundOrder.append(protocolInt)
            if inboundOrder.count > limits.maxInboundProtocols, let oldest = inboundOrder.popFirst() {
                inboundProtocols.removeValue(forKey: oldest)
                counters.protocolTableEvictions += 1
            }
        }
    }

    private mutating func unbindInbound(_ protocolInt: UInt16) {
        if inboundProtocols.removeValue(forKey: protocolInt) != nil,
            let index = inboundOrder.firstIndex(of: protocolInt)
        {
            inboundOrder.remove(at: index)
        }
    }

    /// Handles the message part of an Init or Continuation. Returns whether it was new and accepted.
    private mutating func receiveData(
        _ name: String,
        header: MultipacketMessageHeader,
        data: ByteBuffer,
        now: NIODeadline,
        actions: inout [MessagingAction]
    ) -> Bool {
        let sequence = header.sequence
        guard header.reliable else {
            switch receivedUnreliable.insert(sequence) {
            case .inserted: break
            case .duplicate:
                counters.duplicateUnreliable += 1
                return false
            case .tooOld:
                counters.tooOldUnreliable += 1
                return false
            }
            deliver(name, data: data, kind: header.kind, mode: .unreliable, actions: &actions)
            return true
        }
        switch received.classify(sequence) {
        case .tooOld:
            counters.tooOldReliable += 1
            return false
        case .duplicate:
            counters.duplicateReliable += 1
            ackImmediately = true
            noteRecent(sequence)
            return false
        case .inserted:
            break
        }
        if let fragment = header.fragment {
            guard acceptFragment(name, header: header, fragment: fragment, data: data, now: now, actions: &actions)
            else { return false }
        } else {
            deliver(name, data: data, kind: header.kind, mode: .reliable, actions: &actions)
        }
        let previousHighest = received.ranges.last?.upperBound
        let evictions = received.evictions
        received.insert(sequence)
        counters.receivedRangeEvictions += received.evictions - evictions
        if let previousHighest {
            if sequence > previousHighest {
                largestReceivedAt = now
                if sequence != previousHighest + 1 { ackImmediately = true }
            } else {
                ackImmediately = true
            }
        } else {
            largestReceivedAt = now
        }
        ackElicitingPending += 1
        noteRecent(sequence)
        return true
    }

    private mutating func noteRecent(_ sequence: UInt64) {
        if recentSequences.count < 16 { recentSequences.append(sequence) }
    }

    private mutating func deliver(
        _ name: String,
        data: ByteBuffer,
        kind: MessagingMessageKind,
        mode: MessagingDeliveryMode,
        actions: inout [MessagingAction]
    ) {
        // The sender of a reliable one-way message or probe waits for its acknowledgement (its
        // send returns on it): that goes at once, not up to maxAckDelay later. A request's is
        // carried by its reply; nobody waits for a reply's.
        if mode == .reliable {
            switch kind {
            case .oneWay, .probe: ackImmediately = true
            case .request, .reply: break
            }
        }
        if kind == .probe {
            // Answered by the acknowledgement alone: the protocol has a handler.
            counters.probesAnswered += 1
            return
        }
        counters.messagesDelivered += 1
        actions.append(.deliver(MessagingInboundMessage(protocolName: name, data: data, kind: kind, mode: mode)))
    }

    /// Stores one fragment; delivers the message when complete. Returns false when refused (not acked).
    private mutating func acceptFragment(
        _ name: String,
        header: MultipacketMessageHeader,
        fragment: MultipacketFragmentInfo,
        data: ByteBuffer,
        now: NIODeadline,
        actions: inout [MessagingAction]
    ) -> Bool {
        let messageId = header.sequence - UInt64(fragment.index)
        if let slot = partials.index(forKey: messageId) {
            // Compare through a borrowed view: a long-lived copy would force a copy of the buffer below.
            guard partials.values[slot].protocolName == name, partials.values[slot].kind == header.kind,
                partials.values[slot].count == fragment.count,
                partials.values[slot].totalLength == fragment.totalLength
            else {
                counters.inconsistentFragments += 1
                return false
            }
            partials.values[slot].buffer.setBuffer(data, at: fragment.offset)
            partials.values[slot].received += 1
            if partials.values[slot].received == fragment.count {
                let complete = partials.remove(at: slot).value
                releaseReassembly(complete.totalLength)
                deliver(name, data: complete.buffer, kind: complete.kind, mode: .reliable, actions: &actions)
            }
            return true
        }
        if abandoned.contains(messageId) {
            counters.abandonedFragments += 1
            return false
        }
        guard partials.count < limits.maxPartialMessages else {
            counters.partialLimitDrops += 1
            return false
        }
        guard reassemblyBytes + fragment.totalLength <= limits.maxReassemblyBytes else {
            counters.reassemblyBytesDrops += 1
            return false
        }
        if let budget, !budget.reserve(fragment.totalLength) {
            counters.globalBudgetDrops += 1
            return false
        }
        reassemblyBytes += fragment.totalLength
        var buffer = allocator.buffer(capacity: fragment.totalLength)
        // Every byte is overwritten by exactly one fragment before the message is delivered.
        buffer.moveWriterIndex(to: fragment.totalLength)
        buffer.setBuffer(data, at: fragment.offset)
        let expires = now + limits.reassemblyTimeout
        partials[messageId] = Partial(
            protocolName: name,
            kind: header.kind,
            count: fragment.count,
            totalLength: fragment.totalLength,
            received: 1,
            buffer: buffer,
            expires: expires
        )
        noteWakeup(expires)
        return true
    }

    private mutating func releaseReassembly(_ bytes: Int) {
        reassemblyBytes -= bytes
        budget?.release(bytes)
    }

    private mutating func abandon(_ messageId: UInt64) {
        guard limits.maxAbandonedMessages > 0, abandoned.insert(messageId).inserted else { return }
        abandonedOrder.append(messageId)
        if abandonedOrder.count > limits.maxAbandonedMessages, let oldest = abandonedOrder.popFirst() {
            abandoned.remove(oldest)
        }
    }

    /// The Ack to send now: ranges holding recently received numbers, then the highest ones, highest first.
    private func makeAck(now: NIODeadline) -> MultipacketAckFrame? {
        let all = received.ranges
        guard !all.isEmpty else { return nil }
        let capacity = max(limits.maxAckRangesPerFrame, 1)
        var delay: UInt64 = 0
        if let at = largestReceivedAt { delay = UInt64(max((now - at).nanoseconds, 0) / 1000) }
        if all.count <= min(Self.ackTopRanges, capacity) {
            // Every range fits among the leading ones (the usual case: one range): all of them,
            // highest first, and the recently received numbers are in them.
            var ack = MultipacketAckFrame(ranges: Array(all.reversed()), ackDelayMicroseconds: delay)
            while ack.ranges.count > 1 && MultipacketFrameCodec.encodedLength(.ack(ack)) > limits.maxPayload {
                ack.ranges.removeLast()
            }
            return ack
        }
        var chosen: [Int] = []
        chosen.reserveCapacity(capacity)
        // 1. The highest ranges, unbroken (so gaps between them are real gaps: fast retransmit relies on it).
        let top = min(all.count, Self.ackTopRanges, capacity)
        for index in stride(from: all.count - 1, through: all.count - top, by: -1) { chosen.append(index) }
        // 2. The ranges holding numbers received since the last Ack (so duplicates get acknowledged).
        for sequence in recentSequences where chosen.count < capacity {
            if let index = received.rangeIndex(containing: sequence), !chosen.contains(index) { chosen.append(index) }
        }
        // 3. More of the highest ranges.
        var index = all.count - 1 - top
        while chosen.count < capacity && index >= 0 {
            if !chosen.contains(index) { chosen.append(index) }
            index -= 1
        }
        chosen.sort(by: >)
        var ranges: [ClosedRange<UInt64>] = []
        ranges.reserveCapacity(chosen.count)
        for i in chosen { ranges.append(all[i]) }
        if chosen.first != all.count - 1 { delay = 0 }
        var ack = MultipacketAckFrame(ranges: ranges, ackDelayMicroseconds: delay)
        // Only matters for tiny `maxPayload` settings: an Ack must fit one payload.
        while ack.ranges.count > 1 && MultipacketFrameCodec.encodedLength(.ack(ack)) > limits.maxPayload {
            ack.ranges.removeLast()
        }
        return ack
    }
}

extension MessagingMessageKind {
    /// Whether this is a reply to one of our requests.
    var isReply: Bool {
        if case .reply = self { return true }
        return false
    }
}
