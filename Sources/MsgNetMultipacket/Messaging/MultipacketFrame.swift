import MsgNetCore
import NIOCore

/// What a message is: a one-way message, a request with an id, the reply to a request, or a
/// protocol probe.
package enum MessagingMessageKind: Hashable, Sendable {
    /// A message that expects no reply.
    case oneWay
    /// A request; the peer's reply carries the same id in `.reply(to:)`.
    case request(id: UInt64)
    /// The reply to the peer's request `id`.
    case reply(to: UInt64)
    /// Asks whether the peer handles the protocol, without a message: reliable, empty, never
    /// delivered. The peer acknowledges it when it has a handler and answers Reset
    /// (protocolNotSupported) when not, as for any Init.
    case probe
}

/// Where a fragment sits in its message.
package struct MultipacketFragmentInfo: Hashable, Sendable {
    /// 0-based index, `< count`.
    package var index: Int
    /// Number of fragments, 2...`MessagingLimits.maxFragmentCount`.
    package var count: Int
    /// Length of the whole message in bytes.
    package var totalLength: Int

    /// Creates fragment info.
    package init(index: Int, count: Int, totalLength: Int) {
        self.index = index
        self.count = count
        self.totalLength = totalLength
    }

    /// Size of every fragment but the last: `ceil(totalLength / count)`.
    package var fragmentSize: Int { (totalLength + count - 1) / count }

    /// Length of fragment `index`.
    package var length: Int { index == count - 1 ? totalLength - (count - 1) * fragmentSize : fragmentSize }

    /// Byte offset of fragment `index` in the message.
    package var offset: Int { index * fragmentSize }
}

/// The message header carried by Init and Continuation frames.
package struct MultipacketMessageHeader: Hashable, Sendable {
    /// Per-direction sequence number; reliable and unreliable frames count separately.
    /// For a fragment, the message id is `sequence - fragment.index`.
    package var sequence: UInt64
    /// Reliable (acknowledged) or unreliable.
    package var reliable: Bool
    /// One-way, request or reply (with the correlation id).
    package var kind: MessagingMessageKind
    /// Fragment position, nil for a message in one frame.
    package var fragment: MultipacketFragmentInfo?

    /// Creates a header.
    package init(sequence: UInt64, reliable: Bool, kind: MessagingMessageKind, fragment: MultipacketFragmentInfo? = nil)
    {
        self.sequence = sequence
        self.reliable = reliable
        self.kind = kind
        self.fragment = fragment
    }
}

/// Why a Reset was sent.
package enum MultipacketResetReason: UInt8, Hashable, Sendable {
    /// A Continuation named a protocolInt the receiver does not know (any more): re-send with Init.
    case unknownProtocolInt = 0
    /// The receiver has no handler for the protocol named by Init: fail the sends.
    case protocolNotSupported = 1
}

/// The selective acknowledgement of reliable sequence numbers.
package struct MultipacketAckFrame: Hashable, Sendable {
    /// Disjoint, non-adjacent ranges of received sequence numbers, highest first.
    package var ranges: [ClosedRange<UInt64>]
    /// Microseconds between receiving the highest acknowledged sequence number and sending this Ack.
    package var ackDelayMicroseconds: UInt64

    /// Creates an Ack; `ranges` must be non-empty, highest first, with gaps of at least one number.
    package init(ranges: [ClosedRange<UInt64>], ackDelayMicroseconds: UInt64) {
        self.ranges = ranges
        self.ackDelayMicroseconds = ackDelayMicroseconds
    }
}

/// One frame inside a decrypted session payload. Byte layouts: `docs/multipacket.md (Part C)`.
package enum MultipacketFrame: Hashable, Sendable {
    /// Type 0x00: the rest of the payload is padding.
    case padding(length: Int)
    /// Type 0x01: binds `protocolName` to `protocolInt` for this direction and carries a message (fragment).
    case initiate(
        transportId: UInt16,
        protocolName: String,
        protocolInt: UInt16,
        header: MultipacketMessageHeader,
        data: ByteBuffer
    )
    /// Type 0x02: "I received your Init tagged `transportId` first" (transport consolidation).
    case transportAck(transportId: UInt16)
    /// Type 0x03: a message (fragment) for a protocolInt named earlier by Init.
    case continuation(protocolInt: UInt16, header: MultipacketMessageHeader, data: ByteBuffer)
    /// Type 0x04: rejects a protocolInt.
    case reset(protocolInt: UInt16, reason: MultipacketResetReason)
    /// Type 0x05: selective acknowledgement of reliable sequence numbers.
    case ack(MultipacketAckFrame)
}

/// Frame type bytes.
enum MessagingFrameType: UInt8 {
    case padding = 0x00
    case initiate = 0x01
    case transportAck = 0x02
    case continuation = 0x03
    case reset = 0x04
    case ack = 0x05
}

/// Encodes and strictly decodes the frames of one payload. Pure; limits come from `MessagingLimits`.
package struct MultipacketFrameCodec: Sendable {
    /// The limits enforced by `decode`.
    package let limits: MessagingLimits

    /// Creates a codec enforcing `limits`.
    package init(limits: MessagingLimits = MessagingLimits()) {
        self.limits = limits
    }

    // MARK: Flags

    static let flagReliable: UInt8 = 0x01
    static let kindMask: UInt8 = 0x06
    static let kindRequest: UInt8 = 0x02
    static let kindReply: UInt8 = 0x04
    static let kindProbe: UInt8 = 0x06
    static let flagFragment: UInt8 = 0x08

    // MARK: Encoding

    /// Appends `frame` to `buffer`. Returns the writer offset of an Init's transportId field (else nil),
    /// so a payload copy can be re-tagged for another transport.
    @discardableResult
    package static func encode(_ frame: MultipacketFrame, into buffer: inout ByteBuffer) -> Int? {
        switch frame {
        case .padding(let length):
            buffer.writeInteger(MessagingFrameType.padding.rawValue)
            if length > 0 { buffer.writeRepeatingByte(0, count: length) }
            return nil
        case .initiate(let transportId, let name, let protocolInt, let header, let data):
            buffer.writeInteger(MessagingFrameType.initiate.rawValue)
            let offset = buffer.writerIndex
            buffer.writeInteger(transportId)
            UVarint.write(UInt64(name.utf8.count), to: &buffer)
            buffer.writeString(name)
            buffer.writeInteger(protocolInt)
            writeMessage(header, data: data, into: &buffer)
            return offset
        case .transportAck(let transportId):
            buffer.writeInteger(MessagingFrameType.transportAck.rawValue)
            buffer.writeInteger(transportId)
            return nil
        case .continuation(let protocolInt, let header, let data):
            buffer.writeInteger(MessagingFrameType.continuation.rawValue)
            buffer.writeInteger(protocolInt)
            writeMessage(header, data: data, into: &buffer)
            return nil
        case .reset(let protocolInt, let reason):
            buffer.writeInteger(MessagingFrameType.reset.rawValue)
            buffer.writeInteger(protocolInt)
            buffer.writeInteger(reason.rawValue)
            return nil
        case .ack(let ack):
            buffer.writeInteger(MessagingFrameType.ack.rawValue)
            writeAck(ack, into: &buffer)
            return nil
        }
    }

    /// The number of bytes `encode` writes for `frame`.
    package static func encodedLength(_ frame: MultipacketFrame) -> Int {
        switch frame {
        case .padding(let length):
            return 1 + length
        case .initiate(_, let name, _, let header, let data):
            let n = name.utf8.count
            return 1 + 2 + UVarint.encodedLength(UInt64(n)) + n + 2
                + messageLength(header, dataLength: data.readableBytes)
        case .transportAck:
            return 3
        case .continuation(_, let header, let data):
            return 1 + 2 + messageLength(header, dataLength: data.readableBytes)
        case .reset:
            return 4
        case .ack(let ack):
            return 1 + ackLength(ack)
        }
    }

    static func messageLength(_ header: MultipacketMessageHeader, dataLength: Int) -> Int {
        var n = UVarint.encodedLength(header.sequence) + 1
        switch header.kind {
        case .oneWay, .probe: break
        case .request(let id), .reply(let id): n += UVarint.encodedLength(id)
        }
        if let f = header.fragment {
            n += UVarint.encodedLength(UInt64(f.index)) + UVarint.encodedLength(UInt64(f.count))
            n += UVarint.encodedLength(UInt64(f.totalLength))
        }
        return n + UVarint.encodedLength(UInt64(dataLength)) + dataLength
    }

    private static func writeMessage(
        _ header: MultipacketMessageHeader, data: ByteBuffer, into buffer: inout ByteBuffer
    ) {
        UVarint.write(header.sequence, to: &buffer)
        var flags: UInt8 = header.reliable ? flagReliable : 0
        var correlation: UInt64?
        switch header.kind {
        case .oneWay: break
        case .request(let id):
            flags |= kindRequest
            correlation = id
        case .reply(let id):
            flags |= kindReply
            correlation = id
        case .probe:
            flags |= kindProbe
        }
        if header.fragment != nil { flags |= flagFragment }
        buffer.writeInteger(flags)
        if let correlation { UVarint.write(correlation, to: &buffer) }
        if let f = header.fragment {
            UVarint.write(UInt64(f.index), to: &buffer)
            UVarint.write(UInt64(f.count), to: &buffer)
            UVarint.write(UInt64(f.totalLength), to: &buffer)
        }
        UVarint.write(UInt64(data.readableBytes), to: &buffer)
        var data = data
        buffer.writeBuffer(&data)
    }

    private static func ackLength(_ ack: MultipacketAckFrame) -> Int {
        guard let first = ack.ranges.first else { return 0 }
        var n = UVarint.encodedLength(first.upperBound) + UVarint.encodedLength(ack.ackDelayMicroseconds)
        n += UVarint.encodedLength(UInt64(ack.ranges.count - 1))
        n += UVarint.encodedLength(first.upperBound - first.lowerBound)
        var previousLow = first.lowerBound
        for r in ack.ranges.dropFirst() {
            n += UVarint.encodedLength(previousLow - r.upperBound - 2)
            n += UVarint.encodedLength(r.upperBound - r.lowerBound)
            previousLow = r.lowerBound
        }
        return n
    }

    private static func writeAck(_ ack: MultipacketAckFrame, into buffer: inout ByteBuffer) {
        guard let first = ack.ranges.first else { return }
        UVarint.write(first.upperBound, to: &buffer)
        UVarint.write(ack.ackDelayMicroseconds, to: &buffer)
        UVarint.write(UInt64(ack.ranges.count - 1), to: &buffer)
        UVarint.write(first.upperBound - first.lowerBound, to: &buffer)
        var previousLow = first.lowerBound
        for r in ack.ranges.dropFirst() {
            UVarint.write(previousLow - r.upperBound - 2, to: &buffer)
            UVarint.write(r.upperBound - r.lowerBound, to: &buffer)
            previousLow = r.lowerBound
        }
    }

    // MARK: Decoding

    /// Decodes every frame of `payload`. Any error rejects the whole payload (no frame of it may be acted on).
    ///
    /// - Throws: `MessagingError` with code `.unknownFrameType` or `.malformedFrame`.
    package func decode(_ payload: ByteBuffer) throws(MessagingError) -> [MultipacketFrame] {
        guard payload.readableBytes <= limits.maxPayload else {
            throw MessagingError(.malformedFrame, "payload of \(payload.readableBytes) bytes over \(limits.maxPayload)")
        }
        guard payload.readableBytes > 0 else { throw MessagingError(.malformedFrame, "empty payload") }
        var buffer = payload
        var frames: [MultipacketFrame] = []
        frames.reserveCapacity(4)  // typically a message and an Ack: one allocation
        while let typeByte = buffer.readInteger(as: UInt8.self) {
            guard let type = MessagingFrameType(rawValue: typeByte) else {
                throw MessagingError(.unknownFrameType, "frame type 0x\(String(typeByte, radix: 16))")
            }
            switch type {
            case .padding:
                frames.append(.padding(length: buffer.readableBytes))
                buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
            case .initiate:
                let transportId = try Self.readU16(&buffer, "Init transportId")
                let nameLength = try Self.readVarint(&buffer, "Init protocol length")
                guard nameLength >= 1, nameLength <= UInt64(limits.maxProtocolNameLength) else {
                    throw MessagingError(
                        .malformedFrame, "Init protocol length \(nameLength) not in 1...\(limits.maxProtocolNameLength)"
                    )
                }
                guard let nameBytes = buffer.readSlice(length: Int(nameLength)) else {
                    throw MessagingError(.malformedFrame, "Init protocol truncated")
                }
                let name = String(decoding: nameBytes.readableBytesView, as: UTF8.self)
                // Decoding repairs invalid UTF-8; a repaired string differs from the bytes.
                guard name.utf8.elementsEqual(nameBytes.readableBytesView) else {
                    throw MessagingError(.malformedFrame, "Init protocol is not valid UTF-8")
                }
                let protocolInt = try Self.readU16(&buffer, "Init protocolInt")
                let (header, data) = try readMessage(&buffer)
                frames.append(
                    .initiate(
                        transportId: transportId, protocolName: name, protocolInt: protocolInt, header: header,
                        data: data
                    )
                )
            case .transportAck:
                frames.append(.transportAck(transportId: try Self.readU16(&buffer, "transport Ack")))
            case .continuation:
                let protocolInt = try Self.readU16(&buffer, "Continuation protocolInt")
                let (header, data) = try readMessage(&buffer)
                frames.append(.continuation(protocolInt: protocolInt, header: header, data: data))
            case .reset:
                let protocolInt = try Self.readU16(&buffer, "Reset protocolInt")
                guard let raw = buffer.readInteger(as: UInt8.self) else {
                    throw MessagingError(.malformedFrame, "Reset reason truncated")
                }
                guard let reason = MultipacketResetReason(rawValue: raw) else {
                    throw MessagingError(.malformedFrame, "Reset reason \(raw) unknown")
                }
                frames.append(.reset(protocolInt: protocolInt, reason: reason))
            case .ack:
                frames.append(.ack(try readAck(&buffer)))
            }
        }
        return frames
    }

    private static func readU16(_ buffer: inout ByteBuffer, _ what: StaticString) throws(MessagingError) -> UInt16 {
        guard let v = buffer.readInteger(as: UInt16.self) else {
            throw MessagingError(.malformedFrame, "\(what) truncated")
        }
        return v
    }

    private static func readVarint(_ buffer: inout ByteBuffer, _ what: StaticString) throws(MessagingError) -> UInt64 {
        let value: UInt64?
        do {
            value = try UVarint.read(from: &buffer)
        } catch {
            throw MessagingError(.malformedFrame, "\(what): bad varint (\(error))")
        }
        guard let value else { throw MessagingError(.malformedFrame, "\(what) truncated") }
        return value
    }

    private func readMessage(
        _ buffer: inout ByteBuffer
    ) throws(MessagingError) -> (MultipacketMessageHeader, ByteBuffer) {
        let sequence = try Self.readVarint(&buffer, "sequence")
        guard let flags = buffer.readInteger(as: UInt8.self) else {
            throw MessagingError(.malformedFrame, "flags truncated")
        }
        guard flags & 0xF0 == 0 else { throw MessagingError(.malformedFrame, "reserved flag bits set") }
        let reliable = flags & Self.flagReliable != 0
        let kind: MessagingMessageKind
        switch flags & Self.kindMask {
        case 0: kind = .oneWay
        case Self.kindRequest: kind = .request(id: try Self.readVarint(&buffer, "request id"))
        case Self.kindReply: kind = .reply(to: try Self.readVarint(&buffer, "reply id"))
        default:  // kindProbe, the only value left of the two bits
            guard reliable, flags & Self.flagFragment == 0 else {
                throw MessagingError(.malformedFrame, "a probe must be reliable and in one frame")
            }
            kind = .probe
        }
        var fragment: MultipacketFragmentInfo?
        if flags & Self.flagFragment != 0 {
            guard reliable else { throw MessagingError(.malformedFrame, "unreliable message fragmented") }
            let index = try Self.readVarint(&buffer, "fragment index")
            let count = try Self.readVarint(&buffer, "fragment count")
            let total = try Self.readVarint(&buffer, "message length")
            guard count >= 2, count <= UInt64(limits.maxFragmentCount) else {
                throw MessagingError(.malformedFrame, "fragment count \(count) not in 2...\(limits.maxFragmentCount)")
            }
            guard index < count, index <= sequence else {
                throw MessagingError(.malformedFrame, "fragment index \(index) invalid")
            }
            guard total >= count, total <= UInt64(limits.maxMessageSize) else {
                throw MessagingError(.malformedFrame, "message length \(total) invalid for \(count) fragments")
            }
            let info = MultipacketFragmentInfo(index: Int(index), count: Int(count), totalLength: Int(total))
            guard (info.count - 1) * info.fragmentSize < info.totalLength else {
                throw MessagingError(.malformedFrame, "message length \(total) leaves the last fragment empty")
            }
            fragment = info
        }
        let length = try Self.readVarint(&buffer, "data length")
        guard length <= UInt64(buffer.readableBytes), let data = buffer.readSlice(length: Int(length)) else {
            throw MessagingError(.malformedFrame, "data length \(length) over the \(buffer.readableBytes) bytes left")
        }
        if kind == .probe, data.readableBytes != 0 {
            throw MessagingError(.malformedFrame, "a probe carries no data (got \(data.readableBytes) bytes)")
        }
        if let fragment, fragment.length != data.readableBytes {
            throw MessagingError(
                .malformedFrame,
                "fragment \(fragment.index) has \(data.readableBytes) bytes, expected \(fragment.length)")
        }
        return (MultipacketMessageHeader(sequence: sequence, reliable: reliable, kind: kind, fragment: fragment), data)
    }

    private func readAck(_ buffer: inout ByteBuffer) throws(MessagingError) -> MultipacketAckFrame {
        let largest = try Self.readVarint(&buffer, "Ack largest")
        let delay = try Self.readVarint(&buffer, "Ack delay")
        let extra = try Self.readVarint(&buffer, "Ack range count")
        guard extra < UInt64(limits.maxAckRangesPerFrame) else {
            throw MessagingError(.malformedFrame, "Ack with \(extra + 1) ranges, over \(limits.maxAckRangesPerFrame)")
        }
        let firstLength = try Self.readVarint(&buffer, "Ack first range")
        guard firstLength <= largest else { throw MessagingError(.malformedFrame, "Ack first range below zero") }
        var ranges: [ClosedRange<UInt64>] = []
        ranges.reserveCapacity(Int(extra) + 1)
        var low = largest - firstLength
        ranges.append(low...largest)
        for _ in 0..<extra {
            let gap = try Self.readVarint(&buffer, "Ack gap")
            let length = try Self.readVarint(&buffer, "Ack range length")
            guard low >= 2, gap <= low - 2 else { throw MessagingError(.malformedFrame, "Ack gap below zero") }
            let high = low - gap - 2
            guard length <= high else { throw MessagingError(.malformedFrame, "Ack range below zero") }
            low = high - length
            ranges.append(low...high)
        }
        return MultipacketAckFrame(ranges: ranges, ackDelayMicroseconds: delay)
    }
}
