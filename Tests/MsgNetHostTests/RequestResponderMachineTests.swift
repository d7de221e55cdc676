import NIOCore
import Testing

@testable import MsgNetHost

/// The responder's side of a request stream as a pure machine: every event in every state.
@Suite("Request responder machine")
struct RequestResponderMachineTests {
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000)

    @Test func theAnswersCarryTheirWireStatusBytes() {
        #expect(RequestResponderMachine.Answer.reply.status == 0)
        #expect(RequestResponderMachine.Answer.error.status == 1)
    }

    @Test func aNewStreamIsIdleFromItsOpeningAndAnswersNothing() {
        var machine = RequestResponderMachine(now: start)
        #expect(!machine.isHandling)
        #expect(machine.isIdle(since: start))
        #expect(!machine.isIdle(since: start - .nanoseconds(1)))
        // No request yet: no reply is accepted (not even to token 0) and no error is owed.
        #expect(machine.onReply(token: 0) == nil)
        #expect(machine.onReply(token: 1) == nil)
        #expect(machine.onUnanswered() == nil)
        #expect(!machine.isHandling)
    }

    @Test func eachRequestGetsTheNextTokenAndExactlyOneReply() {
        var machine = RequestResponderMachine(now: start)
        let first = machine.onRequest(now: start + .seconds(1))
        #expect(first == 1)
        #expect(machine.isHandling)
        #expect(machine.onReply(token: first) == .reply)
        #expect(!machine.isHandling)
        // Answered: a second reply, or an error answer, is refused.
        #expect(machine.onReply(token: first) == nil)
        #expect(machine.onUnanswered() == nil)
        let second = machine.onRequest(now: start + .seconds(2))
        #expect(second == 2)
        #expect(machine.onReply(token: second) == .reply)
    }

    @Test func aReplyToAnotherRequestIsRefusedAndLeavesTheCurrentOneOpen() {
        var machine = RequestResponderMachine(now: start)
        let first = machine.onRequest(now: start)
        #expect(machine.onReply(token: first) == .reply)
        let second = machine.onRequest(now: start)
        // The first request's handler replying again (a stale token), or a made-up token.
        #expect(machine.onReply(token: first) == nil)
        #expect(machine.onReply(token: second + 1) == nil)
        #expect(machine.isHandling)
        #expect(machine.onReply(token: second) == .reply)
    }

    @Test func aRequestWithoutReplyGetsOneErrorAnswerAndItsHandlerCanNoLongerReply() {
        var machine = RequestResponderMachine(now: start)
        let token = machine.onRequest(now: start)
        #expect(machine.onUnanswered() == .error)
        #expect(!machine.isHandling)
        #expect(machine.onUnanswered() == nil)
        #expect(machine.onReply(token: token) == nil)
    }

    @Test func aNewRequestEndsAnUnsettledOne() {
        var machine = RequestResponderMachine(now: start)
        let first = machine.onRequest(now: start)
        let second = machine.onRequest(now: start)
        #expect(second == first + 1)
        #expect(machine.onReply(token: first) == nil)
        #expect(machine.onReply(token: second) == .reply)
    }

    @Test func idlenessCountsFromTheLastRequestsArrivalAndNeverWhileHandling() {
        var machine = RequestResponderMachine(now: start)
        let arrival = start + .seconds(5)
        let token = machine.onRequest(now: arrival)
        // Handling: never idle, however old the request.
        #expect(!machine.isIdle(since: arrival + .seconds(3600)))
        #expect(machine.onReply(token: token) == .reply)
        #expect(machine.isIdle(since: arrival))
        #expect(!machine.isIdle(since: arrival - .nanoseconds(1)))
        // An error answer settles a request as a reply does.
        let next = machine.onRequest(now: arrival + .seconds(1))
        #expect(next == token + 1)
        #expect(machine.onUnanswered() == .error)
        #expect(machine.isIdle(since: arrival + .seconds(1)))
        #expect(!machine.isIdle(since: arrival))
    }
}
