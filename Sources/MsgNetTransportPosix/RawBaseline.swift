import MsgNetCore
import NIOCore
import NIOPosix
import Synchronization

/// Raw-socket baselines for the benchmark tool: plain TCP with no protocol layers, driven the
/// same way (async reads and writes) as MsgNet streams, so a ratio isolates the cost of the
/// stack. Lives here because this is the only target that opens sockets.
package enum RawTCPBaseline {
    /// A connected raw TCP stream.
    package final class Connection: Sendable {
        let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        init(channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>) { self.channel = channel }

        /// Runs `body` with the inbound iterator and the outbound writer.
        package func run<R: Sendable>(
            _ body:
                @concurrent (
                    inout NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator,
                    NIOAsyncChannelOutboundWriter<ByteBuffer>
                )
                async throws -> R
        ) async throws -> R {
            try await channel.executeThenClose { inbound, outbound in
                var it = inbound.makeAsyncIterator()
                return try await body(&it, outbound)
            }
        }
    }

    /// Starts an echo server on 127.0.0.1 (port 0); returns its port and a closer.
    package static func startEchoServer(group: any EventLoopGroup) async throws -> (
        port: Int, close: @Sendable () async -> Void
    ) {
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .bind(host: "127.0.0.1", port: 0) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        let port = server.channel.localAddress?.port ?? 0
        let task = Task {
            try await withThrowingDiscardingTaskGroup { group in
                try await server.executeThenClose { inbound in
                    for try await child in inbound {
                        group.addTask {
                            try? await child.executeThenClose { input, output in
                                for try await chunk in input { try await output.write(chunk) }
                            }
                        }
                    }
                }
            }
        }
        return (
            port,
            {
                task.cancel()
                try? await server.channel.close()
            }
        )
    }

    /// Connects to 127.0.0.1:`port`.
    package static func connect(port: Int, group: any EventLoopGroup) async throws -> Connection {
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        return Connection(channel: channel)
    }
}

// MARK: - Framed TCP (uvarint(length) || payload), the message path's wire shape without layers

/// Raw TCP carrying `uvarint(length) || payload` frames, for the message benchmarks: a server
/// that parses frames and optionally answers each one, and a client with the same coalescing
/// writer as the stream message path (messages queued while a flush is pending leave together
/// in one write) plus pipelined request/response (replies matched in order).
package enum RawFramedBaseline {
    /// Parses one frame out of `buffer`, or `nil` when more bytes are needed.
    static func parse(_ buffer: inout ByteBuffer) throws -> ByteBuffer? {
        let start = buffer.readerIndex
        guard let length = try UVarint.read(from: &buffer) else { return nil }
        guard let payload = buffer.readSlice(length: Int(length)) else {
            buffer.moveReaderIndex(to: start)
            return nil
        }
        return payload
    }

    /// Server side: each frame goes to `onFrame`; a returned buffer is written back as a frame
    /// (flushed once per read batch).
    final class ServerHandler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let onFrame: @Sendable (ByteBuffer) -> ByteBuffer?
        var buffer = ByteBuffer()
        var out = ByteBuffer()

        init(onFrame: @escaping @Sendable (ByteBuffer) -> ByteBuffer?) { self.onFrame = onFrame }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            buffer.appendChunk(unwrapInboundIn(data))
            do {
                while let frame = try RawFramedBaseline.parse(&buffer) {
                    if let reply = onFrame(frame) {
                        UVarint.write(UInt64(reply.readableBytes), to: &out)
                        out.writeImmutableBuffer(reply)
                    }
                }
            } catch {
                context.close(promise: nil)
            }
        }

        func channelReadComplete(context: ChannelHandlerContext) {
            guard out.readableBytes > 0 else { return }
            context.writeAndFlush(wrapOutboundOut(out), promise: nil)
            out = ByteBuffer()
        }
    }

    /// Starts a framed server on 127.0.0.1 (port 0); returns its port and a closer.
    package static func startServer(
        group: any EventLoopGroup,
        onFrame: @escaping @Sendable (ByteBuffer) -> ByteBuffer?
    ) async throws -> (port: Int, close: @Sendable () async -> Void) {
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ServerHandler(onFrame: onFrame))
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        let port = server.localAddress?.port ?? 0
        return (port, { try? await server.close() })
    }

    /// Client side: answers pending requests in order.
    final class ClientHandler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        var buffer = ByteBuffer()
        var pending = CircularBuffer<EventLoopPromise<ByteBuffer>>()

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            buffer.appendChunk(unwrapInboundIn(data))
            do {
                while let frame = try RawFramedBaseline.parse(&buffer) {
                    pending.popFirst()?.succeed(frame)
                }
            } catch {
                context.close(promise: nil)
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            while let p = pending.popFirst() { p.fail(ChannelError.ioOnClosedChannel) }
        }
    }

    /// A framed client connection.
    package final class Client: Sendable {
        let channel: any Channel
        let handler: NIOLoopBound<ClientHandler>
        private struct WriterState {
            var pending = ByteBuffer()
            var flushScheduled = false
            var unwritten = 0
            var waiters: [CheckedContinuation<Void, Never>] = []
        }
        private let writer = Mutex(WriterState())
        private let highWatermark = 256 * 1024

        init(channel: any Channel, handler: NIOLoopBound<ClientHandler>) {
            self.channel = channel
            self.handler = handler
        }

        /// Queues one framed message (coalescing writer, 256 KiB high watermark, like
        /// the stream message path).
        package func send(_ payload: ByteBuffer) async {
            let (schedule, wait) = writer.withLock { s -> (Bool, Bool) in
                UVarint.write(UInt64(payload.readableBytes), to: &s.pending)
                s.pending.writeImmutableBuffer(payload)
                let schedule = !s.flushScheduled
                s.flushScheduled = true
                return (schedule, s.pending.readableBytes + s.unwritten > highWatermark)
            }
            if schedule { channel.eventLoop.execute { self.flushOnLoop() } }
            if wait {
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                    let now = writer.withLock { s -> Bool in
                        if s.pending.readableBytes + s.unwritten <= highWatermark / 2 { return true }
                        s.waiters.append(c)
                        return false
                    }
                    if now { c.resume() }
                }
            }
        }

        private func flushOnLoop() {
            let buffer = writer.withLock { s -> ByteBuffer? in
                s.flushScheduled = false
                guard s.pending.readableBytes > 0 else { return nil }
                let b = s.pending
                s.pending = ByteBuffer()
                s.unwritten += b.readableBytes
                return b
            }
            guard let buffer else { return }
            let count = buffer.readableBytes
            channel.writeAndFlush(buffer).whenComplete { _ in
                let waiters = self.writer.withLock { s -> [CheckedContinuation<Void, Never>] in
                    s.unwritten -= count
                    guard s.pending.readableBytes + s.unwritten <= self.highWatermark / 2 else { return [] }
                    defer { s.waiters = [] }
                    return s.waiters
                }
                for w in waiters { w.resume() }
            }
        }

        /// Sends one framed request and returns the next framed reply (pipelined: replies
        /// are matched to requests in order).
        package func request(_ payload: ByteBuffer) async throws -> ByteBuffer {
            var frame = ByteBuffer()
            frame.reserveCapacity(10 + payload.readableBytes)
            UVarint.write(UInt64(payload.readableBytes), to: &frame)
            frame.writeImmutableBuffer(payload)
            let out = frame
            let handler = self.handler
            let channel = self.channel
            return try await channel.eventLoop.flatSubmit { () -> EventLoopFuture<ByteBuffer> in
                let promise = channel.eventLoop.makePromise(of: ByteBuffer.self)
                handler.value.pending.append(promise)
                channel.writeAndFlush(out, promise: nil)
                return promise.futureResult
            }.get()
        }

        /// Closes the connection.
        package func close() async { try? await channel.close() }
    }

    /// Connects to 127.0.0.1:`port`.
    package static func connect(port: Int, group: any EventLoopGroup) async throws -> Client {
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ClientHandler())
                }
            }
            .connect(host: "127.0.0.1", port: port)
            .get()
        let handler = try await channel.eventLoop.submit {
            NIOLoopBound(
                try channel.pipeline.syncOperations.handler(type: ClientHandler.self), eventLoop: channel.eventLoop)
        }.get()
        return Client(channel: channel, handler: handler)
    }
}

// MARK: - Raw UDP

/// Raw UDP sockets for the datagram benchmarks: the same socket settings as `UDPTransport`
/// (8 MiB buffers, vector reads), no sessions, no encryption, no reliability.
package enum RawUDPBaseline {
    /// Receives datagrams; `onDatagram` may return a reply (sent back to the source, flushed once
    /// per read batch).
    final class Handler: ChannelInboundHandler {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        typealias OutboundOut = AddressedEnvelope<ByteBuffer>
        let onDatagram: @Sendable (ByteBuffer) -> ByteBuffer?
        var wrote = false

        init(onDatagram: @escaping @Sendable (ByteBuffer) -> ByteBuffer?) { self.onDatagram = onDatagram }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let envelope = unwrapInboundIn(data)
            if let reply = onDatagram(envelope.data) {
                context.write(
                    wrapOutboundOut(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: reply)), promise: nil
                )
                wrote = true
            }
        }

        func channelReadComplete(context: ChannelHandlerContext) {
            if wrote {
                wrote = false
                context.flush()
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {}
    }

    /// A bound UDP socket on 127.0.0.1.
    package final class Socket: Sendable {
        let channel: any Channel
        /// The bound port.
        package let port: Int

        init(channel: any Channel) {
            self.channel = channel
            self.port = channel.localAddress?.port ?? 0
        }

        /// Writes `count` copies of `payload` to 127.0.0.1:`port` as fast as the socket takes
        /// them, flushing every `batch` datagrams (vector writes), on the socket's event loop.
        package func blast(_ payload: ByteBuffer, count: Int, to port: Int, batch: Int = 64) async throws {
            try await blast(Array(repeating: payload, count: count), to: port, batch: batch)
        }

        /// Writes `datagrams` in order to 127.0.0.1:`port`, flushing every `batch` of them.
        package func blast(_ datagrams: [ByteBuffer], to port: Int, batch: Int = 64) async throws {
            let address = try SocketAddress(ipAddress: "127.0.0.1", port: port)
            var sent = 0
            let channel = self.channel
            while sent < datagrams.count {
                let slice = Array(datagrams[sent..<min(sent + batch, datagrams.count)])
                try await channel.eventLoop.flatSubmit { () -> EventLoopFuture<Void> in
                    let promise = channel.eventLoop.makePromise(of: Void.self)
                    for (i, d) in slice.enumerated() {
                        channel.write(
                            AddressedEnvelope(remoteAddress: address, data: d),
                            promise: i == slice.count - 1 ? promise : nil)
                    }
                    channel.flush()
                    return promise.futureResult
                }.get()
                sent += slice.count
            }
        }

        /// Sends one datagram to 127.0.0.1:`port` without waiting for the write.
        package func write(_ payload: ByteBuffer, to port: Int) {
            guard let address = try? SocketAddress(ipAddress: "127.0.0.1", port: port) else { return }
            write(payload, to: address)
        }

        /// Sends one datagram to `address` without waiting for the write.
        package func write(_ payload: ByteBuffer, to address: SocketAddress) {
            channel.writeAndFlush(AddressedEnvelope(remoteAddress: address, data: payload), promise: nil)
        }

        /// The socket's event loop (for per-request timers).
        package var eventLoop: any EventLoop { channel.eventLoop }

        /// Closes the socket.
        package func close() async { try? await channel.close() }
    }

    /// Binds a socket on 127.0.0.1 (port 0).
    package static func bind(
        group: any EventLoopGroup,
        bufferSize: Int = 8 << 20,
        onDatagram: @escaping @Sendable (ByteBuffer) -> ByteBuffer?
    ) async throws -> Socket {
        let channel = try await DatagramBootstrap(group: group)
            .channelOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(bufferSize))
            .channelOption(.socketOption(.so_sndbuf), value: SocketOptionValue(bufferSize))
            .channelOption(.datagramVectorReadMessageCount, value: 64)
            .channelOption(.maxMessagesPerRead, value: 16)
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 64 * 2048))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Handler(onDatagram: onDatagram))
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        return Socket(channel: channel)
    }
}
