import ArgumentParser
import Crypto
import MsgNetSecurity
import NIOCore

/// The AEAD that seals every Noise frame and UDP datagram: MsgNet's (libcrypto, one keyed context
/// reused) against swift-crypto's `ChaChaPoly` called the way MsgNet called it before (a nonce
/// and a sealed box per operation), on one thread, same key, sizes and nonces.
struct AEADBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aead",
        abstract:
            "ChaCha20-Poly1305 seal and open, one thread: MsgNet's libcrypto context vs swift-crypto's ChaChaPoly."
    )

    @Option(help: "Repetitions of each measurement (the median is reported).")
    var runs = 5
    @Option(help: "Plaintext bytes sealed and opened per measurement and size.")
    var bytes = 32 << 20

    static let sizes = [64, 1024, 8192, 65519]

    func run() async throws {
        print("msgnet-bench aead --runs \(runs) --bytes \(bytes)")
        print("medians of \(runs) runs; ns per operation; ratio = MsgNet / swift-crypto (lower is faster)")
        print("")
        print("| measure | swift-crypto ChaChaPoly | MsgNet (libcrypto) | ratio |")
        print("|---|---|---|---|")
        let keyBytes = (0..<32).map { UInt8($0 &* 7 &+ 1) }
        let key = SymmetricKey(data: keyBytes)
        let cipher = NoiseCipherState(key: keyBytes)
        for size in Self.sizes {
            let count = max(1000, bytes / size)
            let plaintext = ByteBuffer(repeating: 0x5A, count: size)
            var ours = (seal: [Double](), open: [Double]())
            var theirs = (seal: [Double](), open: [Double]())
            for _ in 0..<runs {
                let (s1, o1) = try measureOurs(cipher, plaintext, count: count)
                let (s2, o2) = try measureSwiftCrypto(key, plaintext, count: count)
                ours.seal.append(s1)
                ours.open.append(o1)
                theirs.seal.append(s2)
                theirs.open.append(o2)
            }
            row("seal \(size) B (ns)", median(theirs.seal), median(ours.seal))
            row("open \(size) B (ns)", median(theirs.open), median(ours.open))
        }
    }

    /// Nanoseconds per seal and per open with MsgNet's cipher state.
    func measureOurs(_ cipher: NoiseCipherState, _ plaintext: ByteBuffer, count: Int) throws -> (Double, Double) {
        let clock = ContinuousClock()
        var sealed = ByteBuffer()
        var start = clock.now
        for i in 0..<count {
            sealed.clear()
            try cipher.encrypt(plaintext, nonce: UInt64(i), into: &sealed)
        }
        let seal = seconds(clock.now - start) / Double(count) * 1e9
        var checked = 0
        start = clock.now
        for _ in 0..<count {
            checked &+= try cipher.decrypt(sealed, nonce: UInt64(count - 1)).readableBytes
        }
        let open = seconds(clock.now - start) / Double(count) * 1e9
        guard checked == count * plaintext.readableBytes else { throw BenchError("aead: wrong plaintext size") }
        return (seal, open)
    }

    /// The same with swift-crypto, a nonce and a sealed box per operation.
    func measureSwiftCrypto(_ key: SymmetricKey, _ plaintext: ByteBuffer, count: Int) throws -> (Double, Double) {
        let clock = ContinuousClock()
        let input = Array(plaintext.readableBytesView)
        var last: ChaChaPoly.SealedBox?
        var start = clock.now
        for i in 0..<count {
            last = try ChaChaPoly.seal(input, using: key, nonce: try Self.nonce(UInt64(i)))
        }
        let seal = seconds(clock.now - start) / Double(count) * 1e9
        guard let last else { throw BenchError("aead: nothing sealed") }
        let combined = Array(last.ciphertext) + Array(last.tag)
        var checked = 0
        start = clock.now
        for _ in 0..<count {
            let box = try ChaChaPoly.SealedBox(
                nonce: try Self.nonce(UInt64(count - 1)), ciphertext: combined.dropLast(16),
                tag: combined.suffix(16))
            checked &+= try ChaChaPoly.open(box, using: key).count
        }
        let open = seconds(clock.now - start) / Double(count) * 1e9
        guard checked == count * plaintext.readableBytes else { throw BenchError("aead: wrong plaintext size") }
        return (seal, open)
    }

    /// Noise's AEAD nonce: 4 zero bytes, then the counter little-endian.
    static func nonce(_ counter: UInt64) throws -> ChaChaPoly.Nonce {
        var bytes: [UInt8] = [0, 0, 0, 0]
        withUnsafeBytes(of: counter.littleEndian) { bytes.append(contentsOf: $0) }
        return try ChaChaPoly.Nonce(data: bytes)
    }
}
