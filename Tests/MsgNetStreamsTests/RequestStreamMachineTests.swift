import MsgNetCore
import MsgNetMultistream
import NIOCore
import Testing

@testable import MsgNetStreams

/// The kept request stream's decisions, driven directly: every event in every state, replies
/// fed byte by byte.
@Suite("Request stream machine")
struct RequestStreamMachineTests {
    static let peer = PrivateKey.generate().peerID

    static func machine(_ mode: RequestStreamMachine.Mode = .kept) -> RequestStreamMachine {
        RequestStreamMachine(peer: peer, protocolID: "/kv/1", mode: mode)
    }

    static func framed(_ text: String) -> [UInt8] {
        let bytes = Array(text.utf8)
        return UVarint.encode(UInt64(bytes.count)) + bytes
    }

    /// The actions as short strings, for comparison.
    static func describe(_ actions: [RequestStreamMachine.Action]) -> [String] {
        actions.map { action in
            switch action {
            case .finish(.success(let reply)): return "reply:\(String(buffer: reply))"
            case .finish(.failure(let error as StreamsError)): return "error:\(error.code)"
            case .finish(.failure(let error)): return "error:\(type(of: error))"
            case .keep: return "keep"
            case .forget: return "forget"
            case .reset: return "reset"
            case .closeWrite: return "closeWrite"
            case .retry: return "retry"
            }
        }
    }

    /// Feeds `bytes` one at a time; returns the actions of each byte that produced any.
    static func feed(_ m: inout RequestStreamMachine, _ bytes: [UInt8], requestEnded: Bool = false) -> [[String]] {
        var out: [[String]] = []
        for byte in bytes {
            var b = ByteBuffer(bytes: [byte])
            let actions = describe(m.onData(&b, requestEnded: requestEnded))
            if !actions.isEmpty { out.append(actions) }
        }
        return out
    }

    @Test("a reply fed byte by byte keeps the stream, then finishes the request; the next request works")
    func replyKeeps() {
        var m = Self.machine()
        #expect(m.isIdle)
        m.onRequest(parser: LazyReplyParser(maxSize: 64), keepIf: nil)
        #expect(!m.isIdle)
        #expect(Self.feed(&m, Self.framed("one")) == [["keep", "reply:one"]])
        #expect(m.isIdle)
        m.onRequest(parser: LazyReplyParser(maxSize: 64), keepIf: nil)
        #expect(Self.feed(&m, Self.framed("two")) == [["keep", "reply:two"]])
        #expect(m.isIdle && !m.isDone)
    }

    @Test("the first request's reply comes after the negotiation echo, byte by byte")
    func negotiatedFirst() {
        var m = Self.machine()
        let (multistream, proposal) = StreamHost.lazyProposal("/kv/1")
        m.onRequest(parser: LazyReplyParser(machine: multistream, maxSize: 64, proposal: proposal), keepIf: nil)
        let echo = Array(proposal.readableBytesView)
        #expect(Self.feed(&m, echo + Self.framed("hi")) == [["keep", "reply:hi"]])
    }

    @Test("two replies at once, or one the caller rejects: the reply is returned, the stream reset")
    func notKept() {
        var m = Self.machine()
        m.onRequest(parser: LazyReplyParser(maxSize: 64), keepIf: nil)
        var both = ByteBuffer(bytes: Self.framed("a") + Self.framed("b"))
        #expect(Self.describe(m.onData(&both, requestEnded: false)) == ["reset", "reply:a"])
        #expect(m.isDone)

        var r = Self.machine()
        r.onRequest(parser: LazyReplyParser(maxSize: 64), keepIf: { String(buffer: $0) != "bad" })
        #expect(Self.feed(&r, Self.framed("bad")) == [["reset", "reply:bad"]])
        #expect(r.isDone)
    }

    @Test("data while idle, or after the request ended elsewhere: out of step, reset")
    func outOfStep() {
        var idle = Self.machine()
        var b = ByteBuffer(bytes: [1])
        #expect(Self.describe(idle.onData(&b, requestEnded: false)) == ["forget", "reset"])
        #expect(idle.isDone)

        var late = Self.machine()
        late.onRequest(parser: LazyReplyParser(maxSize: 64), keepIf: nil)
        #expect(Self.feed(&late, Self.framed("x"), requestEnded: true) == [["forget", "reset"]])
        #expect(late.isDone)
    }

    @Test("an oversize or malformed reply fails the request and resets the stream")
    func badReply() {
        var big = Self.machine()
        big.onRequest(parser: LazyReplyParser(maxSize: 4), keepIf: nil)
        let oversize = Self.feed(&big, Self.framed("too long"))
        #expect(oversize.count == 1 && oversize.first?.last == "reset")
        #expect(oversize.first?.first?.hasPrefix("error:") == true)
        #expect(big.isDone)

        var malformed = Self.machine()
        malformed.onRequest(parser: LazyReplyParser(maxSize: 64), keepIf: nil)
        // A varint longer than ten bytes.
        let actions = Self.feed(&malformed, [UInt8](repeating: 0xFF, count: 11))
        #expect(actions.count == 1 && actions.first?.last == "reset")
        #expect(malformed.isDone)
    }

    @Test("the responder closing: a waiting request fails (protocol violation once negotiated, else closed)")
    func remoteClose() {
        var waiting = Self.machine()
        waiting.onRequest(parser: LazyReplyParser(maxSize: 64), keepIf: nil)
        #expect(
            Self.describe(waiting.onRemoteClosed()) == ["error:protocolViolation", "forget", "closeWrite"])
        #expect(waiting.isDone)

        var negotiating = Self.machine()
        let (multistream, proposal) = StreamHost.lazyProposal("/kv/1")
        negotiating.onRequest(
            parser: LazyReplyParser(machine: multistream, maxSize: 64, proposal: proposal), keepIf: nil)
        #expect(
            Self.describe(negotiating.onRemoteClosed()) == ["error:connectionClosed", "forget", "closeWrite"])

        var idle = Self.machine()
        #expect(Self.describe(idle.onRemoteClosed()) == ["forget", "closeWrite"])
    }

    @Test("a reused stream the responder ends before any reply byte: the request is sent again; after a byte, it fails")
    func reusedStreamEndedRetries() {
        // A machine that answered one request and waits for the reply to a second.
        func reused() -> RequestStreamMachine {
            var m = Self.machine()
            m.onRequest(parser: LazyReplyParser(maxSize: 64), keepIf: nil)
            _ = Self.feed(&m, Self.framed("one"))
            m.onRequest(parser: LazyReplyParser(maxSize: 64), keepIf: nil)
            return m
        }
        var closed = reused()
        #expect(Self.describe(closed.onRemoteClosed()) == ["retry", "forget", "closeWrite"])
        #expect(closed.isDone)
        var reset = reused()
        #expect(Self.describe(reset.onReset("by the peer")) == ["retry", "forget"])
        #expect(reset.isDone)

        // One byte of the reply: the responder read the request; its end is an error.
        var started = reused()
        #expect(Self.feed(&started, [UInt8(Self.framed("two").count - 1)]).isEmpty)
        #expect(Self.describe(started.onRemoteClosed()) == ["error:protocolViolation", "forget", "closeWrite"])
        var startedReset = reused()
        _ = Self.feed(&startedReset, [3])
        #expect(Self.describe(startedReset.onReset("by the peer")) == ["error:connectionClosed", "forget"])

        // A stream's first request is never sent again (see remoteClose and resetEvents), nor a
        // one-shot stream's.
        var oneShot = Self.machine(.oneShot)
        oneShot.onRequest(parser: LazyReplyParser(maxSize: 64), keepIf: nil)
        #expect(!Self.describe(oneShot.onRemoteClosed()).contains("retry"))
    }

    @Test("a reset fails a waiting request; an idle stream just leaves the pool")
    func resetEvents() {
        var waiting = Self.machine()
        waiting.onRequest(parser: LazyReplyParser(maxSize: 64), keepIf: nil)
        #expect(Self.describe(waiting.onReset("by the peer")) == ["error:connectionClosed", "forget"])
        var idle = Self.machine()
        #expect(Self.describe(idle.onReset("by the peer")) == ["forget"])
        #expect(idle.isDone)
    }

    @Test("retiring closes, evicting resets; once, and nothing after the stream is done")
    func retireAndEvict() {
        var retired = Self.machine()
        #expect(Self.describe(retired.retire()) == ["closeWrite"])
        #expect(Self.describe(retired.retire()).isEmpty)
        #expect(Self.describe(retired.evict()).isEmpty)
        var b = ByteBuffer(bytes: [1])
        #expect(Self.describe(retired.onData(&b, requestEnded: false)).isEmpty)

        var evicted = Self.machine()
        #expect(Self.describe(evicted.evict()) == ["reset"])
        #expect(Self.describe(evicted.retire()).isEmpty)
        #expect(evicted.isDone)
    }

    @Test("one-shot: the reply finishes the request; nothing after it, nor a close or reset, does anything")
    func oneShotReply() {
        var m = Self.machine(.oneShot)
        let (multistream, proposal) = StreamHost.lazyProposal("/kv/1")
        m.onRequest(parser: LazyReplyParser(machine: multistream, maxSize: 64, proposal: proposal), keepIf: nil)
        let echo = Array(proposal.readableBytesView)
        #expect(Self.feed(&m, echo + Self.framed("hi") + Self.framed("more")) == [["reply:hi"]])
        #expect(m.isDone)
        #expect(Self.describe(m.onRemoteClosed()).isEmpty)
        #expect(Self.describe(m.onReset("late")).isEmpty)
    }

    @Test("one-shot: a close or reset while waiting fails the request; after a timeout, data is ignored")
    func oneShotFailures() {
        var closed = Self.machine(.oneShot)
        closed.onRequest(parser: LazyReplyParser(maxSize: 64), keepIf: nil)
        #expect(Self.describe(closed.onRemoteClosed()) == ["error:protocolViolation"])

        var reset = Self.machine(.oneShot)
        reset.onRequest(parser: LazyReplyParser(maxSize: 64), keepIf: nil)
        #expect(Self.describe(reset.onReset("by the peer")) == ["error:connectionClosed"])

        var late = Self.machine(.oneShot)
        late.onRequest(parser: LazyReplyParser(maxSize: 64), keepIf: nil)
        #expect(Self.feed(&late, Self.framed("x"), requestEnded: true).isEmpty)

        var bad = Self.machine(.oneShot)
        bad.onRequest(parser: LazyReplyParser(maxSize: 2), keepIf: nil)
        let actions = Self.feed(&bad, Self.framed("too long"))
        #expect(actions.count == 1 && actions.first?.last == "reset")
    }
}
