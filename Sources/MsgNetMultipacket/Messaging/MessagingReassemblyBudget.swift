import Synchronization

/// Something that hands out reassembly bytes shared by many machines (the "in total" limit).
/// Implementations must be thread-safe; `MessagingReassemblyBudget` is the standard one.
public protocol MessagingReassemblyAccountant: AnyObject, Sendable {
    /// Reserves `bytes` if they fit; returns false (and reserves nothing) otherwise.
    func reserve(_ bytes: Int) -> Bool
    /// Returns `bytes` reserved earlier.
    func release(_ bytes: Int)
}

/// A byte budget for reassembly shared by every `MessagingMachine` of a node (the "in total" limit).
///
/// Thread-safe; the machines stay pure values that hold a reference to it. A machine reserves a
/// partial message's full length when it starts it and releases it when the message completes,
/// times out or the machine closes.
@available(macOS 15.0, *)
public final class MessagingReassemblyBudget: MessagingReassemblyAccountant {
    private let state: Mutex<Int>
    /// The total number of bytes that may be reserved at once.
    public let capacity: Int

    /// Creates a budget of `capacity` bytes (default 64 MiB).
    public init(capacity: Int = 64 << 20) {
        self.capacity = capacity
        self.state = Mutex(0)
    }

    /// Bytes reserved right now.
    public var reserved: Int { state.withLock { $0 } }

    /// Reserves `bytes` if they fit; returns false (and reserves nothing) otherwise.
    public func reserve(_ bytes: Int) -> Bool {
        state.withLock { used in
            guard bytes >= 0, bytes <= capacity - used else { return false }
            used += bytes
            return true
        }
    }

    /// Returns `bytes` reserved earlier.
    public func release(_ bytes: Int) {
        state.withLock { used in used = max(0, used - bytes) }
    }
}
