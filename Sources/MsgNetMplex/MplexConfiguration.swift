import NIOCore

/// Limits and timers of an mplex connection.
public struct MplexConfiguration: Sendable, Hashable {
    /// The largest data segment of one frame, sent or accepted. The spec says 1 MiB.
    ///
    /// Larger writes are split into frames of this size; a received frame announcing more is a
    /// connection error (rejected before its data is buffered).
    public var maxFrameSize: Int = 1 << 20

    /// The longest stream name accepted in a NewStream frame.
    public var maxStreamNameLength: Int = 1024

    /// The most streams open at once in each direction (opened by us / opened by the peer).
    ///
    /// An inbound stream over the limit is reset at once; `openStream` over the limit throws
    /// ``MplexError/Code/tooManyStreams``.
    public var maxConcurrentStreams: Int = 1024

    /// Unread received bytes per stream above which the connection stops reading (backpressure).
    ///
    /// Reading resumes when every such stream has drained to half of this. A stream holding
    /// `2 * maxBufferedBytesPerStream` (the hard cap) unread bytes is reset at once.
    public var maxBufferedBytesPerStream: Int = 4 << 20

    /// How long a stream may stay over its buffer bound without its reader taking any data
    /// before the stream is reset and reading resumes.
    public var stalledStreamTimeout: TimeAmount = .seconds(5)

    /// The period of the timer that checks for stalled streams.
    public var tickInterval: TimeAmount = .milliseconds(500)

    /// The default configuration (1 MiB frames, 1024 streams, 4 MiB per stream, 5 s stall timeout).
    public init() {}

    /// The unread byte count at which a stream is reset without waiting: twice the buffer bound.
    public var hardBufferCap: Int { maxBufferedBytesPerStream &* 2 }
}
