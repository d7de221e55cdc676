import MsgNetCore
import MsgNetMplex
import MsgNetMultistream
import NIOConcurrencyHelpers
import NIOCore

/// A reply announced a length over the caller's limit (the stream was reset).
package struct ReplyTooLargeError: Error, CustomStringConvertible {
    /// The announced length.
    package let length: UInt64
    /// The limit.
    package let limit: Int
    package var description: String { "reply of \(length) bytes exceeds the limit of \(limit)" }
}

/// Parses the answer to a lazily proposed request: first the remote's multistream answer, then
/// one `uvarint(length) || payload` reply. Pure: bytes in, outcome out.
struct LazyReplyParser {
    enum Outcome {
        case needMore
        case reply(ByteBuffer)
        case failed(any Error)
    }

    private var machine: MultistreamMachine?
    /// The bytes a remote that accepts sends back: exactly what we proposed (the header and the
    /// protocol id, echoed). Matched byte for byte, they need no line parsing; anything else
    /// (`na`, an unusual encoding) goes to the machine.
    private var expectedEcho: ByteBuffer?
    private var buffer = ByteBuffer()
    let maxSize: Int

    /// - Parameter proposal: the negotiation bytes the machine produced and we sent, if known.
    init(machine: MultistreamMachine, maxSize: Int, proposal: ByteBuffer? = nil) {
        self.machine = machine
        self.maxSize = maxSize
        self.expectedEcho = proposal
    }

    /// Whether the remote accepted the protocol.
    var negotiated: Bool { machine == nil }

    mutating func onBytes(_ bytes: inout ByteBuffer) -> Outcome {
        if machine != nil, let echo = expectedEcho {
            take(&bytes)
            let n = min(buffer.readableBytes, echo.readableBytes)
            if buffer.readableBytesView.prefix(n).elementsEqual(echo.readableBytesView.prefix(n)) {
                guard n == echo.readableBytes else { return .needMore }
                buffer.moveReaderIndex(forwardBy: n)
                machine = nil
                expectedEcho = nil
                return parse()
            }
            expectedEcho = nil
            var all = buffer
            buffer = ByteBuffer()
            return onBytes(&all)
        }
        if var m = machine {
            let actions = m.onBytes(&bytes)
            machine = m
            for action in actions {
                switch action {
                case .negotiated(_, var rest):
                    machine = nil
                    take(&rest)
                    return parse()
                case .failed(let error):
                    return .failed(ConnectionUpgrader.classify(error, stage: .streamNegotiation))
                case .send, .optimisticallySelected, .listed:
                    break
                }
            }
            return .needMore
        }
        take(&bytes)
        return parse()
    }

    /// Moves all of `bytes` behind what is buffered (without a copy when nothing is).
    private mutating func take(_ bytes: inout ByteBuffer) {
        buffer.appendChunk(bytes)
        bytes.moveReaderIndex(to: bytes.writerIndex)
    }

    private mutating func parse() -> Outcome {
        let start = buffer.readerIndex
        let length: UInt64?
        do {
            length = try UVarint.read(from: &buffer)
        } catch {
            return .failed(StreamsError(.protocolViolation, "malformed reply length prefix"))
        }
        guard let length else { return .needMore }
        guard length <= UInt64(maxSize) else { return .failed(ReplyTooLargeError(length: length, limit: maxSize)) }
        guard let payload = buffer.readSlice(length: Int(length)) else {
            buffer.moveReaderIndex(to: start)
            return .needMore
        }
        return .reply(payload)
    }
}

extension StreamHost {
    /// One request on a new stream, run entirely on the connection's event loop: opens a stream,
    /// proposes `protocolID` lazily together with `frame` (already framed), closes the write side,
    /// and reads exactly one `uvarint(length) || payload` reply of at most `maxReplySize` bytes.
    /// The calling task hops to the event loop once and back once.
    ///
    /// - Throws: `StreamsError` (`.protocolNotSupported`, `.timedOut` at `deadline`,
    ///   `.connectionClosed`, `.protocolViolation` when the peer closes without a reply,
    ///   `.limitExceeded` for too many streams), ``ReplyTooLargeError``, `CancellationError`.
    package func request(
        to peer: PeerID,
        protocolID: String,
        frame: ByteBuffer,
        maxReplySize: Int,
        deadline: NIODeadline
    ) async throws -> ByteBuffer {
        let record = try await connectionOrDial(peer)
        let muxer = record.connection.muxer
        let loop = muxer.eventLoop
        var machine = MultistreamMachine.initiator(proposals: [protocolID], optimistic: true)
        var first = ByteBuffer()
        for action in machine.start() {
            if case .send(var bytes) = action { first.writeBuffer(&bytes) }
        }
        let proposal = first
        first.writeImmutableBuffer(frame)
        let out = first
        let initialMachine = machine
        let exchange = RequestExchange(promise: loop.makePromise(of: ByteBuffer.self))
        loop.execute {
            let stream: MplexStream
            do {
                stream = try muxer.openStreamOnEventLoop(flush: false)
            } catch let error as MplexError where error.code == .tooManyStreams {
                exchange.finish(.failure(StreamsError(.limitExceeded, "too many streams to \(peer): \(error)")))
                return
            } catch {
                exchange.finish(.failure(StreamsError(.connectionClosed, "cannot open a stream to \(peer): \(error)")))
                return
            }
            exchange.stream.withLockedValue { $0 = stream }
            if exchange.isFinished {
                // Cancelled before the stream existed.
                stream.resetOnEventLoop()
                return
            }
            let deadlines = record.requestDeadlines
            let token = deadlines.add(deadline) {
                exchange.finish(.failure(StreamsError(.timedOut, "no reply from \(peer) on \(protocolID) in time")))
                stream.resetOnEventLoop()
            }
            exchange.promise.futureResult.whenComplete { _ in deadlines.remove(token) }
            let parser = NIOLoopBoundBox(
                LazyReplyParser(machine: initialMachine, maxSize: maxReplySize, proposal: proposal), eventLoop: loop)
            stream.setInboundHandler { event in
                switch event {
                case .data(var bytes):
                    switch parser.value.onBytes(&bytes) {
                    case .needMore:
                        break
                    case .reply(let reply):
                        exchange.finish(.success(reply))
                    case .failed(let error):
                        exchange.finish(.failure(error))
                        stream.resetOnEventLoop()
                    }
                case .remoteClosed:
                    // The usual end after the reply: no error to build.
                    guard !exchange.isFinished else { return }
                    if parser.value.negotiated {
                        exchange.finish(
                            .failure(
                                StreamsError(
                                    .protocolViolation, "\(peer) closed the \(protocolID) stream without replying")))
                    } else {
                        exchange.finish(
                            .failure(StreamsError(.connectionClosed, "\(peer) closed the stream during negotiation")))
                    }
                case .reset(let error):
                    guard !exchange.isFinished else { return }
                    exchange.finish(
                        .failure(StreamsError(.connectionClosed, "\(protocolID) stream to \(peer) reset: \(error)")))
                }
            }
            // The request and our half-close leave in one flush.
            stream.writeOnEventLoop(out, flush: false, promise: nil)
            stream.closeWriteOnEventLoop(promise: nil)
        }
        return try await withTaskCancellationHandler {
            try await exchange.promise.futureResult.get()
        } onCancel: {
            loop.execute {
                exchange.finish(.failure(CancellationError()))
                exchange.stream.withLockedValue { $0 }?.resetOnEventLoop()
            }
        }
    }
}

/// The promise of one request and its stream; completed once, on the event loop.
private final class RequestExchange: Sendable {
    let promise: EventLoopPromise<ByteBuffer>
    let stream = NIOLockedValueBox<MplexStream?>(nil)
    private let finished = NIOLockedValueBox(false)

    init(promise: EventLoopPromise<ByteBuffer>) {
        self.promise = promise
    }

    /// Whether the exchange already has its outcome.
    var isFinished: Bool { finished.withLockedValue { $0 } }

    func finish(_ result: Result<ByteBuffer, any Error>) {
        let first = finished.withLockedValue { done -> Bool in
            defer { done = true }
            return !done
        }
        if first { promise.completeWith(result) }
    }
}
