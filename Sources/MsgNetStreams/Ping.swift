import MsgNetCore
import NIOCore

/// Ping (`/ipfs/ping/1.0.0`): the initiator writes 32 random bytes, the responder echoes them;
/// repeated on the same stream. See docs/ping.md.
public enum PingProtocol {
    /// The protocol id.
    public static let id = "/ipfs/ping/1.0.0"
    /// Bytes per ping.
    public static let size = 32

    /// Answers pings on `stream` until the remote closes it.
    static func serve(_ stream: NegotiatedStream) async throws {
        while true {
            let payload: ByteBuffer
            do {
                payload = try await stream.read(exactly: size)
            } catch let error as StreamsError where error.code == .connectionClosed {
                return  // EOF between (or inside) pings ends the stream
            }
            try await stream.write(payload)
        }
    }
}

extension StreamHost {
    /// Pings `peer` `count` times on one stream.
    /// - Returns: the round-trip time of each ping.
    /// - Throws: when a pong does not match its ping or the stream fails.
    public func ping(_ peer: PeerID, count: Int = 1) async throws -> [Duration] {
        let stream = try await newStream(to: peer, protocols: [PingProtocol.id])
        return try await ping(on: stream, count: count)
    }

    /// Connects to `address` (ending in `/p2p/<id>`) and pings it `count` times.
    public func ping(_ address: Multiaddr, count: Int = 1) async throws -> [Duration] {
        let stream = try await newStream(to: address, protocols: [PingProtocol.id])
        return try await ping(on: stream, count: count)
    }

    func ping(on stream: NegotiatedStream, count: Int) async throws -> [Duration] {
        var rtts: [Duration] = []
        rtts.reserveCapacity(count)
        let clock = ContinuousClock()
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<count {
            var payload = ByteBuffer()
            for _ in 0..<(PingProtocol.size / 8) { payload.writeInteger(rng.next() as UInt64) }
            let start = clock.now
            try await stream.write(payload)
            let pong = try await stream.read(exactly: PingProtocol.size)
            let rtt = clock.now - start
            rtts.append(rtt)
            peerstore.recordLatency(.nanoseconds(Int64(rtt / .nanoseconds(1))), for: stream.connection.remotePeer)
            guard pong == payload else {
                await stream.reset()
                throw StreamsError(.protocolViolation, "ping reply from \(stream.connection.remotePeer) does not match")
            }
        }
        try? await stream.closeWrite()
        return rtts
    }
}
