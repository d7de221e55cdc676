import MsgNetTestSupport
import NIOCore
import Testing

@testable import MsgNetCore

@Suite struct UVarintTests {
    static let vectors: [(UInt64, [UInt8])] = [
        (0, [0x00]),
        (1, [0x01]),
        (127, [0x7F]),
        (128, [0x80, 0x01]),
        (255, [0xFF, 0x01]),
        (300, [0xAC, 0x02]),
        (16_384, [0x80, 0x80, 0x01]),
        (UInt64(1) << 63 - 1, [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
    ]

    @Test func knownVectorsEncode() {
        for (value, encoding) in Self.vectors {
            #expect(UVarint.encode(value) == encoding, "encode \(value)")
            #expect(UVarint.encodedLength(value) == encoding.count)
            var buffer = ByteBuffer()
            UVarint.write(value, to: &buffer)
            #expect(Array(buffer.readableBytesView) == encoding)
        }
    }

    @Test func knownVectorsDecode() throws {
        for (value, encoding) in Self.vectors {
            let decoded = try #require(try UVarint.decode(encoding))
            #expect(decoded.value == value)
            #expect(decoded.length == encoding.count)
            // Trailing bytes are not consumed.
            let withTail = try #require(try UVarint.decode(encoding + [0xAA, 0xBB]))
            #expect(withTail.value == value && withTail.length == encoding.count)
        }
    }

    @Test func nonMinimalEncodingsAreRejected() {
        #expect(throws: UVarint.DecodeError.notMinimal) { try UVarint.decode([0x80, 0x00]) }
        #expect(throws: UVarint.DecodeError.notMinimal) { try UVarint.decode([0xFF, 0x00]) }
        #expect(throws: UVarint.DecodeError.notMinimal) { try UVarint.decode([0x81, 0x80, 0x00]) }
    }

    @Test func overlongEncodingsAreRejected() {
        // 10 bytes: a value over 63 bits.
        let ten: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]
        #expect(throws: UVarint.DecodeError.overflow) { try UVarint.decode(ten) }
        // Nine continuation bytes can never end within the limit.
        #expect(throws: UVarint.DecodeError.overflow) { try UVarint.decode([UInt8](repeating: 0xFF, count: 9)) }
        // A caller's smaller limit is honoured.
        #expect(throws: UVarint.DecodeError.overflow) { try UVarint.decode([0x80, 0x01], maxBytes: 1) }
        #expect(throws: UVarint.DecodeError.overflow) { try UVarint.decode([0x80, 0x80], maxBytes: 2) }
    }

    @Test func truncatedInputNeedsMoreBytes() throws {
        #expect(try UVarint.decode([UInt8]()) == nil)
        #expect(try UVarint.decode([0x80]) == nil)
        #expect(try UVarint.decode([0xFF, 0xFF]) == nil)
        #expect(try UVarint.decode([UInt8](repeating: 0xFF, count: 8)) == nil)
    }

    @Test func readConsumesOnlyWhenComplete() throws {
        var buffer = ByteBuffer(bytes: [0xAC])
        #expect(try UVarint.read(from: &buffer) == nil)
        #expect(buffer.readerIndex == 0 && buffer.readableBytes == 1)
        buffer.writeBytes([0x02, 0x07])
        #expect(try UVarint.read(from: &buffer) == 300)
        #expect(buffer.readableBytes == 1)
        #expect(try UVarint.read(from: &buffer) == 7)
        #expect(buffer.readableBytes == 0)
        #expect(try UVarint.read(from: &buffer) == nil)
    }

    @Test func readRejectsMalformedWithoutConsuming() {
        var buffer = ByteBuffer(bytes: [0x80, 0x00, 0x01])
        #expect(throws: UVarint.DecodeError.notMinimal) { try UVarint.read(from: &buffer) }
        #expect(buffer.readerIndex == 0)
        var long = ByteBuffer(bytes: [UInt8](repeating: 0xFF, count: 20))
        #expect(throws: UVarint.DecodeError.overflow) { try UVarint.read(from: &long) }
        #expect(long.readerIndex == 0)
    }

    @Test func readFedByteByByte() throws {
        let encoding = UVarint.encode(1 << 40 + 12_345)
        var buffer = ByteBuffer()
        for (i, byte) in encoding.enumerated() {
            buffer.writeInteger(byte)
            let value = try UVarint.read(from: &buffer)
            if i < encoding.count - 1 {
                #expect(value == nil)
                #expect(buffer.readableBytes == i + 1)
            } else {
                #expect(value == 1 << 40 + 12_345)
                #expect(buffer.readableBytes == 0)
            }
        }
    }

    @Test func randomRoundTrips() throws {
        var rng = SplitMix64(seed: 0x5EED)
        for _ in 0..<2_000 {
            let bits = Int.random(in: 0...63, using: &rng)
            let value = bits == 0 ? 0 : rng.next() >> UInt64(64 - bits)
            let encoding = UVarint.encode(value)
            #expect(encoding.count == UVarint.encodedLength(value))
            let decoded = try #require(try UVarint.decode(encoding))
            #expect(decoded.value == value && decoded.length == encoding.count)
            var buffer = ByteBuffer(bytes: encoding)
            #expect(try UVarint.read(from: &buffer) == value)
        }
    }

    /// `read(from:)` decodes in place (a one-byte shortcut, then raw bytes); it must agree with
    /// `decode` over the same bytes on every input: value, bytes consumed, error, and leaving the
    /// buffer alone when it fails or needs more.
    @Test func readAgreesWithDecodeOnArbitraryBytes() {
        var rng = SplitMix64(seed: 0xB17E5)
        for _ in 0..<20_000 {
            let count = Int(rng.next() % 12)
            var bytes: [UInt8] = []
            for _ in 0..<count {
                // Mostly continuation bytes, some zeros: non-minimal, long and truncated encodings.
                switch rng.next() % 4 {
                case 0: bytes.append(0x80 | UInt8(truncatingIfNeeded: rng.next() & 0x7F))
                case 1: bytes.append(0)
                case 2: bytes.append(0x80)
                default: bytes.append(UInt8(truncatingIfNeeded: rng.next()))
                }
            }
            let maxBytes = Int(rng.next() % 11)
            let limit = min(maxBytes, UVarint.maxLength)
            let expected = Result { () throws(UVarint.DecodeError) in
                try UVarint.decode(bytes.prefix(limit + 1), maxBytes: maxBytes)
            }
            var buffer = ByteBuffer(bytes: bytes)
            let got = Result { () throws(UVarint.DecodeError) in try UVarint.read(from: &buffer, maxBytes: maxBytes) }
            switch (expected, got) {
            case (.success(let e?), .success(let g?)):
                #expect(g == e.value, "\(bytes) max \(maxBytes)")
                #expect(buffer.readableBytes == bytes.count - e.length, "\(bytes) max \(maxBytes)")
            case (.success(nil), .success(nil)):
                #expect(buffer.readableBytes == bytes.count, "\(bytes) max \(maxBytes)")
            case (.failure(let e), .failure(let g)):
                #expect(g == e, "\(bytes) max \(maxBytes)")
                #expect(buffer.readableBytes == bytes.count, "\(bytes) max \(maxBytes)")
            default:
                Issue.record("read \(got) but decode \(expected) for \(bytes) max \(maxBytes)")
            }
            // peek at an offset: decode of the bytes from there, the buffer untouched.
            let offset = Int(rng.next() % UInt64(count + 2))
            let whole = ByteBuffer(bytes: bytes)
            let peeked = Result { () throws(UVarint.DecodeError) in
                try UVarint.peek(whole, offset: offset, maxBytes: maxBytes)
            }
            let reference = Result { () throws(UVarint.DecodeError) -> (value: UInt64, length: Int)? in
                guard offset <= bytes.count else { return nil }
                return try UVarint.decode(bytes[offset...].prefix(limit + 1), maxBytes: maxBytes)
            }
            switch (reference, peeked) {
            case (.success(let r), .success(let p)):
                #expect(r?.value == p?.value && r?.length == p?.length, "peek \(bytes) at \(offset) max \(maxBytes)")
            case (.failure(let r), .failure(let p)):
                #expect(r == p, "peek \(bytes) at \(offset) max \(maxBytes)")
            default:
                Issue.record("peek \(peeked) but decode \(reference) for \(bytes) at \(offset) max \(maxBytes)")
            }
        }
    }
}
