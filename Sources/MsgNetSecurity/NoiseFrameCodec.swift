import NIOCore

/// Decodes libp2p Noise frames: `uint16 big-endian length || message`.
///
/// Every length from 0 to 65535 is valid framing, so the decoder rejects nothing; it holds at
/// most one incomplete frame (2 + 65535 bytes) and hands out each message as a slice.
struct NoiseFrameDecoder: NIOSingleStepByteToMessageDecoder {
    typealias InboundOut = ByteBuffer

    /// The most bytes buffered while waiting for a frame to complete.
    static let maxBufferedBytes = 2 + NoiseHandshake.maxMessageSize

    mutating func decode(buffer: inout ByteBuffer) throws -> ByteBuffer? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self),
            buffer.readableBytes >= 2 + Int(length)
        else { return nil }
        buffer.moveReaderIndex(forwardBy: 2)
        return buffer.readSlice(length: Int(length))
    }

    mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> ByteBuffer? {
        try decode(buffer: &buffer)
    }
}

/// Encodes libp2p Noise frames.
enum NoiseFrameEncoder {
    /// The largest plaintext one transport frame carries (65535 minus the 16-byte tag).
    static let maxPlaintextPerFrame = NoiseHandshake.maxMessageSize - NoiseCipherState.tagLength

    /// Appends `uint16 length || message` to `output`.
    static func writeFrame(_ message: [UInt8], to output: inout ByteBuffer) {
        precondition(message.count <= NoiseHandshake.maxMessageSize)
        output.writeInteger(UInt16(message.count))
        output.writeBytes(message)
    }

    /// The output size of ``encrypt(_:with:into:)`` for `plaintextLength` bytes.
    static func encryptedSize(plaintextLength: Int) -> Int {
        let frames = max(1, (plaintextLength + maxPlaintextPerFrame - 1) / maxPlaintextPerFrame)
        return plaintextLength + frames * (2 + NoiseCipherState.tagLength)
    }

    /// Encrypts `plaintext` as maximal transport frames appended to `output` (one frame per
    /// 65519 plaintext bytes; an empty plaintext yields no frame).
    static func encrypt(
        _ plaintext: ByteBuffer,
        with cipher: inout NoiseCipherState,
        into output: inout ByteBuffer
    ) throws(SecurityError) {
        var remaining = plaintext
        while remaining.readableBytes > 0 {
            let count = min(remaining.readableBytes, maxPlaintextPerFrame)
            // Slicing a ByteBuffer does not copy.
            let chunk = remaining.readSlice(length: count)!
            output.writeInteger(UInt16(count + NoiseCipherState.tagLength))
            try cipher.encrypt(chunk, into: &output)
        }
    }
}
