import MsgNetCore
import NIOCore

/// The multistream-select 1.0 frame codec.
///
/// A frame is `uvarint(n) || message || "\n"`, where `n` counts the message's UTF-8 bytes plus
/// the trailing newline. A frame whose prefix announces more than ``maxFrameLength`` bytes is
/// rejected as soon as the prefix has been read, before any of its body is buffered.
///
/// Use it as a `NIOSingleStepByteToMessageDecoder` (each decoded value is one message without its
/// newline), or call the static functions directly.
public struct MultistreamCodec: NIOSingleStepByteToMessageDecoder, Sendable {
    /// One decoded message, without its trailing newline.
    public typealias InboundOut = String

    /// The largest value a frame's length prefix may take (message bytes plus the newline).
    ///
    /// Matches go-libp2p, which refuses longer frames. A length this size takes at most two
    /// varint bytes.
    public static let maxFrameLength = 1024

    /// The multistream-select 1.0 header, the first message each side sends.
    public static let header = "/multistream/1.0.0"

    /// The responder's answer to a protocol it does not support ("not available").
    public static let notAvailable = "na"

    /// The initiator's request for the responder's protocol list.
    public static let listRequest = "ls"

    /// The most varint bytes a length prefix of at most ``maxFrameLength`` takes.
    static let maxPrefixBytes = 2

    /// Creates a decoder.
    public init() {}

    // MARK: Encoding

    /// Appends `message` as one frame: `uvarint(utf8 count + 1) || message || "\n"`.
    ///
    /// The peer rejects frames over ``maxFrameLength`` bytes and messages containing `\n` cannot be
    /// read back as one message; ``MultistreamMachine`` checks its protocol ids before sending them.
    public static func encode(_ message: String, into buffer: inout ByteBuffer) {
        UVarint.write(UInt64(message.utf8.count + 1), to: &buffer)
        buffer.writeString(message)
        buffer.writeInteger(UInt8(ascii: "\n"))
    }

    /// Appends an `ls` response listing `protocols`: one frame whose body is a nested frame per
    /// protocol followed by the frame's own `"\n"`.
    ///
    /// For `["/a", "/bc"]` that is `0a 03 2f 61 0a 04 2f 62 63 0a 0a`. Ids that cannot be framed
    /// (see ``isFramable(_:)``) are skipped, and the list stops before the protocol that would push
    /// the outer frame over ``maxFrameLength``.
    ///
    /// - Returns: how many protocols were written.
    @discardableResult
    public static func encodeProtocolList(_ protocols: [String], into buffer: inout ByteBuffer) -> Int {
        var body = ByteBuffer()
        var written = 0
        for id in protocols where isFramable(id) {
            let nested = id.utf8.count + 1
            let size = UVarint.encodedLength(UInt64(nested)) + nested
            if body.readableBytes + size + 1 > maxFrameLength { break }
            encode(id, into: &body)
            written += 1
        }
        UVarint.write(UInt64(body.readableBytes + 1), to: &buffer)
        buffer.writeBuffer(&body)
        buffer.writeInteger(UInt8(ascii: "\n"))
        return written
    }

    /// Whether `id` can be sent as one frame: not empty, no `\n`, and at most
    /// ``maxFrameLength`` bytes with its newline.
    public static func isFramable(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count < maxFrameLength && !id.utf8.contains(UInt8(ascii: "\n"))
    }

    // MARK: Decoding

    /// Reads one frame from the front of `buffer`.
    ///
    /// - Returns: the message without its newline, or `nil` when `buffer` does not yet hold a whole
    ///   frame (nothing is consumed then; call again with more bytes appended).
    /// - Throws: ``MultistreamError/frameTooLarge`` as soon as the prefix exceeds
    ///   ``maxFrameLength``; ``MultistreamError/malformed(_:)`` for a bad varint, a missing newline
    ///   or invalid UTF-8. `buffer` is left as it was.
    public static func decodeFrame(from buffer: inout ByteBuffer) throws(MultistreamError) -> String? {
        var copy = buffer
        guard let body = try readFrameBody(from: &copy) else { return nil }
        let message = try validatedString(body)
        buffer = copy
        return message
    }

    /// Parses the body of an `ls` response (the outer frame without its final newline, as
    /// ``decodeFrame(from:)`` would strip it) into the list of protocol ids.
    ///
    /// The body is a sequence of nested frames (the format go and rust write). When it is not, a
    /// newline-separated list is accepted too (`"/a\n/b\n"`, as py-libp2p writes it).
    ///
    /// - Throws: ``MultistreamError/malformed(_:)`` with
    ///   ``MultistreamError/Malformation/invalidProtocolList`` when the body is neither.
    public static func decodeProtocolList(_ body: ByteBuffer) throws(MultistreamError) -> [String] {
        if let protocols = nestedFrameList(body) ?? lineList(body) {
            return protocols
        }
        throw .malformed(.invalidProtocolList)
    }

    /// The ids of a body made of complete, non-empty, UTF-8 nested frames, or `nil`.
    private static func nestedFrameList(_ body: ByteBuffer) -> [String]? {
        var rest = body
        var protocols: [String] = []
        while rest.readableBytes > 0 {
            guard let nested = try? readFrameBody(from: &rest), nested.readableBytes > 0,
                let id = try? validatedString(nested)
            else { return nil }
            protocols.append(id)
        }
        return protocols
    }

    /// The lines of a UTF-8 body where each id is followed by `\n`, or `nil`.
    private static func lineList(_ body: ByteBuffer) -> [String]? {
        guard body.readableBytesView.last == UInt8(ascii: "\n"), let text = try? validatedString(body) else {
            return nil
        }
        let lines = text.utf8.dropLast().split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        if lines.count == 1 && lines[0].isEmpty { return [] }
        guard lines.allSatisfy({ !$0.isEmpty }) else { return nil }
        return lines.map { String(decoding: $0, as: UTF8.self) }
    }

    /// Reads one frame and returns its body (without the newline), or `nil` when incomplete.
    ///
    /// Moves `buffer`'s reader index past the frame only when it returns a body.
    static func readFrameBody(from buffer: inout ByteBuffer) throws(MultistreamError) -> ByteBuffer? {
        var copy = buffer
        let length: UInt64
        do {
            guard let value = try UVarint.read(from: &copy, maxBytes: maxPrefixBytes) else { return nil }
            length = value
        } catch .overflow {
            // Two varint bytes with the continuation bit both set: at least 2^14 > maxFrameLength.
            throw .frameTooLarge
        } catch {
            throw .malformed(.invalidVarint)
        }
        guard length <= UInt64(maxFrameLength) else { throw .frameTooLarge }
        guard length > 0 else { throw .malformed(.missingNewline) }
        guard copy.readableBytes >= Int(length) else { return nil }
        guard let body = copy.readSlice(length: Int(length) - 1),
            copy.readInteger(as: UInt8.self) == UInt8(ascii: "\n")
        else { throw .malformed(.missingNewline) }
        buffer = copy
        return body
    }

    /// The bytes of `body` as a string, or a throw when they are not valid UTF-8.
    static func validatedString(_ body: ByteBuffer) throws(MultistreamError) -> String {
        let bytes = body.readableBytesView
        if !body.withUnsafeReadableBytes({ $0.allSatisfy { $0 < 0x80 } }) {
            var iterator = bytes.makeIterator()
            var decoder = UTF8()
            decoding: while true {
                switch decoder.decode(&iterator) {
                case .scalarValue: continue
                case .emptyInput: break decoding
                case .error: throw .malformed(.invalidUTF8)
                }
            }
        }
        return body.getString(at: body.readerIndex, length: body.readableBytes) ?? ""
    }

    // MARK: NIOSingleStepByteToMessageDecoder

    /// Decodes one message, or returns `nil` when more bytes are needed.
    public mutating func decode(buffer: inout ByteBuffer) throws -> String? {
        try Self.decodeFrame(from: &buffer)
    }

    /// Decodes one message at the end of the stream; a partial frame left over is an error.
    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> String? {
        if let message = try Self.decodeFrame(from: &buffer) { return message }
        if seenEOF && buffer.readableBytes > 0 { throw MultistreamError.malformed(.truncated) }
        return nil
    }
}
