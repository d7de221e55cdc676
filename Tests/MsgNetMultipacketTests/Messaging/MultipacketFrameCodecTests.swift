import MsgNetTestSupport
import NIOCore
import Testing

@testable import MsgNetMultipacket

@Suite("Multipacket frame codec")
struct MultipacketFrameCodecTests {
    let codec = MultipacketFrameCodec()

    func encode(_ frames: [MultipacketFrame]) -> [UInt8] {
        var buffer = ByteBuffer()
        for frame in frames {
            let before = buffer.readableBytes
            MultipacketFrameCodec.encode(frame, into: &buffer)
            #expect(buffer.readableBytes - before == MultipacketFrameCodec.encodedLength(frame))
        }
        return Array(buffer.readableBytesView)
    }

    func expectError(_ input: [UInt8], _ code: MessagingError.Code, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(throws: MessagingError.self, sourceLocation: sourceLocation) { try codec.decode(messagingBytes(input)) }
        do {
            _ = try codec.decode(messagingBytes(input))
        } catch {
            #expect(error.code == code, sourceLocation: sourceLocation)
        }
    }

    @Test func initExactBytes() throws {
        let header = MultipacketMessageHeader(sequence: 300, reliable: true, kind: .request(id: 5))
        let frame = MultipacketFrame.initiate(
            transportId: 0x0102, protocolName: "/a", protocolInt: 7, header: header, data: messagingBytes([0xAA, 0xBB]))
        let encoded = encode([frame])
        #expect(
            encoded == [
                0x01, 0x01, 0x02, 0x02, 0x2F, 0x61, 0x00, 0x07,  // type, transportId, len, "/a", protocolInt
                0xAC, 0x02, 0x03, 0x05,  // seq 300, flags reliable|request, request id 5
                0x02, 0xAA, 0xBB,  // data length, data
            ])
        #expect(try codec.decode(messagingBytes(encoded)) == [frame])
    }

    @Test func continuationFragmentExactBytes() throws {
        let fragment = MultipacketFragmentInfo(index: 1, count: 2, totalLength: 3)
        let header = MultipacketMessageHeader(sequence: 9, reliable: true, kind: .reply(to: 1), fragment: fragment)
        let frame = MultipacketFrame.continuation(protocolInt: 0x0203, header: header, data: messagingBytes([0x11]))
        let encoded = encode([frame])
        #expect(encoded == [0x03, 0x02, 0x03, 0x09, 0x0D, 0x01, 0x01, 0x02, 0x03, 0x01, 0x11])
        #expect(try codec.decode(messagingBytes(encoded)) == [frame])
    }

    @Test func controlFramesExactBytes() throws {
        let frames: [MultipacketFrame] = [
            .transportAck(transportId: 0xBEEF),
            .reset(protocolInt: 3, reason: .protocolNotSupported),
            .reset(protocolInt: 4, reason: .unknownProtocolInt),
            .ack(MultipacketAckFrame(ranges: [10...12, 5...7, 0...0], ackDelayMicroseconds: 200)),
            .padding(length: 3),
        ]
        let encoded = encode(frames)
        #expect(
            encoded == [
                0x02, 0xBE, 0xEF,
                0x04, 0x00, 0x03, 0x01,
                0x04, 0x00, 0x04, 0x00,
                // Ack: largest 12, delay 200, 2 more ranges, first 2, gap 10-7-2=1 len 2, gap 5-0-2=3 len 0
                0x05, 0x0C, 0xC8, 0x01, 0x02, 0x02, 0x01, 0x02, 0x03, 0x00,
                0x00, 0x00, 0x00, 0x00,
            ])
        #expect(try codec.decode(messagingBytes(encoded)) == frames)
    }

    @Test func unreliableOneWayRoundTrip() throws {
        let header = MultipacketMessageHeader(sequence: 0, reliable: false, kind: .oneWay)
        let frame = MultipacketFrame.continuation(protocolInt: 1, header: header, data: ByteBuffer())
        let encoded = encode([frame])
        #expect(encoded == [0x03, 0x00, 0x01, 0x00, 0x00, 0x00])
        #expect(try codec.decode(messagingBytes(encoded)) == [frame])
    }

    @Test func probeExactBytes() throws {
        let header = MultipacketMessageHeader(sequence: 4, reliable: true, kind: .probe)
        let frame = MultipacketFrame.initiate(
            transportId: 0, protocolName: "/a", protocolInt: 1, header: header, data: ByteBuffer())
        let encoded = encode([frame])
        // type, transportId, "/a", protocolInt, seq 4, flags reliable|probe (0x07), data length 0
        #expect(encoded == [0x01, 0x00, 0x00, 0x02, 0x2F, 0x61, 0x00, 0x01, 0x04, 0x07, 0x00])
        #expect(try codec.decode(messagingBytes(encoded)) == [frame])
    }

    @Test func unknownFrameTypeRejectsWholePayload() {
        let good = encode([.transportAck(transportId: 1)])
        expectError(good + [0x06], .unknownFrameType)
        expectError([0xFF], .unknownFrameType)
    }

    @Test func malformedInputs() {
        expectError([], .malformedFrame)  // empty payload
        expectError([0x02, 0x01], .malformedFrame)  // truncated transport ack
        expectError([0x04, 0x00, 0x01, 0x09], .malformedFrame)  // unknown reset reason
        expectError([0x01, 0x00, 0x00, 0x00], .malformedFrame)  // empty protocol name
        expectError([0x01, 0x00, 0x00, 0x02, 0xC3, 0x28, 0x00, 0x01, 0x00, 0x00, 0x00], .malformedFrame)  // bad UTF-8
        expectError([0x03, 0x00, 0x01, 0x00, 0x10, 0x00], .malformedFrame)  // reserved flag bit
        expectError([0x03, 0x00, 0x01, 0x00, 0x06, 0x00], .malformedFrame)  // probe (kind 11) unreliable
        expectError([0x03, 0x00, 0x01, 0x00, 0x07, 0x01, 0xAA], .malformedFrame)  // probe with data
        // fragmented probe
        expectError([0x03, 0x00, 0x01, 0x02, 0x0F, 0x00, 0x02, 0x02, 0x01, 0x00], .malformedFrame)
        // unreliable fragment
        expectError([0x03, 0x00, 0x01, 0x00, 0x08, 0x00, 0x02, 0x02, 0x01, 0x00], .malformedFrame)
        expectError([0x03, 0x00, 0x01, 0x00, 0x01, 0x05], .malformedFrame)  // data length past the end
        expectError([0x03, 0x00, 0x01, 0x80, 0x00, 0x01, 0x00], .malformedFrame)  // non-minimal varint
        expectError([0x05, 0x01, 0x00, 0x00, 0x02], .malformedFrame)  // first range below zero
        expectError([0x05, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00], .malformedFrame)  // gap below zero
    }

    @Test func protocolNameLimit() {
        var input: [UInt8] = [0x01, 0x00, 0x00]
        input += [0x81, 0x08]  // 1025
        input += [UInt8](repeating: 0x61, count: 1025) + [0x00, 0x01, 0x00, 0x00, 0x00]
        let codec = MultipacketFrameCodec(
            limits: {
                var l = MessagingLimits(); l.maxPayload = 2000; return l
            }())
        #expect(throws: MessagingError.self) { try codec.decode(messagingBytes(input)) }
        expectError([UInt8](repeating: 0, count: 1201), .malformedFrame)  // payload over maxPayload
    }

    @Test func fragmentLimits() {
        func fragmentFrame(index: UInt8, count: [UInt8], total: [UInt8], data: Int) -> [UInt8] {
            [0x03, 0x00, 0x01, 0x05, 0x09, index] + count + total + [UInt8(data)] + [UInt8](repeating: 7, count: data)
        }
        // count 4097 > ceil(1 MiB / 256) = 4096
        expectError(fragmentFrame(index: 0, count: [0x81, 0x20], total: [0x80, 0x80, 0x40], data: 1), .malformedFrame)
        // count 1 is not a fragmented message
        expectError(fragmentFrame(index: 0, count: [0x01], total: [0x01], data: 1), .malformedFrame)
        // index ≥ count
        expectError(fragmentFrame(index: 2, count: [0x02], total: [0x04], data: 2), .malformedFrame)
        // total over 1 MiB
        expectError(fragmentFrame(index: 0, count: [0x02], total: [0x81, 0x80, 0x40], data: 1), .malformedFrame)
        // wrong data length for the fragment (total 5, count 2 → sizes 3 and 2)
        expectError(fragmentFrame(index: 0, count: [0x02], total: [0x05], data: 2), .malformedFrame)
        // index above sequence (message id would be negative): seq 5, index 6 of 8
        expectError(fragmentFrame(index: 6, count: [0x08], total: [0x10], data: 2), .malformedFrame)
        // a consistent one decodes
        #expect(
            (try? codec.decode(messagingBytes(fragmentFrame(index: 1, count: [0x02], total: [0x05], data: 2)))) != nil)
    }

    @Test func ackRangeCountLimit() {
        var input: [UInt8] = [0x05, 0x7F, 0x00, 32, 0x00]
        for _ in 0..<32 { input += [0x00, 0x00] }
        expectError(input, .malformedFrame)
    }

    @Test func everyTruncationOfAValidPayloadIsRejectedOrShorter() throws {
        let fragment = MultipacketFragmentInfo(index: 0, count: 2, totalLength: 6)
        let frames: [MultipacketFrame] = [
            .ack(MultipacketAckFrame(ranges: [100...200, 1...50], ackDelayMicroseconds: 77)),
            .initiate(
                transportId: 9, protocolName: "/x/1.0.0", protocolInt: 3,
                header: MultipacketMessageHeader(sequence: 2, reliable: true, kind: .oneWay, fragment: fragment),
                data: messagingBytes([1, 2, 3])),
            .reset(protocolInt: 2, reason: .unknownProtocolInt),
        ]
        let encoded = encode(frames)
        #expect(try codec.decode(messagingBytes(encoded)) == frames)
        for cut in 1..<encoded.count {
            // A prefix either fails cleanly or (at a frame boundary) decodes to a prefix of the frames.
            if let decoded = try? codec.decode(messagingBytes(Array(encoded[..<cut]))) {
                #expect(Array(frames.prefix(decoded.count)) == decoded)
            }
        }
    }

    @Test func randomInputNeverCrashes() {
        var rng = SplitMix64(seed: 0xC0DEC)
        var decodedSomething = 0
        for _ in 0..<5000 {
            let length = Int(rng.next() % 64) + 1
            var input: [UInt8] = []
            for _ in 0..<length { input.append(UInt8(truncatingIfNeeded: rng.next())) }
            // Bias the first byte towards known types so the deeper paths are exercised.
            input[0] = UInt8(rng.next() % 7)
            if let frames = try? codec.decode(messagingBytes(input)) {
                decodedSomething += 1
                // Padding content is ignored (not re-encoded as is); everything else is canonical.
                if case .padding = frames.last { continue }
                // What decodes re-encodes to exactly the same bytes (canonical encoding).
                var buffer = ByteBuffer()
                for frame in frames { MultipacketFrameCodec.encode(frame, into: &buffer) }
                #expect(Array(buffer.readableBytesView) == input)
            }
        }
        #expect(decodedSomething > 0)
    }

    @Test func randomFramesRoundTrip() throws {
        var rng = SplitMix64(seed: 42)
        for _ in 0..<2000 {
            let frame: MultipacketFrame
            let kinds: [MessagingMessageKind] = [.oneWay, .request(id: rng.next() >> 2), .reply(to: rng.next() % 300)]
            let kind = kinds[Int(rng.next() % 3)]
            let sequence = rng.next() >> UInt64(1 + rng.next() % 63)
            let data = messagingPattern(Int(rng.next() % 1000), length: Int(rng.next() % 100))
            switch rng.next() % 5 {
            case 0:
                let header = MultipacketMessageHeader(sequence: sequence, reliable: rng.next() % 2 == 0, kind: kind)
                frame = .continuation(protocolInt: UInt16(truncatingIfNeeded: rng.next()), header: header, data: data)
            case 1:
                let header = MultipacketMessageHeader(sequence: sequence, reliable: true, kind: kind)
                frame = .initiate(
                    transportId: UInt16(truncatingIfNeeded: rng.next()), protocolName: "/p/\(rng.next() % 99)",
                    protocolInt: UInt16(truncatingIfNeeded: rng.next()), header: header, data: data)
            case 2:
                var ranges: [ClosedRange<UInt64>] = []
                var high = rng.next() >> 4
                for _ in 0..<(1 + rng.next() % 8) {
                    let low = high - min(high, rng.next() % 1000)
                    ranges.append(low...high)
                    guard low >= 2 + 1000 else { break }
                    high = low - 2 - rng.next() % 1000
                }
                frame = .ack(MultipacketAckFrame(ranges: ranges, ackDelayMicroseconds: rng.next() % 100_000))
            case 3:
                frame = .reset(protocolInt: UInt16(truncatingIfNeeded: rng.next()), reason: .unknownProtocolInt)
            default:
                frame = .transportAck(transportId: UInt16(truncatingIfNeeded: rng.next()))
            }
            #expect(try codec.decode(messagingBytes(encode([frame]))) == [frame])
        }
    }
}
