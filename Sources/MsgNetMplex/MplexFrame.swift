import MsgNetCore
import NIOCore

/// One mplex frame: `uvarint(streamID << 3 | flag) || uvarint(length) || data`.
public struct MplexFrame: Hashable, Sendable {
    /// The low three bits of a frame header.
    ///
    /// "Initiator" flags are sent by the side that opened the stream, "Receiver" flags by the other side.
    public enum Flag: UInt8, Hashable, Sendable, CaseIterable {
        /// Opens a stream; the data is the stream name.
        case newStream = 0
        /// Data, sent by the side that accepted the stream.
        case messageReceiver = 1
        /// Data, sent by the side that opened the stream.
        case messageInitiator = 2
        /// Closes the write side of the sender, which accepted the stream.
        case closeReceiver = 3
        /// Closes the write side of the sender, which opened the stream.
        case closeInitiator = 4
        /// Resets the stream, sent by the side that accepted it.
        case resetReceiver = 5
        /// Resets the stream, sent by the side that opened it.
        case resetInitiator = 6

        /// True for flags sent by the side that opened the stream (0, 2, 4, 6).
        public var isFromInitiator: Bool { rawValue & 1 == 0 }
    }

    /// The largest stream id that fits in a 9-byte header: 2^60 - 1.
    public static let maxStreamID: UInt64 = (1 << 60) - 1

    /// The stream number, in the namespace of the side that opened the stream.
    public var streamID: UInt64
    /// What the frame does.
    public var flag: Flag
    /// The data segment (the name for NewStream, the payload for Message, empty otherwise).
    public var data: ByteBuffer

    /// Creates a frame.
    public init(streamID: UInt64, flag: Flag, data: ByteBuffer = ByteBuffer()) {
        self.streamID = streamID
        self.flag = flag
        self.data = data
    }

    /// The header varint value, `streamID << 3 | flag`.
    public var header: UInt64 { streamID << 3 | UInt64(flag.rawValue) }
}

/// Writes mplex frames.
public enum MplexFrameEncoder {
    /// The longest header plus length prefix: two 9-byte varints.
    public static let maxPrefixLength = 2 * UVarint.maxLength

    /// Appends the header and length prefix of `frame` (not its data) to `buffer`.
    ///
    /// - Precondition: `frame.streamID <= MplexFrame.maxStreamID`.
    public static func writePrefix(of frame: MplexFrame, to buffer: inout ByteBuffer) {
        precondition(frame.streamID <= MplexFrame.maxStreamID, "mplex stream id over 2^60 - 1")
        UVarint.write(frame.header, to: &buffer)
        UVarint.write(UInt64(frame.data.readableBytes), to: &buffer)
    }

    /// Appends the whole encoded frame to `buffer`.
    ///
    /// - Precondition: `frame.streamID <= MplexFrame.maxStreamID`.
    public static func encode(_ frame: MplexFrame, into buffer: inout ByteBuffer) {
        writePrefix(of: frame, to: &buffer)
        var data = frame.data
        buffer.writeBuffer(&data)
    }

    /// The encoded frame in a new buffer.
    public static func encode(_ frame: MplexFrame, allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer
    {
        var buffer = allocator.buffer(capacity: maxPrefixLength + frame.data.readableBytes)
        encode(frame, into: &buffer)
        return buffer
    }
}

/// Decodes mplex frames with hard limits; it never buffers more than one frame of at most
/// `maxFrameSize` bytes plus its prefix.
///
/// Errors (all ``MplexError``, all fatal for the connection):
/// ``MplexError/Code/malformedVarint``, ``MplexError/Code/invalidFlag``,
/// ``MplexError/Code/frameTooLarge``, ``MplexError/Code/streamNameTooLong``,
/// ``MplexError/Code/truncatedFrame`` (at end of input only).
public struct MplexFrameDecoder: NIOSingleStepByteToMessageDecoder {
    /// The decoded value.
    public typealias InboundOut = MplexFrame

    /// The largest data segment accepted.
    public let maxFrameSize: Int
    /// The longest NewStream name accepted.
    public let maxStreamNameLength: Int

    /// Creates a decoder with the limits of `configuration`.
    public init(configuration: MplexConfiguration = MplexConfiguration()) {
        self.init(maxFrameSize: configuration.maxFrameSize, maxStreamNameLength: configuration.maxStreamNameLength)
    }

    /// Creates a decoder with explicit limits.
    public init(maxFrameSize: Int, maxStreamNameLength: Int = 1024) {
        self.maxFrameSize = maxFrameSize
        self.maxStreamNameLength = maxStreamNameLength
    }

    /// Decodes one frame if the buffer holds a whole one; throws as soon as the prefix is invalid.
    public mutating func decode(buffer: inout ByteBuffer) throws -> MplexFrame? {
        guard let (header, headerLength) = try Self.varint(buffer, at: 0) else { return nil }
        guard let flag = MplexFrame.Flag(rawValue: UInt8(truncatingIfNeeded: header & 0x07)) else {
            throw MplexError(.invalidFlag, "frame header \(header) has the undefined flag 7")
        }
        let streamID = header >> 3
        guard let (length, lengthLength) = try Self.varint(buffer, at: headerLength) else { return nil }
        if flag == .newStream {
            guard length <= UInt64(maxStreamNameLength) else {
                throw MplexError(
                    .streamNameTooLong,
                    "NewStream name of \(length) bytes for stream \(streamID) is over the \(maxStreamNameLength)-byte limit"
                )
            }
        } else {
            guard length <= UInt64(maxFrameSize) else {
                throw MplexError(
                    .frameTooLarge,
                    "frame of \(length) bytes for stream \(streamID) is over the \(maxFrameSize)-byte limit"
                )
            }
        }
        let prefixLength = headerLength + lengthLength
        guard buffer.readableBytes - prefixLength >= Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: prefixLength)
        let data = buffer.readSlice(length: Int(length))!
        return MplexFrame(streamID: streamID, flag: flag, data: data)
    }

    /// Decodes what is left at end of input; bytes of an incomplete frame are an error.
    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> MplexFrame? {
        if let frame = try decode(buffer: &buffer) { return frame }
        if buffer.readableBytes > 0 {
            throw MplexError(.truncatedFrame, "input ended inside a frame (\(buffer.readableBytes) bytes left)")
        }
        return nil
    }

    private static func varint(_ buffer: ByteBuffer, at offset: Int) throws(MplexError) -> (UInt64, Int)? {
        do {
            return try UVarint.peek(buffer, offset: offset)
        } catch {
            switch error {
            case .overflow: throw MplexError(.malformedVarint, "varint longer than \(UVarint.maxLength) bytes")
            case .notMinimal: throw MplexError(.malformedVarint, "varint not minimally encoded")
            }
        }
    }
}
