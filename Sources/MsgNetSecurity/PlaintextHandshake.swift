import MsgNetControl
import MsgNetCore
import NIOCore

/// The `/plaintext/2.0.0` exchange as a pure state machine (insecure; for tests).
///
/// Each side sends `uvarint(length) || Exchange{id, pubkey}` at once and reads the remote's.
/// The received exchange must carry a decodable public key whose peer id equals `id`, and the
/// expected peer when one is given. Input may arrive in pieces of any size; bytes after the
/// exchange are handed back with ``Action/completed(remotePeer:remotePublicKey:leftover:)``.
public struct PlaintextHandshake: Sendable {
    /// What the driver must do.
    public enum Action: Sendable {
        /// Send these bytes (our length-prefixed exchange).
        case send([UInt8])
        /// The exchange succeeded; `leftover` holds application bytes that followed it.
        case completed(remotePeer: PeerID, remotePublicKey: PublicKey, leftover: ByteBuffer)
        /// The exchange failed; close the connection.
        case failed(SecurityError)
    }

    /// The multistream protocol id, `"/plaintext/2.0.0"`.
    public static let protocolID = "/plaintext/2.0.0"
    /// The largest exchange message accepted, in bytes.
    public static let maxExchangeSize = 4096

    private enum State {
        case idle
        case exchanging
        case completed
        case failed
    }

    private let identity: PrivateKey
    private let expectedRemotePeer: PeerID?
    private var state: State = .idle
    private var buffer = ByteBuffer()
    /// The exchange length once its varint prefix has been read.
    private var exchangeLength: Int?

    /// Creates the exchange for `identity`, optionally requiring the remote to be `expectedRemotePeer`.
    public init(identity: PrivateKey, expectedRemotePeer: PeerID? = nil) {
        self.identity = identity
        self.expectedRemotePeer = expectedRemotePeer
    }

    /// Starts: returns our exchange to send.
    public mutating func start() -> [Action] {
        guard case .idle = state else {
            state = .failed
            return [.failed(.unexpectedMessage("plaintext exchange already started"))]
        }
        state = .exchanging
        let publicKey = identity.publicKey
        let exchange = PlaintextExchangeMessage(
            id: identity.peerID.bytes,
            publicKey: KeyMessage(type: publicKey.type, data: publicKey.rawBytes)
        ).encoded()
        return [.send(UVarint.encode(UInt64(exchange.count)) + exchange)]
    }

    /// Feeds bytes received from the remote.
    public mutating func onBytes(_ bytes: [UInt8]) -> [Action] {
        onBytes(ByteBuffer(bytes: bytes))
    }

    /// Feeds bytes received from the remote.
    public mutating func onBytes(_ bytes: ByteBuffer) -> [Action] {
        switch state {
        case .idle:
            return fail(.unexpectedMessage("plaintext bytes before start()"))
        case .completed:
            return fail(.unexpectedMessage("plaintext bytes after the exchange completed"))
        case .failed:
            return [.failed(.unexpectedMessage("plaintext bytes after the exchange failed"))]
        case .exchanging:
            break
        }
        if buffer.readableBytes == 0 {
            buffer = bytes
        } else {
            var input = bytes
            buffer.writeBuffer(&input)
        }

        if exchangeLength == nil {
            let length: UInt64?
            do {
                length = try UVarint.read(from: &buffer, maxBytes: UVarint.maxLength)
            } catch {
                return fail(.malformedMessage("exchange length prefix: \(error)"))
            }
            guard let length else { return [] }
            guard length <= UInt64(Self.maxExchangeSize) else {
                return fail(.messageTooLarge(size: Int(clamping: length), limit: Self.maxExchangeSize))
            }
            exchangeLength = Int(length)
        }
        guard let exchangeLength, let body = buffer.readSlice(length: exchangeLength) else { return [] }

        let leftover = buffer
        buffer = ByteBuffer()
        do {
            let (peer, key) = try verify(body)
            state = .completed
            return [.completed(remotePeer: peer, remotePublicKey: key, leftover: leftover)]
        } catch {
            return fail(error)
        }
    }

    private func verify(_ body: ByteBuffer) throws(SecurityError) -> (PeerID, PublicKey) {
        let exchange: PlaintextExchangeMessage
        do {
            exchange = try PlaintextExchangeMessage(bytes: body.readableBytesView)
        } catch {
            throw .malformedPayload(error.description)
        }
        guard let id = exchange.id else { throw .malformedPayload("Exchange has no id") }
        guard let keyMessage = exchange.publicKey else { throw .malformedPayload("Exchange has no pubkey") }
        let key: PublicKey
        do {
            key = try PublicKey(type: keyMessage.type, rawBytes: keyMessage.data)
        } catch {
            throw .invalidKey(error.reason)
        }
        let derived = key.peerID
        guard derived.bytes == id else { throw .peerIDKeyMismatch(claimed: id, derived: derived) }
        if let expectedRemotePeer, expectedRemotePeer != derived {
            throw .peerIDMismatch(expected: expectedRemotePeer, actual: derived)
        }
        return (derived, key)
    }

    private mutating func fail(_ error: SecurityError) -> [Action] {
        state = .failed
        buffer = ByteBuffer()
        return [.failed(error)]
    }
}
