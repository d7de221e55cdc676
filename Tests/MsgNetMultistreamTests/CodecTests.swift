import MsgNetMultistream
import NIOCore
import NIOEmbedded
import Testing

private func encoded(_ message: String) -> [UInt8] {
    var out = ByteBuffer()
    MultistreamCodec.encode(message, into: &out)
    return Array(out.readableBytesView)
}

@Suite("MultistreamCodec")
struct CodecTests {
    // MARK: Test vectors

    @Test("header frame is 0x13 \"/multistream/1.0.0\\n\"")
    func headerVector() {
        #expect(encoded("/multistream/1.0.0") == [0x13] + utf8("/multistream/1.0.0\n"))
        #expect(encoded(MultistreamCodec.header).count == 20)
    }

    @Test("na is 03 6e 61 0a and ls is 03 6c 73 0a (spec examples)")
    func naAndLsVectors() {
        #expect(encoded("na") == [0x03, 0x6E, 0x61, 0x0A])
        #expect(encoded("ls") == [0x03, 0x6C, 0x73, 0x0A])
    }

    @Test("a 200-byte message takes a two-byte prefix")
    func twoBytePrefix() {
        let message = String(repeating: "x", count: 200)
        let bytes = encoded(message)
        #expect(Array(bytes.prefix(2)) == [0xC9, 0x01])  // 201
        #expect(bytes.count == 2 + 200 + 1)
        #expect(bytes.last == 0x0A)
    }

    @Test("ls response: outer frame of nested frames plus a final newline")
    func listVector() {
        var out = ByteBuffer()
        let written = MultistreamCodec.encodeProtocolList(["/a", "/bc"], into: &out)
        #expect(written == 2)
        #expect(Array(out.readableBytesView) == [0x0A, 0x03, 0x2F, 0x61, 0x0A, 0x04, 0x2F, 0x62, 0x63, 0x0A, 0x0A])
        var empty = ByteBuffer()
        MultistreamCodec.encodeProtocolList([], into: &empty)
        #expect(Array(empty.readableBytesView) == [0x01, 0x0A])
    }

    @Test("ls response round trip, including a protocol id needing a two-byte nested prefix")
    func listRoundTrip() throws {
        let ids = ["/a", "/" + String(repeating: "k", count: 150), "/ü"]
        var out = ByteBuffer()
        MultistreamCodec.encodeProtocolList(ids, into: &out)
        // The outer body holds the nested prefix 0x98 0x01 (152), not UTF-8 on its own, so the
        // list must be parsed as bytes, not as a string.
        #expect(out.readableBytesView.contains(0x98))
        var asString = out
        #expect(throws: MultistreamError.malformed(.invalidUTF8)) {
            try MultistreamCodec.decodeFrame(from: &asString)
        }
        var outcome = feed(.listProtocols(), chunks: [headerFrame + Array(out.readableBytesView)])
        #expect(outcome.events == [.listed(ids)])
        outcome = feedAllSplits(.listProtocols(), headerFrame + Array(out.readableBytesView))
        #expect(outcome.events == [.listed(ids)])
    }

    @Test("ls response skips unframable ids and stops before exceeding 1024 bytes")
    func listLimit() throws {
        let ids = (0..<200).map { "/proto/\($0)" }
        var out = ByteBuffer()
        let written = MultistreamCodec.encodeProtocolList(["bad\nid", ""] + ids, into: &out)
        #expect(written > 0 && written < ids.count)
        let bytes = Array(out.readableBytesView)
        let outcome = feed(.listProtocols(), chunks: [headerFrame + bytes])
        #expect(outcome.events == [.listed(Array(ids.prefix(written)))])
        // The outer frame is within the limit: uvarint prefix then at most 1024 bytes.
        var copy = out
        let body = try #require(try MultistreamCodec.decodeFrame(from: &copy))
        #expect(body.utf8.count + 1 <= MultistreamCodec.maxFrameLength)
    }

    // MARK: decodeFrame

    @Test("decodeFrame returns each message and consumes exactly its frame")
    func decodeSequence() throws {
        var input = buffer(headerFrame + frame("/a") + [0x01])
        #expect(try MultistreamCodec.decodeFrame(from: &input) == "/multistream/1.0.0")
        #expect(try MultistreamCodec.decodeFrame(from: &input) == "/a")
        #expect(try MultistreamCodec.decodeFrame(from: &input) == nil)
        #expect(Array(input.readableBytesView) == [0x01])
    }

    @Test("decodeFrame on every truncation returns nil and consumes nothing")
    func truncated() throws {
        let whole = encoded(String(repeating: "t", count: 300))
        for length in 0..<whole.count {
            var input = buffer(Array(whole[..<length]))
            #expect(try MultistreamCodec.decodeFrame(from: &input) == nil, "prefix \(length)")
            #expect(input.readableBytes == length)
        }
        var complete = buffer(whole)
        #expect(try MultistreamCodec.decodeFrame(from: &complete) == String(repeating: "t", count: 300))
        #expect(complete.readableBytes == 0)
    }

    @Test("the largest frame (prefix 1024) decodes; 1025 throws before the body arrives")
    func sizeLimit() throws {
        let largest = String(repeating: "m", count: 1023)
        var input = buffer(encoded(largest))
        #expect(try MultistreamCodec.decodeFrame(from: &input) == largest)

        var tooLarge = buffer([0x81, 0x08])
        #expect(throws: MultistreamError.frameTooLarge) { try MultistreamCodec.decodeFrame(from: &tooLarge) }
        #expect(tooLarge.readableBytes == 2)
    }

    @Test(
        "decodeFrame errors are clear and leave the buffer alone",
        arguments: [
            ([0x80, 0x00] as [UInt8], MultistreamError.malformed(.invalidVarint)),
            ([0xFF, 0xFF], .frameTooLarge),
            ([0x00], .malformed(.missingNewline)),
            ([0x02, 0x61, 0x62], .malformed(.missingNewline)),
            ([0x03, 0xC3, 0x28, 0x0A], .malformed(.invalidUTF8)),
        ])
    func decodeErrors(bytes: [UInt8], error: MultistreamError) {
        var input = buffer(bytes)
        #expect(throws: error) { try MultistreamCodec.decodeFrame(from: &input) }
        #expect(input.readableBytes == bytes.count)
        #expect(!error.description.isEmpty)
    }

    @Test("protocol list body parses; a body with stray bytes is malformed")
    func protocolListBody() throws {
        #expect(try MultistreamCodec.decodeProtocolList(buffer(frame("/a") + frame("/b"))) == ["/a", "/b"])
        #expect(try MultistreamCodec.decodeProtocolList(buffer([])) == [])
        #expect(try MultistreamCodec.decodeProtocolList(buffer(utf8("/a\n/b/1.0\n"))) == ["/a", "/b/1.0"])
        #expect(throws: MultistreamError.malformed(.invalidProtocolList)) {
            try MultistreamCodec.decodeProtocolList(buffer(utf8("/a\n\n/b\n")))
        }
        #expect(throws: MultistreamError.malformed(.invalidProtocolList)) {
            try MultistreamCodec.decodeProtocolList(buffer(frame("/a") + [0x05]))
        }
    }

    // MARK: As a NIO decoder

    @Test("as a ByteToMessageHandler it decodes split frames in order")
    func nioDecoder() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(MultistreamCodec()))
        let bytes = headerFrame + frame("/a") + encoded(String(repeating: "z", count: 200))
        for byte in bytes {
            try channel.writeInbound(buffer([byte]))
        }
        #expect(try channel.readInbound(as: String.self) == "/multistream/1.0.0")
        #expect(try channel.readInbound(as: String.self) == "/a")
        #expect(try channel.readInbound(as: String.self) == String(repeating: "z", count: 200))
        #expect(try channel.readInbound(as: String.self) == nil)
        #expect(try channel.finish().isClean)
    }

    @Test("as a ByteToMessageHandler an oversize prefix is an error without buffering the body")
    func nioDecoderTooLarge() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(MultistreamCodec()))
        #expect(throws: MultistreamError.frameTooLarge) { try channel.writeInbound(buffer([0x81, 0x08])) }
        _ = try? channel.finish()
    }

    @Test("at end of stream a partial frame is reported as truncated")
    func nioDecoderTruncatedAtEOF() throws {
        var decoder = MultistreamCodec()
        var partial = buffer([0x05, 0x2F, 0x61])
        #expect(throws: MultistreamError.malformed(.truncated)) {
            try decoder.decodeLast(buffer: &partial, seenEOF: true)
        }
        var nothing = buffer([])
        #expect(try decoder.decodeLast(buffer: &nothing, seenEOF: true) == nil)
        var complete = buffer(frame("/a"))
        #expect(try decoder.decodeLast(buffer: &complete, seenEOF: true) == "/a")
    }
}
