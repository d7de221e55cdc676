import MsgNetCore
import NIOConcurrencyHelpers
import NIOCore

/// How a message travels. Choose per send; the stream path is always reliable.
public enum DeliveryMode: Sendable, Hashable {
    /// Delivered in order on its channel, or the caller learns of the failure (the default).
    case reliable
    /// Best effort: one datagram, may be lost. On the stream path this is the same as `.reliable`.
    case unreliable
}

/// Which kind of path a message arrived on. Nothing else about a ``Message`` depends on it.
public enum MessagePath: Sendable, Hashable, CustomStringConvertible {
    /// A libp2p stream (multistream-negotiated mplex stream over TCP).
    case stream
    /// A datagram session (multipacket over UDP).
    case datagram

    /// `"stream"` or `"datagram"`.
    public var description: String {
        switch self {
        case .stream: return "stream"
        case .datagram: return "datagram"
        }
    }
}

/// Where a reply to a message goes: implemented by each ``MessageTransport`` (on streams, the
/// stream the message came on). One channel object serves many messages; `token` tells them apart
/// where the path needs it (datagrams), and is ignored where it does not (streams).
public protocol MessageReplyChannel: Sendable {
    /// Sends `data` as the reply to the message that carried `token`.
    func reply(_ data: ByteBuffer, token: UInt64) async throws
}

/// One inbound message: its bytes, the authenticated sender and the protocol, plus a way to
/// reply on the channel it came on.
public struct Message: Sendable {
    /// The payload.
    public var data: ByteBuffer
    /// The sender (authenticated by the path's security handshake).
    public let from: PeerID
    /// The protocol id the message was sent on.
    public let `protocol`: String
    /// The path it arrived on, when known.
    public let path: MessagePath?
    private let replyChannel: (any MessageReplyChannel)?
    private let replyToken: UInt64
    /// Set by the datagram path on a request: lets a ``MessageHost/messages(for:)`` delivery
    /// wait until the consumer has replied. (A request stream's channel keeps one for its
    /// current request.)
    var answerWatch: AnswerWatch?

    /// Creates a message. Transports call this; applications normally only receive messages.
    public init(
        data: ByteBuffer,
        from: PeerID,
        protocol: String,
        path: MessagePath?,
        replyChannel: (any MessageReplyChannel)? = nil,
        replyToken: UInt64 = 0
    ) {
        self.data = data
        self.from = from
        self.protocol = `protocol`
        self.path = path
        self.replyChannel = replyChannel
        self.replyToken = replyToken
    }

    /// Keeps this message's reply window open while it is handed on (an inbox) rather than
    /// answered by its handler. Call before handing it on (a reply may come at once); `nil`
    /// when it has no window to keep.
    func holdForReply(window: TimeAmount) -> HeldReply? {
        if let answerWatch { return .request(answerWatch, window) }
        if let stream = replyChannel as? StreamChannel {
            if stream.requests { return .request(stream.answer, window) }
            stream.hold(for: window)
            return .stream(stream)
        }
        return nil
    }

    /// A reply window kept open by ``holdForReply(window:)``.
    enum HeldReply {
        /// A request: the delivery waits for the reply (bounded).
        case request(AnswerWatch, TimeAmount)
        /// A stream message: the stream stays open for the reply after the peer closes its side.
        case stream(StreamChannel)

        /// Waits for the reply where the delivery must (a request).
        func wait() async {
            if case .request(let watch, let window) = self { await watch.wait(upTo: window) }
        }

        /// The message was not handed on after all.
        func release() {
            if case .stream(let channel) = self { channel.releaseHeld() }
        }
    }

    /// Whether ``reply(_:)`` can reach the sender (false for replies themselves).
    public var canReply: Bool { replyChannel != nil }

    /// Sends `data` back to the sender as the reply to this message: the sender's
    /// ``MessageHost/request(_:to:protocol:timeout:)`` returns it. Over streams the reply is
    /// written on the stream the message came on, as libp2p request/response protocols expect.
    ///
    /// - Throws: ``MessageError`` (`.connectionClosed` when the channel is gone,
    ///   `.messageTooLarge`, `.remoteError` when this message cannot be replied to).
    public func reply(_ data: ByteBuffer) async throws {
        guard let replyChannel else {
            throw MessageError(.remoteError, "a message on \(self.protocol) from \(from) cannot be replied to")
        }
        try await replyChannel.reply(data, token: replyToken)
        answerWatch?.answered()
    }

    /// Sends `bytes` back as the reply (see ``reply(_:)-(ByteBuffer)``).
    public func reply(_ bytes: some Sequence<UInt8>) async throws {
        try await reply(ByteBuffer(bytes: bytes))
    }
}

/// Handles inbound messages of one protocol. Runs for each message; messages on one channel
/// are handled one after another, in order. Throwing closes (resets) the channel the message came on.
public typealias MessageHandler = @Sendable (Message) async throws -> Void

/// Whether a request has been replied to, for a delivery that hands the request on (an inbox)
/// and must keep its reply window open until the consumer replies.
final class AnswerWatch: Sendable {
    private struct State {
        var answered: Bool
        /// Waiting tasks, each with the id its cancellation finds it by.
        var waiters: [(id: UInt64, continuation: CheckedContinuation<Void, Never>)] = []
        var lastWaiterID: UInt64 = 0
    }
    private let state: NIOLockedValueBox<State>

    /// - Parameter answered: whether it starts answered (a channel's watch with nothing held).
    init(answered: Bool = false) {
        state = NIOLockedValueBox(State(answered: answered))
    }

    /// Tasks waiting now (for tests).
    var waiting: Int { state.withLockedValue { $0.waiters.count } }

    /// Watches a new request (or held message) of the same channel: not answered yet.
    func reset() {
        state.withLockedValue { $0.answered = false }
    }

    /// The request has its reply.
    func answered() {
        let waiters = state.withLockedValue { s in
            s.answered = true
            defer { s.waiters = [] }
            return s.waiters
        }
        for waiter in waiters { waiter.continuation.resume() }
    }

    /// Returns once the request is answered or after `timeout`, whichever comes first.
    func wait(upTo timeout: TimeAmount) async {
        if state.withLockedValue({ $0.answered }) { return }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.waitAnswered() }
            group.addTask { try? await Task.sleep(nanoseconds: UInt64(max(0, timeout.nanoseconds))) }
            await group.next()
            group.cancelAll()
        }
    }

    private func waitAnswered() async {
        let id = state.withLockedValue { s in
            s.lastWaiterID &+= 1
            return s.lastWaiterID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = state.withLockedValue { s -> Bool in
                    if s.answered || Task.isCancelled { return true }
                    s.waiters.append((id, c))
                    return false
                }
                if now { c.resume() }
            }
        } onCancel: {
            let waiter = state.withLockedValue { s -> CheckedContinuation<Void, Never>? in
                guard let index = s.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return s.waiters.remove(at: index).continuation
            }
            waiter?.resume()
        }
    }
}
