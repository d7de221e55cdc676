import NIOCore

/// A sans-IO multistream-select 1.0 negotiation, for either side of a channel.
///
/// Feed it events (``start()``, ``onBytes(_:)``, ``onTimeout()``) and carry out the ``Action``s it
/// returns, in order. It never touches a channel or a clock. One machine negotiates once: after it
/// has returned ``Action/negotiated(_:leftover:)``, ``Action/listed(_:)`` or ``Action/failed(_:)``
/// it ignores further input and leaves it unconsumed.
///
/// - Initiator: ``initiator(proposals:optimistic:)`` writes the header and its first proposal in
///   one `.send`, then falls back through the other proposals, one per `na`.
/// - Responder: ``responder(selector:answerLs:maxMessages:)`` waits for the header, then answers
///   each proposal with an echo (agreement) or `na`, and `ls` with its advertised list. Its header
///   goes out together with its first answer when both are due at once.
/// - Lister: ``listProtocols()`` asks the responder for its protocol list with `ls`.
///
/// See docs/multistream.md for the exact wire format and behaviour.
public struct MultistreamMachine: Sendable {
    /// What the caller must do, in the order returned.
    public enum Action: Sendable, Equatable {
        /// Write these bytes to the peer (one write; flush it).
        case send(ByteBuffer)
        /// Both sides agreed on this protocol. `leftover` holds the bytes that followed the last
        /// negotiation frame in the input (application data); pass them to the protocol first.
        case negotiated(String, leftover: ByteBuffer)
        /// Optimistic initiator with a single proposal: the header and proposal are on their way and
        /// the caller may write application data right away. The confirmation still follows as
        /// `.negotiated` (or `.failed(.protocolRejected)`).
        case optimisticallySelected(String)
        /// Lister only: the responder's advertised protocols.
        case listed([String])
        /// The negotiation failed; close the channel. No further actions follow.
        case failed(MultistreamError)
    }

    /// How many messages (proposals and `ls`) a responder answers by default before it gives up.
    public static let defaultMaxMessages = 32

    private enum Role: Sendable {
        case initiator(proposals: [String], optimistic: Bool)
        case responder(selector: ProtocolSelector, answerLs: Bool, maxMessages: Int)
        case lister
    }

    private enum State: Sendable {
        /// ``start()`` not called yet.
        case idle
        /// Waiting for the peer's `/multistream/1.0.0`.
        case awaitingHeader
        /// Initiator: waiting for the answer to `proposals[index]`.
        case awaitingReply(index: Int)
        /// Lister: waiting for the `ls` response.
        case awaitingList
        /// Responder: waiting for the next proposal; `answered` messages have been answered.
        case awaitingProposal(answered: Int)
        /// Negotiated or listed.
        case finished
        /// Failed; input is ignored.
        case failed
    }

    private let role: Role
    private var state: State = .idle
    /// An incomplete frame carried over between calls to ``onBytes(_:)`` (at most 1026 bytes).
    private var pending = ByteBuffer()

    private init(role: Role) {
        self.role = role
    }

    /// A machine for the side that opened the channel, proposing `proposals` in order of preference.
    ///
    /// With `optimistic` and exactly one proposal, the machine settles on that proposal at once
    /// (``Action/optimisticallySelected(_:)``), saving a round trip; with several proposals
    /// `optimistic` has no effect.
    public static func initiator(proposals: [String], optimistic: Bool = false) -> MultistreamMachine {
        MultistreamMachine(role: .initiator(proposals: proposals, optimistic: optimistic))
    }

    /// A machine for the side that accepted the channel.
    ///
    /// - Parameters:
    ///   - selector: the protocols accepted.
    ///   - answerLs: whether `ls` is answered with `selector.advertised` (otherwise with `na`).
    ///   - maxMessages: how many proposals (and `ls` requests) are answered; one more fails with
    ///     ``MultistreamError/tooManyProposals(_:)``.
    public static func responder(
        selector: ProtocolSelector,
        answerLs: Bool = true,
        maxMessages: Int = defaultMaxMessages
    ) -> MultistreamMachine {
        MultistreamMachine(role: .responder(selector: selector, answerLs: answerLs, maxMessages: maxMessages))
    }

    /// A machine for an initiator that only asks for the responder's protocol list (`ls`) and
    /// finishes with ``Action/listed(_:)``. The channel is of no further use afterwards.
    public static func listProtocols() -> MultistreamMachine {
        MultistreamMachine(role: .lister)
    }

    // MARK: Events

    /// Starts the negotiation: the initiator's and lister's first write.
    ///
    /// The responder sends nothing until the peer's header arrives. Calling it twice does nothing
    /// the second time.
    public mutating func start() -> [Action] {
        guard case .idle = state else { return [] }
        switch role {
        case .initiator(let proposals, let optimistic):
            guard let first = proposals.first else { return [fail(.noProposals)] }
            if let invalid = proposals.first(where: { !Self.isProposable($0) }) {
                return [fail(.invalidProtocolID(invalid))]
            }
            var out = ByteBuffer()
            MultistreamCodec.encode(MultistreamCodec.header, into: &out)
            MultistreamCodec.encode(first, into: &out)
            state = .awaitingHeader
            if optimistic && proposals.count == 1 {
                return [.send(out), .optimisticallySelected(first)]
            }
            return [.send(out)]
        case .responder:
            state = .awaitingHeader
            return []
        case .lister:
            var out = ByteBuffer()
            MultistreamCodec.encode(MultistreamCodec.header, into: &out)
            MultistreamCodec.encode(MultistreamCodec.listRequest, into: &out)
            state = .awaitingHeader
            return [.send(out)]
        }
    }

    /// Processes bytes from the peer.
    ///
    /// While negotiating, all of `input` is consumed (an incomplete frame is kept inside, so the
    /// input may arrive one byte at a time). When the negotiation ends in this call, the bytes after
    /// the last negotiation frame are returned as `leftover` of ``Action/negotiated(_:leftover:)``.
    /// Once finished or failed, `input` is left untouched and nothing is returned.
    ///
    /// Called before ``start()``, it starts the machine first.
    public mutating func onBytes(_ input: inout ByteBuffer) -> [Action] {
        if case .idle = state {
            let started = start()
            return started + onBytes(&input)
        }
        switch state {
        case .finished, .failed, .idle: return []
        case .awaitingHeader, .awaitingReply, .awaitingList, .awaitingProposal: break
        }
        if let accepted = acceptAtOnce(&input) { return accepted }

        var source: ByteBuffer
        if pending.readableBytes == 0 {
            source = input
            input.moveReaderIndex(forwardBy: input.readableBytes)
        } else {
            pending.writeBuffer(&input)
            source = pending
            pending = ByteBuffer()
        }

        var out = ByteBuffer()
        var outcome: Action?
        while outcome == nil {
            let body: ByteBuffer
            do {
                guard let frame = try MultistreamCodec.readFrameBody(from: &source) else { break }
                body = frame
            } catch {
                outcome = fail(error)
                break
            }
            outcome = handle(body, rest: source, out: &out)
        }
        if outcome == nil && source.readableBytes > 0 {
            pending.writeBuffer(&source)
        }

        var actions: [Action] = []
        if out.readableBytes > 0 { actions.append(.send(out)) }
        if let outcome { actions.append(outcome) }
        return actions
    }

    /// The bytes of the header frame: `0x13 "/multistream/1.0.0\n"`.
    private static let headerFrame = Array(("\u{13}" + MultistreamCodec.header + "\n").utf8)

    /// The responder's shortcut for the common case: the peer's header and a supported proposal
    /// arrive together (a lazy initiator sends them with its first data). The answer is then
    /// exactly the bytes received — the header and the proposal, echoed — so it is sent as a
    /// slice of the input, without parsing lines or encoding them again. The outcome and the
    /// output bytes are the same as the frame-by-frame path's; anything else (`ls`, an
    /// unsupported protocol, a two-byte length prefix, a partial frame, bytes held from an earlier
    /// call) takes that path.
    private mutating func acceptAtOnce(_ input: inout ByteBuffer) -> [Action]? {
        guard case .awaitingHeader = state, case .responder(let selector, _, let maxMessages) = role,
            maxMessages > 0, pending.readableBytes == 0
        else { return nil }
        let h = Self.headerFrame.count
        let shape = input.withUnsafeReadableBytes { bytes -> Int? in
            guard bytes.count > h, bytes.prefix(h).elementsEqual(Self.headerFrame) else { return nil }
            let length = Int(bytes[h])
            // A one-byte prefix (so the echo is the canonical encoding), a body and its newline.
            guard length >= 2, length < 0x80, bytes.count >= h + 1 + length, bytes[h + length] == UInt8(ascii: "\n")
            else { return nil }
            return length
        }
        guard let length = shape,
            let body = input.getSlice(at: input.readerIndex + h + 1, length: length - 1),
            let proposal = try? MultistreamCodec.validatedString(body),
            proposal != MultistreamCodec.listRequest, selector.select(proposal) != nil
        else { return nil }
        let echo = input.readSlice(length: h + 1 + length)!
        let rest = input
        input.moveReaderIndex(forwardBy: input.readableBytes)
        state = .finished
        return [.send(echo), .negotiated(proposal, leftover: rest)]
    }

    /// The caller's negotiation timer fired: fails the negotiation unless it already ended.
    public mutating func onTimeout() -> [Action] {
        switch state {
        case .finished, .failed: return []
        case .idle, .awaitingHeader, .awaitingReply, .awaitingList, .awaitingProposal: return [fail(.timeout)]
        }
    }

    // MARK: Frames

    /// Handles one frame body; returns the final action when the negotiation ends with it.
    private mutating func handle(_ body: ByteBuffer, rest: ByteBuffer, out: inout ByteBuffer) -> Action? {
        if case .awaitingList = state {
            return handleList(body)
        }
        let message: String
        do {
            message = try MultistreamCodec.validatedString(body)
        } catch {
            return fail(error)
        }

        switch (role, state) {
        case (.responder, .awaitingHeader):
            guard message == MultistreamCodec.header else { return fail(.unexpectedHeader(message)) }
            MultistreamCodec.encode(MultistreamCodec.header, into: &out)
            state = .awaitingProposal(answered: 0)
            return nil

        case (.initiator, .awaitingHeader):
            guard message == MultistreamCodec.header else { return fail(.unexpectedHeader(message)) }
            state = .awaitingReply(index: 0)
            return nil

        case (.lister, .awaitingHeader):
            guard message == MultistreamCodec.header else { return fail(.unexpectedHeader(message)) }
            state = .awaitingList
            return nil

        case (.responder(let selector, let answerLs, let maxMessages), .awaitingProposal(let answered)):
            guard answered < maxMessages else { return fail(.tooManyProposals(maxMessages)) }
            state = .awaitingProposal(answered: answered + 1)
            if message == MultistreamCodec.listRequest {
                if answerLs {
                    MultistreamCodec.encodeProtocolList(selector.advertised, into: &out)
                } else {
                    MultistreamCodec.encode(MultistreamCodec.notAvailable, into: &out)
                }
                return nil
            }
            guard let selected = selector.select(message) else {
                MultistreamCodec.encode(MultistreamCodec.notAvailable, into: &out)
                return nil
            }
            MultistreamCodec.encode(selected, into: &out)
            state = .finished
            return .negotiated(selected, leftover: rest)

        case (.initiator(let proposals, let optimistic), .awaitingReply(let index)):
            let proposal = proposals[index]
            if message == proposal {
                state = .finished
                return .negotiated(proposal, leftover: rest)
            }
            guard message == MultistreamCodec.notAvailable else { return fail(.unexpectedMessage(message)) }
            if optimistic && proposals.count == 1 { return fail(.protocolRejected(proposal)) }
            guard index + 1 < proposals.count else { return fail(.noProtocolInCommon(proposals)) }
            MultistreamCodec.encode(proposals[index + 1], into: &out)
            state = .awaitingReply(index: index + 1)
            return nil

        default:
            // Unreachable: each role only enters its own states, and finished/failed machines
            // do not read frames.
            return fail(.unexpectedMessage(message))
        }
    }

    /// Lister: handles the `ls` response (or `na`).
    private mutating func handleList(_ body: ByteBuffer) -> Action {
        if body.readableBytesView.elementsEqual(MultistreamCodec.notAvailable.utf8) {
            return fail(.protocolRejected(MultistreamCodec.listRequest))
        }
        do {
            let protocols = try MultistreamCodec.decodeProtocolList(body)
            state = .finished
            return .listed(protocols)
        } catch {
            return fail(error)
        }
    }

    private mutating func fail(_ error: MultistreamError) -> Action {
        state = .failed
        pending = ByteBuffer()
        return .failed(error)
    }

    /// Whether `id` may be proposed: framable and not one of the protocol's own messages.
    private static func isProposable(_ id: String) -> Bool {
        MultistreamCodec.isFramable(id) && id != MultistreamCodec.notAvailable
            && id != MultistreamCodec.listRequest && id != MultistreamCodec.header
    }
}
