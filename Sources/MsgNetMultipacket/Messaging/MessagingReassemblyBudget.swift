import Synchronization

/// Something that hands out reassembly bytes shared by many machines (the "in total" limit).
/// Implementations must be thread-safe; `MessagingReassemblyBudget` is the standard one.
package protocol MessagingReassemblyAccountant: AnyObject, Sendable {
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
package final class MessagingReassemblyBudget: MessagingReassemblyAccountant {
    private let state: Mutex<Int>
    /// The total number of bytes that may be reserved at once.
    package let capacity: Int

    /// Creates a budget of `capacity` bytes (default 64 MiB).
    package init(capacity: Int = 64 << 20) {
        self.capacity = capacity
        self.state = Mutex(0)
    }

    /// Bytes reserved right now.
    package var reserved: Int { state.withLock { $0 } }

    /// Reserves `bytes` if they fit; returns false (and reserves nothing) otherwise.
    package func reserve(_ bytes: Int) -> Bool {
        state.withLock { used in
            guard bytes >= 0, bytes <= capacity - used else { return false }
            used += bytes
            return true
        }
    }

    /// Returns `bytes` reserved earlier.
    package func release(_ bytes: Int) {
        state.withLock { used in used = max(0, used - bytes) }
    }
}
