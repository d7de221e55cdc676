import NIOCore

/// The first byte of every session-layer datagram: version 1 in the high nibble, the packet
/// type in the low nibble.
enum SessionPacketType: UInt8, Sendable {
    case handshake1 = 0x11
    case handshake2 = 0x12
    case handshake3 = 0x13
    case data = 0x14
    case ping = 0x15
    case pong = 0x16
    case pathChallenge = 0x17
    case pathResponse = 0x18
    case close = 0x19
    case retry = 0x1A

    var isHandshake: Bool { rawValue <= 0x13 }
}

/// A parsed handshake packet.
///
/// ```
/// type(1) | destination id(8) | source id(8) | transportId(2) | noise length(2) | noise | padding
/// ```
///
/// In message 1 the padding starts with a token: `token length(1) | token` (length 0: none; at
/// most ``SessionPacketCodec/maxTokenLength``), then zero bytes.
struct SessionHandshakePacket: Sendable {
    static let headerLength = 21
    /// 1, 2 or 3.
    var type: SessionPacketType
    /// The receiver's session id (zero in message 1).
    var destination: SessionID
    /// The sender's own session id.
    var source: SessionID
    /// The transportId of the initiator's copy (echoed in messages 2 and 3).
    var transportID: UInt16
    /// The Noise handshake message.
    var noise: [UInt8]
    /// Message 1's address token (from a Retry), empty when it has none.
    var token: [UInt8] = []
}

/// A parsed Retry: a responder under load asks the initiator to prove its address, statelessly.
///
/// ```
/// type(1) | destination id(8) = the initiator's source id | token length(1) | token
/// ```
struct SessionRetryPacket: Sendable {
    var destination: SessionID
    var token: [UInt8]
}

/// A parsed transport packet header; `ciphertext` is the rest of the datagram.
///
/// ```
/// type(1) | destination id(8) | packet number(6, big-endian) | ciphertext || tag(16)
/// ```
struct SessionTransportPacket: Sendable {
    static let headerLength = 15
    static let overhead = headerLength + 16
    var type: SessionPacketType
    var destination: SessionID
    var packetNumber: UInt64
    /// The 15 header bytes (the AEAD associated data), a slice of the datagram.
    var header: ByteBuffer
    var ciphertext: ByteBuffer
}

enum SessionPacket: Sendable {
    case handshake(SessionHandshakePacket)
    case transport(SessionTransportPacket)
    case retry(SessionRetryPacket)
}

/// Encodes and parses session datagrams. Every parse checks every length; nothing is buffered.
enum SessionPacketCodec {
    /// Noise `-> e` with libp2p's empty payload: exactly the 32-byte ephemeral key.
    static let message1NoiseLength = 32
    static let tagLength = 16
    /// The longest address token (message 1 and Retry).
    static let maxTokenLength = 64

    static func parse(_ datagram: ByteBuffer, maxDatagram: Int) throws(SessionError) -> SessionPacket {
        var buffer = datagram
        let size = buffer.readableBytes
        guard size <= maxDatagram else { throw .malformed("datagram of \(size) bytes exceeds \(maxDatagram)") }
        guard let first = buffer.readInteger(as: UInt8.self) else { throw .malformed("empty datagram") }
        guard let type = SessionPacketType(rawValue: first) else {
            throw .malformed("unknown type/version byte \(first)")
        }
        if type.isHandshake {
            guard let destination = buffer.readInteger(as: UInt64.self),
                let source = buffer.readInteger(as: UInt64.self),
                let transportID = buffer.readInteger(as: UInt16.self),
                let length = buffer.readInteger(as: UInt16.self)
            else { throw .malformed("handshake header truncated (\(size) bytes)") }
            guard let noise = buffer.readBytes(length: Int(length)) else {
                throw .malformed("handshake noise length \(length) exceeds the \(size - 21) bytes present")
            }
            guard source != 0 else { throw .malformed("handshake source session id is zero") }
            var token: [UInt8] = []
            switch type {
            case .handshake1:
                guard destination == 0 else { throw .malformed("message 1 with a destination id") }
                guard noise.count == message1NoiseLength else {
                    throw .malformed("message 1 noise is \(noise.count) bytes, expected \(message1NoiseLength)")
                }
                if let tokenLength = buffer.readInteger(as: UInt8.self), tokenLength > 0 {
                    guard Int(tokenLength) <= maxTokenLength else {
                        throw .malformed("message 1 token of \(tokenLength) bytes exceeds \(maxTokenLength)")
                    }
                    guard let bytes = buffer.readBytes(length: Int(tokenLength)) else {
                        throw .malformed("message 1 token length \(tokenLength) exceeds the bytes present")
                    }
                    token = bytes
                }
            default:
                guard destination != 0 else { throw .malformed("handshake message without a destination id") }
            }
            return .handshake(
                SessionHandshakePacket(
                    type: type,
                    destination: SessionID(rawValue: destination),
                    source: SessionID(rawValue: source),
                    transportID: transportID,
                    noise: noise,
                    token: token
                )
            )
        }
        if type == .retry {
            guard let destination = buffer.readInteger(as: UInt64.self),
                let length = buffer.readInteger(as: UInt8.self)
            else { throw .malformed("retry header truncated (\(size) bytes)") }
            guard destination != 0 else { throw .malformed("retry to session id zero") }
            guard length > 0, Int(length) <= maxTokenLength else {
                throw .malformed("retry token of \(length) bytes (1...\(maxTokenLength))")
            }
            guard let token = buffer.readBytes(length: Int(length)), buffer.readableBytes == 0 else {
                throw .malformed("retry token length \(length) does not match the \(size - 10) bytes present")
            }
            return .retry(SessionRetryPacket(destination: SessionID(rawValue: destination), token: token))
        }
        guard size >= SessionTransportPacket.overhead else {
            throw .malformed("transport packet of \(size) bytes, need at least \(SessionTransportPacket.overhead)")
        }
        let header = datagram.getSlice(at: datagram.readerIndex, length: SessionTransportPacket.headerLength)!
        let destination = buffer.readInteger(as: UInt64.self)!
        let high = UInt64(buffer.readInteger(as: UInt16.self)!)
        let low = UInt64(buffer.readInteger(as: UInt32.self)!)
        guard destination != 0 else { throw .malformed("transport packet to session id zero") }
        return .transport(
            SessionTransportPacket(
                type: type,
                destination: SessionID(rawValue: destination),
                packetNumber: high << 32 | low,
                header: header,
                ciphertext: buffer
            )
        )
    }

    static func handshake(
        _ type: SessionPacketType,
        destination: SessionID,
        source: SessionID,
        transportID: UInt16,
        noise: [UInt8],
        token: [UInt8] = [],
        paddedTo: Int = 0
    ) -> ByteBuffer {
        precondition(token.count <= maxTokenLength && (token.isEmpty || type == .handshake1))
        var length = SessionHandshakePacket.headerLength + noise.count
        if !token.isEmpty { length += 1 + token.count }
        var buffer = ByteBufferAllocator().buffer(capacity: max(length, paddedTo))
        buffer.writeInteger(type.rawValue)
        buffer.writeInteger(destination.rawValue)
        buffer.writeInteger(source.rawValue)
        buffer.writeInteger(transportID)
        buffer.writeInteger(UInt16(noise.count))
        buffer.writeBytes(noise)
        if !token.isEmpty {
            buffer.writeInteger(UInt8(token.count))
            buffer.writeBytes(token)
        }
        if paddedTo > length {
            buffer.writeRepeatingByte(0, count: paddedTo - length)
        }
        return buffer
    }

    /// A Retry carrying `token` to the initiator whose message 1 came from session `destination`.
    static func retry(destination: SessionID, token: [UInt8]) -> ByteBuffer {
        precondition(!token.isEmpty && token.count <= maxTokenLength)
        var buffer = ByteBufferAllocator().buffer(capacity: 10 + token.count)
        buffer.writeInteger(SessionPacketType.retry.rawValue)
        buffer.writeInteger(destination.rawValue)
        buffer.writeInteger(UInt8(token.count))
        buffer.writeBytes(token)
        return buffer
    }
}

/// The 15 header bytes of a transport packet (type, destination id, 48-bit packet number, big
/// endian), kept on the stack: they are written into the datagram and are the AEAD's associated
/// data, with no array allocated per packet.
struct SessionTransportHeader {
    private var storage: (UInt64, UInt64) = (0, 0)

    init(_ type: SessionPacketType, destination: SessionID, packetNumber: UInt64) {
        Swift.withUnsafeMutableBytes(of: &storage) { bytes in
            bytes[0] = type.rawValue
            bytes.storeBytes(of: destination.rawValue.bigEndian, toByteOffset: 1, as: UInt64.self)
            let number = packetNumber.bigEndian
            Swift.withUnsafeBytes(of: number) { n in
                // The low 48 bits: the last six bytes of the big-endian 64-bit value.
                for i in 0..<6 { bytes[9 + i] = n[2 + i] }
            }
        }
    }

    /// Calls `body` with the 15 header bytes.
    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try Swift.withUnsafeBytes(of: storage) { all in
            try body(UnsafeRawBufferPointer(rebasing: all[..<SessionTransportPacket.headerLength]))
        }
    }
}

/// A 1024-packet sliding replay window (a ring bitmap of 16 words).
struct SessionReplayWindow: Sendable {
    static let size: UInt64 = 1024
    enum Verdict: Equatable { case fresh, duplicate, tooOld }

    private var words = [UInt64](repeating: 0, count: 16)
    private var highest: UInt64 = 0
    private var any = false

    func check(_ number: UInt64) -> Verdict {
        guard any, number <= highest else { return .fresh }
        if highest - number >= Self.size { return .tooOld }
        return words[Self.word(number)] & Self.bit(number) != 0 ? .duplicate : .fresh
    }

    /// Records `number` (call only after it authenticated and `check` said `.fresh`).
    mutating func commit(_ number: UInt64) {
        if !any {
            any = true
            highest = number
        } else if number > highest {
            let distance = number - highest
            if distance >= Self.size {
                for i in 0..<words.count { words[i] = 0 }
            } else {
                var n = highest + 1
                while n <= number {
                    if n % 64 == 0 && number - n >= 63 {
                        words[Self.word(n)] = 0
                        n += 64
                    } else {
                        words[Self.word(n)] &= ~Self.bit(n)
                        n += 1
                    }
                }
            }
            highest = number
        }
        words[Self.word(number)] |= Self.bit(number)
    }

    private static func word(_ n: UInt64) -> Int { Int((n / 64) % 16) }
    private static func bit(_ n: UInt64) -> UInt64 { 1 << (n % 64) }
}

/// SplitMix64: a tiny deterministic generator (path challenge tokens, tests).
struct SessionSplitMix64: RandomNumberGenerator, Sendable {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
