import NIOCore

@testable import MsgNetMplex

/// One side of a back-to-back test: a machine, its decoder, and what it did.
final class MachineEndpoint {
    var machine: MplexMachine
    let processor: NIOSingleStepByteToMessageProcessor<MplexFrameDecoder>
    /// Encoded frames not yet carried to the peer.
    var outbound = ByteBuffer()
    /// Every frame this side sent.
    var sent: [MplexFrame] = []
    /// Every action except `.send` and `.deliver`.
    var events: [MplexMachine.Action] = []
    /// Data delivered per stream.
    var received: [MplexStreamID: [UInt8]] = [:]
    /// Whether delivered data is consumed at once.
    var autoConsume = true

    init(configuration: MplexConfiguration) {
        machine = MplexMachine(configuration: configuration)
        processor = NIOSingleStepByteToMessageProcessor(MplexFrameDecoder(configuration: configuration))
    }

    func handle(_ actions: [MplexMachine.Action]) {
        for action in actions {
            switch action {
            case .send(let frame):
                sent.append(frame)
                MplexFrameEncoder.encode(frame, into: &outbound)
            case .deliver(let id, let data):
                received[id, default: []] += Array(data.readableBytesView)
                if autoConsume { handle(machine.onConsumed(id, bytes: data.readableBytes)) }
            default:
                events.append(action)
            }
        }
    }

    /// Takes the recorded events.
    func takeEvents() -> [MplexMachine.Action] {
        defer { events = [] }
        return events
    }

    func open() throws -> MplexStreamID {
        let (id, actions) = try machine.openStream()
        handle(actions)
        return id
    }

    func write(_ id: MplexStreamID, _ text: String) throws {
        handle(try machine.write(id, ByteBuffer(string: text)))
    }

    func write(_ id: MplexStreamID, count: Int) throws {
        handle(try machine.write(id, ByteBuffer(repeating: 0x55, count: count)))
    }

    func closeWrite(_ id: MplexStreamID) throws { handle(try machine.closeWrite(id)) }
    func reset(_ id: MplexStreamID) { handle(machine.reset(id)) }
    func consume(_ id: MplexStreamID, _ bytes: Int) { handle(machine.onConsumed(id, bytes: bytes)) }
    func tick(_ now: NIODeadline) { handle(machine.onTick(now: now)) }

    /// Feeds raw frames as if they came from the peer.
    func inject(_ frames: MplexFrame...) {
        for frame in frames { handle(machine.onFrame(frame)) }
    }

    func text(_ id: MplexStreamID) -> String { String(decoding: received[id] ?? [], as: UTF8.self) }
}

/// Two machines wired back to back through the encoder and decoder, carrying `chunk` bytes per read.
final class MachinePair {
    let a: MachineEndpoint
    let b: MachineEndpoint
    let chunk: Int

    init(chunk: Int = .max, configuration: MplexConfiguration = .init(), b configurationB: MplexConfiguration? = nil) {
        self.chunk = chunk
        a = MachineEndpoint(configuration: configuration)
        b = MachineEndpoint(configuration: configurationB ?? configuration)
    }

    /// Carries bytes both ways until both sides are quiet.
    func pump() throws {
        while a.outbound.readableBytes > 0 || b.outbound.readableBytes > 0 {
            try carry(from: a, to: b)
            try carry(from: b, to: a)
        }
    }

    private func carry(from: MachineEndpoint, to: MachineEndpoint) throws {
        while from.outbound.readableBytes > 0 {
            let slice = from.outbound.readSlice(length: min(chunk, from.outbound.readableBytes))!
            try to.processor.process(buffer: slice) { frame in
                to.handle(to.machine.onFrame(frame))
            }
        }
        from.outbound.clear()
    }
}

/// The same stream seen from the other side.
func peer(_ id: MplexStreamID) -> MplexStreamID {
    MplexStreamID(number: id.number, isLocallyInitiated: !id.isLocallyInitiated)
}

extension MplexMachine.Action {
    /// The error code of a `.streamReset` or `.closeConnection`, else nil.
    var errorCode: MplexError.Code? {
        switch self {
        case .streamReset(_, let error), .closeConnection(let error): return error.code
        default: return nil
        }
    }
}
