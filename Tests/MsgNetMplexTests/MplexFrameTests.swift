import MsgNetCore
import NIOCore
import Testing

@testable import MsgNetMplex

@Suite struct MplexFrameTests {
    private func bytes(_ frame: MplexFrame) -> [UInt8] {
        Array(MplexFrameEncoder.encode(frame).readableBytesView)
    }

    /// Decodes everything in `input`, fed `chunk` bytes at a time, then checks end of input.
    private func decodeAll(_ input: [UInt8], chunk: Int = .max, configuration: MplexConfiguration = .init()) throws
        -> [MplexFrame]
    {
        let processor = NIOSingleStepByteToMessageProcessor(MplexFrameDecoder(configuration: configuration))
        var frames: [MplexFrame] = []
        var offset = 0
        while offset < input.count {
            let end = min(input.count, offset + chunk)
            try processor.process(buffer: ByteBuffer(bytes: input[offset..<end])) { frames.append($0) }
            offset = end
        }
        try processor.finishProcessing(seenEOF: true) { frames.append($0) }
        return frames
    }

    private func expectError(_ code: MplexError.Code, _ input: [UInt8], chunk: Int = .max) {
        #expect {
            _ = try decodeAll(input, chunk: chunk, configuration: MplexConfiguration())
        } throws: { error in
            (error as? MplexError)?.code == code
        }
    }

    @Test func exactBytes() {
        #expect(bytes(MplexFrame(streamID: 0, flag: .newStream, data: ByteBuffer(string: "0"))) == [0x00, 0x01, 0x30])
        #expect(
            bytes(MplexFrame(streamID: 1, flag: .messageInitiator, data: ByteBuffer(string: "hi"))) == [
                0x0A, 0x02, 0x68, 0x69,
            ])
        #expect(
            bytes(MplexFrame(streamID: 2, flag: .messageReceiver, data: ByteBuffer(string: "x"))) == [0x11, 0x01, 0x78])
        #expect(bytes(MplexFrame(streamID: 3, flag: .closeReceiver)) == [0x1B, 0x00])
        #expect(bytes(MplexFrame(streamID: 3, flag: .closeInitiator)) == [0x1C, 0x00])
        // 17 << 3 | 5 = 141 needs two varint bytes.
        #expect(bytes(MplexFrame(streamID: 17, flag: .resetReceiver)) == [0x8D, 0x01, 0x00])
        #expect(bytes(MplexFrame(streamID: 0, flag: .resetInitiator)) == [0x06, 0x00])
        let largest = bytes(MplexFrame(streamID: MplexFrame.maxStreamID, flag: .resetInitiator))
        #expect(largest.count == 10)  // 9-byte header + 1-byte length
        #expect(largest.last == 0x00)
    }

    @Test func flagRoles() {
        #expect(
            MplexFrame.Flag.allCases.filter(\.isFromInitiator) == [
                .newStream, .messageInitiator, .closeInitiator, .resetInitiator,
            ])
    }

    @Test(arguments: [1, 2, 3, 7, Int.max])
    func roundTripInChunks(chunk: Int) throws {
        let frames = [
            MplexFrame(streamID: 0, flag: .newStream, data: ByteBuffer(string: "0")),
            MplexFrame(streamID: 0, flag: .messageInitiator, data: ByteBuffer(repeating: 0xAB, count: 300)),
            MplexFrame(streamID: 0, flag: .messageReceiver),
            MplexFrame(streamID: 1000, flag: .closeReceiver),
            MplexFrame(streamID: MplexFrame.maxStreamID, flag: .resetInitiator),
            MplexFrame(streamID: 5, flag: .newStream, data: ByteBuffer(repeating: 0x41, count: 1024)),
        ]
        var wire: [UInt8] = []
        for frame in frames { wire += bytes(frame) }
        #expect(try decodeAll(wire, chunk: chunk) == frames)
    }

    @Test func everySplitPointOfTwoChunks() throws {
        let frames = [
            MplexFrame(streamID: 300, flag: .messageInitiator, data: ByteBuffer(string: "hello")),
            MplexFrame(streamID: 1, flag: .closeInitiator),
        ]
        var wire: [UInt8] = []
        for frame in frames { wire += bytes(frame) }
        for split in 0...wire.count {
            let processor = NIOSingleStepByteToMessageProcessor(MplexFrameDecoder())
            var decoded: [MplexFrame] = []
            try processor.process(buffer: ByteBuffer(bytes: wire[..<split])) { decoded.append($0) }
            try processor.process(buffer: ByteBuffer(bytes: wire[split...])) { decoded.append($0) }
            #expect(decoded == frames, "split at \(split)")
        }
    }

    @Test func incompleteInputIsNotAFrame() throws {
        var decoder = MplexFrameDecoder()
        let wire = bytes(MplexFrame(streamID: 9, flag: .messageReceiver, data: ByteBuffer(string: "abc")))
        for length in 0..<wire.count {
            var buffer = ByteBuffer(bytes: wire[..<length])
            #expect(try decoder.decode(buffer: &buffer) == nil)
            #expect(buffer.readableBytes == length, "nothing consumed")
        }
    }

    @Test func maximumFrameIsAccepted() throws {
        let frame = MplexFrame(streamID: 1, flag: .messageInitiator, data: ByteBuffer(repeating: 1, count: 1 << 20))
        #expect(try decodeAll(bytes(frame)) == [frame])
    }

    @Test func oversizeFrameIsRejectedBeforeItsData() {
        // Header and length only: the decoder must not wait for 1 MiB + 1 bytes of data.
        var prefix: [UInt8] = [0x0A]
        UVarint.write(UInt64(1 << 20) + 1, to: &prefix)
        expectError(.frameTooLarge, prefix)
        expectError(.frameTooLarge, prefix, chunk: 1)
        // A huge announced length (9-byte varint).
        var huge: [UInt8] = [0x0A]
        UVarint.write(UInt64(1) << 62, to: &huge)
        expectError(.frameTooLarge, huge)
    }

    @Test func smallerConfiguredFrameLimit() {
        var configuration = MplexConfiguration()
        configuration.maxFrameSize = 16
        let frame = MplexFrame(streamID: 1, flag: .messageReceiver, data: ByteBuffer(repeating: 0, count: 17))
        #expect {
            _ = try decodeAll(bytes(frame), configuration: configuration)
        } throws: { ($0 as? MplexError)?.code == .frameTooLarge }
    }

    @Test func longStreamNameIsRejected() {
        var prefix: [UInt8] = [0x00]
        UVarint.write(1025, to: &prefix)
        expectError(.streamNameTooLong, prefix)
    }

    @Test func undefinedFlagIsRejected() {
        expectError(.invalidFlag, [0x07])
        expectError(.invalidFlag, [0x0F, 0x00])
        expectError(.invalidFlag, [0xFF, 0x01, 0x00], chunk: 1)
    }

    @Test func malformedVarintsAreRejected() {
        // Ten continuation bytes: longer than 9.
        expectError(.malformedVarint, [UInt8](repeating: 0x80, count: 10))
        expectError(.malformedVarint, [UInt8](repeating: 0xFF, count: 12), chunk: 1)
        // Not minimal: 0x80 0x00 encodes 0 in two bytes.
        expectError(.malformedVarint, [0x80, 0x00, 0x00])
        // A bad length varint after a good header.
        expectError(.malformedVarint, [0x0A] + [UInt8](repeating: 0x80, count: 10))
    }

    @Test func truncatedInputAtEndIsAnError() {
        let wire = bytes(MplexFrame(streamID: 2, flag: .messageInitiator, data: ByteBuffer(string: "abcdef")))
        for length in 1..<wire.count {
            expectError(.truncatedFrame, Array(wire[..<length]))
        }
        #expect(throws: Never.self) { try decodeAll([]) }
    }
}
