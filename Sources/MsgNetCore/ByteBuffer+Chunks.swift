import NIOCore

extension ByteBuffer {
    /// Appends a chunk that arrived from the network behind the bytes not yet parsed. With
    /// nothing unparsed (the usual case) it takes `chunk` itself, without a copy; otherwise the
    /// parsed bytes are discarded first, so the buffer holds only what is still unparsed.
    package mutating func appendChunk(_ chunk: ByteBuffer) {
        if readableBytes == 0 {
            self = chunk
        } else {
            var chunk = chunk
            discardReadBytes()
            writeBuffer(&chunk)
        }
    }
}
