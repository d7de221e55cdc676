/// Counters for every drop and notable event of a `MessagingMachine`. Plain values; read them any time.
package struct MessagingCounters: Hashable, Sendable {
    /// Payloads dropped whole because a frame failed to decode.
    package var malformedPayloads = 0
    /// Payloads dropped whole because of an unknown frame type.
    package var unknownFrameTypes = 0
    /// Payloads received after `close`.
    package var payloadsAfterClose = 0
    /// Reliable fragments received again (acknowledged again, not delivered).
    package var duplicateReliable = 0
    /// Reliable fragments below the remembered range (not acknowledged, not delivered).
    package var tooOldReliable = 0
    /// Unreliable messages received again (not delivered).
    package var duplicateUnreliable = 0
    /// Unreliable messages older than the remembered ranges (reordered too far; not delivered).
    package var tooOldUnreliable = 0
    /// Continuations naming a protocolInt we do not know (answered with Reset).
    package var unknownProtocolInts = 0
    /// Inits (or Continuations) for a protocol without handler (answered with Reset).
    package var unsupportedProtocols = 0
    /// Inbound protocol bindings forgotten because the table was full.
    package var protocolTableEvictions = 0
    /// Reliable sequence ranges forgotten because too many gaps were open.
    package var receivedRangeEvictions = 0
    /// Fragments refused: too many partial messages for this peer.
    package var partialLimitDrops = 0
    /// Fragments refused: this peer's reassembly bytes are used up.
    package var reassemblyBytesDrops = 0
    /// Fragments refused: the shared reassembly budget is used up.
    package var globalBudgetDrops = 0
    /// Fragments whose header disagrees with the partial message they belong to.
    package var inconsistentFragments = 0
    /// Fragments of a message already dropped (timed out).
    package var abandonedFragments = 0
    /// Partial messages dropped by the reassembly timeout.
    package var reassemblyTimeouts = 0
    /// Acks naming a sequence number we never sent.
    package var invalidAcks = 0
    /// Transport Acks naming no transport we probed (or arriving after one was chosen).
    package var ignoredTransportAcks = 0
    /// Resets for a protocolInt with nothing to reset.
    package var ignoredResets = 0
    /// Reliable fragments retransmitted (timer or fast retransmit).
    package var retransmissions = 0
    /// Fragments declared lost early because 3 later-sent numbers were acknowledged.
    package var fastRetransmissions = 0
    /// Reliable sends failed by their deadline.
    package var sendTimeouts = 0
    /// Sends refused because a queue or table was full.
    package var sendsRefused = 0
    /// Messages delivered to the application.
    package var messagesDelivered = 0

    /// All zero.
    package init() {}
}
