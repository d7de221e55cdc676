import MsgNetTestSupport
import NIOCore
import Testing

@testable import MsgNetMultipacket

/// Hand-made frames from a hostile (but authenticated) peer.
private func payload(_ frames: [MultipacketFrame]) -> ByteBuffer {
    var buffer = ByteBuffer()
    for frame in frames { MultipacketFrameCodec.encode(frame, into: &buffer) }
    return buffer
}

private func fragmentFrame(
    protocolInt: UInt16 = 1,
    sequence: UInt64,
    index: Int,
    count: Int,
    total: Int,
    name: String? = nil
) -> MultipacketFrame {
    let info = MultipacketFragmentInfo(index: index, count: count, totalLength: total)
    let header = MultipacketMessageHeader(sequence: sequence, reliable: true, kind: .oneWay, fragment: info)
    let data = messagingPattern(Int(sequence), length: info.length)
    if let name {
        return .initiate(transportId: 0, protocolName: name, protocolInt: protocolInt, header: header, data: data)
    }
    return .continuation(protocolInt: protocolInt, header: header, data: data)
}

private func acks(_ actions: [MessagingAction]) throws -> [MultipacketAckFrame] {
    try messagingPayloads(actions).flatMap { try messagingFrames($0) }.compactMap {
        if case .ack(let ack) = $0 { return ack }
        return nil
    }
}

@Suite("Messaging limits and hostile input")
struct MessagingLimitsTests {
    let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)

    @Test func floodOfInitsKeepsTheProtocolTableBounded() throws {
        var b = makeMessagingMachine()
        for i in 0..<2000 {
            let header = MultipacketMessageHeader(sequence: UInt64(i), reliable: false, kind: .oneWay)
            let frame = MultipacketFrame.initiate(
                transportId: 0, protocolName: "/flood/\(i)", protocolInt: UInt16(i), header: header,
                data: messagingBytes([1]))
            _ = b.onPayload(payload([frame]), now: t0)
        }
        #expect(b.inboundProtocolCount == 64)
        #expect(b.counters.protocolTableEvictions == 2000 - 64)
        // An evicted int is now unknown: its Continuation is answered with Reset(unknownProtocolInt).
        let header = MultipacketMessageHeader(sequence: 5000, reliable: false, kind: .oneWay)
        let actions = b.onPayload(
            payload([.continuation(protocolInt: 3, header: header, data: messagingBytes([1]))]), now: t0)
        #expect(
            try messagingPayloads(actions).flatMap { try messagingFrames($0) } == [
                .reset(protocolInt: 3, reason: .unknownProtocolInt)
            ])
        #expect(b.counters.unknownProtocolInts == 1)
    }

    @Test func malformedAndUnknownPayloadsAreCountedAndDropped() {
        var b = makeMessagingMachine()
        var rng = SplitMix64(seed: 77)
        var dropped = 0
        for _ in 0..<3000 {
            var input: [UInt8] = [UInt8(rng.next() % 8)]
            for _ in 0..<(rng.next() % 40) { input.append(UInt8(truncatingIfNeeded: rng.next())) }
            if (try? MultipacketFrameCodec().decode(messagingBytes(input))) == nil { dropped += 1 }
            _ = b.onPayload(messagingBytes(input), now: t0)
        }
        #expect(b.counters.malformedPayloads + b.counters.unknownFrameTypes == dropped)
        #expect(b.counters.unknownFrameTypes > 0)
        #expect(b.inboundProtocolCount <= 64)
        #expect(b.partialMessageCount <= 64)
        #expect(b.reassemblyBytesInUse <= 4 << 20)
    }

    @Test func oversizeFragmentCountIsRejectedWholePayload() {
        var b = makeMessagingMachine()
        // count 4097 is over ceil(1 MiB / 256 B); the frame is hand-encoded since the codec refuses it.
        let input: [UInt8] = [0x01, 0, 0, 2, 0x2F, 0x66, 0, 1, 0, 0x09, 0, 0x81, 0x20, 0x81, 0x20, 1, 7]
        let actions = b.onPayload(messagingBytes(input), now: t0)
        #expect(actions.isEmpty)
        #expect(b.counters.malformedPayloads == 1)
        #expect(b.partialMessageCount == 0)
    }

    /// Reliable one-fragment messages with the given sequence numbers, one payload each; the
    /// machine's actions.
    private func receive(_ sequences: [UInt64], on machine: inout MessagingMachine, now: NIODeadline)
        -> [MessagingAction]
    {
        var actions: [MessagingAction] = []
        for (i, sequence) in sequences.enumerated() {
            let header = MultipacketMessageHeader(sequence: sequence, reliable: true, kind: .oneWay)
            let frame: MultipacketFrame =
                i == 0
                ? .initiate(
                    transportId: 0, protocolName: "/a", protocolInt: 1, header: header, data: messagingBytes([1]))
                : .continuation(protocolInt: 1, header: header, data: messagingBytes([1]))
            actions += machine.onPayload(payload([frame]), now: now)
        }
        return actions
    }

    @Test("an Ack names every range, highest first, while they fit its leading ranges")
    func ackOfFewRanges() throws {
        var b = makeMessagingMachine()
        // Ranges 0...1, 3...3, 5...7 (gaps at 2 and 4), received out of order.
        var actions = receive([5, 0, 7, 3, 1, 6], on: &b, now: t0)
        actions += b.onTimer(now: t0 + .seconds(1))
        // The last Ack sent covers everything received.
        let ack = try #require(try acks(actions).last)
        #expect(ack.ranges == [5...7, 3...3, 0...1])
    }

    @Test("with more ranges than an Ack leads with, it names the highest ones unbroken, then recent ones")
    func ackOfManyRanges() throws {
        var limits = MessagingLimits()
        limits.maxAckRangesPerFrame = 18
        var b = makeMessagingMachine(limits)
        // Forty one-number ranges: 0, 2, 4, …, 78; acknowledged (the first Ack clears "recent").
        _ = receive((0..<40).map { UInt64($0 * 2) }, on: &b, now: t0)
        _ = b.onTimer(now: t0 + .seconds(1))
        // A duplicate of an old number (acknowledged at once): that Ack must name its range too.
        var actions = receive([10], on: &b, now: t0 + .seconds(2))
        actions += b.onTimer(now: t0 + .seconds(3))
        let ack = try #require(try acks(actions).last)
        #expect(ack.ranges.count == 18)
        // The sixteen highest, unbroken: 78, 76, …, 48.
        let highest: [ClosedRange<UInt64>] = (0..<16).map { (i: Int) -> ClosedRange<UInt64> in
            let n = UInt64(78 - 2 * i)
            return n...n
        }
        #expect(Array(ack.ranges.prefix(16)) == highest)
        #expect(ack.ranges.contains(10...10))
        // Highest first throughout.
        #expect(zip(ack.ranges, ack.ranges.dropFirst()).allSatisfy { $0.lowerBound > $1.upperBound })
    }

    @Test func partialMessageLimitDropsAndCounts() throws {
        var limits = MessagingLimits()
        limits.maxPartialMessages = 4
        var b = makeMessagingMachine(limits)
        var seq: UInt64 = 0
        var frames: [MultipacketFrame] = [fragmentFrame(sequence: 0, index: 0, count: 3, total: 300, name: "/f")]
        seq = 3
        for _ in 0..<10 {
            frames.append(fragmentFrame(sequence: seq, index: 0, count: 3, total: 300))
            seq += 3
        }
        var actions: [MessagingAction] = []
        for frame in frames { actions += b.onPayload(payload([frame]), now: t0) }
        #expect(b.partialMessageCount == 4)
        #expect(b.counters.partialLimitDrops == 7)
        // Refused fragments are not acknowledged: the Acks name only the 4 accepted sequence numbers.
        actions += b.onTimer(now: t0 + .seconds(1))
        let ackList = try acks(actions)
        let acked = ackList.flatMap { $0.ranges.flatMap { Array($0) } }
        #expect(Set(acked) == [0, 3, 6, 9])
    }

    @Test func perPeerReassemblyBytesLimit() {
        var limits = MessagingLimits()
        limits.maxReassemblyBytes = 1 << 20
        var b = makeMessagingMachine(limits)
        _ = b.onPayload(
            payload([fragmentFrame(sequence: 0, index: 0, count: 1000, total: 600_000, name: "/f")]), now: t0)
        _ = b.onPayload(payload([fragmentFrame(sequence: 1000, index: 0, count: 1000, total: 600_000)]), now: t0)
        #expect(b.partialMessageCount == 1)
        #expect(b.reassemblyBytesInUse == 600_000)
        #expect(b.counters.reassemblyBytesDrops == 1)
    }

    @Test func globalBudgetIsSharedAcrossMachines() {
        let budget = MessagingReassemblyBudget(capacity: 1_000_000)
        var b1 = makeMessagingMachine(budget: budget)
        var b2 = makeMessagingMachine(budget: budget)
        _ = b1.onPayload(
            payload([fragmentFrame(sequence: 0, index: 0, count: 1000, total: 700_000, name: "/f")]), now: t0)
        _ = b2.onPayload(
            payload([fragmentFrame(sequence: 0, index: 0, count: 1000, total: 700_000, name: "/f")]), now: t0)
        #expect(budget.reserved == 700_000)
        #expect(b1.partialMessageCount == 1)
        #expect(b2.partialMessageCount == 0)
        #expect(b2.counters.globalBudgetDrops == 1)
        // The reassembly timeout returns the bytes; late fragments of the dropped message are not accepted.
        _ = b1.onTimer(now: t0 + .seconds(15))
        #expect(budget.reserved == 0)
        #expect(b1.counters.reassemblyTimeouts == 1)
        _ = b1.onPayload(
            payload([fragmentFrame(sequence: 1, index: 1, count: 1000, total: 700_000)]), now: t0 + .seconds(16))
        #expect(b1.counters.abandonedFragments == 1)
        #expect(b1.partialMessageCount == 0)
        // Closing returns a machine's reservations too.
        _ = b2.onPayload(
            payload([fragmentFrame(sequence: 5, index: 0, count: 1000, total: 700_000, name: "/f")]), now: t0)
        #expect(budget.reserved == 700_000)
        _ = b2.close()
        #expect(budget.reserved == 0)
    }

    @Test func inconsistentFragmentIsRefused() {
        var b = makeMessagingMachine()
        _ = b.onPayload(payload([fragmentFrame(sequence: 0, index: 0, count: 3, total: 300, name: "/f")]), now: t0)
        // Same message id (seq 1 − index 1 = 0) but a different length.
        _ = b.onPayload(payload([fragmentFrame(sequence: 1, index: 1, count: 3, total: 600)]), now: t0)
        #expect(b.counters.inconsistentFragments == 1)
        #expect(b.partialMessageCount == 1)
    }

    @Test func receivedRangesStayBounded() {
        var limits = MessagingLimits()
        limits.maxReceivedRanges = 16
        var b = makeMessagingMachine(limits)
        let header = MultipacketMessageHeader(sequence: 0, reliable: true, kind: .oneWay)
        _ = b.onPayload(
            payload([
                .initiate(transportId: 0, protocolName: "/r", protocolInt: 1, header: header, data: messagingBytes([]))
            ]),
            now: t0)
        for i in 1..<500 {
            let h = MultipacketMessageHeader(sequence: UInt64(i * 2), reliable: true, kind: .oneWay)
            _ = b.onPayload(payload([.continuation(protocolInt: 1, header: h, data: messagingBytes([]))]), now: t0)
        }
        #expect(b.receivedRangeCount == 16)
        #expect(b.counters.receivedRangeEvictions == 500 - 16)
        // A number below the forgotten floor is dropped, not delivered, not acknowledged.
        let h = MultipacketMessageHeader(sequence: 1, reliable: true, kind: .oneWay)
        let actions = b.onPayload(
            payload([.continuation(protocolInt: 1, header: h, data: messagingBytes([]))]), now: t0)
        #expect(!actions.contains { if case .deliver = $0 { return true } else { return false } })
        #expect(b.counters.tooOldReliable == 1)
    }

    @Test func acksForUnsentSequenceNumbersAreIgnored() throws {
        var a = makeMessagingMachine()
        let sent = try a.send(messagingBytes([1]), protocol: "/x", now: t0)
        let bogus = MultipacketAckFrame(ranges: [0...50], ackDelayMicroseconds: 0)
        let actions = a.onPayload(payload([.ack(bogus)]), now: t0)
        #expect(!actions.contains(.delivered(sent.id)))
        #expect(a.counters.invalidAcks == 1)
        #expect(a.inFlightCount == 1)
    }

    @Test func staleResetsAreIgnored() throws {
        var a = makeMessagingMachine()
        _ = try a.send(messagingBytes([1]), protocol: "/x", now: t0)
        // Reset(unknownProtocolInt) while every frame for it already carries Init: stale, ignored.
        let actions = a.onPayload(
            payload([
                .reset(protocolInt: 1, reason: .unknownProtocolInt),
                .reset(protocolInt: 77, reason: .protocolNotSupported),
            ]), now: t0)
        #expect(!actions.contains { if case .failed = $0 { return true } else { return false } })
        #expect(a.counters.ignoredResets == 2)
        #expect(a.pendingSendCount == 1)
    }
}

@Suite("Messaging building blocks")
struct MessagingBuildingBlockTests {
    @Test func rttEstimatorFollowsRFC6298() {
        var rtt = MessagingRTTEstimator(initialRTO: .seconds(1), minRTO: .milliseconds(200), maxRTO: .seconds(10))
        #expect(rtt.rto == .seconds(1))
        #expect(rtt.smoothedRTT == nil)
        rtt.addSample(.milliseconds(100))
        // SRTT = R, RTTVAR = R/2, RTO = SRTT + 4·RTTVAR = 300 ms.
        #expect(rtt.smoothedRTT == .milliseconds(100))
        #expect(rtt.rttVariation == .milliseconds(50))
        #expect(rtt.rto == .milliseconds(300))
        rtt.addSample(.milliseconds(200))
        // RTTVAR = 3/4·50 + 1/4·|100−200| = 62.5 ms; SRTT = 7/8·100 + 1/8·200 = 112.5 ms; RTO = 362.5 ms.
        #expect(rtt.rttVariation == .microseconds(62_500))
        #expect(rtt.smoothedRTT == .microseconds(112_500))
        #expect(rtt.rto == .microseconds(362_500))
        #expect(rtt.backedOff(1) == .microseconds(725_000))
        #expect(rtt.backedOff(10) == .seconds(10))
        #expect(rtt.backedOff(1000) == .seconds(10))
        for _ in 0..<100 { rtt.addSample(.microseconds(10)) }
        #expect(rtt.rto == .milliseconds(200))
        rtt.addSample(.seconds(-5))
        #expect(rtt.rto >= .milliseconds(200))
    }

    @Test func sequenceSetMergesAndBounds() {
        var set = MessagingSequenceSet(maxRanges: 3)
        #expect(set.insert(5) == .inserted)
        #expect(set.insert(5) == .duplicate)
        #expect(set.insert(7) == .inserted)
        #expect(set.insert(6) == .inserted)
        #expect(set.ranges == [5...7])
        #expect(set.insert(4) == .inserted)
        #expect(set.insert(8) == .inserted)
        #expect(set.ranges == [4...8])
        #expect(set.insert(10) == .inserted)
        #expect(set.insert(12) == .inserted)
        #expect(set.insert(0) == .inserted)
        // Four ranges > 3: the lowest is forgotten.
        #expect(set.ranges == [4...8, 10...10, 12...12])
        #expect(set.insert(0) == .tooOld)
        #expect(set.evictions == 1)
        #expect(set.insert(3) == .inserted)
        #expect(set.ranges == [3...8, 10...10, 12...12])
    }

    @Test func replayWindowSlides() {
        var window = MessagingReplayWindow(size: 128)
        var rng = SplitMix64(seed: 5)
        var seen = Set<UInt64>()
        var highest: UInt64 = 0
        for _ in 0..<20_000 {
            let seq = rng.next() % 2000 + (highest > 100 ? highest - 100 : 0)
            let result = window.insert(seq)
            if seq + 128 <= highest && !seen.contains(seq) {
                #expect(result == .tooOld)
            } else if seq + 128 > highest || seq > highest {
                #expect(result == (seen.contains(seq) ? .duplicate : .inserted))
                seen.insert(seq)
                highest = max(highest, seq)
            }
        }
    }
}
