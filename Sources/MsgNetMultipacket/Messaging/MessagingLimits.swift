import MsgNetCore
import NIOCore

/// Sizes, windows, timeouts and hard limits of the messaging layer. Every figure is documented in
/// `docs/multipacket.md (Part C)`; both peers should use the same values.
public struct MessagingLimits: Hashable, Sendable {
    /// Largest payload handed to the session layer (and accepted from it), in bytes.
    public var maxPayload: Int = 1200
    /// Largest message, in bytes (same as the stream path).
    public var maxMessageSize: Int = 1 << 20
    /// Smallest fragment the decoder has to accept; bounds the fragment count a peer may claim.
    public var minFragmentSize: Int = 256
    /// Longest protocol name, in UTF-8 bytes.
    public var maxProtocolNameLength: Int = 1024
    /// Protocol names the peer may have bound to protocolInts at once; the oldest is forgotten beyond.
    public var maxInboundProtocols: Int = 64
    /// Protocol names we keep bound to protocolInts at once.
    public var maxOutboundProtocols: Int = 256
    /// Reliable fragments sent and not yet acknowledged, at most.
    public var maxInFlightFragments: Int = 256
    /// Reliable messages accepted by `send` and not yet finished (in flight or queued), at most.
    public var maxQueuedMessages: Int = 1024
    /// Bytes of reliable messages accepted by `send` and not yet finished, at most.
    public var maxQueuedBytes: Int = 8 << 20
    /// Default and longest delivery deadline of a reliable message, measured from `send`.
    public var deliveryTimeout: TimeAmount = .seconds(10)
    /// RTO before the first RTT sample (RFC 6298 §2.1).
    public var initialRTO: TimeAmount = .seconds(1)
    /// Smallest RTO.
    public var minRTO: TimeAmount = .milliseconds(200)
    /// Largest RTO, also the cap of the exponential backoff.
    public var maxRTO: TimeAmount = .seconds(10)
    /// Retransmit a fragment before its RTO when 3 later-sent numbers are acknowledged and it is overdue.
    public var fastRetransmit: Bool = true
    /// Congestion control (NewReno, as RFC 9002 §7, counted in fragment bytes): the bytes of
    /// reliable fragments in flight are kept under a congestion window that starts at
    /// `initialCongestionWindow`, grows by each acknowledged fragment's bytes (slow start) up to
    /// the slow-start threshold and by about one payload per round trip after it, and halves on
    /// a loss, down to `minCongestionWindow` (once per round trip: losses of fragments sent
    /// before the last reduction do not count again). `maxInFlightFragments` still applies.
    /// `false`: that fixed window is the only limit.
    public var congestionControl: Bool = true
    /// The congestion window of a new session, in bytes (RFC 9002's 10 datagrams, rounded up).
    public var initialCongestionWindow: Int = 16 * 1200
    /// The smallest congestion window, in bytes.
    public var minCongestionWindow: Int = 2 * 1200
    /// Longest a receiver waits before acknowledging a single ack-eliciting payload.
    public var maxAckDelay: TimeAmount = .milliseconds(25)
    /// Ranges the receiver remembers for reliable sequence numbers (dedup); past it the oldest range is forgotten.
    public var maxReceivedRanges: Int = 1024
    /// Width of the receiver's sliding dedup window for unreliable sequence numbers (bits; older ones are dropped).
    public var unreliableWindow: Int = 1024
    /// Ranges written in one Ack frame, at most (also the decoder's limit).
    public var maxAckRangesPerFrame: Int = 32
    /// Partially reassembled messages per peer, at most.
    public var maxPartialMessages: Int = 64
    /// Bytes reserved for reassembly per peer, at most.
    public var maxReassemblyBytes: Int = 4 << 20
    /// A partial message older than this is dropped. Must be ≥ the peer's `deliveryTimeout`.
    public var reassemblyTimeout: TimeAmount = .seconds(15)
    /// Message ids of dropped partial messages remembered, so their late fragments are not acknowledged.
    public var maxAbandonedMessages: Int = 256

    /// The defaults.
    public init() {}

    /// Largest fragment count a peer may claim: `ceil(maxMessageSize / minFragmentSize)`.
    public var maxFragmentCount: Int { (maxMessageSize + minFragmentSize - 1) / minFragmentSize }
}

extension MessagingLimits {
    /// The most bytes an Init frame's header can take for a protocol name of `nameLength` bytes
    /// (every variable field at its largest under these limits).
    func initHeaderBound(nameLength: Int, kind: MessagingMessageKind) -> Int {
        var n = 1 + 2 + UVarint.encodedLength(UInt64(nameLength)) + nameLength + 2
        n += UVarint.maxLength + 1
        switch kind {
        case .oneWay, .probe: break
        case .request(let id), .reply(let id): n += UVarint.encodedLength(id)
        }
        n += 2 * UVarint.encodedLength(UInt64(maxFragmentCount))
        n += UVarint.encodedLength(UInt64(maxMessageSize))
        n += UVarint.encodedLength(UInt64(maxPayload))
        return n
    }

    /// The largest one-way unreliable message on a protocol whose name is `protocolNameLength`
    /// bytes: what one payload holds after the largest Init header (the machine refuses more).
    package func maxUnreliableLength(protocolNameLength: Int) -> Int {
        maxPayload - initHeaderBound(nameLength: protocolNameLength, kind: .oneWay)
    }
}
