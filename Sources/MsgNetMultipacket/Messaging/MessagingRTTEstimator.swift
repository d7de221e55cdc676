import NIOCore

/// RFC 6298 round-trip estimator: SRTT / RTTVAR smoothing, RTO clamped to `[minRTO, maxRTO]`,
/// exponential backoff per retransmission. A pure value.
package struct MessagingRTTEstimator: Hashable, Sendable {
    /// Smoothed round-trip time, nil before the first sample.
    package private(set) var smoothedRTT: TimeAmount?
    /// Round-trip time variation.
    package private(set) var rttVariation: TimeAmount = .zero
    /// Current retransmission timeout (before backoff).
    package private(set) var rto: TimeAmount
    private let minRTO: TimeAmount
    private let maxRTO: TimeAmount
    /// Clock granularity `G` of RFC 6298.
    private let granularity: TimeAmount

    /// Creates an estimator with no samples yet; `rto` is `initialRTO`.
    package init(
        initialRTO: TimeAmount,
        minRTO: TimeAmount,
        maxRTO: TimeAmount,
        granularity: TimeAmount = .milliseconds(1)
    ) {
        self.minRTO = minRTO
        self.maxRTO = maxRTO
        self.granularity = granularity
        self.rto = Self.clamp(initialRTO, minRTO, maxRTO)
    }

    /// Adds one measurement (RFC 6298 §2.2–2.3). Negative samples count as zero.
    package mutating func addSample(_ sample: TimeAmount) {
        let r = max(sample.nanoseconds, 0)
        if let srtt = smoothedRTT?.nanoseconds {
            let rttvar = rttVariation.nanoseconds
            let newVar = (3 * rttvar + abs(srtt - r)) / 4
            rttVariation = .nanoseconds(newVar)
            smoothedRTT = .nanoseconds((7 * srtt + r) / 8)
        } else {
            smoothedRTT = .nanoseconds(r)
            rttVariation = .nanoseconds(r / 2)
        }
        let srtt = smoothedRTT!.nanoseconds
        let candidate = srtt + max(granularity.nanoseconds, 4 * rttVariation.nanoseconds)
        rto = Self.clamp(.nanoseconds(candidate), minRTO, maxRTO)
    }

    /// The timeout after `retransmissions` earlier retransmissions: `rto · 2^n`, capped at `maxRTO`.
    package func backedOff(_ retransmissions: Int) -> TimeAmount {
        let shift = min(max(retransmissions, 0), 20)
        let (value, overflow) = rto.nanoseconds.multipliedReportingOverflow(by: Int64(1) << shift)
        return overflow ? maxRTO : Self.clamp(.nanoseconds(value), minRTO, maxRTO)
    }

    private static func clamp(_ t: TimeAmount, _ lo: TimeAmount, _ hi: TimeAmount) -> TimeAmount {
        if t < lo { return lo }
        if t > hi { return hi }
        return t
    }
}
