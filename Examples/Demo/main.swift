// The MsgNet demo: two local nodes listen on loopback, connect over TCP (noise + mplex),
// identify each other and ping. Run with `make demo`.
import Logging
import MsgNetCore
import MsgNetSecurity
import MsgNetStreams
import MsgNetTransportPosix
import NIOPosix

LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = .warning
    return handler
}

func makeNode() -> StreamHost {
    let identity = PrivateKey.generate()
    return StreamHost(
        identity: identity,
        transports: [TCPTransport(group: MultiThreadedEventLoopGroup.singleton)],
        security: [NoiseSecurity(identity: identity)]
    )
}

let alice = makeNode()
let bob = makeNode()

await withTaskGroup(of: Void.self) { group in
    group.addTask { await alice.run() }
    group.addTask { await bob.run() }
    do {
        let bobAddress = try await bob.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
        print("alice is \(alice.peerID)")
        print("bob   is \(bob.peerID), listening on \(bobAddress)")

        let info = try await alice.identify(bobAddress)
        print("alice identified bob: agent \(info.agentVersion ?? "?"), protocols \(info.protocols)")

        let rtts = try await alice.ping(bob.peerID, count: 5)
        for (i, rtt) in rtts.enumerated() {
            let micros = rtt.components.seconds * 1_000_000 + rtt.components.attoseconds / 1_000_000_000_000
            print("alice → bob ping \(i + 1): \(micros) µs")
        }
        print(
            "demo ok: connected over \(alice.isConnected(to: bob.peerID) ? "noise + mplex" : "?"), identified, pinged")
    } catch {
        print("demo failed: \(error)")
    }
    await alice.shutdown()
    await bob.shutdown()
}
