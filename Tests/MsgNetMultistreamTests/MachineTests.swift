import MsgNetMultistream
import NIOCore
import Testing

/// Runs the two machines back to back, checks each side's outcome, then replays each side's
/// received bytes into a fresh machine whole, byte by byte and split at every point, expecting
/// the same outcome.
@discardableResult
private func negotiate(
    initiator: MultistreamMachine,
    responder: MultistreamMachine,
    initiatorAppData: [UInt8] = [],
    responderAppData: [UInt8] = [],
    expectInitiator: [Event],
    expectResponder: [Event],
    sourceLocation: SourceLocation = #_sourceLocation
) -> Conversation {
    let conversation = converse(
        initiator: initiator, responder: responder,
        initiatorAppData: initiatorAppData, responderAppData: responderAppData)
    #expect(conversation.initiator.events == expectInitiator, sourceLocation: sourceLocation)
    #expect(conversation.responder.events == expectResponder, sourceLocation: sourceLocation)

    let replayedInitiator = feedAllSplits(initiator, conversation.toInitiator, sourceLocation: sourceLocation)
    #expect(replayedInitiator == conversation.initiator, sourceLocation: sourceLocation)
    let replayedResponder = feedAllSplits(responder, conversation.toResponder, sourceLocation: sourceLocation)
    #expect(replayedResponder == conversation.responder, sourceLocation: sourceLocation)
    return conversation
}

@Suite("MultistreamMachine back to back")
struct MachineBackToBackTests {
    @Test("direct match: one write each way, exact bytes, application data handed over as leftover")
    func directMatch() {
        let request = utf8("GET key")
        let reply = utf8("VALUE 42")
        let c = negotiate(
            initiator: .initiator(proposals: ["/kv/1.0.0"]),
            responder: .responder(selector: ProtocolSelector(["/kv/1.0.0"])),
            initiatorAppData: request, responderAppData: reply,
            expectInitiator: [.negotiated("/kv/1.0.0")],
            expectResponder: [.negotiated("/kv/1.0.0")])
        #expect(c.toResponder == headerFrame + frame("/kv/1.0.0") + request)
        #expect(c.toInitiator == headerFrame + frame("/kv/1.0.0") + reply)
        #expect(c.initiator.trailing == reply)
        #expect(c.responder.trailing == request)
    }

    @Test("the initiator's first write holds the header and its first proposal")
    func initiatorFirstWrite() {
        var machine = MultistreamMachine.initiator(proposals: ["/a", "/b"])
        let actions = machine.start()
        #expect(actions == [.send(buffer(headerFrame + frame("/a")))])
        #expect(machine.start().isEmpty)
    }

    @Test("the responder answers the header and the first proposal in one write")
    func responderFirstWrite() {
        var machine = MultistreamMachine.responder(selector: ProtocolSelector(["/b"]))
        #expect(machine.start().isEmpty)
        var input = buffer(headerFrame + frame("/a"))
        #expect(machine.onBytes(&input) == [.send(buffer(headerFrame + naFrame))])
        #expect(input.readableBytes == 0)
    }

    @Test("fallback through several proposals in order")
    func fallback() {
        let c = negotiate(
            initiator: .initiator(proposals: ["/x/1", "/y/1", "/b/1", "/c/1"]),
            responder: .responder(selector: ProtocolSelector(["/c/1", "/b/1"])),
            initiatorAppData: utf8("hi"),
            expectInitiator: [.negotiated("/b/1")],
            expectResponder: [.negotiated("/b/1")])
        #expect(c.toResponder == headerFrame + frame("/x/1") + frame("/y/1") + frame("/b/1") + utf8("hi"))
        #expect(c.toInitiator == headerFrame + naFrame + naFrame + frame("/b/1"))
        #expect(c.responder.trailing == utf8("hi"))
        #expect(c.initiator.trailing.isEmpty)
    }

    @Test("no protocol in common: the initiator fails after the last na, the responder keeps waiting")
    func noProtocolInCommon() {
        let c = negotiate(
            initiator: .initiator(proposals: ["/x", "/y"]),
            responder: .responder(selector: ProtocolSelector(["/b"])),
            expectInitiator: [.failed(.noProtocolInCommon(["/x", "/y"]))],
            expectResponder: [])
        #expect(c.toInitiator == headerFrame + naFrame + naFrame)
    }

    @Test("optimistic success: application data goes out with the proposal, before the answer")
    func optimisticSuccess() {
        let c = negotiate(
            initiator: .initiator(proposals: ["/echo/1.0.0"], optimistic: true),
            responder: .responder(selector: ProtocolSelector(["/echo/1.0.0"])),
            initiatorAppData: utf8("ping"), responderAppData: utf8("pong"),
            expectInitiator: [.optimistic("/echo/1.0.0"), .negotiated("/echo/1.0.0")],
            expectResponder: [.negotiated("/echo/1.0.0")])
        // Everything the initiator wrote went out before it heard anything back.
        #expect(c.toResponder == headerFrame + frame("/echo/1.0.0") + utf8("ping"))
        #expect(c.responder.trailing == utf8("ping"))
        #expect(c.initiator.trailing == utf8("pong"))
    }

    @Test("optimistic start emits send then optimisticallySelected")
    func optimisticStart() {
        var machine = MultistreamMachine.initiator(proposals: ["/a"], optimistic: true)
        #expect(machine.start() == [.send(buffer(headerFrame + frame("/a"))), .optimisticallySelected("/a")])
        // With several proposals optimistic has no effect.
        var several = MultistreamMachine.initiator(proposals: ["/a", "/b"], optimistic: true)
        #expect(several.start() == [.send(buffer(headerFrame + frame("/a")))])
    }

    @Test("optimistic rejection fails with protocolRejected")
    func optimisticRejection() {
        let c = negotiate(
            initiator: .initiator(proposals: ["/a"], optimistic: true),
            responder: .responder(selector: ProtocolSelector(["/b"])),
            initiatorAppData: utf8("data"),
            expectInitiator: [.optimistic("/a"), .failed(.protocolRejected("/a"))],
            expectResponder: [])
        #expect(c.toInitiator == headerFrame + naFrame)
    }

    @Test("a single non-optimistic proposal refused is noProtocolInCommon")
    func singleRefused() {
        negotiate(
            initiator: .initiator(proposals: ["/a"]),
            responder: .responder(selector: ProtocolSelector(["/b"])),
            expectInitiator: [.failed(.noProtocolInCommon(["/a"]))],
            expectResponder: [])
    }

    @Test("ls lists exact ids and predicate names in registration order")
    func listing() {
        var selector = ProtocolSelector(["/ipfs/id/1.0.0", "/ipfs/ping/1.0.0"])
        selector.add(matching: { $0.hasPrefix("/kad/") }, advertised: "/kad/1.0.0")
        let c = negotiate(
            initiator: .listProtocols(),
            responder: .responder(selector: selector),
            expectInitiator: [.listed(["/ipfs/id/1.0.0", "/ipfs/ping/1.0.0", "/kad/1.0.0"])],
            expectResponder: [])
        #expect(c.toResponder == headerFrame + frame("ls"))
        let list = frame("/ipfs/id/1.0.0") + frame("/ipfs/ping/1.0.0") + frame("/kad/1.0.0")
        #expect(c.toInitiator == headerFrame + [UInt8(list.count + 1)] + list + [0x0A])
    }

    @Test("ls with nothing registered is an empty list")
    func emptyListing() {
        let c = negotiate(
            initiator: .listProtocols(),
            responder: .responder(selector: ProtocolSelector()),
            expectInitiator: [.listed([])],
            expectResponder: [])
        #expect(c.toInitiator == headerFrame + [0x01, 0x0A])
    }

    @Test("ls refused with na when answerLs is false")
    func listingRefused() {
        let c = negotiate(
            initiator: .listProtocols(),
            responder: .responder(selector: ProtocolSelector(["/a"]), answerLs: false),
            expectInitiator: [.failed(.protocolRejected("ls"))],
            expectResponder: [])
        #expect(c.toInitiator == headerFrame + naFrame)
    }

    @Test("the lister also accepts py-libp2p's newline-separated ls response")
    func pyLibp2pListing() {
        // Bytes captured from py-libp2p 0.8.1's Multiselect answering ls with /a and /b.
        let response: [UInt8] = [0x07, 0x2F, 0x61, 0x0A, 0x2F, 0x62, 0x0A, 0x0A]
        #expect(feedAllSplits(.listProtocols(), headerFrame + response).events == [.listed(["/a", "/b"])])
        #expect(feedAllSplits(.listProtocols(), headerFrame + [0x02, 0x0A, 0x0A]).events == [.listed([])])
    }

    @Test("ls then a proposal on the same stream: the responder answers both")
    func listingThenProposal() {
        let input = headerFrame + frame("ls") + frame("/a") + utf8("app")
        let outcome = feedAllSplits(.responder(selector: ProtocolSelector(["/a"])), input)
        #expect(outcome.sent == headerFrame + [5] + frame("/a") + [0x0A] + frame("/a"))
        #expect(outcome.events == [.negotiated("/a")])
        #expect(outcome.trailing == utf8("app"))
    }

    @Test("predicate match confirms the proposed id itself")
    func predicateMatch() {
        var selector = ProtocolSelector()
        selector.add(matching: { $0.hasPrefix("/kad/") }, advertised: "/kad/1.0.0")
        let c = negotiate(
            initiator: .initiator(proposals: ["/other/1", "/kad/2.0.0"]),
            responder: .responder(selector: selector),
            expectInitiator: [.negotiated("/kad/2.0.0")],
            expectResponder: [.negotiated("/kad/2.0.0")])
        #expect(c.toInitiator == headerFrame + naFrame + frame("/kad/2.0.0"))
    }

    @Test("leftover spanning several later reads is exactly the application data")
    func leftoverExact() {
        // Application data that looks like frames must not be parsed as negotiation.
        let app = headerFrame + naFrame + [0xFF, 0xFF, 0xFF] + utf8("tail")
        let input = headerFrame + frame("/a") + app
        let outcome = feedAllSplits(.responder(selector: ProtocolSelector(["/a"])), input)
        #expect(outcome.events == [.negotiated("/a")])
        #expect(outcome.trailing == app)
    }

    @Test("the responder's header may arrive before the initiator has said anything")
    func responderHeaderFirst() {
        // go-libp2p responders send their header eagerly; the initiator still sends its first write.
        let outcome = feedAllSplits(
            .initiator(proposals: ["/a"]), headerFrame + frame("/a") + utf8("x"))
        #expect(outcome.sent == headerFrame + frame("/a"))
        #expect(outcome.events == [.negotiated("/a")])
        #expect(outcome.trailing == utf8("x"))
    }

    @Test("onBytes before start starts the machine")
    func implicitStart() {
        var machine = MultistreamMachine.initiator(proposals: ["/a"])
        var input = buffer(headerFrame)
        #expect(machine.onBytes(&input) == [.send(buffer(headerFrame + frame("/a")))])
        #expect(input.readableBytes == 0)
    }

    @Test("timeout fails a negotiation in progress and is ignored afterwards")
    func timeout() {
        var machine = MultistreamMachine.initiator(proposals: ["/a"])
        _ = machine.start()
        #expect(machine.onTimeout() == [.failed(.timeout)])
        #expect(machine.onTimeout().isEmpty)
        var input = buffer(headerFrame + frame("/a"))
        #expect(machine.onBytes(&input).isEmpty)
        #expect(input.readableBytes == headerFrame.count + 4)

        var done = MultistreamMachine.responder(selector: ProtocolSelector(["/a"]))
        var negotiation = buffer(headerFrame + frame("/a"))
        _ = done.onBytes(&negotiation)
        #expect(done.onTimeout().isEmpty)
    }

    @Test("a finished machine leaves later input untouched")
    func finishedIgnoresInput() {
        var machine = MultistreamMachine.responder(selector: ProtocolSelector(["/a"]))
        var negotiation = buffer(headerFrame + frame("/a"))
        #expect(
            machine.onBytes(&negotiation) == [
                .send(buffer(headerFrame + frame("/a"))), .negotiated("/a", leftover: buffer([])),
            ])
        var later = buffer(utf8("more"))
        #expect(machine.onBytes(&later).isEmpty)
        #expect(later.readableBytes == 4)
    }

    @Test(
        "invalid proposals fail at start",
        arguments: [
            ([String](), MultistreamError.noProposals),
            (["/a", ""], .invalidProtocolID("")),
            (["/a\n/b"], .invalidProtocolID("/a\n/b")),
            (["na"], .invalidProtocolID("na")),
            (["ls"], .invalidProtocolID("ls")),
            (["/multistream/1.0.0"], .invalidProtocolID("/multistream/1.0.0")),
            ([String(repeating: "a", count: 1024)], .invalidProtocolID(String(repeating: "a", count: 1024))),
        ])
    func invalidProposals(proposals: [String], error: MultistreamError) {
        var machine = MultistreamMachine.initiator(proposals: proposals)
        #expect(machine.start() == [.failed(error)])
    }

    @Test("the longest proposal (1023 bytes, a 1024-byte frame) is negotiated")
    func longestProposal() {
        let id = "/" + String(repeating: "p", count: 1022)
        let c = negotiate(
            initiator: .initiator(proposals: [id]),
            responder: .responder(selector: ProtocolSelector([id])),
            expectInitiator: [.negotiated(id)],
            expectResponder: [.negotiated(id)])
        // uvarint(1024) = 0x80 0x08
        #expect(Array(c.toResponder[headerFrame.count..<(headerFrame.count + 2)]) == [0x80, 0x08])
    }
}

/// The responder's shortcut (header and a supported proposal in one read, answered with the
/// received bytes) must behave exactly as the frame-by-frame path: `feedAllSplits` feeds each
/// input whole (the shortcut) and byte by byte and split (the frame path) and compares.
@Suite("MultistreamMachine responder shortcut")
struct ResponderShortcutTests {
    static let selector = ProtocolSelector(["/kv/1.0.0", "/ünï/1"])

    @Test("a supported proposal with data after it: echo of header and proposal, data as leftover")
    func accepted() {
        let input = headerFrame + frame("/kv/1.0.0") + [0x03, 0x61, 0x62, 0x63]
        let outcome = feedAllSplits(.responder(selector: Self.selector), input)
        #expect(outcome.sent == headerFrame + frame("/kv/1.0.0"))
        #expect(outcome.events == [.negotiated("/kv/1.0.0")])
        #expect(outcome.trailing == [0x03, 0x61, 0x62, 0x63])
        // Non-ASCII ids are echoed byte for byte too.
        let unicode = feedAllSplits(.responder(selector: Self.selector), headerFrame + frame("/ünï/1"))
        #expect(unicode.sent == headerFrame + frame("/ünï/1"))
        #expect(unicode.events == [.negotiated("/ünï/1")])
    }

    @Test(
        "inputs the shortcut must leave to the frame path give the frame path's outcome",
        arguments: [
            // unsupported: header echoed, then na, still waiting
            headerFrame + frame("/other/1.0.0"),
            // ls
            headerFrame + frame("ls"),
            // a two-byte (non-minimal) length prefix for the proposal
            headerFrame + [0x8A, 0x00] + utf8("/kv/1.0.0") + [0x0A],
            // the proposal's newline missing
            headerFrame + [0x0A] + utf8("/kv/1.0.0") + [0x20],
            // invalid UTF-8
            headerFrame + [0x03, 0xFF, 0xFE, 0x0A],
            // a wrong header
            frame("/multistream/2.0.0") + frame("/kv/1.0.0"),
            // an empty proposal (just the newline) and a zero length
            headerFrame + [0x01, 0x0A],
            headerFrame + [0x00],
            // the header alone, and a partial proposal
            headerFrame,
            headerFrame + [0x0A] + utf8("/kv/1"),
        ])
    func leftToFramePath(input: [UInt8]) {
        // feedAllSplits checks whole == byte by byte == every split.
        let outcome = feedAllSplits(.responder(selector: Self.selector), input)
        #expect(!outcome.isNegotiated)
    }

    @Test("with no proposals allowed, the responder does not accept through the shortcut")
    func noProposalsAllowed() {
        let machine = MultistreamMachine.responder(selector: Self.selector, answerLs: true, maxMessages: 0)
        let outcome = feedAllSplits(machine, headerFrame + frame("/kv/1.0.0"))
        #expect(!outcome.isNegotiated)
    }
}
