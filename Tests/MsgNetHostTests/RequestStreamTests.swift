import MsgNetCore
import MsgNetStreams
import MsgNetTestSupport
import MsgNetTransportPosix
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import MsgNetHost

/// Request streams between MsgNet hosts (`StreamMessageTransport.RequestStreams`): when they are
/// used, their error answers, and the protocol ids they are named by. The handler suite runs every
/// handler test over them too (`TransportFactory.tcpRequestStreams`).
@Suite("Request streams", .timeLimit(.minutes(2)))
struct RequestStreamTests {
    static let marker = StreamMessageTransport.requestStreamsProtocol

    static func host(_ mode: StreamMessageTransport.RequestStreams) -> MessageHost {
        TransportFactory.stream(name: "tcp", requestStreams: mode).host()
    }

    static func streamTransport(_ host: MessageHost) throws -> StreamMessageTransport {
        try #require(host.transports.compactMap { $0 as? StreamMessageTransport }.first)
    }

    /// Idle request streams `a` keeps to `b` for `protocolID`.
    static func idle(_ a: MessageHost, to b: MessageHost, _ protocolID: String) async throws -> Int {
        try await streamTransport(a).streamHost.idleRequestStreams(
            to: b.peerID, protocolID: marker + protocolID)
    }

    /// Waits (bounded) until identify has told `a` which protocols `b` serves.
    static func identified(_ a: MessageHost, _ b: MessageHost) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while a.peerstore.protocols(for: b.peerID).isEmpty {
            try #require(ContinuousClock.now < deadline, "identify did not complete in 10 s")
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    @Test("by default, requests use request streams once identify announced them")
    func usedWhenAnnounced() async throws {
        let a = Self.host(.whenSupported)
        let b = Self.host(.whenSupported)
        b.setMessageHandler(for: "/kv/1") { try await $0.reply(bytes("re:" + String(buffer: $0.data))) }
        try await running([a, b]) {
            let address = try await introduce(a, to: b, on: .tcp)
            _ = try await a.network.connect(to: address)
            try await Self.identified(a, b)
            #expect(a.peerstore.protocols(for: b.peerID).contains(Self.marker))
            for i in 0..<5 {
                let r = try await a.request(bytes("\(i)"), to: b.peerID, protocol: "/kv/1")
                #expect(String(buffer: r.data) == "re:\(i)")
            }
            #expect(try await Self.idle(a, to: b, "/kv/1") == 1)
        }
    }

    @Test("a peer that does not announce them gets a stream per request")
    func notAnnounced() async throws {
        let a = Self.host(.whenSupported)
        let b = Self.host(.off)
        b.setMessageHandler(for: "/kv/1") { try await $0.reply($0.data) }
        try await running([a, b]) {
            let address = try await introduce(a, to: b, on: .tcp)
            _ = try await a.network.connect(to: address)
            try await Self.identified(a, b)
            #expect(!a.peerstore.protocols(for: b.peerID).contains(Self.marker))
            for _ in 0..<3 {
                #expect(String(buffer: try await a.request(bytes("x"), to: b.peerID, protocol: "/kv/1").data) == "x")
            }
            #expect(try await Self.idle(a, to: b, "/kv/1") == 0)
        }
    }

    @Test(".always to a peer that does not serve them: refused in negotiation, then sent on a stream of its own")
    func alwaysToOff() async throws {
        let a = Self.host(.always)
        let b = Self.host(.off)
        let handled = Counter()
        b.setMessageHandler(for: "/kv/1") {
            handled.add()
            try await $0.reply($0.data)
        }
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: .tcp)
            for i in 0..<3 {
                #expect(
                    String(buffer: try await a.request(bytes("\(i)"), to: b.peerID, protocol: "/kv/1").data) == "\(i)")
            }
            // Each request was handled once: the refused proposal carried it to no handler.
            #expect(handled.value == 3)
            #expect(try await Self.idle(a, to: b, "/kv/1") == 0)
            // A protocol the peer does not handle at all is still not supported.
            await #expect {
                _ = try await a.request(bytes("x"), to: b.peerID, protocol: "/none/1")
            } throws: { code($0) == .protocolNotSupported }
        }
    }

    @Test("protocol ids without a leading slash use a stream per request")
    func noSlash() async throws {
        let a = Self.host(.always)
        let b = Self.host(.always)
        b.setMessageHandler(for: "kv") { try await $0.reply($0.data) }
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: .tcp)
            #expect(String(buffer: try await a.request(bytes("x"), to: b.peerID, protocol: "kv").data) == "x")
            let idle = try await Self.streamTransport(a).streamHost.idleRequestStreams(
                to: b.peerID, protocolID: Self.marker + "kv")
            #expect(idle == 0)
        }
    }

    @Test("errors are answers: the request stream stays open for the next request")
    func errorAnswersKeepTheStream() async throws {
        struct Boom: Error {}
        let a = Self.host(.always)
        let b = Self.host(.always)
        b.setMessageHandler(for: "/e/1") { message in
            switch String(buffer: message.data) {
            case "silent": return
            case "throw": throw Boom()
            default: try await message.reply(message.data)
            }
        }
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: .tcp)
            #expect(String(buffer: try await a.request(bytes("ok"), to: b.peerID, protocol: "/e/1").data) == "ok")
            await #expect {
                _ = try await a.request(bytes("silent"), to: b.peerID, protocol: "/e/1")
            } throws: { code($0) == .remoteError }
            #expect(try await Self.idle(a, to: b, "/e/1") == 1)
            await #expect {
                _ = try await a.request(bytes("throw"), to: b.peerID, protocol: "/e/1")
            } throws: { code($0) == .remoteError }
            #expect(try await Self.idle(a, to: b, "/e/1") == 1)
            // A handler removed while the stream is open: the request on it is answered "not
            // supported" (it was not handled).
            b.removeMessageHandler(for: "/e/1")
            await #expect {
                _ = try await a.request(bytes("ok"), to: b.peerID, protocol: "/e/1")
            } throws: { code($0) == .protocolNotSupported }
            #expect(try await Self.idle(a, to: b, "/e/1") == 1)
        }
    }

    @Test("a request is answered once: a second reply fails in the handler")
    func secondReplyFails() async throws {
        let a = Self.host(.always)
        let b = Self.host(.always)
        let second = NIOLockedValueBox<MessageError.Code?>(nil)
        let done = Signal()
        b.setMessageHandler(for: "/twice/1") { message in
            try await message.reply(bytes("first"))
            do {
                try await message.reply(bytes("second"))
            } catch {
                second.withLockedValue { $0 = code(error) }
            }
            done.fire()
        }
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: .tcp)
            #expect(String(buffer: try await a.request(bytes("x"), to: b.peerID, protocol: "/twice/1").data) == "first")
            await done.wait()
            #expect(second.withLockedValue { $0 } == .remoteError)
            #expect(String(buffer: try await a.request(bytes("y"), to: b.peerID, protocol: "/twice/1").data) == "first")
        }
    }

    @Test("the responder resets a request stream left idle past its own timeout; the next request opens a new one")
    func responderIdleTimeout() async throws {
        let a = Self.host(.always)
        let b = TransportFactory.stream(name: "tcp", requestStreams: .always) {
            $0.inboundRequestStreamIdleTimeout = .milliseconds(100)
        }.host()
        b.setMessageHandler(for: "/kv/1") { try await $0.reply($0.data) }
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: .tcp)
            #expect(String(buffer: try await a.request(bytes("x"), to: b.peerID, protocol: "/kv/1").data) == "x")
            // a keeps the stream for 30 s; b gives up on it after 100 ms. Bounded poll: no event
            // reports a pooled stream's end.
            let deadline = ContinuousClock.now + .seconds(10)
            while try await Self.idle(a, to: b, "/kv/1") > 0 {
                try #require(ContinuousClock.now < deadline, "the idle request stream was not reset in 10 s")
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(String(buffer: try await a.request(bytes("y"), to: b.peerID, protocol: "/kv/1").data) == "y")
        }
    }

    @Test("a requester that pipelines, or sends an oversize or malformed request, on a request stream")
    func hostileRequester() async throws {
        let a = Self.host(.off)
        let b = Self.host(.always)
        b.setMessageHandler(for: "/kv/1") { try await $0.reply(bytes("re:" + String(buffer: $0.data))) }
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: .tcp)
            let client = try Self.streamTransport(a).streamHost
            func frame(_ payload: [UInt8]) -> ByteBuffer {
                var f = ByteBuffer()
                UVarint.write(UInt64(payload.count), to: &f)
                f.writeBytes(payload)
                return f
            }
            // Two requests in one write: answered in order, each with its status byte.
            let stream = try await client.newStream(to: b.peerID, protocols: [Self.marker + "/kv/1"])
            var both = frame(Array("p1".utf8))
            both.writeImmutableBuffer(frame(Array("p2".utf8)))
            try await stream.write(both)
            for expected in ["p1", "p2"] {
                var answer = try #require(try await stream.readLengthPrefixed(maxSize: 64))
                #expect(answer.readInteger(as: UInt8.self) == 0)
                #expect(String(buffer: answer) == "re:" + expected)
            }
            // A length over the responder's limit, then a malformed varint: each resets its stream.
            for bad: [UInt8] in [
                Array(UVarint.encode(UInt64(2 << 20))),
                [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            ] {
                let s = try await client.newStream(to: b.peerID, protocols: [Self.marker + "/kv/1"])
                try await s.write(bad)
                await #expect(throws: (any Error).self) { _ = try await s.readLengthPrefixed(maxSize: 64) }
            }
            // The responder still serves.
            let again = try await client.newStream(to: b.peerID, protocols: [Self.marker + "/kv/1"])
            try await again.write(frame(Array("ok".utf8)))
            var answer = try #require(try await again.readLengthPrefixed(maxSize: 64))
            #expect(answer.readInteger(as: UInt8.self) == 0)
            #expect(String(buffer: answer) == "re:ok")
        }
    }

    @Test("request stream ids: built only for ids that start with '/' and fit a multistream line")
    func ids() {
        #expect(StreamMessageTransport.requestStreamID("/kv/1") == "/msgnet/requests/1.0.0/kv/1")
        #expect(StreamMessageTransport.requestStreamID("kv") == nil)
        #expect(StreamMessageTransport.requestStreamID("") == nil)
        let long = "/" + String(repeating: "x", count: 2000)
        #expect(StreamMessageTransport.requestStreamID(long) == nil)
        #expect(StreamMessageTransport.requestedProtocol("/msgnet/requests/1.0.0/kv/1") == "/kv/1")
        // Hostile or unrelated proposals name no protocol.
        for id in ["/msgnet/requests/1.0.0", "/msgnet/requests/1.0.0kv", "/msgnet/requests/1.0.1/kv", "/kv/1", ""] {
            #expect(StreamMessageTransport.requestedProtocol(id) == nil, "\(id)")
        }
    }

    @Test("a malformed or unknown answer status fails the request with remoteError")
    func malformedAnswer() async throws {
        // A hand-written responder on the request stream id answers with bad statuses.
        let a = Self.host(.always)
        let b = Self.host(.off)
        let server = try Self.streamTransport(b).streamHost
        server.setStreamHandler(Self.marker + "/bad/1") { stream in
            while let request = try await stream.readLengthPrefixed(maxSize: 64) {
                switch String(buffer: request) {
                case "empty": try await stream.writeLengthPrefixed(ByteBuffer())
                case "status9": try await stream.writeLengthPrefixed(ByteBuffer(bytes: [9, 1, 2]))
                default: try await stream.writeLengthPrefixed(ByteBuffer(bytes: [0] + Array("ok".utf8)))
                }
            }
        }
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: .tcp)
            #expect(String(buffer: try await a.request(bytes("x"), to: b.peerID, protocol: "/bad/1").data) == "ok")
            for bad in ["empty", "status9"] {
                await #expect {
                    _ = try await a.request(bytes(bad), to: b.peerID, protocol: "/bad/1")
                } throws: { code($0) == .remoteError }
                // The stream that carried it is not kept.
                #expect(try await Self.idle(a, to: b, "/bad/1") == 0)
                #expect(String(buffer: try await a.request(bytes("x"), to: b.peerID, protocol: "/bad/1").data) == "ok")
                #expect(try await Self.idle(a, to: b, "/bad/1") == 1)
            }
        }
    }
}

@Suite("Inbox replies", .timeLimit(.minutes(2)))
struct InboxReplyTests {
    @Test("a request taken from messages(for:) can be replied to", arguments: TransportFactory.all)
    func inboxReply(factory: TransportFactory) async throws {
        let a = factory.host()
        let b = factory.host()
        let inbox = b.messages(for: "/inbox/1")
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: factory)
            async let replies: Void = {
                var n = 0
                for await message in inbox {
                    try await message.reply(bytes("re:" + String(buffer: message.data)))
                    n += 1
                    if n == 3 { break }
                }
            }()
            for i in 0..<3 {
                let r = try await a.request(bytes("\(i)"), to: b.peerID, protocol: "/inbox/1", timeout: .seconds(10))
                #expect(String(buffer: r.data) == "re:\(i)")
            }
            try await replies
        }
    }

    @Test(
        "a request the consumer never replies to is answered remoteError after the reply window",
        arguments: TransportFactory.all)
    func inboxNoReply(factory: TransportFactory) async throws {
        let a = factory.host()
        let b = factory.host { $0.defaultRequestTimeout = .milliseconds(100) }
        let inbox = b.messages(for: "/inbox/1")
        try await running([a, b]) {
            _ = try await introduce(a, to: b, on: factory)
            async let taken: Void = {
                for await _ in inbox { break }
            }()
            await #expect {
                _ = try await a.request(bytes("x"), to: b.peerID, protocol: "/inbox/1", timeout: .seconds(10))
            } throws: { code($0) == .remoteError }
            await taken
        }
    }
}
