import MsgNetCore
import NIOCore
import Testing

@testable import MsgNetHost

/// The datagram path's error replies (`/msgnet/error/1.0.0`): one code byte, a UTF-8 reason.
@Suite("Error replies")
struct ErrorReplyTests {
    let peer = PrivateKey.generate().peerID

    @Test("every code round-trips with its reason")
    func roundTrip() {
        for code in ErrorReply.codes {
            let error = ErrorReply.decode(ErrorReply.encode(code, "because"), from: peer)
            #expect(error.code == code)
            #expect(error.message == "\(peer): because")
        }
    }

    @Test("hostile payloads decode to a bounded error, never a trap")
    func hostile() {
        // Empty: no code byte.
        #expect(ErrorReply.decode(ByteBuffer(), from: peer).code == .remoteError)
        // Unknown code bytes.
        for byte in [UInt8(ErrorReply.codes.count), 0x7F, 0xFF] {
            #expect(ErrorReply.decode(ByteBuffer(bytes: [byte, 0x41]), from: peer).code == .remoteError)
        }
        // Invalid UTF-8 in the reason: repaired, code kept.
        let invalid = ErrorReply.decode(ByteBuffer(bytes: [1, 0xC3, 0x28, 0xFF, 0xFE]), from: peer)
        #expect(invalid.code == ErrorReply.codes[1])
        // A huge reason is cut.
        var huge = ByteBuffer(bytes: [0])
        huge.writeRepeatingByte(0x61, count: 1 << 20)
        let cut = ErrorReply.decode(huge, from: peer)
        #expect(cut.message.utf8.count == "\(peer): ".utf8.count + ErrorReply.maxReasonBytes)
        // The encoder also bounds what it sends.
        #expect(ErrorReply.encode(.remoteError, String(repeating: "x", count: 5000)).readableBytes == 1 + 512)
    }
}
