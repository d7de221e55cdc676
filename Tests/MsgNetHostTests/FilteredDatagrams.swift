import MsgNetCore
import NIOCore

/// A test ``DatagramTransport`` over another one whose sockets hand every datagram they are
/// asked to send to `outbound`, and send what it returns instead: nothing (a loss), the datagram,
/// copies of it, or datagrams held back from earlier writes. What sockets receive is untouched.
final class FilteredDatagrams: DatagramTransport {
    typealias Outbound = @Sendable (ByteBuffer, SocketAddress) -> [(ByteBuffer, SocketAddress)]
    let inner: any DatagramTransport
    let outbound: Outbound

    init(inner: any DatagramTransport, outbound: @escaping Outbound) {
        self.inner = inner
        self.outbound = outbound
    }

    func canHandle(_ address: Multiaddr) -> Bool { inner.canHandle(address) }
    func resolve(_ address: Multiaddr) async throws -> [SocketAddress] { try await inner.resolve(address) }

    func bind(
        _ address: Multiaddr,
        handler: @escaping @Sendable (ByteBuffer, SocketAddress) -> Void,
        flush: @escaping @Sendable () -> Void
    ) async throws -> any DatagramSocket {
        FilteredSocket(inner: try await inner.bind(address, handler: handler, flush: flush), outbound: outbound)
    }
}

/// A socket of ``FilteredDatagrams``.
final class FilteredSocket: DatagramSocket {
    let inner: any DatagramSocket
    let outbound: FilteredDatagrams.Outbound
    init(inner: any DatagramSocket, outbound: @escaping FilteredDatagrams.Outbound) {
        self.inner = inner
        self.outbound = outbound
    }
    var localAddress: Multiaddr { inner.localAddress }
    var eventLoop: any EventLoop { inner.eventLoop }
    func write(_ datagram: ByteBuffer, to address: SocketAddress) {
        for (d, a) in outbound(datagram, address) { inner.write(d, to: a) }
    }
    func flush() { inner.flush() }
    func close() async { await inner.close() }
}
