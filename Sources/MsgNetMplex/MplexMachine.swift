import NIOCore

/// Identifies a stream on one connection: mplex stream ids are namespaced by the side that opened the stream.
public struct MplexStreamID: Hashable, Sendable, CustomStringConvertible {
    /// The number carried in frame headers.
    public var number: UInt64
    /// True when we opened the stream, false when the peer did.
    public var isLocallyInitiated: Bool

    /// Creates a stream id.
    public init(number: UInt64, isLocallyInitiated: Bool) {
        self.number = number
        self.isLocallyInitiated = isLocallyInitiated
    }

    /// `"3/local"` or `"3/remote"`.
    public var description: String { "\(number)/\(isLocallyInitiated ? "local" : "remote")" }
}

/// The sans-IO state machine of one mplex connection and all of its streams.
///
/// It holds no data: it counts the bytes delivered to each stream and not yet consumed by the
/// stream's reader, and turns events into ``Action``s for a shell to perform.
public struct MplexMachine: Sendable {
    /// What the shell must do, in order.
    public enum Action: Hashable, Sendable {
        /// Write this frame to the connection.
        case send(MplexFrame)
        /// Hand this data to the stream's reader. Call ``MplexMachine/onConsumed(_:bytes:)`` once
        /// the reader has taken it.
        case deliver(MplexStreamID, ByteBuffer)
        /// The peer closed its write side: the reader sees EOF after the data delivered so far.
        case remoteClosed(MplexStreamID)
        /// The stream is gone (reset by the peer, reset by us for a cause in the error, or the
        /// connection ended); its reader and writer fail with the error.
        case streamReset(MplexStreamID, MplexError)
        /// Both halves of the stream are closed and the machine has forgotten it. Data already
        /// delivered stays readable.
        case streamClosed(MplexStreamID)
        /// The peer opened a stream.
        case newInboundStream(MplexStreamID)
        /// Stop reading from the connection (a stream is over its buffer bound).
        case stopReading
        /// Resume reading from the connection.
        case resumeReading
        /// Close the connection; the machine is closed and has reset every stream already.
        case closeConnection(MplexError)
    }

    private struct Stream: Sendable {
        var localWriteClosed = false
        var remoteWriteClosed = false
        /// Delivered bytes the reader has not consumed yet.
        var buffered = 0
        /// Over the bound and not yet drained to half of it.
        var congested = false
        /// When the machine first saw the stream congested with no progress (set at a tick).
        var stalledSince: NIODeadline?
    }

    private enum State: Sendable {
        case open
        case closed
    }

    private let configuration: MplexConfiguration
    private var state: State = .open
    private var streams: [MplexStreamID: Stream] = [:]
    private var congested: Set<MplexStreamID> = []
    /// Delivered bytes not consumed yet, over all streams.
    private var totalBuffered = 0
    /// The sum went over the connection bound and has not drained to half of it yet.
    private var connectionCongested = false
    /// When a tick first saw the connection congested with no progress on any stream.
    private var connectionStalledSince: NIODeadline?
    private var readingPaused = false
    private var nextOutboundNumber: UInt64 = 0
    private var outboundCount = 0
    private var inboundCount = 0

    /// Creates the machine of a new connection.
    public init(configuration: MplexConfiguration = MplexConfiguration()) {
        self.configuration = configuration
    }

    /// The number of streams the machine tracks (open in at least one direction).
    public var streamCount: Int { streams.count }

    /// True once the connection has ended (``onConnectionClosed(error:)`` or a fatal error).
    public var isClosed: Bool {
        if case .closed = state { return true }
        return false
    }

    /// True while the machine wants the connection not to be read.
    public var isReadingPaused: Bool { readingPaused }

    /// The delivered, unconsumed byte count of a stream (0 when unknown).
    public func bufferedBytes(_ id: MplexStreamID) -> Int { streams[id]?.buffered ?? 0 }

    /// The delivered, unconsumed byte count over all streams.
    public var totalBufferedBytes: Int { totalBuffered }

    // MARK: Frames from the peer

    /// Handles a frame received from the peer.
    public mutating func onFrame(_ frame: MplexFrame) -> [Action] {
        guard case .open = state else { return [] }
        // An "Initiator" flag comes from the side that opened the stream: the peer.
        let id = MplexStreamID(number: frame.streamID, isLocallyInitiated: !frame.flag.isFromInitiator)
        switch frame.flag {
        case .newStream:
            return onNewStream(id)
        case .messageInitiator, .messageReceiver:
            return onMessage(id, frame.data)
        case .closeInitiator, .closeReceiver:
            return onClose(id)
        case .resetInitiator, .resetReceiver:
            guard streams[id] != nil else { return [] }  // we forget streams on reset; never answer a reset
            var actions: [Action] = [.streamReset(id, MplexError(.streamResetByPeer, "stream \(id) reset by the peer"))]
            remove(id, into: &actions)
            return actions
        }
    }

    private mutating func onNewStream(_ id: MplexStreamID) -> [Action] {
        if streams[id] != nil {
            return fail(MplexError(.protocolViolation, "peer opened stream \(id.number) twice"))
        }
        if inboundCount >= configuration.maxConcurrentStreams {
            return [.send(Self.frame(.reset, id))]
        }
        streams[id] = Stream()
        inboundCount += 1
        return [.newInboundStream(id)]
    }

    private mutating func onMessage(_ id: MplexStreamID, _ data: ByteBuffer) -> [Action] {
        guard var stream = streams[id] else {
            // Unknown (never opened, or already reset/finished here): tell the peer and drop the data.
            return [.send(Self.frame(.reset, id))]
        }
        if stream.remoteWriteClosed {
            return resetStream(
                id, MplexError(.streamProtocolViolation, "peer sent data on stream \(id) after closing it"))
        }
        let count = data.readableBytes
        if count == 0 { return [] }
        if stream.buffered + count > configuration.hardBufferCap {
            return resetStream(
                id,
                MplexError(
                    .receiveBufferOverflow,
                    "stream \(id) reached the hard cap of \(configuration.hardBufferCap) unread bytes"
                )
            )
        }
        if totalBuffered + count > configuration.connectionHardBufferCap {
            return resetStream(
                id,
                MplexError(
                    .receiveBufferOverflow,
                    "stream \(id) would take the connection over its hard cap of \(configuration.connectionHardBufferCap) unread bytes"
                )
            )
        }
        stream.buffered += count
        totalBuffered += count
        var actions: [Action] = [.deliver(id, data)]
        if !stream.congested && stream.buffered > configuration.maxBufferedBytesPerStream {
            stream.congested = true
            congested.insert(id)
            pauseReading(into: &actions)
        }
        if !connectionCongested && totalBuffered > configuration.connectionBufferBound {
            connectionCongested = true
            pauseReading(into: &actions)
        }
        streams[id] = stream
        return actions
    }

    private mutating func pauseReading(into actions: inout [Action]) {
        if !readingPaused {
            readingPaused = true
            actions.append(.stopReading)
        }
    }

    private mutating func onClose(_ id: MplexStreamID) -> [Action] {
        guard var stream = streams[id], !stream.remoteWriteClosed else { return [] }
        stream.remoteWriteClosed = true
        streams[id] = stream
        var actions: [Action] = [.remoteClosed(id)]
        if stream.localWriteClosed {
            actions.append(.streamClosed(id))
            remove(id, into: &actions)
        }
        return actions
    }

    // MARK: Calls from the local side

    /// Opens a stream: allocates the next id (never reused) and returns the NewStream frame to send.
    ///
    /// - Throws: ``MplexError/Code/tooManyStreams``, ``MplexError/Code/streamIDsExhausted``,
    ///   ``MplexError/Code/connectionClosed``.
    public mutating func openStream() throws(MplexError) -> (MplexStreamID, [Action]) {
        guard case .open = state else { throw .connectionClosed() }
        guard outboundCount < configuration.maxConcurrentStreams else {
            throw MplexError(
                .tooManyStreams,
                "\(outboundCount) outbound streams open, the limit is \(configuration.maxConcurrentStreams)")
        }
        guard nextOutboundNumber <= MplexFrame.maxStreamID else {
            throw MplexError(.streamIDsExhausted, "all stream ids have been used")
        }
        let id = MplexStreamID(number: nextOutboundNumber, isLocallyInitiated: true)
        nextOutboundNumber += 1
        streams[id] = Stream()
        outboundCount += 1
        // go-libp2p names a stream after its id; the name has no meaning in the protocol.
        let name = ByteBuffer(string: String(id.number))
        return (id, [.send(MplexFrame(streamID: id.number, flag: .newStream, data: name))])
    }

    /// Writes data on a stream: one Message frame per `maxFrameSize` bytes (none for empty data).
    ///
    /// - Throws: ``MplexError/Code/writeAfterClose`` after ``closeWrite(_:)``,
    ///   ``MplexError/Code/unknownStream`` for a stream that is reset or finished,
    ///   ``MplexError/Code/connectionClosed``.
    public mutating func write(_ id: MplexStreamID, _ data: ByteBuffer) throws(MplexError) -> [Action] {
        guard case .open = state else { throw .connectionClosed() }
        guard let stream = streams[id] else {
            throw MplexError(.unknownStream, "write on stream \(id), which is reset or finished")
        }
        guard !stream.localWriteClosed else {
            throw MplexError(.writeAfterClose, "write on stream \(id) after closing it for writing")
        }
        let flag: MplexFrame.Flag = id.isLocallyInitiated ? .messageInitiator : .messageReceiver
        var remaining = data
        var actions: [Action] = []
        actions.reserveCapacity(remaining.readableBytes / configuration.maxFrameSize + 1)
        while remaining.readableBytes > 0 {
            let chunk = remaining.readSlice(length: min(remaining.readableBytes, configuration.maxFrameSize))!
            actions.append(.send(MplexFrame(streamID: id.number, flag: flag, data: chunk)))
        }
        return actions
    }

    /// Closes the local write side of a stream (idempotent); the stream is forgotten once the
    /// peer has closed its side too.
    ///
    /// - Throws: ``MplexError/Code/unknownStream``, ``MplexError/Code/connectionClosed``.
    public mutating func closeWrite(_ id: MplexStreamID) throws(MplexError) -> [Action] {
        guard case .open = state else { throw .connectionClosed() }
        guard var stream = streams[id] else {
            throw MplexError(.unknownStream, "close on stream \(id), which is reset or finished")
        }
        if stream.localWriteClosed { return [] }
        stream.localWriteClosed = true
        streams[id] = stream
        var actions: [Action] = [.send(Self.frame(.close, id))]
        if stream.remoteWriteClosed {
            actions.append(.streamClosed(id))
            remove(id, into: &actions)
        }
        return actions
    }

    /// Resets a stream at once: sends Reset and forgets the stream. Does nothing for an unknown stream.
    public mutating func reset(_ id: MplexStreamID) -> [Action] {
        guard case .open = state, streams[id] != nil else { return [] }
        var actions: [Action] = [.send(Self.frame(.reset, id))]
        remove(id, into: &actions)
        return actions
    }

    /// The reader of a stream took `bytes` delivered bytes; may resume reading the connection.
    public mutating func onConsumed(_ id: MplexStreamID, bytes: Int) -> [Action] {
        guard var stream = streams[id] else { return [] }
        let taken = min(bytes, stream.buffered)
        stream.buffered -= taken
        var actions: [Action] = []
        if taken > 0 { onTotalDrained(by: taken, into: &actions) }
        if stream.congested {
            stream.stalledSince = nil  // progress
            if stream.buffered <= configuration.maxBufferedBytesPerStream / 2 {
                stream.congested = false
                congested.remove(id)
                resumeIfDrained(into: &actions)
            }
        }
        streams[id] = stream
        return actions
    }

    /// The periodic timer: resets streams that stayed over their bound without progress for
    /// `stalledStreamTimeout`.
    ///
    /// A stream's stall clock starts at the first tick that sees it congested (and restarts
    /// whenever its reader consumes data), so a stall is detected between `stalledStreamTimeout`
    /// and `stalledStreamTimeout + tickInterval` after it begins.
    public mutating func onTick(now: NIODeadline) -> [Action] {
        guard case .open = state else { return [] }
        var actions: [Action] = []
        if connectionCongested {
            if let since = connectionStalledSince {
                if now - since >= configuration.stalledStreamTimeout { resetLargestStreams(into: &actions) }
            } else {
                connectionStalledSince = now
            }
        }
        for id in congested {
            guard var stream = streams[id] else { continue }
            if let since = stream.stalledSince {
                if now - since >= configuration.stalledStreamTimeout {
                    actions += resetStream(
                        id,
                        MplexError(
                            .streamStalled,
                            "stream \(id) was reset: its reader took no data for \(configuration.stalledStreamTimeout) while \(stream.buffered) bytes were waiting"
                        )
                    )
                }
            } else {
                stream.stalledSince = now
                streams[id] = stream
            }
        }
        return actions
    }

    /// The connection stayed over its bound with no reader taking data: resets the streams
    /// holding the most unread bytes (ties in stream id order) until the sum is down to half the bound.
    private mutating func resetLargestStreams(into actions: inout [Action]) {
        let largest = streams.filter { $0.value.buffered > 0 }.sorted {
            $0.value.buffered != $1.value.buffered ? $0.value.buffered > $1.value.buffered : Self.order($0.key, $1.key)
        }
        for (id, stream) in largest {
            guard connectionCongested else { break }
            actions += resetStream(
                id,
                MplexError(
                    .streamStalled,
                    "stream \(id) was reset: no stream's reader took data for \(configuration.stalledStreamTimeout) while the connection held \(totalBuffered) unread bytes, \(stream.buffered) of them on this stream"
                )
            )
        }
    }

    /// `bytes` fewer unread bytes on the connection (consumed, or dropped with their stream).
    private mutating func onTotalDrained(by bytes: Int, into actions: inout [Action]) {
        totalBuffered -= bytes
        connectionStalledSince = nil  // progress
        if connectionCongested && totalBuffered <= configuration.connectionBufferBound / 2 {
            connectionCongested = false
            resumeIfDrained(into: &actions)
        }
    }

    /// The connection ended (or failed): every stream is reset with `error`
    /// (default ``MplexError/Code/connectionClosed``), and the machine closes.
    public mutating func onConnectionClosed(error: MplexError? = nil) -> [Action] {
        guard case .open = state else { return [] }
        let error = error ?? .connectionClosed()
        state = .closed
        let actions = streams.keys.sorted(by: Self.order).map { Action.streamReset($0, error) }
        streams.removeAll()
        congested.removeAll()
        totalBuffered = 0
        connectionCongested = false
        connectionStalledSince = nil
        inboundCount = 0
        outboundCount = 0
        return actions
    }

    /// The input could not be decoded: resets every stream and asks to close the connection.
    public mutating func onDecodeError(_ error: MplexError) -> [Action] {
        fail(error)
    }

    // MARK: Helpers

    private mutating func fail(_ error: MplexError) -> [Action] {
        guard case .open = state else { return [] }
        return onConnectionClosed(error: error) + [.closeConnection(error)]
    }

    /// Sends Reset for a stream we give up on, tells its reader why, and forgets it.
    private mutating func resetStream(_ id: MplexStreamID, _ error: MplexError) -> [Action] {
        var actions: [Action] = [.send(Self.frame(.reset, id)), .streamReset(id, error)]
        remove(id, into: &actions)
        return actions
    }

    private mutating func remove(_ id: MplexStreamID, into actions: inout [Action]) {
        guard let stream = streams.removeValue(forKey: id) else { return }
        if id.isLocallyInitiated { outboundCount -= 1 } else { inboundCount -= 1 }
        if congested.remove(id) != nil { resumeIfDrained(into: &actions) }
        if stream.buffered > 0 { onTotalDrained(by: stream.buffered, into: &actions) }
    }

    private mutating func resumeIfDrained(into actions: inout [Action]) {
        if readingPaused && congested.isEmpty && !connectionCongested {
            readingPaused = false
            actions.append(.resumeReading)
        }
    }

    private enum Kind { case close, reset }

    /// A zero-length Close or Reset frame with the flag our role on the stream calls for.
    private static func frame(_ kind: Kind, _ id: MplexStreamID) -> MplexFrame {
        let flag: MplexFrame.Flag
        switch kind {
        case .close: flag = id.isLocallyInitiated ? .closeInitiator : .closeReceiver
        case .reset: flag = id.isLocallyInitiated ? .resetInitiator : .resetReceiver
        }
        return MplexFrame(streamID: id.number, flag: flag)
    }

    private static func order(_ a: MplexStreamID, _ b: MplexStreamID) -> Bool {
        (a.isLocallyInitiated ? 0 : 1, a.number) < (b.isLocallyInitiated ? 0 : 1, b.number)
    }
}
