/// The set of protocols a responder accepts, each registered by exact id or by a match function.
///
/// As in the libp2p connection-lifecycle spec, a registration is either an exact protocol id
/// (literal comparison, the default) or a predicate ("match function") that receives each proposed
/// id and says whether it is supported; a predicate registration carries the name it is advertised
/// under in `ls` responses. Names are unique: adding a name again replaces the earlier
/// registration, in its original position. Registrations are tried in the order they were added.
public struct ProtocolSelector: Sendable {
    private enum Registration: Sendable {
        case exact(String)
        case matching(advertised: String, predicate: @Sendable (String) -> Bool)

        var name: String {
            switch self {
            case .exact(let id): return id
            case .matching(let advertised, _): return advertised
            }
        }

        func accepts(_ proposed: String) -> Bool {
            switch self {
            case .exact(let id): return id == proposed
            case .matching(_, let predicate): return predicate(proposed)
            }
        }
    }

    private var registrations: [Registration] = []

    /// Creates a selector accepting exactly the given protocol ids.
    public init(_ ids: [String] = []) {
        for id in ids { add(id) }
    }

    /// Accepts `id` by exact comparison and advertises it.
    public mutating func add(_ id: String) {
        insert(.exact(id))
    }

    /// Accepts every proposed id for which `matching` returns `true`, advertised as `advertised`.
    ///
    /// `matching` runs on the event loop during negotiation; keep it fast and free of side effects.
    public mutating func add(matching: @escaping @Sendable (String) -> Bool, advertised: String) {
        insert(.matching(advertised: advertised, predicate: matching))
    }

    /// Removes the registration named `id` (an exact id, or a predicate's advertised name).
    public mutating func remove(_ id: String) {
        registrations.removeAll { $0.name == id }
    }

    /// The id to confirm for `proposed`: `proposed` itself when some registration accepts it,
    /// otherwise `nil` (answer `na`).
    public func select(_ proposed: String) -> String? {
        registration(for: proposed) == nil ? nil : proposed
    }

    /// The name of the first registration that accepts `proposed` (the exact id, or the
    /// predicate's advertised name), so a caller can route to the handler registered under it.
    public func registration(for proposed: String) -> String? {
        registrations.first { $0.accepts(proposed) }?.name
    }

    /// The names to list in an `ls` response, in registration order.
    public var advertised: [String] {
        registrations.map(\.name)
    }

    private mutating func insert(_ registration: Registration) {
        if let index = registrations.firstIndex(where: { $0.name == registration.name }) {
            registrations[index] = registration
        } else {
            registrations.append(registration)
        }
    }
}
