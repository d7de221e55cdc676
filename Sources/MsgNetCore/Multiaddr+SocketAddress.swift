import NIOCore

extension Multiaddr {
    /// The transport protocol of an address.
    public enum Transport: Hashable, Sendable {
        /// `/tcp`.
        case tcp
        /// `/udp`.
        case udp
    }

    /// The first `/tcp` or `/udp` component's protocol, if any.
    public var transport: Transport? {
        for component in components {
            switch component {
            case .tcp: return .tcp
            case .udp: return .udp
            default: continue
            }
        }
        return nil
    }

    /// Whether the first transport component is `/tcp`.
    public var isTCP: Bool { transport == .tcp }

    /// Whether the first transport component is `/udp`.
    public var isUDP: Bool { transport == .udp }

    /// The port of the first `/tcp` or `/udp` component, if any.
    public var port: UInt16? {
        for component in components {
            switch component {
            case .tcp(let port), .udp(let port): return port
            default: continue
            }
        }
        return nil
    }

    /// The socket address of an address that starts `/ip4/<a>/tcp|udp/<port>` or
    /// `/ip6/<a>/tcp|udp/<port>`; later components (`/quic-v1`, `/p2p/…`) are ignored.
    ///
    /// - Throws: ``CoreError`` when the address starts with a DNS name (resolving it is the
    ///   transport's job; nothing here touches the network) or has no IP address and port.
    public func socketAddress() throws(CoreError) -> SocketAddress {
        guard let first = components.first else { throw CoreError(.multiaddr, "empty address has no socket address") }
        let packed: [UInt8]
        switch first {
        case .ip4(let ip): packed = ip.bytes
        case .ip6(let ip): packed = ip.bytes
        case .dns, .dns4, .dns6:
            throw CoreError(
                .multiaddr,
                "\(self) names a host by DNS; resolving it is the transport's job, socketAddress() only converts /ip4 and /ip6"
            )
        default:
            throw CoreError(.multiaddr, "\(self) does not start with /ip4 or /ip6")
        }
        let port: UInt16
        switch components.dropFirst().first {
        case .tcp(let p), .udp(let p): port = p
        default: throw CoreError(.multiaddr, "\(self) has no /tcp or /udp port after its IP address")
        }
        do {
            return try SocketAddress(packedIPAddress: ByteBuffer(bytes: packed), port: Int(port))
        } catch {
            // Unreachable: the packed address is always 4 or 16 bytes.
            throw CoreError(.multiaddr, "cannot build a socket address for \(self): \(error)")
        }
    }

    /// `/ip4|ip6/<address>/tcp|udp/<port>` for an IP socket address.
    ///
    /// - Throws: ``CoreError`` for Unix domain socket addresses.
    public init(socketAddress: SocketAddress, transport: Transport) throws(CoreError) {
        guard let text = socketAddress.ipAddress, let port = socketAddress.port,
            let port16 = UInt16(exactly: port)
        else {
            throw CoreError(.multiaddr, "\(socketAddress) is not an IP socket address")
        }
        let ip: Component
        switch socketAddress {
        case .v4:
            guard let v4 = IPv4Address(text) else { throw CoreError(.multiaddr, "unexpected IPv4 text \(text)") }
            ip = .ip4(v4)
        case .v6:
            // Drop a zone id (`fe80::1%eth0`); multiaddr carries zones in a separate protocol.
            let address = text.split(separator: "%", maxSplits: 1).first ?? ""
            guard let v6 = IPv6Address(address) else { throw CoreError(.multiaddr, "unexpected IPv6 text \(text)") }
            ip = .ip6(v6)
        case .unixDomainSocket:
            throw CoreError(.multiaddr, "\(socketAddress) is not an IP socket address")
        }
        switch transport {
        case .tcp: self.init(components: [ip, .tcp(port16)])
        case .udp: self.init(components: [ip, .udp(port16)])
        }
    }
}
