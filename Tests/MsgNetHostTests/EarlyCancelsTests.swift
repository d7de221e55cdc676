import NIOCore
import Testing

@testable import MsgNetHost

/// The datagram transport's notes of cancellations that reached the loop before their
/// operation's start job.
@Suite("Early cancellations")
struct EarlyCancelsTests {
    @Test func aNoteIsClaimedOnceByItsOwnKindAndID() {
        var notes = EarlyCancels()
        notes.note(request: 7)
        notes.note(send: 9)
        let c1 = notes.claim(request: 9)
        #expect(!c1)
        let c2 = notes.claim(send: 7)
        #expect(!c2)
        let c3 = notes.claim(request: 7)
        #expect(c3)
        let c4 = notes.claim(request: 7)
        #expect(!c4)
        let c5 = notes.claim(send: 9)
        #expect(c5)
        #expect(notes.count == 0)
    }

    @Test func unclaimedNotesExpireAndTheirNumberIsBounded() {
        var notes = EarlyCancels()
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        // Far more notes than kept, all at one instant: the table stops at its capacity.
        for id in 0..<UInt64(EarlyCancels.capacity * 3) { notes.note(request: id, now: start) }
        #expect(notes.count == EarlyCancels.capacity)
        // Past the lifetime, the next note drops every expired one.
        let later = start + EarlyCancels.lifetime + .nanoseconds(1)
        notes.note(request: 1_000_000, now: later)
        #expect(notes.count == 1)
        let c6 = notes.claim(request: 1_000_000)
        #expect(c6)
        let c7 = notes.claim(request: 0)
        #expect(!c7)
    }
}
