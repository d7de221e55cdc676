import NIOCore
import Testing

@testable import MsgNetCore

@Suite("ByteBuffer.appendChunk")
struct ByteBufferChunkTests {
    @Test("nothing unparsed: the chunk is taken as it is, sharing its storage")
    func takesChunkWhenEmpty() {
        var buffer = ByteBuffer(string: "old")
        buffer.moveReaderIndex(forwardBy: 3)  // all parsed
        let chunk = ByteBuffer(string: "new bytes")
        buffer.appendChunk(chunk)
        #expect(String(buffer: buffer) == "new bytes")
        #expect(buffer.storageCapacity == chunk.storageCapacity)
    }

    @Test("unparsed bytes stay first; parsed ones are dropped; order survives every split")
    func keepsOrderAcrossSplits() {
        let text = Array("uvarint(length) || payload".utf8)
        for split in 0...text.count {
            var buffer = ByteBuffer()
            buffer.appendChunk(ByteBuffer(bytes: text[..<split]))
            buffer.appendChunk(ByteBuffer(bytes: text[split...]))
            #expect(Array(buffer.readableBytesView) == text, "split at \(split)")
        }
        var partly = ByteBuffer(string: "parsedrest")
        partly.moveReaderIndex(forwardBy: 6)
        partly.appendChunk(ByteBuffer(string: "+more"))
        #expect(String(buffer: partly) == "rest+more")
        #expect(partly.readerIndex == 0)  // the parsed bytes were discarded
    }
}
