import Logging
import MsgNetCore
import MsgNetStreams
import NIOCore
import Testing

/// Hostile peers: each gets its connection closed with a logged error within the upgrade
/// timeout, and the node keeps serving other peers.
@Suite("hostile peers", .timeLimit(.minutes(2)))
struct HostileTests {
    /// A victim host with a short upgrade timeout, a recorder for its logs, and a friend that
    /// checks it still serves.
    func withVictim(_ body: @Sendable (StreamHost, Multiaddr, LogRecorder) async throws -> Void) async throws {
        let logs = LogRecorder()
        let victim = makeHost(
            configure: {
                $0.upgradeTimeout = .seconds(2)
                $0.streamNegotiationTimeout = .seconds(2)
            }, logger: logs.logger("victim"))
        let friend = makeHost()
        try await running([victim, friend]) {
            let address = try await victim.listen(on: try Multiaddr("/ip4/127.0.0.1/tcp/0"))
            try await body(victim, address, logs)
            // The node keeps serving other peers.
            do {
                #expect(try await friend.ping(address, count: 2).count == 2)
            } catch {
                Issue.record(
                    "victim stopped serving: \(error); victim log: \(logs.all.map { "\($0.level) \($0.message) \($0.metadata)" })"
                )
            }
        }
    }

    @Test("garbage instead of multistream")
    func garbage() async throws {
        try await withVictim { _, address, logs in
            let client = try await RawClient.connect(to: address)
            try await client.send(
                (0..<64).map { _ in UInt8.random(in: 0...255) } + [0x7F] + Array(repeating: 0x41, count: 200))
            try await client.closedByServer()
            await logs.waitFor(level: .warning, "connection upgrade failed")
        }
    }

    @Test("multistream frame over the 1024-byte limit")
    func oversizeFrame() async throws {
        try await withVictim { _, address, logs in
            let client = try await RawClient.connect(to: address)
            try await client.send(
                msFrame("/multistream/1.0.0") + UVarint.encode(5000) + Array(repeating: 0x61, count: 100))
            try await client.closedByServer()
            await logs.waitFor(level: .warning, "connection upgrade failed")
        }
    }

    @Test("unknown security protocol only")
    func unknownSecurity() async throws {
        try await withVictim { _, address, logs in
            let client = try await RawClient.connect(to: address)
            try await client.send(msFrame("/multistream/1.0.0") + msFrame("/tls/1.0.0"))
            // The victim answers "na"; the peer then stalls and is cut at the deadline.
            try await client.closedByServer()
            #expect(client.bytesReceived.readableBytesView.contains(UInt8(ascii: "n")))
            await logs.waitFor(level: .warning, "connection upgrade failed")
        }
    }

    @Test("peer stalls in the middle of the Noise handshake")
    func stallMidHandshake() async throws {
        try await withVictim { _, address, logs in
            let client = try await RawClient.connect(to: address)
            // Negotiate /noise, then send only half of a Noise message 1 (2-byte length 32, 10 bytes).
            try await client.send(
                msFrame("/multistream/1.0.0") + msFrame("/noise") + [0x00, 0x20] + Array(repeating: 1, count: 10))
            try await client.closedByServer()
            await logs.waitFor(level: .warning, "timed out")
        }
    }

    @Test("garbage Noise handshake message")
    func garbageNoise() async throws {
        try await withVictim { _, address, logs in
            let client = try await RawClient.connect(to: address)
            // A 32-byte "ephemeral key" is fine for message 1; then garbage where message 3 belongs.
            try await client.send(
                msFrame("/multistream/1.0.0") + msFrame("/noise") + [0x00, 0x20] + Array(repeating: 9, count: 32))
            try await client.send([0x00, 0x40] + Array(repeating: 0xEE, count: 64))
            try await client.closedByServer()
            await logs.waitFor(level: .warning, "connection upgrade failed")
        }
    }

    @Test("many hostile connections at once do not stop the node")
    func manyHostile() async throws {
        try await withVictim { _, address, _ in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<20 {
                    group.addTask {
                        let client = try await RawClient.connect(to: address)
                        try await client.send(i % 2 == 0 ? [0xFF, 0xFF, 0xFF] : msFrame("/multistream/1.0.0"))
                        try await client.closedByServer()
                    }
                }
                try await group.waitForAll()
            }
        }
    }
}
