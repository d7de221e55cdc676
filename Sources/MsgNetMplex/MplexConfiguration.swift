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

    /// Unread received bytes summed over all streams of the connection above which the connection
    /// stops reading, whatever each stream holds (so many streams each under their own bound
    /// cannot add up to `maxConcurrentStreams × maxBufferedBytesPerStream`).
    ///
    /// Reading resumes when the sum drains to half of this. A frame that would take the sum over
    /// twice this is not buffered: its stream is reset at once. Values below
    /// `maxBufferedBytesPerStream` count as `maxBufferedBytesPerStream`.
    public var maxBufferedBytesPerConnection: Int = 32 << 20

    /// How long a stream may stay over its buffer bound without its reader taking any data
    /// before the stream is reset and reading resumes.
    public var stalledStreamTimeout: TimeAmount = .seconds(5)

    /// The period of the timer that checks for stalled streams.
    public var tickInterval: TimeAmount = .milliseconds(500)

    /// The default configuration (1 MiB frames, 1024 streams, 4 MiB per stream, 32 MiB per
    /// connection, 5 s stall timeout).
    public init() {}

    /// The unread byte count at which a stream is reset without waiting: twice the buffer bound.
    public var hardBufferCap: Int { maxBufferedBytesPerStream &* 2 }

    /// The connection-wide bound in effect: `maxBufferedBytesPerConnection`, at least
    /// `maxBufferedBytesPerStream`.
    public var connectionBufferBound: Int { max(maxBufferedBytesPerConnection, maxBufferedBytesPerStream) }

    /// The unread byte count over all streams past which a stream receiving data is reset at
    /// once: twice the connection bound.
    public var connectionHardBufferCap: Int { connectionBufferBound &* 2 }
}
