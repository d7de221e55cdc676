import MsgNetCore
import NIOCore
import Testing

@testable import MsgNetHost

/// The stream path's message decoder, `uvarint(length) || payload`, fed by hand.
@Suite("Framed message decoder")
struct FramedReaderTests {
    static func frame(_ payload: [UInt8]) -> [UInt8] { UVarint.encode(UInt64(payload.count)) + payload }

    @Test("messages come out whole at every split point, and nothing is consumed until one is complete")
    func everySplit() throws {
        let bytes = Self.frame(Array(repeating: 7, count: 300)) + Self.frame([1, 2, 3]) + Self.frame([])
        for split in 0...bytes.count {
            var buffer = ByteBuffer(bytes: bytes[..<split])
            var got: [[UInt8]] = []
            while let m = try FramedReader.parse(&buffer, maxSize: 1024) { got.append(Array(m.readableBytesView)) }
            // What is left starts at a frame boundary (an incomplete frame is not consumed).
            var rest = buffer
            rest.writeBytes(bytes[split...])
            while let m = try FramedReader.parse(&rest, maxSize: 1024) { got.append(Array(m.readableBytesView)) }
            #expect(got == [Array(repeating: 7, count: 300), [1, 2, 3], []], "split at \(split)")
            #expect(rest.readableBytes == 0)
        }
    }

    @Test("a length over the limit fails before the payload arrives")
    func oversize() throws {
        var buffer = ByteBuffer(bytes: UVarint.encode(1025))
        #expect { _ = try FramedReader.parse(&buffer, maxSize: 1024) } throws: {
            ($0 as? MessageError)?.code == .messageTooLarge
        }
        // A length just at the limit waits for its payload instead.
        var atLimit = ByteBuffer(bytes: UVarint.encode(1024) + [0])
        #expect(try FramedReader.parse(&atLimit, maxSize: 1024) == nil)
    }

    @Test("a malformed length prefix (an endless varint, or one over 64 bits) is a clear error")
    func malformedLength() throws {
        for bad in [[UInt8](repeating: 0xFF, count: 11), [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]] {
            var buffer = ByteBuffer(bytes: bad)
            #expect { _ = try FramedReader.parse(&buffer, maxSize: 1 << 20) } throws: {
                ($0 as? MessageError)?.code == .remoteError
            }
        }
        // An unfinished varint shorter than the maximum just waits.
        var partial = ByteBuffer(bytes: [0x80, 0x80])
        #expect(try FramedReader.parse(&partial, maxSize: 1 << 20) == nil)
    }
}
