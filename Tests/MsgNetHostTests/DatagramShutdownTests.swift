import MsgNetCore
import MsgNetHost
import MsgNetTransportPosix
import NIOCore
import NIOPosix
import Testing

/// A datagram transport shut down while connects are under way: they fail with an error, and
/// nothing is bound after the shutdown.
@Suite("Datagram transport shutdown", .timeLimit(.minutes(2)))
struct DatagramShutdownTests {
    func transport() -> DatagramMessageTransport {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        return DatagramMessageTransport(
            identity: PrivateKey.generate(), datagrams: UDPTransport(group: loop), eventLoop: loop)
    }

    /// A connect picks its socket off the loop, then starts on the loop; a shutdown in between
    /// used to leave it indexing the emptied socket list (a crash). Raced many times, with and
    /// without a socket bound beforehand (without, the connect binds one itself).
    @Test(arguments: [false, true])
    func connectsRacingAShutdownFailCleanly(listening: Bool) async throws {
        let target = try Multiaddr("/ip4/127.0.0.1/udp/9")
        for round in 0..<40 {
            let udp = transport()
            if listening { _ = try await udp.listen(on: try Multiaddr("/ip4/127.0.0.1/udp/0")) }
            let connects = (0..<3).map { _ in Task { try await udp.connect(to: target) } }
            // Different rounds stop at different points of the connects.
            for _ in 0..<(round % 4) { await Task.yield() }
            await udp.shutdown()
            for connect in connects {
                let error = await #expect(throws: MessageError.self) { _ = try await connect.value }
                #expect(
                    [.cancelled, .dialFailed, .connectionClosed].contains(error?.code),
                    "round \(round): \(String(describing: error))")
            }
        }
    }

    @Test func nothingIsBoundAfterShutdown() async throws {
        let udp = transport()
        await udp.shutdown()
        let listen = await #expect(throws: MessageError.self) {
            _ = try await udp.listen(on: try Multiaddr("/ip4/127.0.0.1/udp/0"))
        }
        #expect(listen?.code == .cancelled)
        let connect = await #expect(throws: MessageError.self) {
            _ = try await udp.connect(to: try Multiaddr("/ip4/127.0.0.1/udp/9"))
        }
        #expect(connect?.code == .cancelled)
        #expect(udp.listenAddresses.isEmpty)
    }
}
