import NIOCore
import Testing

@testable import MsgNetMultipacket

@Suite("Session packet codec")
struct SessionPacketTests {
    @Test func handshakeLayoutIsPinned() throws {
        let packet = SessionPacketCodec.handshake(
            .handshake2,
            destination: SessionID(rawValue: 0x0102_0304_0506_0708),
            source: SessionID(rawValue: 0x1112_1314_1516_1718),
            transportID: 0x2122,
            noise: [0xAA, 0xBB]
        )
        let expected: [UInt8] =
            [
                0x12, 1, 2, 3, 4, 5, 6, 7, 8, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x21, 0x22, 0, 2, 0xAA,
                0xBB,
            ]
        #expect(Array(packet.readableBytesView) == expected)
        guard case .handshake(let parsed) = try SessionPacketCodec.parse(packet, maxDatagram: 1232) else {
            Issue.record("not a handshake packet")
            return
        }
        #expect(parsed.type == .handshake2 && parsed.transportID == 0x2122 && parsed.noise == [0xAA, 0xBB])
        #expect(parsed.destination.rawValue == 0x0102_0304_0506_0708 && parsed.source.rawValue == 0x1112_1314_1516_1718)
    }

    @Test func initiationIsPaddedAndChecked() throws {
        let noise = [UInt8](repeating: 9, count: 32)
        let packet = SessionPacketCodec.handshake(
            .handshake1, destination: .none, source: SessionID(rawValue: 5), transportID: 3, noise: noise,
            paddedTo: 1200)
        #expect(packet.readableBytes == 1200)
        #expect(packet.getBytes(at: 53, length: 1147)!.allSatisfy { $0 == 0 })
        guard case .handshake(let parsed) = try SessionPacketCodec.parse(packet, maxDatagram: 1232) else {
            Issue.record("not a handshake packet")
            return
        }
        #expect(parsed.noise == noise && parsed.transportID == 3)
    }

    /// Message 1 with a token, and Retry packets, that must not parse.
    static let malformedTokensAndRetries: [([UInt8], String)] = {
        // Message 1 up to its noise (source id 1, 32 noise bytes).
        var initiation: [UInt8] = [0x11]
        initiation += [UInt8](repeating: 0, count: 8)
        initiation += [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 32]
        initiation += [UInt8](repeating: 1, count: 32)
        let retry: [UInt8] = [0x1A, 0, 0, 0, 0, 0, 0, 0]
        return [
            (initiation + [65] + [UInt8](repeating: 1, count: 65), "exceeds 64"),
            (initiation + [24, 1, 2], "exceeds the bytes present"),
            (retry, "retry header truncated"),
            (retry + [0, 1, 7], "session id zero"),
            (retry + [1, 0], "retry token of 0 bytes"),
            (retry + [1, 65] + [UInt8](repeating: 1, count: 65), "retry token of 65 bytes"),
            (retry + [1, 3, 1, 2], "does not match"),
            (retry + [1, 1, 1, 2], "does not match"),
        ]
    }()

    @Test func tokenAndRetryLayoutsArePinned() throws {
        let noise = [UInt8](repeating: 9, count: 32)
        let token: [UInt8] = [1, 2, 3]
        let packet = SessionPacketCodec.handshake(
            .handshake1, destination: .none, source: SessionID(rawValue: 5), transportID: 3, noise: noise,
            token: token, paddedTo: 1200)
        #expect(packet.readableBytes == 1200)
        #expect(packet.getBytes(at: 53, length: 4) == [3, 1, 2, 3])
        #expect(packet.getBytes(at: 57, length: 1143)!.allSatisfy { $0 == 0 })
        guard case .handshake(let parsed) = try SessionPacketCodec.parse(packet, maxDatagram: 1232) else {
            Issue.record("not a handshake packet")
            return
        }
        #expect(parsed.noise == noise && parsed.token == token)

        let retry = SessionPacketCodec.retry(
            destination: SessionID(rawValue: 0x0102_0304_0506_0708), token: [0xAA, 0xBB])
        #expect(Array(retry.readableBytesView) == [0x1A, 1, 2, 3, 4, 5, 6, 7, 8, 2, 0xAA, 0xBB])
        guard case .retry(let parsedRetry) = try SessionPacketCodec.parse(retry, maxDatagram: 1232) else {
            Issue.record("not a retry packet")
            return
        }
        #expect(parsedRetry.destination.rawValue == 0x0102_0304_0506_0708 && parsedRetry.token == [0xAA, 0xBB])
    }

    @Test func transportLayoutIsPinned() throws {
        let header = SessionTransportHeader(
            .data, destination: SessionID(rawValue: 0x0102_0304_0506_0708), packetNumber: 0xA1A2_A3A4_A5A6
        ).withUnsafeBytes { Array($0) }
        #expect(header == [0x14, 1, 2, 3, 4, 5, 6, 7, 8, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6])
        var datagram = ByteBuffer(bytes: header)
        datagram.writeRepeatingByte(0x55, count: 20)
        guard case .transport(let parsed) = try SessionPacketCodec.parse(datagram, maxDatagram: 1232) else {
            Issue.record("not a transport packet")
            return
        }
        #expect(parsed.packetNumber == 0xA1A2_A3A4_A5A6 && Array(parsed.header.readableBytesView) == header)
        #expect(parsed.ciphertext.readableBytes == 20)
    }

    @Test(arguments: [
        ([0x21] + [UInt8](repeating: 1, count: 40), "unknown type/version"),
        (
            [0x11, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 32] + [UInt8](repeating: 1, count: 32),
            "destination"
        ),
        ([0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1], "expected 32"),
        ([0x12, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 9, 1], "noise length"),
        ([0x12, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], "source"),
        ([0x13, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0], "without a destination"),
        ([0x14] + [UInt8](repeating: 1, count: 29), "at least 31"),
        ([0x14] + [UInt8](repeating: 0, count: 40), "session id zero"),
        ([0x14] + [UInt8](repeating: 1, count: 1232), "exceeds 1232"),
        ([], "empty"),
    ])
    func malformedPacketsAreRejectedWithAReason(bytes: [UInt8], reason: String) {
        Self.expectMalformed(bytes, reason: reason)
    }

    @Test(arguments: Self.malformedTokensAndRetries)
    func malformedTokensAndRetriesAreRejectedWithAReason(bytes: [UInt8], reason: String) {
        Self.expectMalformed(bytes, reason: reason)
    }

    static func expectMalformed(_ bytes: [UInt8], reason: String) {
        do {
            _ = try SessionPacketCodec.parse(ByteBuffer(bytes: bytes), maxDatagram: 1232)
            Issue.record("parsed \(bytes.count) malformed bytes")
        } catch {
            guard case .malformed(let message) = error else {
                Issue.record("wrong error \(error)")
                return
            }
            #expect(message.contains(reason))
        }
    }
}
