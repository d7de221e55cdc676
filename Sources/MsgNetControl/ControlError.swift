/// An error decoding a control message.
public struct ControlError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The message type that failed to decode, e.g. `"Identify"`.
    public var message: String
    /// What went wrong.
    public var reason: String

    /// Creates an error for `message` with a human-readable `reason`.
    public init(message: String, reason: String) {
        self.message = message
        self.reason = reason
    }

    public var description: String { "malformed \(message): \(reason)" }
}
