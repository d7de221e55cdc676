import MsgNetCore
import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Blocking getaddrinfo, run on NIO's thread pool (DNS names in TCP and UDP addresses).
enum Resolver {
    /// The address family asked for: `/dns` any, `/dns4` IPv4, `/dns6` IPv6.
    enum Family { case any, v4, v6 }

    /// The socket addresses `host` resolves to, with `port`, for a stream or datagram socket.
    static func resolve(
        host: String, port: Int, family: Family, datagram: Bool = false
    ) async throws -> [SocketAddress] {
        try await NIOThreadPool.singleton.runIfActive {
            var hints = addrinfo()
            hints.ai_socktype = Int32(datagram ? SOCK_DGRAM.rawValue : SOCK_STREAM.rawValue)
            switch family {
            case .v4: hints.ai_family = AF_INET
            case .v6: hints.ai_family = AF_INET6
            case .any: hints.ai_family = AF_UNSPEC
            }
            var result: UnsafeMutablePointer<addrinfo>?
            let status = getaddrinfo(host, String(port), &hints, &result)
            guard status == 0, let first = result else {
                throw TransportError("cannot resolve \(host): \(String(cString: gai_strerror(status)))")
            }
            defer { freeaddrinfo(first) }
            var out: [SocketAddress] = []
            var next: UnsafeMutablePointer<addrinfo>? = first
            while let info = next {
                if let addr = info.pointee.ai_addr {
                    switch Int32(addr.pointee.sa_family) {
                    case AF_INET:
                        addr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                            out.append(SocketAddress($0.pointee, host: host))
                        }
                    case AF_INET6:
                        addr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
                            out.append(SocketAddress($0.pointee, host: host))
                        }
                    default: break
                    }
                }
                next = info.pointee.ai_next
            }
            return out
        }
    }
}
