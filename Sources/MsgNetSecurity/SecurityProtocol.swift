import MsgNetCore
import NIOCore

/// Which side of a connection's security handshake we play.
public enum SecurityRole: Sendable {
    /// The dialer.
    case initiator
    /// The listener.
    case responder
}

/// What a successful security handshake established.
public struct SecuredConnectionInfo: Sendable {
    /// The security protocol that ran, e.g. `"/noise"`.
    public let protocolID: String
    /// The authenticated remote peer.
    public let remotePeer: PeerID
    /// The remote identity key.
    public let remotePublicKey: PublicKey

    /// Creates connection info.
    public init(protocolID: String, remotePeer: PeerID, remotePublicKey: PublicKey) {
        self.protocolID = protocolID
        self.remotePeer = remotePeer
        self.remotePublicKey = remotePublicKey
    }
}

/// A connection security protocol the upgrader can negotiate with multistream-select.
public protocol SecurityProtocol: Sendable {
    /// The multistream protocol id, e.g. `"/noise"` or `"/plaintext/2.0.0"`.
    var protocolID: String { get }

    /// A handler that runs the handshake on an active channel, then carries plaintext
    /// `ByteBuffer`s (inbound decrypted, outbound encrypted).
    ///
    /// The handler completes `promise` on success; on failure it fails the promise and closes the
    /// channel. Writes issued before the handshake completes are queued and sent after it.
    func makeHandler(
        role: SecurityRole,
        expectedRemotePeer: PeerID?,
        promise: EventLoopPromise<SecuredConnectionInfo>
    ) -> any ChannelHandler
}

/// Writes queued while a handshake runs, bounded in bytes.
struct PendingWrites {
    /// The most plaintext bytes queued before the handshake completes.
    static let limit = 1 << 20

    private(set) var writes: [(ByteBuffer, EventLoopPromise<Void>?)] = []
    private(set) var bytes = 0
    /// Whether a flush was requested while writes were queued.
    var flushRequested = false

    /// Queues a write; throws when it would exceed ``limit``.
    mutating func append(_ buffer: ByteBuffer, promise: EventLoopPromise<Void>?) throws(SecurityError) {
        guard bytes + buffer.readableBytes <= Self.limit else {
            throw .pendingWritesLimitExceeded(limit: Self.limit)
        }
        bytes += buffer.readableBytes
        writes.append((buffer, promise))
    }

    /// Takes all queued writes, leaving the queue empty.
    mutating func drain() -> (writes: [(ByteBuffer, EventLoopPromise<Void>?)], flush: Bool) {
        defer {
            writes = []
            bytes = 0
            flushRequested = false
        }
        return (writes, flushRequested)
    }

    /// Fails every queued write.
    mutating func failAll(_ error: any Error) {
        for (_, promise) in drain().writes { promise?.fail(error) }
    }
}
