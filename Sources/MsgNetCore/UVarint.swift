import NIOCore

/// Unsigned LEB128 varints as used by multiformats and libp2p (`unsigned-varint`).
///
/// Encodings are at most ``maxLength`` bytes (63-bit values) and must be minimal:
/// a trailing `0x00` continuation byte (e.g. `80 00`) is rejected, as the
/// multiformats spec requires.
public enum UVarint {
    /// The longest encoding accepted: 9 bytes carry 63 bits.
    public static let maxLength = 9

    /// Errors from decoding a varint.
    public enum DecodeError: Error, Equatable, Sendable {
        /// More than `maxBytes` continuation bytes, or a value over 63 bits.
        case overflow
        /// The encoding is not the shortest one for its value.
        case notMinimal
    }

    /// The number of bytes `value` takes encoded.
    @inlinable
    public static func encodedLength(_ value: UInt64) -> Int {
        var v = value
        var n = 1
        while v >= 0x80 {
            v >>= 7
            n += 1
        }
        return n
    }

    /// Appends the encoding of `value` to `buffer`.
    @inlinable
    public static func write(_ value: UInt64, to buffer: inout ByteBuffer) {
        var v = value
        while v >= 0x80 {
            buffer.writeInteger(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        buffer.writeInteger(UInt8(truncatingIfNeeded: v))
    }

    /// Appends the encoding of `value` to `bytes`.
    @inlinable
    public static func write(_ value: UInt64, to bytes: inout [UInt8]) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(truncatingIfNeeded: v))
    }

    /// The encoding of `value`.
    @inlinable
    public static func encode(_ value: UInt64) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(encodedLength(value))
        write(value, to: &out)
        return out
    }

    /// Decodes a varint at the start of `bytes`.
    ///
    /// - Returns: the value and the number of bytes it took, or `nil` when `bytes`
    ///   ends before the varint does (read more and try again).
    /// - Throws: ``DecodeError`` when the encoding is longer than `maxBytes`
    ///   (at most ``maxLength``) or not minimal.
    @inlinable
    public static func decode<C: Collection>(
        _ bytes: C,
        maxBytes: Int = UVarint.maxLength
    ) throws(DecodeError) -> (value: UInt64, length: Int)? where C.Element == UInt8 {
        let limit = Swift.min(maxBytes, maxLength)
        var value: UInt64 = 0
        var shift: UInt64 = 0
        var count = 0
        for byte in bytes {
            count += 1
            if count > limit { throw .overflow }
            value |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 {
                if byte == 0 && count > 1 { throw .notMinimal }
                return (value, count)
            }
            shift += 7
        }
        if count >= limit { throw .overflow }
        return nil
    }

    /// Reads a varint from `buffer`, moving its reader index past it only when
    /// the whole varint is there.
    ///
    /// Reads the buffer's bytes in place: a one-byte varint (every length and id under 128) is a
    /// single load, a longer one is decoded from the raw bytes rather than through
    /// `ByteBufferView`'s generic collection path.
    ///
    /// - Returns: the value, or `nil` when the buffer ends first (nothing is consumed).
    @inlinable
    public static func read(
        from buffer: inout ByteBuffer,
        maxBytes: Int = UVarint.maxLength
    ) throws(DecodeError) -> UInt64? {
        let limit = Swift.min(maxBytes, maxLength)
        if limit >= 1, let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self), first & 0x80 == 0 {
            buffer.moveReaderIndex(forwardBy: 1)
            return UInt64(first)
        }
        guard let (value, length) = try peek(buffer, maxBytes: maxBytes) else { return nil }
        buffer.moveReaderIndex(forwardBy: length)
        return value
    }

    /// Decodes a varint that starts `offset` bytes into `buffer`'s readable bytes, without moving
    /// the reader index (from the raw bytes, as ``read(from:maxBytes:)`` does).
    ///
    /// - Returns: the value and its length, or `nil` when the readable bytes end before the
    ///   varint does (an `offset` past the end is `nil` too).
    @inlinable
    public static func peek(
        _ buffer: ByteBuffer,
        offset: Int = 0,
        maxBytes: Int = UVarint.maxLength
    ) throws(DecodeError) -> (value: UInt64, length: Int)? {
        let limit = Swift.min(maxBytes, maxLength)
        let decoded = buffer.withUnsafeReadableBytes { raw in
            Result { () throws(DecodeError) -> (value: UInt64, length: Int)? in
                guard offset >= 0, offset <= raw.count else { return nil }
                return try decode(raw[offset...].prefix(limit + 1), maxBytes: maxBytes)
            }
        }
        return try decoded.get()
    }
}
