import MsgNetCore
import MsgNetMplex
import MsgNetMultistream
import NIOConcurrencyHelpers
import NIOCore

/// What a stream handler knows about the connection a stream runs on.
public struct ConnectionInfo: Sendable, Hashable {
    /// The authenticated remote peer.
    public let remotePeer: PeerID
    /// The remote's socket address as a multiaddr (without `/p2p`).
    public let remoteAddress: Multiaddr?
    /// Our socket address on this connection.
    public let localAddress: Multiaddr?
    /// Whether we dialed or accepted.
    public let direction: ConnectionDirection
    /// The negotiated security protocol.
    public let securityProtocol: String
}

/// A muxed stream on which a protocol has been negotiated: the handle stream handlers and
/// stream openers get. Reads return bytes in order; `nil` means the remote closed its side.
///
/// One reader and one writer at a time; reads and writes may run concurrently.
public final class NegotiatedStream: Sendable {
    /// The negotiated protocol id.
    public let protocolID: String
    /// The connection this stream belongs to.
    public let connection: ConnectionInfo
    let stream: MplexStream
    private let leftover: NIOLockedValueBox<ByteBuffer?>

    init(
        protocolID: String,
        connection: ConnectionInfo,
        stream: MplexStream,
        leftover: ByteBuffer?
    ) {
        self.protocolID = protocolID
        self.connection = connection
        self.stream = stream
        self.leftover = NIOLockedValueBox(leftover.flatMap { $0.readableBytes > 0 ? $0 : nil })
    }

    /// The next bytes from the remote, or `nil` once it has closed its write side.
    /// - Throws: ``StreamsError`` with `.connectionClosed` when the stream was reset.
    public func read() async throws -> ByteBuffer? {
        if let buffered = takeLeftover() { return buffered }
        return try await rawRead()
    }

    /// Bytes that arrived with the negotiation, once.
    private func takeLeftover() -> ByteBuffer? {
        leftover.withLockedValue { value -> ByteBuffer? in
            defer { value = nil }
            return value
        }
    }

    /// What ``read()`` would return now without waiting, or `nil` when it would wait (or when not
    /// called on the stream's event loop). Lets a reader on the loop take buffered bytes without
    /// an async call.
    package func readIfReady() -> Result<ByteBuffer?, StreamsError>? {
        if let buffered = takeLeftover() { return .success(buffered) }
        switch stream.readIfReady() {
        case nil: return nil
        case .success(let bytes)?: return .success(bytes)
        case .failure(let error)?:
            return .failure(StreamsError(.connectionClosed, "stream \(protocolID) reset: \(error)"))
        }
    }

    private func rawRead() async throws -> ByteBuffer? {
        do {
            return try await stream.read()
        } catch {
            throw StreamsError(.connectionClosed, "stream \(protocolID) reset: \(error)")
        }
    }

    // MARK: Event-loop hooks for the message layer (same target family only)

    /// The event loop that owns the stream.
    package var eventLoop: any EventLoop { stream.eventLoop }

    /// Writes on the event loop without waiting for writability; the promise completes when
    /// the bytes are written to the connection. Do not mix with ``write(_:)`` on one stream.
    /// - Precondition: called on ``eventLoop``.
    package func writeOnEventLoop(_ buffer: ByteBuffer, flush: Bool, promise: EventLoopPromise<Void>?) {
        stream.writeOnEventLoop(buffer, flush: flush, promise: promise)
    }

    /// Closes the write side after the event-loop writes issued before.
    /// - Precondition: called on ``eventLoop``.
    package func closeWriteOnEventLoop(flush: Bool = true, promise: EventLoopPromise<Void>?) {
        stream.closeWriteOnEventLoop(flush: flush, promise: promise)
    }

    /// Flushes once the loop's current work is done (see `MplexStream.flushSoonOnEventLoop()`).
    /// - Precondition: called on ``eventLoop``.
    package func flushSoonOnEventLoop() {
        stream.flushSoonOnEventLoop()
    }

    /// Resets the stream. - Precondition: called on ``eventLoop``.
    package func resetOnEventLoop() {
        stream.resetOnEventLoop()
    }

    /// Writes `buffer`, returning once it is handed to the connection. Suspends while the
    /// connection cannot take more (TCP backpressure).
    public func write(_ buffer: ByteBuffer) async throws {
        do {
            try await stream.write(buffer)
        } catch {
            throw StreamsError(.connectionClosed, "stream \(protocolID) write failed: \(error)")
        }
    }

    /// Writes `bytes`.
    public func write(_ bytes: some Collection<UInt8>) async throws {
        try await write(ByteBuffer(bytes: bytes))
    }

    /// Closes our write side (half-close); the remote reads EOF. Reading stays possible.
    public func closeWrite() async throws {
        do {
            try await stream.closeWrite()
        } catch {
            throw StreamsError(.connectionClosed, "stream \(protocolID) close failed: \(error)")
        }
    }

    /// Resets the stream in both directions; pending reads and writes on either side fail.
    public func reset() async {
        await stream.reset()
    }

    /// Reads exactly `count` bytes.
    /// - Throws: `.connectionClosed` when the stream ends first.
    public func read(exactly count: Int) async throws -> ByteBuffer {
        var out = ByteBuffer()
        out.reserveCapacity(count)
        while out.readableBytes < count {
            guard var chunk = try await read() else {
                throw StreamsError(
                    .connectionClosed, "stream \(protocolID) ended after \(out.readableBytes) of \(count) bytes")
            }
            let take = min(chunk.readableBytes, count - out.readableBytes)
            out.writeImmutableBuffer(chunk.readSlice(length: take)!)
            if chunk.readableBytes > 0 { pushBack(chunk) }
        }
        return out
    }

    /// Reads one `uvarint(length) || payload` message of at most `maxSize` bytes.
    /// - Returns: `nil` when the stream ends cleanly before a new message starts.
    /// - Throws: `.protocolViolation` for a malformed or oversize length; `.connectionClosed`
    ///   when the stream ends inside a message.
    public func readLengthPrefixed(maxSize: Int) async throws -> ByteBuffer? {
        var header = ByteBuffer()
        while true {
            guard var chunk = try await read() else {
                if header.readableBytes == 0 { return nil }
                throw StreamsError(.connectionClosed, "stream \(protocolID) ended inside a length prefix")
            }
            header.writeBuffer(&chunk)
            let length: UInt64?
            do {
                length = try UVarint.read(from: &header)
            } catch {
                throw StreamsError(.protocolViolation, "malformed length prefix on \(protocolID)")
            }
            guard let length else { continue }
            guard length <= UInt64(maxSize) else {
                throw StreamsError(
                    .protocolViolation, "message of \(length) bytes exceeds the limit of \(maxSize) on \(protocolID)")
            }
            if header.readableBytes > 0 { pushBack(header) }
            return try await read(exactly: Int(length))
        }
    }

    /// Writes `payload` as one `uvarint(length) || payload` message.
    public func writeLengthPrefixed(_ payload: ByteBuffer) async throws {
        var out = ByteBuffer()
        out.reserveCapacity(UVarint.maxLength + payload.readableBytes)
        UVarint.write(UInt64(payload.readableBytes), to: &out)
        out.writeImmutableBuffer(payload)
        try await write(out)
    }

    /// Reads until the remote closes its side, up to `maxBytes`.
    /// - Throws: `.limitExceeded` when more than `maxBytes` arrive.
    public func readToEnd(maxBytes: Int) async throws -> ByteBuffer {
        var out = ByteBuffer()
        while var chunk = try await read() {
            guard out.readableBytes + chunk.readableBytes <= maxBytes else {
                throw StreamsError(.limitExceeded, "more than \(maxBytes) bytes on \(protocolID)")
            }
            out.writeBuffer(&chunk)
        }
        return out
    }

    private func pushBack(_ buffer: ByteBuffer) {
        leftover.withLockedValue { value in
            if var existing = value {
                var b = buffer
                b.writeBuffer(&existing)
                value = b
            } else {
                value = buffer
            }
        }
    }
}

/// Runs multistream-select on a fresh muxed stream.
enum StreamNegotiation {
    /// Proposes `protocols` (in order) on an outbound stream.
    static func outbound(
        _ stream: MplexStream,
        protocols: [String],
        timeout: TimeAmount
    ) async throws -> (String, ByteBuffer) {
        try await run(stream, machine: .initiator(proposals: protocols, optimistic: false), timeout: timeout)
    }

    /// Answers the remote's proposals on an inbound stream with `selector`.
    static func inbound(
        _ stream: MplexStream,
        selector: ProtocolSelector,
        timeout: TimeAmount
    ) async throws -> (String, ByteBuffer) {
        try await run(stream, machine: .responder(selector: selector), timeout: timeout)
    }

    private static func run(
        _ stream: MplexStream,
        machine initial: MultistreamMachine,
        timeout: TimeAmount
    ) async throws -> (String, ByteBuffer) {
        var machine = initial
        // A stalled peer gets its stream reset, which fails the pending read below. The timer
        // starts with the first read that has to wait: a lazily proposed stream usually arrives
        // with its whole negotiation already buffered.
        var timer: Scheduled<Void>?
        defer { timer?.cancel() }
        var actions = machine.start()
        while true {
            for action in actions {
                switch action {
                case .send(let bytes):
                    // Negotiation frames are the stream's first writes, so an event-loop write
                    // (not waiting for its completion) cannot be overtaken by later writes; a
                    // failed write shows up as a failed read. Saves a hop per negotiation step.
                    // The flush waits for the rest of this loop pass, so an inbound handler
                    // running on the loop can send its reply in the same write.
                    if stream.eventLoop.inEventLoop {
                        stream.writeOnEventLoop(bytes, flush: false, promise: nil)
                        stream.flushSoonOnEventLoop()
                    } else {
                        stream.eventLoop.execute {
                            stream.writeOnEventLoop(bytes, flush: false, promise: nil)
                            stream.flushSoonOnEventLoop()
                        }
                    }
                case .negotiated(let id, let leftover):
                    return (id, leftover)
                case .optimisticallySelected, .listed:
                    break
                case .failed(let error):
                    await stream.reset()
                    throw ConnectionUpgrader.classify(error, stage: .streamNegotiation)
                }
            }
            let chunk: ByteBuffer?
            do {
                if let ready = stream.readIfReady() {
                    chunk = try ready.get()
                } else {
                    if timer == nil {
                        timer = stream.eventLoop.scheduleTask(in: timeout) {
                            Task { await stream.reset() }
                        }
                    }
                    chunk = try await stream.read()
                }
            } catch {
                throw StreamsError(.timedOut, "protocol negotiation on stream did not finish: \(error)")
            }
            guard var bytes = chunk else {
                throw StreamsError(.connectionClosed, "stream closed during protocol negotiation")
            }
            actions = machine.onBytes(&bytes)
        }
    }
}
