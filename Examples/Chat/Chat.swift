// A chat node on the MsgNet message API: every line typed on stdin goes to every known peer on
// /chat/1.0.0; incoming lines print as "<peer-id-short>: <text>". Peers become known through
// --peer and by writing to us. Works over TCP and UDP.
//
//   swift run Chat --listen /ip4/127.0.0.1/tcp/0 --listen /ip4/127.0.0.1/udp/0
//   swift run Chat --listen /ip4/127.0.0.1/tcp/0 --peer /ip4/127.0.0.1/udp/40000/p2p/12D3KooW…
import ArgumentParser
import Logging
import MsgNetCore
import MsgNetHost
import MsgNetSecurity
import MsgNetStreams
import MsgNetTransportPosix
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The chat protocol: one message per line of text.
let chatProtocol = "/chat/1.0.0"

/// The short form of a peer id printed before each line (its last 8 characters).
func short(_ peer: PeerID) -> String { String(peer.description.suffix(8)) }

/// Writes one whole line straight to the standard output (no stdio buffer), so lines from
/// concurrent handlers never interleave. (Flushing stdio with `fflush(nil)` would also wait for
/// the lock of stdin, which the blocked `readLine` holds.)
let outputLock = Mutex(())
func say(_ line: String) {
    outputLock.withLock { _ in
        var bytes = Array((line + "\n").utf8)[...]
        while !bytes.isEmpty {
            let n = bytes.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
            if n <= 0 { return }
            bytes = bytes.dropFirst(n)
        }
    }
}

/// The peers we send to, in the order we met them.
final class Roster: Sendable {
    private let peers = Mutex<[PeerID]>([])

    /// Adds `peer`; returns whether it is new.
    @discardableResult
    func add(_ peer: PeerID) -> Bool {
        peers.withLock { list in
            if list.contains(peer) { return false }
            list.append(peer)
            return true
        }
    }

    var all: [PeerID] { peers.withLock { $0 } }
}

@main
struct Chat: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "Chat",
        abstract: "A MsgNet chat node: stdin lines go to every known peer on /chat/1.0.0."
    )

    @Option(name: .long, help: "Address to listen on (repeatable): /ip4/…/tcp/… or /ip4/…/udp/….")
    var listen: [String] = ["/ip4/127.0.0.1/tcp/0"]

    @Option(name: .long, help: "A peer to chat with (repeatable), ending in /p2p/<peer id>.")
    var peer: [String] = []

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .warning
            return handler
        }
        let identity = PrivateKey.generate()
        let host = makeHost(identity: identity)
        let roster = Roster()
        host.setMessageHandler(for: chatProtocol) { message in
            if roster.add(message.from) { say("* \(short(message.from)) joined") }
            say("\(short(message.from)): \(String(buffer: message.data))")
        }
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await host.run() }
            defer { tasks.cancelAll() }
            do {
                say("chat: I am \(identity.peerID) (\(short(identity.peerID)))")
                for address in try await host.network.listen(on: listen.map { try Multiaddr($0) }) {
                    say("\(address)")
                }
                for text in peer {
                    let address = try Multiaddr(text)
                    let id = try await host.network.connect(to: address)
                    roster.add(id)
                    say("* connected to \(short(id))")
                }
                try await chat(host, roster)
            } catch {
                say("chat: error: \(error)")
            }
            await host.shutdown()
            try await tasks.waitForAll()
        }
    }

    /// Reads stdin line by line (on the thread pool, as reads block) until end of input, and
    /// sends each line to every known peer.
    func chat(_ host: MessageHost, _ roster: Roster) async throws {
        while let line = try await NIOThreadPool.singleton.runIfActive({ readLine(strippingNewline: true) }) {
            if line.isEmpty { continue }
            let peers = roster.all
            if peers.isEmpty { say("* nobody to send to yet (use --peer, or wait for someone to write)") }
            await withTaskGroup(of: Void.self) { group in
                for peer in peers {
                    group.addTask {
                        do {
                            try await host.send(ByteBuffer(string: line), to: peer, protocol: chatProtocol)
                        } catch {
                            say("* could not send to \(short(peer)): \(error)")
                        }
                    }
                }
            }
        }
    }

    /// A host with the TCP stream path and the UDP datagram path.
    func makeHost(identity: PrivateKey) -> MessageHost {
        let group = MultiThreadedEventLoopGroup.singleton
        let peerstore = Peerstore()
        let streams = StreamMessageTransport(
            identity: identity,
            transports: [TCPTransport(group: group)],
            security: [NoiseSecurity(identity: identity)],
            peerstore: peerstore
        )
        let datagrams = DatagramMessageTransport(
            identity: identity, datagrams: UDPTransport(group: group), eventLoop: group.next())
        let transports: [any MessageTransport] = [streams, datagrams]
        return MessageHost(identity: identity, transports: transports, peerstore: peerstore)
    }
}
