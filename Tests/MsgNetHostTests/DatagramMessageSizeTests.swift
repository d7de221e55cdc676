import MsgNetCore
import MsgNetHost
import MsgNetStreams
import MsgNetTestSupport
import MsgNetTransportPosix
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

/// The datagram path carries the host's largest message (``MessageHostConfiguration/maxMessageSize``),
/// as the stream path does, over real sockets.
@Suite("Datagram path message sizes", .timeLimit(.minutes(2)))
struct DatagramMessageSizeTests {
    static func host(maxMessageSize: Int) -> MessageHost {
        let identity = PrivateKey.generate()
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        var configuration = MessageHostConfiguration()
        configuration.maxMessageSize = maxMessageSize
        configuration.defaultRequestTimeout = .seconds(30)
        let transport = DatagramMessageTransport(
            identity: identity, datagrams: UDPTransport(group: loop), eventLoop: loop)
        return MessageHost(
            identity: identity, transports: [transport], peerstore: Peerstore(), configuration: configuration)
    }

    static func pattern(_ size: Int) -> ByteBuffer {
        ByteBuffer(bytes: (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 8) })
    }

    @Test(
        "the largest message arrives whole, one byte more is refused with messageTooLarge",
        arguments: [1 << 20, 3 << 20, 64 << 10])
    func largestMessage(maxMessageSize: Int) async throws {
        let a = Self.host(maxMessageSize: maxMessageSize)
        let b = Self.host(maxMessageSize: maxMessageSize)
        let got = NIOLockedValueBox<[ByteBuffer]>([])
        b.setMessageHandler(for: "/big/1") { message in
            got.withLockedValue { $0.append(message.data) }
            try await message.reply(ByteBuffer(string: "\(message.data.readableBytes)"))
        }
        let largest = Self.pattern(maxMessageSize)
        try await running([a, b]) {
            let address = try await b.network.listen(on: try Multiaddr("/ip4/127.0.0.1/udp/0"))
            a.peerstore.addAddresses([address], for: b.peerID)
            let reply = try await a.request(largest, to: b.peerID, protocol: "/big/1")
            #expect(String(buffer: reply.data) == "\(maxMessageSize)" && reply.path == .datagram)
            try await a.send(largest, to: b.peerID, protocol: "/big/1")
            do {
                try await a.send(Self.pattern(maxMessageSize + 1), to: b.peerID, protocol: "/big/1")
                Issue.record("a message one byte over the limit was sent")
            } catch {
                #expect(MessageError.from(error).code == .messageTooLarge)
            }
        }
        let received = got.withLockedValue { $0 }
        #expect(received.count == 2)
        #expect(received.allSatisfy { $0 == largest })
    }

    @Test("a peer with a smaller limit refuses a larger message: the request fails with messageTooLarge")
    func receiverLimit() async throws {
        let a = Self.host(maxMessageSize: 1 << 20)
        let b = Self.host(maxMessageSize: 64 << 10)
        let handled = Counter()
        b.setMessageHandler(for: "/big/1") { message in
            handled.add()
            try await message.reply(message.data)
        }
        try await running([a, b]) {
            let address = try await b.network.listen(on: try Multiaddr("/ip4/127.0.0.1/udp/0"))
            a.peerstore.addAddresses([address], for: b.peerID)
            do {
                _ = try await a.request(Self.pattern(200 << 10), to: b.peerID, protocol: "/big/1")
                Issue.record("a request over the peer's limit got a reply")
            } catch {
                #expect(MessageError.from(error).code == .messageTooLarge)
            }
            // The session still serves messages within the limit.
            let reply = try await a.request(Self.pattern(1000), to: b.peerID, protocol: "/big/1")
            #expect(reply.data == Self.pattern(1000))
        }
        #expect(handled.value == 1)
    }
}
