import MsgNetTestSupport
import Testing

@testable import MsgNetCore

@Suite struct Base58Tests {
    // From the Bitcoin base58 test vectors; checked with the Python `base58` package.
    static let vectors: [(String, String)] = [
        ("", ""),
        ("61", "2g"),
        ("626262", "a3gV"),
        ("636363", "aPEr"),
        ("73696d706c792061206c6f6e6720737472696e67", "2cFupjhnEsSn59qHXstmK2ffpLv2"),
        ("00eb15231dfceb60925886b67d065299925915aeb172c06647", "1NS17iag9jJgTHD1VXjvLCEnZuQ3rJDE9L"),
        ("516b6fcd0f", "ABnLTmg"),
        ("bf4f89001e670274dd", "3SEo3LWLoPntC"),
        ("572e4794", "3EFU7m"),
        ("ecac89cad93923c02321", "EJDM8drfXA6uyA"),
        ("10c8511e", "Rt5zm"),
        ("00000000000000000000", "1111111111"),
        ("0000ff", "115Q"),
    ]

    @Test func knownVectors() {
        for (bytes, text) in Self.vectors {
            #expect(Base58.encode(hex(bytes)) == text, "encode \(bytes)")
            #expect(Base58.decode(text) == hex(bytes), "decode \(text)")
        }
    }

    @Test func leadingZerosArePreserved() {
        for zeros in 0...5 {
            let bytes = [UInt8](repeating: 0, count: zeros) + [0x01, 0x02]
            let text = Base58.encode(bytes)
            #expect(text.prefix(zeros) == String(repeating: "1", count: zeros))
            #expect(Base58.decode(text) == bytes)
        }
    }

    @Test(arguments: ["0", "O", "I", "l", "+", "/", " ", "abc def", "12D3KooW!", "é", "\u{0}"])
    func invalidCharactersAreRejected(_ text: String) {
        #expect(Base58.decode(text) == nil)
    }

    @Test func overlongTextIsRejected() {
        #expect(Base58.decode(String(repeating: "2", count: Base58.maxDecodeLength)) != nil)
        #expect(Base58.decode(String(repeating: "2", count: Base58.maxDecodeLength + 1)) == nil)
    }

    @Test func randomRoundTrips() {
        var rng = SplitMix64(seed: 58)
        for _ in 0..<500 {
            let zeros = Int.random(in: 0...3, using: &rng)
            let bytes = [UInt8](repeating: 0, count: zeros) + rng.bytes(Int.random(in: 0...64, using: &rng))
            let text = Base58.encode(bytes)
            #expect(text.utf8.allSatisfy { Base58.alphabet.contains($0) })
            #expect(Base58.decode(text) == bytes)
        }
    }
}
