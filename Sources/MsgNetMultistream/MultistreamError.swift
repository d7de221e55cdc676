/// Everything that can go wrong while negotiating a protocol with multistream-select 1.0.
///
/// Every failure of ``MultistreamCodec``, ``MultistreamMachine`` and ``MultistreamHandler``
/// is one of these cases. ``description`` is a sentence fit for a log line.
public enum MultistreamError: Error, Hashable, Sendable, CustomStringConvertible {
    /// How a frame was malformed.
    public enum Malformation: Hashable, Sendable {
        /// The length prefix is not a minimal unsigned varint.
        case invalidVarint
        /// The frame is empty or its last byte is not `\n`.
        case missingNewline
        /// The frame (without its `\n`) is not valid UTF-8.
        case invalidUTF8
        /// An `ls` response is not a sequence of well-formed nested frames.
        case invalidProtocolList
        /// The stream ended in the middle of a frame.
        case truncated
    }

    /// A frame's length prefix announces more than ``MultistreamCodec/maxFrameLength`` bytes.
    case frameTooLarge
    /// A frame is malformed; the associated value says how.
    case malformed(Malformation)
    /// The first message was not `/multistream/1.0.0`; carries what was received instead.
    case unexpectedHeader(String)
    /// The peer sent a message that makes no sense at this point; carries the message.
    case unexpectedMessage(String)
    /// The responder refused every proposal (initiator, non-optimistic); carries the proposals.
    case noProtocolInCommon([String])
    /// The responder refused the protocol proposed optimistically, or refused `ls`.
    case protocolRejected(String)
    /// The initiator sent more than the allowed number of proposals; carries the limit.
    case tooManyProposals(Int)
    /// The initiator was given no protocol to propose.
    case noProposals
    /// A protocol id we were asked to send cannot be sent (empty, contains `\n`, is `na` or `ls`,
    /// or does not fit in a frame); carries the id.
    case invalidProtocolID(String)
    /// The negotiation did not finish in time.
    case timeout
    /// The channel closed before the negotiation finished.
    case connectionClosed
    /// The handler was removed from the pipeline before the negotiation finished.
    case handlerRemoved

    /// A sentence describing the error, fit for a log line.
    public var description: String {
        switch self {
        case .frameTooLarge:
            return "multistream frame length exceeds \(MultistreamCodec.maxFrameLength) bytes"
        case .malformed(.invalidVarint):
            return "multistream frame has an invalid (non-minimal) varint length prefix"
        case .malformed(.missingNewline):
            return "multistream frame does not end with a newline"
        case .malformed(.invalidUTF8):
            return "multistream frame is not valid UTF-8"
        case .malformed(.invalidProtocolList):
            return "multistream ls response is not a well-formed list of protocol frames"
        case .malformed(.truncated):
            return "stream ended in the middle of a multistream frame"
        case .unexpectedHeader(let received):
            return "expected multistream header \(MultistreamCodec.header), received \(Self.quoted(received))"
        case .unexpectedMessage(let received):
            return "unexpected multistream message \(Self.quoted(received))"
        case .noProtocolInCommon(let proposals):
            return "peer supports none of the proposed protocols \(proposals)"
        case .protocolRejected(let proposal):
            return "peer rejected \(Self.quoted(proposal)) with na"
        case .tooManyProposals(let limit):
            return "peer sent more than \(limit) multistream proposals"
        case .noProposals:
            return "no protocol to propose"
        case .invalidProtocolID(let id):
            return "protocol id \(Self.quoted(id)) cannot be sent in a multistream frame"
        case .timeout:
            return "multistream negotiation timed out"
        case .connectionClosed:
            return "connection closed during multistream negotiation"
        case .handlerRemoved:
            return "multistream handler removed before the negotiation finished"
        }
    }

    /// A peer-supplied string, quoted and cut to a length fit for a log line.
    private static func quoted(_ text: String) -> String {
        let limit = 100
        if text.count <= limit { return "\"\(text)\"" }
        return "\"\(text.prefix(limit))…\""
    }
}
