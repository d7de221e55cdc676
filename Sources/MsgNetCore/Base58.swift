/// Base58 with the Bitcoin alphabet (`base58btc`), as used for libp2p peer ids.
public enum Base58 {
    static let alphabet = Array("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz".utf8)
    static let decodeTable: [Int8] = {
        var t = [Int8](repeating: -1, count: 256)
        for (i, c) in alphabet.enumerated() { t[Int(c)] = Int8(i) }
        return t
    }()

    /// The longest text `decode` accepts; peer ids are far shorter.
    public static let maxDecodeLength = 1024

    /// Encodes `bytes` as base58btc text.
    public static func encode(_ bytes: some Collection<UInt8>) -> String {
        let input = Array(bytes)
        let zeros = input.prefix(while: { $0 == 0 }).count
        // log(256)/log(58) ≈ 1.37
        var digits = [UInt8](repeating: 0, count: (input.count - zeros) * 138 / 100 + 1)
        var length = 0
        for byte in input[zeros...] {
            var carry = Int(byte)
            var i = 0
            var k = digits.count - 1
            while (carry != 0 || i < length) && k >= 0 {
                carry += 256 * Int(digits[k])
                digits[k] = UInt8(carry % 58)
                carry /= 58
                i += 1
                k -= 1
            }
            length = i
        }
        let significant = digits.drop(while: { $0 == 0 })
        var out = [UInt8](repeating: alphabet[0], count: zeros)
        out.append(contentsOf: significant.map { alphabet[Int($0)] })
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes base58btc text; `nil` when a character is outside the alphabet or the text is
    /// longer than ``maxDecodeLength``.
    public static func decode(_ text: String) -> [UInt8]? {
        guard text.utf8.count <= maxDecodeLength else { return nil }
        let input = Array(text.utf8)
        let zeros = input.prefix(while: { $0 == alphabet[0] }).count
        var bytes = [UInt8](repeating: 0, count: (input.count - zeros) * 733 / 1000 + 1)
        var length = 0
        for c in input[zeros...] {
            let value = decodeTable[Int(c)]
            guard value >= 0 else { return nil }
            var carry = Int(value)
            var i = 0
            var k = bytes.count - 1
            while (carry != 0 || i < length) && k >= 0 {
                carry += 58 * Int(bytes[k])
                bytes[k] = UInt8(carry % 256)
                carry /= 256
                i += 1
                k -= 1
            }
            length = i
        }
        return [UInt8](repeating: 0, count: zeros) + bytes.drop(while: { $0 == 0 })
    }
}
