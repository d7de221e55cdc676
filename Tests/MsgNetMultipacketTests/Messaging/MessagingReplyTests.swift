import MsgNetCore
import NIOCore
import Testing

@testable import MsgNetMultipacket

@Suite("replies need no handler of their protocol")
struct MessagingReplyWithoutHandlerTests {
    @Test("a requester without a handler for the protocol still gets the reply")
    func replyWithoutHandler() throws {
        let now = NIODeadline.uptimeNanoseconds(1_000_000_000)
        // The requester handles nothing; the responder handles /kv/1.
        var requester = MessagingMachine(hasHandler: { _ in false })
        var responder = MessagingMachine(hasHandler: { $0 == "/kv/1" })
        let sent = try requester.send(ByteBuffer(string: "get"), protocol: "/kv/1", kind: .request(id: 7), now: now)
        var toResponder: [ByteBuffer] = sent.actions.compactMap {
            if case .sendPayload(let p, _) = $0 { return p } else { return nil }
        }
        var request: MessagingInboundMessage?
        for p in toResponder {
            for case .deliver(let m) in responder.onPayload(p, now: now) { request = m }
        }
        #expect(request?.kind == .request(id: 7))
        let reply = try responder.send(ByteBuffer(string: "value"), protocol: "/kv/1", kind: .reply(to: 7), now: now)
        toResponder = []
        var delivered: [MessagingInboundMessage] = []
        var resets = 0
        for case .sendPayload(let p, _) in reply.actions {
            for action in requester.onPayload(p, now: now) {
                if case .deliver(let m) = action { delivered.append(m) }
            }
        }
        resets = Int(requester.counters.unsupportedProtocols)
        #expect(delivered.count == 1)
        #expect(delivered.first?.kind == .reply(to: 7))
        #expect(delivered.first.map { String(buffer: $0.data) } == "value")
        #expect(resets == 0)
    }
}
