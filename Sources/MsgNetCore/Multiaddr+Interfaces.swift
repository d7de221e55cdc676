import NIOCore

extension Multiaddr {
    /// Whether the address starts with the unspecified IP address (`/ip4/0.0.0.0`, `/ip6/::`):
    /// a socket bound to it listens on every interface, but no peer can dial it.
    public var isWildcard: Bool {
        switch components.first {
        case .ip4(let ip): return ip.bytes.allSatisfy { $0 == 0 }
        case .ip6(let ip): return ip.bytes.allSatisfy { $0 == 0 }
        default: return false
        }
    }

    /// Whether the address starts with a loopback IP address (`127.0.0.0/8`, `::1`).
    public var isLoopback: Bool {
        switch components.first {
        case .ip4(let ip): return ip.bytes[0] == 127
        case .ip6(let ip):
            let b = ip.bytes
            return b.dropLast().allSatisfy { $0 == 0 } && b[15] == 1
        default: return false
        }
    }

    /// The addresses a peer can dial to reach a socket bound to this address — what identify
    /// announces. A wildcard address becomes the same address on each of this machine's
    /// interface addresses of its family (loopback last; IPv6 link-local addresses are left out,
    /// as they need a zone); any other address is itself. When the interfaces cannot be read,
    /// the wildcard address itself.
    public func dialableForms() -> [Multiaddr] {
        guard isWildcard else { return [self] }
        let interfaces = (try? System.enumerateDevices().compactMap(\.address)) ?? []
        let expanded = expanding(onto: interfaces)
        return expanded.isEmpty ? [self] : expanded
    }

    /// ``dialableForms()`` against the given interface addresses.
    package func expanding(onto interfaces: [SocketAddress]) -> [Multiaddr] {
        guard isWildcard, let first = components.first else { return [self] }
        var outward: [Multiaddr] = []
        var loopback: [Multiaddr] = []
        for interface in interfaces {
            guard let ip = try? Multiaddr(socketAddress: interface, transport: .udp).components.first else { continue }
            switch (first, ip) {
            case (.ip4, .ip4): break
            case (.ip6, .ip6(let a)):
                let b = a.bytes
                if b[0] == 0xFE && b[1] & 0xC0 == 0x80 { continue }  // link-local: needs a zone
            default: continue
            }
            let expanded = Multiaddr(components: [ip] + components.dropFirst())
            if expanded.isLoopback { loopback.append(expanded) } else { outward.append(expanded) }
        }
        var seen: Set<Multiaddr> = []
        return (outward + loopback).filter { seen.insert($0).inserted }
    }
}
