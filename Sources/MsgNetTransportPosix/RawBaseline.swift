import NIOCore
import NIOPosix

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
            _ body: (
                inout NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator, NIOAsyncChannelOutboundWriter<ByteBuffer>
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
