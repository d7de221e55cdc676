import MsgNetCore
import MsgNetMultistream
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

    static func answer(reply: [UInt8]) -> [UInt8] {
        msFrame("/multistream/1.0.0") + msFrame("/kv/1") + UVarint.encode(UInt64(reply.count)) + reply
    }

    @Test("the reply is found at every split point")
    func everySplit() {
        let reply = Array("hello reply".utf8)
        let bytes = Self.answer(reply: reply)
        for split in 0...bytes.count {
            var parser = LazyReplyParser(machine: Self.machine(), maxSize: 64)
            var results: [ByteBuffer] = []
            for part in [bytes[..<split], bytes[split...]] where !part.isEmpty {
                var b = ByteBuffer(bytes: part)
                if case .reply(let r) = parser.onBytes(&b) { results.append(r) }
            }
            #expect(results == [ByteBuffer(bytes: reply)], "split at \(split)")
        }
    }

    @Test("fed byte by byte")
    func byteByByte() {
        let bytes = Self.answer(reply: [1, 2, 3])
        var parser = LazyReplyParser(machine: Self.machine(), maxSize: 64)
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

    @Test("na means not supported")
    func refused() {
        var parser = LazyReplyParser(machine: Self.machine(), maxSize: 64)
        var b = ByteBuffer(bytes: msFrame("/multistream/1.0.0") + msFrame("na"))
        guard case .failed(let error) = parser.onBytes(&b) else {
            Issue.record("not failed")
            return
        }
        #expect((error as? StreamsError)?.code == .protocolNotSupported)
    }

    @Test("an oversize or malformed length fails without buffering the payload")
    func oversize() {
        var parser = LazyReplyParser(machine: Self.machine(), maxSize: 10)
        var b = ByteBuffer(bytes: msFrame("/multistream/1.0.0") + msFrame("/kv/1") + UVarint.encode(11))
        guard case .failed(let error) = parser.onBytes(&b) else {
            Issue.record("not failed")
            return
        }
        #expect((error as? ReplyTooLargeError)?.length == 11)
        var malformed = LazyReplyParser(machine: Self.machine(), maxSize: 10)
        var m = ByteBuffer(bytes: msFrame("/multistream/1.0.0") + msFrame("/kv/1") + Array(repeating: 0xFF, count: 11))
        guard case .failed(let e2) = malformed.onBytes(&m) else {
            Issue.record("not failed")
            return
        }
        #expect((e2 as? StreamsError)?.code == .protocolViolation)
    }
}
