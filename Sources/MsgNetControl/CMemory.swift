import CProtobufC
import MsgNetControlC

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Owns every C allocation made while building a protobuf-c message for packing.
/// All memory is freed when the arena goes away; nothing escapes it.
final class CArena {
    private var allocations: [UnsafeMutableRawPointer] = []

    deinit {
        for p in allocations { free(p) }
    }

    /// A `ProtobufCBinaryData` holding a copy of `bytes`.
    func binary(_ bytes: [UInt8]) -> ProtobufCBinaryData {
        guard !bytes.isEmpty else { return ProtobufCBinaryData(len: 0, data: nil) }
        let p = malloc(bytes.count)!
        allocations.append(p)
        bytes.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        return ProtobufCBinaryData(len: bytes.count, data: p.assumingMemoryBound(to: UInt8.self))
    }

    /// A NUL-terminated copy of `string`.
    func cString(_ string: String) -> UnsafeMutablePointer<CChar> {
        let utf8 = Array(string.utf8)
        let p = malloc(utf8.count + 1)!
        allocations.append(p)
        let chars = p.assumingMemoryBound(to: CChar.self)
        for (i, b) in utf8.enumerated() { chars[i] = CChar(bitPattern: b) }
        chars[utf8.count] = 0
        return chars
    }

    /// An array of `count` zeroed `T`s.
    func array<T>(of type: T.Type, count: Int) -> UnsafeMutablePointer<T>? {
        guard count > 0 else { return nil }
        let p = calloc(count, MemoryLayout<T>.stride)!
        allocations.append(p)
        return p.assumingMemoryBound(to: T.self)
    }

    /// A zeroed `T` in C memory.
    func object<T>(_ type: T.Type) -> UnsafeMutablePointer<T> {
        array(of: type, count: 1)!
    }
}

extension ProtobufCBinaryData {
    /// A Swift copy of the bytes.
    var bytes: [UInt8] {
        guard len > 0, let data else { return [] }
        return Array(UnsafeBufferPointer(start: data, count: len))
    }
}

/// Copies a C string into Swift, rejecting invalid UTF-8.
func swiftString(_ p: UnsafePointer<CChar>?, message: String) throws(ControlError) -> String? {
    guard let p else { return nil }
    let bytes = UnsafeBufferPointer(start: UnsafeRawPointer(p).assumingMemoryBound(to: UInt8.self), count: strlen(p))
    guard let s = String(validating: bytes, as: UTF8.self) else {
        throw ControlError(message: message, reason: "string field is not valid UTF-8")
    }
    return s
}

/// Packs a filled-in protobuf-c message into bytes.
func pack<M>(_ message: UnsafeMutablePointer<M>) -> [UInt8] {
    let base = UnsafeRawPointer(message).assumingMemoryBound(to: ProtobufCMessage.self)
    let n = protobuf_c_message_get_packed_size(base)
    return [UInt8](unsafeUninitializedCapacity: n) { buf, count in
        count = protobuf_c_message_pack(base, buf.baseAddress)
    }
}

/// Runs `body` with a protobuf-c message unpacked from `bytes`, then frees it.
/// - Throws: `ControlError` when the bytes are not a valid message or exceed `maxSize`.
func withUnpacked<M, R>(
    _ bytes: some Collection<UInt8>,
    message: String,
    maxSize: Int,
    unpack: (Int, UnsafePointer<UInt8>?) -> UnsafeMutablePointer<M>?,
    free freeMessage: (UnsafeMutablePointer<M>) -> Void,
    _ body: (UnsafeMutablePointer<M>) throws(ControlError) -> R
) throws(ControlError) -> R {
    guard bytes.count <= maxSize else {
        throw ControlError(message: message, reason: "\(bytes.count) bytes exceeds the limit of \(maxSize)")
    }
    let array = Array(bytes)
    let parsed = array.withUnsafeBufferPointer { unpack($0.count, $0.baseAddress) }
    guard let parsed else { throw ControlError(message: message, reason: "not a valid protobuf encoding") }
    defer { freeMessage(parsed) }
    return try body(parsed)
}
