import MsgNetCore
import MsgNetTestSupport
import NIOConcurrencyHelpers
import NIOCore
import Testing

@testable import MsgNetStreams

/// Requests with `keepStreamOpen`: the stream stays open after its reply, goes to the
/// connection's pool and carries the next request. The responders here are written by hand so
/// each test controls exactly what the peer does on the stream.
@Suite("Kept request streams", .timeLimit(.minutes(2)))
struct KeptRequestStreamTests {
    static let proto = "/kept/1"

    static func frame(_ text: String) -> ByteBuffer {
        var b = ByteBuffer()
        UVarint.write(UInt64(text.utf8.count), to: &b)
        b.writeString(text)
        return b
    }

    static func request(
        _ client: StreamHost, _ server: StreamHost, _ text: String, timeout: TimeAmount = .seconds(10),
        maxReplySize: Int = 1024
    ) async throws -> String {
        let reply = try await client.request(
            to: server.peerID, protocolID: proto, frame: frame(text), maxReplySize: maxReplySize,
            deadline: .now() + timeout, keepStreamOpen: true)
        return String(buffer: reply)
    }

    /// A server whose handler is `serve`, and a client connected to it.
    static func pair(
        client configure: (inout StreamHostConfiguration) -> Void = { _ in },
        serve: @escaping StreamHandler
    ) async throws -> (StreamHost, StreamHost, Multiaddr) {
        let server = makeHost { $0.identifyOnConnect = false }
        let client = makeHost {
            $0.identifyOnConnect = false
            configure(&$0)
        }
        server.setStreamHandler(proto, handler: serve)
        return (client, server, try await server.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0")))
    }

    /// A responder that answers every request on its stream with `re:` + the request, until the
    /// requester closes; counts streams opened and ended.
    static func echoing(opened: Counter, ended: Counter) -> StreamHandler {
        { stream in
            opened.add()
            defer { ended.add() }
            while let request = try await stream.readLengthPrefixed(maxSize: 1024) {
                try await stream.writeLengthPrefixed(ByteBuffer(string: "re:" + String(buffer: request)))
            }
        }
    }

    @Test("sequential requests share one stream, which stays in the pool")
    func sequentialReuse() async throws {
        let opened = Counter()
        let ended = Counter()
        let (client, server, address) = try await Self.pair(serve: Self.echoing(opened: opened, ended: ended))
        try await running([client, server]) {
            try await client.connect(to: address)
            for i in 0..<20 {
                #expect(try await Self.request(client, server, "q\(i)") == "re:q\(i)")
            }
            #expect(opened.value == 1)
            #expect(ended.value == 0)
            #expect(try await client.idleRequestStreams(to: server.peerID, protocolID: Self.proto) == 1)
        }
    }

    @Test("concurrent requests each get a stream; the pool keeps at most its limit, the rest are closed")
    func poolBound() async throws {
        let opened = Counter()
        let ended = Counter()
        let arrived = Counter()
        let (client, server, address) = try await Self.pair(client: { $0.maxIdleRequestStreams = 2 }) { stream in
            opened.add()
            defer { ended.add() }
            while let request = try await stream.readLengthPrefixed(maxSize: 1024) {
                // Hold each reply until all eight requests are in: eight streams are needed.
                arrived.add()
                await arrived.wait(atLeast: 8)
                try await stream.writeLengthPrefixed(ByteBuffer(string: "re:" + String(buffer: request)))
            }
        }
        try await running([client, server]) {
            try await client.connect(to: address)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<8 {
                    group.addTask {
                        let reply = try await Self.request(client, server, "c\(i)")
                        #expect(reply == "re:c\(i)")
                    }
                }
                try await group.waitForAll()
            }
            #expect(opened.value == 8)
            // Six were closed by the client; their responders saw the end.
            await ended.wait(atLeast: 6)
            #expect(try await client.idleRequestStreams(to: server.peerID, protocolID: Self.proto) == 2)
            // The two kept ones still serve.
            #expect(try await Self.request(client, server, "after") == "re:after")
            #expect(opened.value == 8)
        }
    }

    @Test("the idle bound counts the connection's streams over all protocols")
    func poolBoundAcrossProtocols() async throws {
        let arrived = Counter()
        let server = makeHost { $0.identifyOnConnect = false }
        let client = makeHost {
            $0.identifyOnConnect = false
            $0.maxIdleRequestStreams = 3
        }
        for p in ["/p/1", "/p/2"] {
            server.setStreamHandler(p) { stream in
                while let request = try await stream.readLengthPrefixed(maxSize: 1024) {
                    // Four requests in flight at once: four streams.
                    arrived.add()
                    await arrived.wait(atLeast: 4)
                    try await stream.writeLengthPrefixed(request)
                }
            }
        }
        let address = try await server.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        try await running([client, server]) {
            try await client.connect(to: address)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for p in ["/p/1", "/p/2"] {
                    for i in 0..<2 {
                        group.addTask {
                            let reply = try await client.request(
                                to: server.peerID, protocolID: p, frame: Self.frame("\(i)"), maxReplySize: 64,
                                deadline: .now() + .seconds(10), keepStreamOpen: true)
                            #expect(String(buffer: reply) == "\(i)")
                        }
                    }
                }
                try await group.waitForAll()
            }
            #expect(try await client.idleRequestStreams(to: server.peerID, protocolID: nil) == 3)
        }
    }

    @Test("at the stream limit, a new stream takes the slot of the longest-idle request stream")
    func evictionAtStreamLimit() async throws {
        let ended = Counter()
        let server = makeHost { $0.identifyOnConnect = false }
        // Three outbound streams at most on the client's connection.
        let client = makeHost {
            $0.identifyOnConnect = false
            $0.mplex.maxConcurrentStreams = 3
        }
        let protocols = (1...6).map { "/p/\($0)" }
        for p in protocols {
            server.setStreamHandler(p) { stream in
                defer { ended.add() }
                while let request = try await stream.readLengthPrefixed(maxSize: 1024) {
                    try await stream.writeLengthPrefixed(request)
                }
            }
        }
        let address = try await server.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        @Sendable func request(_ p: String, keep: Bool = true) async throws -> String {
            let reply = try await client.request(
                to: server.peerID, protocolID: p, frame: Self.frame(p), maxReplySize: 64,
                deadline: .now() + .seconds(10), keepStreamOpen: keep)
            return String(buffer: reply)
        }
        try await running([client, server]) {
            try await client.connect(to: address)
            // Three kept streams fill the limit.
            for p in protocols[0..<3] { #expect(try await request(p) == p) }
            #expect(try await client.idleRequestStreams(to: server.peerID, protocolID: nil) == 3)
            // A fourth protocol: /p/1's stream, idle the longest, is reset to make room.
            #expect(try await request("/p/4") == "/p/4")
            await ended.wait(atLeast: 1)
            #expect(try await client.idleRequestStreams(to: server.peerID, protocolID: "/p/1") == 0)
            #expect(try await client.idleRequestStreams(to: server.peerID, protocolID: "/p/4") == 1)
            #expect(try await client.idleRequestStreams(to: server.peerID, protocolID: nil) == 3)
            // So does any other stream the host opens (/p/2 goes)...
            let stream = try await client.newStream(to: server.peerID, protocols: ["/p/6"])
            try await stream.writeLengthPrefixed(ByteBuffer(string: "s"))
            #expect(try await stream.readLengthPrefixed(maxSize: 64).map { String(buffer: $0) } == "s")
            #expect(try await client.idleRequestStreams(to: server.peerID, protocolID: "/p/2") == 0)
            #expect(try await client.idleRequestStreams(to: server.peerID, protocolID: "/p/3") == 1)
            // ... and a per-request stream (/p/3 goes).
            #expect(try await request("/p/5", keep: false) == "/p/5")
            #expect(try await client.idleRequestStreams(to: server.peerID, protocolID: "/p/3") == 0)
            #expect(try await client.idleRequestStreams(to: server.peerID, protocolID: "/p/4") == 1)
            await stream.reset()
        }
    }

    @Test("a responder that closes after one reply (as libp2p ones do) gets a new stream per request")
    func oneShotResponder() async throws {
        let opened = Counter()
        let (client, server, address) = try await Self.pair { stream in
            opened.add()
            guard let request = try await stream.readLengthPrefixed(maxSize: 1024) else { return }
            try await stream.writeLengthPrefixed(ByteBuffer(string: "re:" + String(buffer: request)))
        }
        try await running([client, server]) {
            try await client.connect(to: address)
            for i in 0..<5 {
                #expect(try await Self.request(client, server, "o\(i)") == "re:o\(i)")
            }
            #expect(opened.value == 5)
            // The responder's close follows its reply on the wire and may arrive after the
            // request returned; the stream leaves the pool when it does.
            #expect(
                try await eventually {
                    try await client.idleRequestStreams(to: server.peerID, protocolID: Self.proto) == 0
                })
        }
    }

    @Test("no reply, then the responder closes: protocol violation; the next request works")
    func closedWithoutReply() async throws {
        let ignored = Counter()
        let (client, server, address) = try await Self.pair { stream in
            guard let request = try await stream.readLengthPrefixed(maxSize: 1024) else { return }
            if String(buffer: request) == "ignore" {
                ignored.add()
                return
            }
            try await stream.writeLengthPrefixed(ByteBuffer(string: "re:" + String(buffer: request)))
            while let next = try await stream.readLengthPrefixed(maxSize: 1024) {
                if String(buffer: next) == "ignore" {
                    ignored.add()
                    return
                }
                try await stream.writeLengthPrefixed(ByteBuffer(string: "re:" + String(buffer: next)))
            }
        }
        try await running([client, server]) {
            try await client.connect(to: address)
            #expect(try await Self.request(client, server, "a") == "re:a")
            // First on the kept stream (the second request there): a reused stream ended before
            // any reply byte looks like a responder that ended it before reading, so the request
            // goes again on a new stream, where it fails. Then on a new stream at once.
            for _ in 0..<2 {
                await #expect {
                    _ = try await Self.request(client, server, "ignore")
                } throws: { ($0 as? StreamsError)?.code == .protocolViolation }
            }
            // This responder breaks the protocol (it read a request and did not answer), so it
            // saw the first "ignore" twice.
            #expect(ignored.value == 3)
            #expect(try await Self.request(client, server, "b") == "re:b")
        }
    }

    @Test(
        "a responder that ends an idle kept stream just as the next request goes out: the request goes again on a new stream"
    )
    func endedUnderTheNextRequest() async throws {
        // The responder answers one request, then ends the stream (a close, or a reset) as the
        // next one arrives, without answering it: every request after the first meets an end.
        for reset in [false, true] {
            let opened = Counter()
            let read = Counter()
            let (client, server, address) = try await Self.pair { stream in
                opened.add()
                guard let request = try await stream.readLengthPrefixed(maxSize: 1024) else { return }
                read.add()
                try await stream.writeLengthPrefixed(ByteBuffer(string: "re:" + String(buffer: request)))
                // Wait for the next request's first bytes, then end the stream unread.
                _ = try? await stream.read()
                if reset { await stream.reset() }
            }
            try await running([client, server]) {
                try await client.connect(to: address)
                for i in 0..<4 {
                    #expect(try await Self.request(client, server, "r\(i)") == "re:r\(i)")
                }
                #expect(read.value == 4)
                #expect(opened.value == 4)
            }
        }
    }

    @Test(
        "data after the answer, in its write (a second reply) or later (on the idle stream): the answer stands, the stream is reset, not reused",
        arguments: [true, false])
    func dataAfterTheAnswer(together: Bool) async throws {
        let opened = Counter()
        let reset = Counter()
        let (client, server, address) = try await Self.pair { stream in
            opened.add()
            do {
                while let request = try await stream.readLengthPrefixed(maxSize: 1024) {
                    var answer = Self.frame("re:" + String(buffer: request))
                    let more = String(buffer: request) == "then-more"
                    if more && together { answer.writeImmutableBuffer(Self.frame("unasked")) }
                    try await stream.write(answer)
                    if more && !together { try await stream.write(Self.frame("unasked")) }
                }
            } catch {
                reset.add()
                throw error
            }
        }
        try await running([client, server]) {
            try await client.connect(to: address)
            #expect(try await Self.request(client, server, "one") == "re:one")
            // Written apart, the two may still arrive in one read (then the second-reply rule
            // applies) or apart (the idle rule): either way the stream is reset.
            #expect(try await Self.request(client, server, "then-more") == "re:then-more")
            await reset.wait(atLeast: 1)
            #expect(try await client.idleRequestStreams(to: server.peerID, protocolID: Self.proto) == 0)
            #expect(try await Self.request(client, server, "three") == "re:three")
            #expect(opened.value == 2)
        }
    }

    @Test("a timed-out request resets its kept stream: its late reply never answers a later request")
    func timeoutResets() async throws {
        let release = Counter()
        let opened = Counter()
        let (client, server, address) = try await Self.pair { stream in
            opened.add()
            while let request = try await stream.readLengthPrefixed(maxSize: 1024) {
                if String(buffer: request) == "slow" { await release.wait(atLeast: 1) }
                try await stream.writeLengthPrefixed(ByteBuffer(string: "re:" + String(buffer: request)))
            }
        }
        try await running([client, server]) {
            try await client.connect(to: address)
            #expect(try await Self.request(client, server, "warm") == "re:warm")
            await #expect {
                _ = try await Self.request(client, server, "slow", timeout: .milliseconds(200))
            } throws: { ($0 as? StreamsError)?.code == .timedOut }
            release.add()
            #expect(try await Self.request(client, server, "fast") == "re:fast")
            #expect(opened.value == 2)
        }
    }

    @Test("a cancelled request resets its kept stream, which is not reused")
    func cancelResets() async throws {
        let release = Counter()
        let arrived = Counter()
        let opened = Counter()
        let (client, server, address) = try await Self.pair { stream in
            opened.add()
            while let request = try await stream.readLengthPrefixed(maxSize: 1024) {
                if String(buffer: request) == "hold" {
                    arrived.add()
                    await release.wait(atLeast: 1)
                }
                try await stream.writeLengthPrefixed(ByteBuffer(string: "re:" + String(buffer: request)))
            }
        }
        try await running([client, server]) {
            try await client.connect(to: address)
            #expect(try await Self.request(client, server, "warm") == "re:warm")
            let held = Task { try await Self.request(client, server, "hold") }
            await arrived.wait(atLeast: 1)
            held.cancel()
            await #expect(throws: CancellationError.self) { _ = try await held.value }
            release.add()
            #expect(try await Self.request(client, server, "next") == "re:next")
            #expect(opened.value == 2)
        }
    }

    @Test("an oversize reply on a kept stream fails the request and resets the stream")
    func oversizeReply() async throws {
        let opened = Counter()
        let (client, server, address) = try await Self.pair { stream in
            opened.add()
            while let request = try await stream.readLengthPrefixed(maxSize: 1024) {
                let text = String(buffer: request)
                let reply = text == "big" ? String(repeating: "x", count: 200) : "re:" + text
                try await stream.writeLengthPrefixed(ByteBuffer(string: reply))
            }
        }
        try await running([client, server]) {
            try await client.connect(to: address)
            #expect(try await Self.request(client, server, "a", maxReplySize: 100) == "re:a")
            await #expect {
                _ = try await Self.request(client, server, "big", maxReplySize: 100)
            } throws: { ($0 as? ReplyTooLargeError)?.length == 200 }
            #expect(try await Self.request(client, server, "b", maxReplySize: 100) == "re:b")
            #expect(opened.value == 2)
        }
    }

    @Test("an idle kept stream is closed after the idle timeout")
    func idleTimeout() async throws {
        let opened = Counter()
        let ended = Counter()
        let (client, server, address) = try await Self.pair(client: {
            $0.requestStreamIdleTimeout = .milliseconds(50)
        }) { stream in
            try await Self.echoing(opened: opened, ended: ended)(stream)
        }
        try await running([client, server]) {
            try await client.connect(to: address)
            #expect(try await Self.request(client, server, "x") == "re:x")
            // The responder sees the requester's close once the sweep retires the stream.
            await ended.wait(atLeast: 1)
            #expect(try await client.idleRequestStreams(to: server.peerID, protocolID: Self.proto) == 0)
            #expect(try await Self.request(client, server, "y") == "re:y")
            #expect(opened.value == 2)
        }
    }

    @Test("a responder that refuses the protocol: not supported, and nothing is pooled")
    func refused() async throws {
        let (client, server, address) = try await Self.pair { _ in }
        try await running([client, server]) {
            try await client.connect(to: address)
            await #expect {
                _ = try await client.request(
                    to: server.peerID, protocolID: "/other/1", frame: Self.frame("x"), maxReplySize: 64,
                    deadline: .now() + .seconds(10), keepStreamOpen: true)
            } throws: { ($0 as? StreamsError)?.code == .protocolNotSupported }
            #expect(try await client.idleRequestStreams(to: server.peerID, protocolID: "/other/1") == 0)
        }
    }
}
