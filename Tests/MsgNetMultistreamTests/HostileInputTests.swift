import MsgNetMultistream
import NIOCore
import Testing

private func responder(_ ids: [String] = ["/a"]) -> MultistreamMachine {
    .responder(selector: ProtocolSelector(ids))
}

@Suite("MultistreamMachine with hostile input")
struct HostileInputTests {
    @Test("a length prefix over 1024 fails as soon as the prefix is read, before any body")
    func frameTooLargeBeforeBody() {
        // uvarint(1025) = 0x81 0x08; no body follows.
        let outcome = feedAllSplits(responder(), headerFrame + [0x81, 0x08])
        #expect(outcome.sent == headerFrame)
        #expect(outcome.events == [.failed(.frameTooLarge)])
    }

    @Test("a huge length prefix fails after two varint bytes")
    func hugePrefix() {
        let outcome = feedAllSplits(responder(), [0xFF, 0xFF])
        #expect(outcome.events == [.failed(.frameTooLarge)])
        let longer = feedAllSplits(responder(), [0xFF, 0xFF, 0xFF, 0xFF, 0x01])
        #expect(longer.events == [.failed(.frameTooLarge)])
    }

    @Test("a non-minimal varint prefix is malformed")
    func badVarint() {
        let outcome = feedAllSplits(responder(), [0x80, 0x00])
        #expect(outcome.events == [.failed(.malformed(.invalidVarint))])
    }

    @Test("a frame whose last byte is not a newline is malformed")
    func missingNewline() {
        let outcome = feedAllSplits(responder(), headerFrame + [0x03] + utf8("/ab"))
        #expect(outcome.events == [.failed(.malformed(.missingNewline))])
        let empty = feedAllSplits(responder(), [0x00])
        #expect(empty.events == [.failed(.malformed(.missingNewline))])
    }

    @Test(
        "invalid UTF-8 is malformed",
        arguments: [
            [0xC3, 0x28] as [UInt8],  // bad continuation
            [0xC0, 0xAF],  // overlong "/"
            [0xED, 0xA0, 0x80],  // UTF-16 surrogate
            [0xF4, 0x90, 0x80, 0x80],  // beyond U+10FFFF
            [0x2F, 0xFF],
        ])
    func invalidUTF8(bytes: [UInt8]) {
        let outcome = feedAllSplits(responder(), headerFrame + [UInt8(bytes.count + 1)] + bytes + [0x0A])
        #expect(outcome.events == [.failed(.malformed(.invalidUTF8))])
        let asHeader = feedAllSplits(responder(), [UInt8(bytes.count + 1)] + bytes + [0x0A])
        #expect(asHeader.events == [.failed(.malformed(.invalidUTF8))])
    }

    @Test("valid multi-byte UTF-8 protocol ids are fine")
    func validUTF8() {
        let id = "/übung/日本/🙂"
        let outcome = feedAllSplits(responder([id]), headerFrame + [UInt8(id.utf8.count + 1)] + utf8(id) + [0x0A])
        #expect(outcome.events == [.negotiated(id)])
    }

    @Test("a wrong first message fails with unexpectedHeader and sends nothing")
    func wrongHeader() {
        let outcome = feedAllSplits(responder(), frame("/multistream/2.0.0") + frame("/a"))
        #expect(outcome.events == [.failed(.unexpectedHeader("/multistream/2.0.0"))])
        #expect(outcome.sent.isEmpty)
        let proposalFirst = feedAllSplits(responder(), frame("/a"))
        #expect(proposalFirst.events == [.failed(.unexpectedHeader("/a"))])
    }

    @Test("endless proposals: 32 are answered with na, the 33rd fails")
    func endlessProposals() {
        var input = headerFrame
        for index in 0..<40 { input += frame("/nope/\(index)") }
        let outcome = feedAllSplits(responder(), input)
        #expect(outcome.sent == headerFrame + Array(repeating: naFrame, count: 32).flatMap { $0 })
        #expect(outcome.events == [.failed(.tooManyProposals(32))])
    }

    @Test("endless ls requests count against the same limit")
    func endlessListing() {
        let input = headerFrame + Array(repeating: frame("ls"), count: 5).flatMap { $0 }
        var machine = MultistreamMachine.responder(selector: ProtocolSelector(["/a"]), maxMessages: 4)
        _ = machine.start()
        var bytes = buffer(input)
        let actions = machine.onBytes(&bytes)
        #expect(actions.last == .failed(.tooManyProposals(4)))
    }

    @Test("the initiator fails on a reply that is neither an echo nor na")
    func unexpectedReply() {
        let outcome = feedAllSplits(.initiator(proposals: ["/a", "/b"]), headerFrame + frame("/b"))
        #expect(outcome.events == [.failed(.unexpectedMessage("/b"))])
        let twoHeaders = feedAllSplits(.initiator(proposals: ["/a"]), headerFrame + headerFrame)
        #expect(twoHeaders.events == [.failed(.unexpectedMessage("/multistream/1.0.0"))])
    }

    @Test("the initiator fails when the first reply is not the header")
    func initiatorWrongHeader() {
        let outcome = feedAllSplits(.initiator(proposals: ["/a"]), naFrame)
        #expect(outcome.events == [.failed(.unexpectedHeader("na"))])
    }

    @Test("the initiator rejects oversized and malformed replies")
    func initiatorMalformed() {
        #expect(feedAllSplits(.initiator(proposals: ["/a"]), [0x81, 0x08]).events == [.failed(.frameTooLarge)])
        #expect(
            feedAllSplits(.initiator(proposals: ["/a"]), headerFrame + [0x02, 0x2F, 0x2F]).events == [
                .failed(.malformed(.missingNewline))
            ])
    }

    @Test(
        "the lister rejects a malformed ls response",
        arguments: [
            [0x03, 0x2F, 0x61, 0x0A] as [UInt8],  // "/a\n" is not a list of nested frames
            [0x04, 0x05, 0x2F, 0x61, 0x0A],  // nested frame longer than the outer one
            [0x05, 0x03, 0x2F, 0x61, 0x62, 0x0A],  // nested frame without its newline
            [0x02, 0x00, 0x0A],  // empty nested frame
            [0x05, 0x03, 0xFF, 0xFE, 0x0A, 0x0A],  // nested id not UTF-8
        ])
    func malformedList(response: [UInt8]) {
        let outcome = feedAllSplits(.listProtocols(), headerFrame + response)
        #expect(outcome.events == [.failed(.malformed(.invalidProtocolList))])
    }

    @Test("after a failure further input is ignored and left unconsumed")
    func ignoresInputAfterFailure() {
        var machine = responder()
        var bad = buffer([0x80, 0x00])
        #expect(machine.onBytes(&bad) == [.failed(.malformed(.invalidVarint))])
        var more = buffer(headerFrame + frame("/a"))
        #expect(machine.onBytes(&more).isEmpty)
        #expect(more.readableBytes == headerFrame.count + 4)
        #expect(machine.onTimeout().isEmpty)
    }

    @Test("a partial frame is kept inside, never more than one frame's worth")
    func partialFrameBounded() {
        // 1 KiB announced, fed in pieces: nothing happens until it is complete.
        var machine = responder()
        var first = buffer(headerFrame + [0x80, 0x08] + Array(repeating: 0x61, count: 500))
        #expect(machine.onBytes(&first) == [.send(buffer(headerFrame))])
        #expect(first.readableBytes == 0)
        var second = buffer(Array(repeating: 0x61, count: 523) + [0x0A])
        #expect(machine.onBytes(&second) == [.send(buffer(naFrame))])
        #expect(second.readableBytes == 0)
    }
}
