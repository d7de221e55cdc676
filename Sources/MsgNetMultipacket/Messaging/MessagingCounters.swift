/// Counters for every drop and notable event of a `MessagingMachine`. Plain values; read them any time.
public struct MessagingCounters: Hashable, Sendable {
    /// Payloads dropped whole because a frame failed to decode.
    public var malformedPayloads = 0
    /// Payloads dropped whole because of an unknown frame type.
    public var unknownFrameTypes = 0
    /// Payloads received after `close`.
    public var payloadsAfterClose = 0
    /// Reliable fragments received again (acknowledged again, not delivered).
    public var duplicateReliable = 0
    /// Reliable fragments below the remembered range (not acknowledged, not delivered).
    public var tooOldReliable = 0
    /// Unreliable messages received again (not delivered).
    public var duplicateUnreliable = 0
    /// Unreliable messages older than the remembered ranges (reordered too far; not delivered).
    public var tooOldUnreliable = 0
    /// Continuations naming a protocolInt we do not know (answered with Reset).
    public var unknownProtocolInts = 0
    /// Inits (or Continuations) for a protocol without handler (answered with Reset).
    public var unsupportedProtocols = 0
    /// Inbound protocol bindings forgotten because the table was full.
    public var protocolTableEvictions = 0
    /// Reliable sequence ranges forgotten because too many gaps were open.
    public var receivedRangeEvictions = 0
    /// Fragments refused: too many partial messages for this peer.
    public var partialLimitDrops = 0
    /// Fragments refused: this peer's reassembly bytes are used up.
    public var reassemblyBytesDrops = 0
    /// Fragments refused: the shared reassembly budget is used up.
    public var globalBudgetDrops = 0
    /// Fragments whose header disagrees with the partial message they belong to.
    public var inconsistentFragments = 0
    /// Fragments of a message already dropped (timed out).
    public var abandonedFragments = 0
    /// Partial messages dropped by the reassembly timeout.
    public var reassemblyTimeouts = 0
    /// Acks naming a sequence number we never sent.
    public var invalidAcks = 0
    /// Transport Acks naming no transport we probed (or arriving after one was chosen).
    public var ignoredTransportAcks = 0
    /// Resets for a protocolInt with nothing to reset.
    public var ignoredResets = 0
    /// Reliable fragments retransmitted (timer or fast retransmit).
    public var retransmissions = 0
    /// Fragments declared lost early because 3 later-sent numbers were acknowledged.
    public var fastRetransmissions = 0
    /// Congestion window reductions (a loss in a new round trip, or persistent congestion).
    public var congestionEvents = 0
    /// Reliable sends failed by their deadline.
    public var sendTimeouts = 0
    /// Sends refused because a queue or table was full.
    public var sendsRefused = 0
    /// Messages delivered to the application.
    public var messagesDelivered = 0
    /// Protocol probes received for a protocol with a handler (acknowledged, not delivered).
    public var probesAnswered = 0

    /// All zero.
    public init() {}
}
