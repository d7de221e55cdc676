import ArgumentParser
import MsgNetCore
import MsgNetMultipacket
import NIOCore

/// A profiling aid, not a claim: the CPU time of the datagram path's protocol machines alone
/// (two session tables and two messaging machines, in memory, on one thread) per request/reply
/// round trip. No sockets, no event loop, no tasks: what is left when those are taken out of the
/// `datagrams` request measure. Use it to compare builds of the machines (A/B); quote
/// `datagrams` for performance.
struct MachinesBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "machines",
        abstract:
            "Profiling aid: CPU per request/reply round trip of the datagram protocol machines alone (no sockets)."
    )

    @Option(help: "Repetitions (the median is reported).")
    var runs = 5
    @Option(help: "Round trips per repetition.")
    var roundTrips = 200_000
    @Option(help: "Request and reply size, bytes.")
    var size = 64

    struct Side {
        var table: SessionTable<DatagramPath>
        var machine = MessagingMachine(hasHandler: { _ in true })
        var session: SessionID?
        let path: DatagramPath
    }

    func run() async throws {
        print("msgnet-bench machines --runs \(runs) --round-trips \(roundTrips) --size \(size)")
        let a = try SocketAddress(ipAddress: "127.0.0.1", port: 1)
        let b = try SocketAddress(ipAddress: "127.0.0.1", port: 2)
        // `path` is how the other side sees this one.
        var client = Side(
            table: SessionTable(identity: PrivateKey.generate()), path: DatagramPath(socket: 0, remote: a))
        var server = Side(
            table: SessionTable(identity: PrivateKey.generate()), path: DatagramPath(socket: 0, remote: b))

        // Handshake: datagrams passed back and forth until both sides hold an established session.
        var (_, actions) = try client.table.connect(to: [server.path], expecting: nil, now: .now())
        var toServer: [ByteBuffer] = []
        var toClient: [ByteBuffer] = []
        func collect(_ actions: [SessionAction<DatagramPath>], _ side: inout Side, _ out: inout [ByteBuffer]) {
            for action in actions {
                switch action {
                case .send(let datagram, _): out.append(datagram)
                case .established(let info): side.session = info.localID
                default: break
                }
            }
        }
        collect(actions, &client, &toServer)
        var rounds = 0
        while (client.session == nil || server.session == nil) && rounds < 10 {
            rounds += 1
            for d in toServer {
                actions = server.table.onDatagram(d, from: client.path, now: .now())
                collect(actions, &server, &toClient)
            }
            toServer = []
            for d in toClient {
                actions = client.table.onDatagram(d, from: server.path, now: .now())
                collect(actions, &client, &toServer)
            }
            toClient = []
        }
        guard client.session != nil, server.session != nil else { throw BenchError("handshake did not finish") }

        let request = ByteBuffer(repeating: 0x33, count: size)
        var samples: [Double] = []
        let clock = ContinuousClock()
        for run in 0...runs {
            let start = clock.now
            for i in 0..<roundTrips {
                let replies = try roundTrip(request, id: UInt64(i), client: &client, server: &server)
                guard replies == 1 else { throw BenchError("round trip \(i): \(replies) replies") }
            }
            // Run 0 warms up.
            if run > 0 { samples.append(seconds(clock.now - start) / Double(roundTrips) * 1e9) }
        }
        samples.sort()
        print("median ns per round trip (both sides' machines): \(fmt(samples[samples.count / 2]))")
        print("all runs: \(samples.map(fmt).joined(separator: ", "))")
    }

    /// One request and its reply through both sides' machines; returns the replies delivered.
    func roundTrip(_ request: ByteBuffer, id: UInt64, client: inout Side, server: inout Side) throws -> Int {
        let sent = try client.machine.send(
            request, protocol: "/bench/echo/1.0.0", kind: .request(id: id), now: .now())
        var datagrams = try seal(sent.actions, side: &client)
        var replies = 0
        for d in datagrams {
            for payload in open(server.table.onDatagram(d, from: client.path, now: .now())) {
                for action in server.machine.onPayload(payload, now: .now()) {
                    guard case .deliver(let inbound) = action, case .request(let rid) = inbound.kind else { continue }
                    let reply = try server.machine.send(
                        inbound.data, protocol: inbound.protocolName, kind: .reply(to: rid), now: .now())
                    datagrams = try seal(reply.actions, side: &server)
                    for r in datagrams {
                        for payload in open(client.table.onDatagram(r, from: server.path, now: .now())) {
                            for action in client.machine.onPayload(payload, now: .now()) {
                                if case .deliver(let m) = action, m.kind == .reply(to: id) { replies += 1 }
                            }
                        }
                    }
                }
            }
        }
        return replies
    }

    func seal(_ actions: [MessagingAction], side: inout Side) throws -> [ByteBuffer] {
        var out: [ByteBuffer] = []
        for case .sendPayload(let payload, _) in actions {
            for case .send(let datagram, _) in try side.table.send(payload, session: side.session!, now: .now()) {
                out.append(datagram)
            }
        }
        return out
    }

    func open(_ actions: [SessionAction<DatagramPath>]) -> [ByteBuffer] {
        var out: [ByteBuffer] = []
        for case .deliver(let payload, _, _) in actions { out.append(payload) }
        return out
    }
}
