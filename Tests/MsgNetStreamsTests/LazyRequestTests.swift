import MsgNetCore
import MsgNetMultistream
import MsgNetTestSupport
import NIOCore
import Testing

@testable import MsgNetStreams

@Suite("Lazy request reply parser")
struct LazyReplyParserTests {
    static func machine() -> MultistreamMachine {
        var m = MultistreamMachine.initiator(proposals: ["/kv/1"], optimistic: true)
        _ = m.start()
        return m
    }

    /// What the initiator sent: the header and the proposal (a remote that accepts echoes it).
    static let proposal = msFrame("/multistream/1.0.0") + msFrame("/kv/1")

    /// A parser with (`fast`) or without the byte-for-byte echo match; both must agree.
    static func parser(maxSize: Int, fast: Bool) -> LazyReplyParser {
        LazyReplyParser(
            machine: machine(), maxSize: maxSize, proposal: fast ? ByteBuffer(bytes: proposal) : nil)
    }

    static func answer(reply: [UInt8]) -> [UInt8] {
        msFrame("/multistream/1.0.0") + msFrame("/kv/1") + UVarint.encode(UInt64(reply.count)) + reply
    }

    @Test("the reply is found at every split point", arguments: [false, true])
    func everySplit(fast: Bool) {
        let reply = Array("hello reply".utf8)
        let bytes = Self.answer(reply: reply)
        for split in 0...bytes.count {
            var parser = Self.parser(maxSize: 64, fast: fast)
            var results: [ByteBuffer] = []
            for part in [bytes[..<split], bytes[split...]] where !part.isEmpty {
                var b = ByteBuffer(bytes: part)
                if case .reply(let r) = parser.onBytes(&b) { results.append(r) }
            }
            #expect(results == [ByteBuffer(bytes: reply)], "split at \(split)")
        }
    }

    @Test("fed byte by byte", arguments: [false, true])
    func byteByByte(fast: Bool) {
        let bytes = Self.answer(reply: [1, 2, 3])
        var parser = Self.parser(maxSize: 64, fast: fast)
        var got: ByteBuffer?
        for (i, byte) in bytes.enumerated() {
            var b = ByteBuffer(bytes: [byte])
            switch parser.onBytes(&b) {
            case .needMore: #expect(i < bytes.count - 1)
            case .reply(let r): got = r
            case .failed(let e): Issue.record("failed: \(e)")
            }
        }
        #expect(got == ByteBuffer(bytes: [1, 2, 3]))
    }

    @Test("na means not supported (the header matches the echo, then the answer differs)", arguments: [false, true])
    func refused(fast: Bool) {
        var parser = Self.parser(maxSize: 64, fast: fast)
        var b = ByteBuffer(bytes: msFrame("/multistream/1.0.0") + msFrame("na"))
        guard case .failed(let error) = parser.onBytes(&b) else {
            Issue.record("not failed")
            return
        }
        #expect((error as? StreamsError)?.code == .protocolNotSupported)
    }

    @Test("an oversize or malformed length fails without buffering the payload", arguments: [false, true])
    func oversize(fast: Bool) {
        var parser = Self.parser(maxSize: 10, fast: fast)
        var b = ByteBuffer(bytes: msFrame("/multistream/1.0.0") + msFrame("/kv/1") + UVarint.encode(11))
        guard case .failed(let error) = parser.onBytes(&b) else {
            Issue.record("not failed")
            return
        }
        #expect((error as? ReplyTooLargeError)?.length == 11)
        var malformed = Self.parser(maxSize: 10, fast: fast)
        var m = ByteBuffer(bytes: msFrame("/multistream/1.0.0") + msFrame("/kv/1") + Array(repeating: 0xFF, count: 11))
        guard case .failed(let e2) = malformed.onBytes(&m) else {
            Issue.record("not failed")
            return
        }
        #expect((e2 as? StreamsError)?.code == .protocolViolation)
    }

    @Test("random answers are refused or wait for more, never taken for a reply", arguments: [false, true])
    func randomAnswers(fast: Bool) {
        var rng = SplitMix64(seed: fast ? 2 : 1)
        for _ in 0..<500 {
            var parser = Self.parser(maxSize: 64, fast: fast)
            let count = Int.random(in: 1...200, using: &rng)
            var b = ByteBuffer(bytes: (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) })
            if case .reply = parser.onBytes(&b) { Issue.record("random bytes were taken for a reply") }
        }
        // A right header with a garbage second line is refused, in either mode.
        var parser = Self.parser(maxSize: 64, fast: fast)
        var b = ByteBuffer(bytes: msFrame("/multistream/1.0.0") + [0x05, 0xFF, 0xFE, 0x00, 0x01, 0x0A])
        guard case .failed = parser.onBytes(&b) else {
            Issue.record("a malformed answer was not refused")
            return
        }
    }

    @Test("a different protocol echoed is refused, not taken for ours", arguments: [false, true])
    func otherProtocolEchoed(fast: Bool) {
        var parser = Self.parser(maxSize: 64, fast: fast)
        var b = ByteBuffer(bytes: msFrame("/multistream/1.0.0") + msFrame("/kv/2") + UVarint.encode(1) + [7])
        guard case .failed = parser.onBytes(&b) else {
            Issue.record("a reply under another protocol was accepted")
            return
        }
    }

    /// The parser of a later reply on a kept request stream (no negotiation before it).
    @Test("a kept stream's reply: found at every split, extra bytes noticed, bad lengths refused")
    func negotiatedReply() {
        let reply = Array("kept".utf8)
        let bytes = UVarint.encode(UInt64(reply.count)) + reply
        for split in 0...bytes.count {
            var parser = LazyReplyParser(maxSize: 64)
            var results: [ByteBuffer] = []
            for part in [bytes[..<split], bytes[split...]] where !part.isEmpty {
                var b = ByteBuffer(bytes: part)
                if case .reply(let r) = parser.onBytes(&b) { results.append(r) }
            }
            #expect(results == [ByteBuffer(bytes: reply)], "split at \(split)")
            #expect(!parser.hasBufferedBytes)
        }
        // A second reply behind the first is left buffered for the caller to see.
        var twice = LazyReplyParser(maxSize: 64)
        var b = ByteBuffer(bytes: bytes + bytes)
        guard case .reply = twice.onBytes(&b) else {
            Issue.record("no reply")
            return
        }
        #expect(twice.hasBufferedBytes)
        // Oversize and malformed lengths fail without waiting for a payload.
        var oversize = LazyReplyParser(maxSize: 3)
        var big = ByteBuffer(bytes: UVarint.encode(4))
        guard case .failed(let error) = oversize.onBytes(&big) else {
            Issue.record("an oversize length was accepted")
            return
        }
        #expect((error as? ReplyTooLargeError)?.length == 4)
        var malformed = LazyReplyParser(maxSize: 64)
        var junk = ByteBuffer(bytes: [UInt8](repeating: 0xFF, count: 11))
        guard case .failed = malformed.onBytes(&junk) else {
            Issue.record("a malformed length was accepted")
            return
        }
    }
}
