extension Multiaddr {
    /// An IPv4 address: 4 bytes, printed as dotted decimal (`192.0.2.1`).
    public struct IPv4Address: Hashable, Sendable, CustomStringConvertible {
        /// The address as a big-endian number (`127.0.0.1` is `0x7F00_0001`).
        public var value: UInt32

        /// The address whose big-endian numeric value is `value`.
        public init(value: UInt32) {
            self.value = value
        }

        /// The address `a.b.c.d`.
        public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
            value = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
        }

        /// The address in 4 network-order bytes; `nil` unless `bytes` holds exactly 4 bytes.
        public init?(bytes: some Collection<UInt8>) {
            guard bytes.count == 4 else { return nil }
            var v: UInt32 = 0
            for b in bytes { v = v << 8 | UInt32(b) }
            value = v
        }

        /// Parses dotted decimal text (`192.0.2.1`): exactly four decimal parts of at most three
        /// digits, each at most 255, without leading zeros (which some parsers read as octal).
        public init?(_ text: some StringProtocol) {
            guard let v = Self.parse(Array(text.utf8)[...]) else { return nil }
            value = v
        }

        static func parse(_ text: ArraySlice<UInt8>) -> UInt32? {
            guard text.count >= 7, text.count <= 15 else { return nil }
            var value: UInt32 = 0
            var parts = 0
            for part in text.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false) {
                guard part.count >= 1, part.count <= 3 else { return nil }
                guard part.count == 1 || part.first != UInt8(ascii: "0") else { return nil }
                var octet: UInt32 = 0
                for c in part {
                    guard c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") else { return nil }
                    octet = octet * 10 + UInt32(c - UInt8(ascii: "0"))
                }
                guard octet <= 255 else { return nil }
                value = value << 8 | octet
                parts += 1
            }
            return parts == 4 ? value : nil
        }

        /// The 4 address bytes in network order.
        public var bytes: [UInt8] {
            [
                UInt8(truncatingIfNeeded: value >> 24), UInt8(truncatingIfNeeded: value >> 16),
                UInt8(truncatingIfNeeded: value >> 8), UInt8(truncatingIfNeeded: value),
            ]
        }

        /// Dotted decimal text.
        public var description: String {
            bytes.map { String($0) }.joined(separator: ".")
        }
    }

    /// An IPv6 address: 16 bytes, printed in the canonical form of RFC 5952.
    public struct IPv6Address: Hashable, Sendable, CustomStringConvertible {
        /// The first 8 bytes, big-endian.
        public var high: UInt64
        /// The last 8 bytes, big-endian.
        public var low: UInt64

        /// The address whose first and last 8 bytes, read big-endian, are `high` and `low`.
        public init(high: UInt64, low: UInt64) {
            self.high = high
            self.low = low
        }

        /// The address in 16 network-order bytes; `nil` unless `bytes` holds exactly 16 bytes.
        public init?(bytes: some Collection<UInt8>) {
            guard bytes.count == 16 else { return nil }
            var h: UInt64 = 0
            var l: UInt64 = 0
            for (i, b) in bytes.enumerated() {
                if i < 8 { h = h << 8 | UInt64(b) } else { l = l << 8 | UInt64(b) }
            }
            high = h
            low = l
        }

        /// The IPv4-mapped address `::ffff:a.b.c.d`.
        public init(mapping ipv4: IPv4Address) {
            high = 0
            low = 0xFFFF_0000_0000 | UInt64(ipv4.value)
        }

        /// Parses any RFC 4291 text form: eight groups of 1–4 hex digits, at most one `::`
        /// standing for one or more zero groups, and an optional trailing dotted IPv4 address
        /// (`::ffff:192.0.2.1`). Zone ids (`%eth0`) are not accepted.
        public init?(_ text: some StringProtocol) {
            guard let groups = Self.parse(Array(text.utf8)) else { return nil }
            var h: UInt64 = 0
            var l: UInt64 = 0
            for (i, g) in groups.enumerated() {
                if i < 4 { h = h << 16 | UInt64(g) } else { l = l << 16 | UInt64(g) }
            }
            high = h
            low = l
        }

        /// The 16 address bytes in network order.
        public var bytes: [UInt8] {
            var out: [UInt8] = []
            out.reserveCapacity(16)
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: high >> shift)) }
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: low >> shift)) }
            return out
        }

        /// The embedded IPv4 address when this is an IPv4-mapped address (`::ffff:a.b.c.d`).
        public var mappedIPv4: IPv4Address? {
            guard high == 0, low >> 32 == 0xFFFF else { return nil }
            return IPv4Address(value: UInt32(truncatingIfNeeded: low))
        }

        /// The eight 16-bit groups.
        var groups: [UInt16] {
            (0..<8).map { i in
                let word = i < 4 ? high : low
                return UInt16(truncatingIfNeeded: word >> (48 - 16 * UInt64(i % 4)))
            }
        }

        /// RFC 5952 text: lowercase hex without leading zeros, the longest run of two or more
        /// zero groups (the first one on a tie) shortened to `::`, and IPv4-mapped addresses
        /// written `::ffff:a.b.c.d`.
        public var description: String {
            if let v4 = mappedIPv4 { return "::ffff:\(v4)" }
            let g = groups
            var bestStart = -1
            var bestLength = 1
            var i = 0
            while i < 8 {
                guard g[i] == 0 else {
                    i += 1
                    continue
                }
                var j = i
                while j < 8 && g[j] == 0 { j += 1 }
                if j - i > bestLength {
                    bestStart = i
                    bestLength = j - i
                }
                i = j
            }
            let hex = g.map { String($0, radix: 16) }
            guard bestStart >= 0 else { return hex.joined(separator: ":") }
            let head = hex[..<bestStart].joined(separator: ":")
            let tail = hex[(bestStart + bestLength)...].joined(separator: ":")
            return head + "::" + tail
        }

        /// The eight groups of `text`, or `nil` when it is not an IPv6 address.
        static func parse(_ text: [UInt8]) -> [UInt16]? {
            // The longest form is 8 groups of 4 digits with an embedded IPv4 address: 45 bytes.
            guard text.count >= 2, text.count <= 45 else { return nil }
            let colon = UInt8(ascii: ":")
            var head = text[...]
            var tail: ArraySlice<UInt8>? = nil
            if let i = (0..<(text.count - 1)).first(where: { text[$0] == colon && text[$0 + 1] == colon }) {
                head = text[..<i]
                tail = text[(i + 2)...]
            }
            // With "::", the IPv4 suffix can only be in the tail; without, at the end of head.
            guard var headGroups = groups(head, ipv4Allowed: tail == nil) else { return nil }
            if let tail {
                guard let tailGroups = groups(tail, ipv4Allowed: true) else { return nil }
                // "::" stands for at least one zero group.
                guard headGroups.count + tailGroups.count <= 7 else { return nil }
                headGroups += [UInt16](repeating: 0, count: 8 - headGroups.count - tailGroups.count) + tailGroups
            }
            return headGroups.count == 8 ? headGroups : nil
        }

        /// The groups of a colon-separated run (empty text: no groups).
        private static func groups(_ text: ArraySlice<UInt8>, ipv4Allowed: Bool) -> [UInt16]? {
            guard !text.isEmpty else { return [] }
            let parts = text.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
            guard parts.count <= 8 else { return nil }
            var out: [UInt16] = []
            for (n, part) in parts.enumerated() {
                if ipv4Allowed && n == parts.count - 1 && part.contains(UInt8(ascii: ".")) {
                    guard let v4 = IPv4Address.parse(part) else { return nil }
                    out.append(UInt16(truncatingIfNeeded: v4 >> 16))
                    out.append(UInt16(truncatingIfNeeded: v4))
                    continue
                }
                guard part.count >= 1, part.count <= 4 else { return nil }
                var group: UInt16 = 0
                for c in part {
                    guard let digit = hexValue(c) else { return nil }
                    group = group << 4 | UInt16(digit)
                }
                out.append(group)
            }
            return out
        }

        private static func hexValue(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
            default: nil
            }
        }
    }
}
