import MsgNetMultistream
import NIOCore
import Testing

/// The UTF-8 bytes of `text`.
func utf8(_ text: String) -> [UInt8] { Array(text.utf8) }

/// One multistream frame: `uvarint(len + 1) || text || "\n"` (single-byte prefix only).
func frame(_ text: String) -> [UInt8] {
    precondition(text.utf8.count < 127)
    return [UInt8(text.utf8.count + 1)] + utf8(text) + [0x0A]
}

let headerFrame = frame("/multistream/1.0.0")
let naFrame = frame("na")

func buffer(_ bytes: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: bytes) }

/// A non-send action, with leftover bytes split off so outcomes compare across chunkings.
enum Event: Equatable, CustomStringConvertible {
    case optimistic(String)
    case negotiated(String)
    case listed([String])
    case failed(MultistreamError)

    var description: String {
        switch self {
        case .optimistic(let id): return "optimistic(\(id))"
        case .negotiated(let id): return "negotiated(\(id))"
        case .listed(let ids): return "listed(\(ids))"
        case .failed(let error): return "failed(\(error))"
        }
    }
}

/// Everything a machine did for a given input.
struct Outcome: Equatable {
    /// All bytes it asked to send, concatenated.
    var sent: [UInt8] = []
    /// Its non-send actions, in order.
    var events: [Event] = []
    /// Bytes after the agreement: the `leftover` plus input left unconsumed afterwards.
    var trailing: [UInt8] = []
    /// Input bytes the machine left unconsumed while it was still negotiating (must stay empty).
    var unconsumedWhileActive = 0

    var isNegotiated: Bool {
        events.contains {
            if case .negotiated = $0 { return true }
            return false
        }
    }

    var isFinished: Bool {
        events.contains {
            switch $0 {
            case .negotiated, .listed, .failed: return true
            case .optimistic: return false
            }
        }
    }

    mutating func record(_ actions: [MultistreamMachine.Action]) {
        for action in actions {
            switch action {
            case .send(let bytes): sent += Array(bytes.readableBytesView)
            case .optimisticallySelected(let id): events.append(.optimistic(id))
            case .negotiated(let id, let leftover):
                events.append(.negotiated(id))
                trailing += Array(leftover.readableBytesView)
            case .listed(let ids): events.append(.listed(ids))
            case .failed(let error): events.append(.failed(error))
            }
        }
    }
}

/// Starts `machine` and feeds it `chunks`, one `onBytes` call per chunk.
func feed(_ machine: MultistreamMachine, chunks: [[UInt8]]) -> Outcome {
    var machine = machine
    var outcome = Outcome()
    outcome.record(machine.start())
    for chunk in chunks {
        var input = buffer(chunk)
        let wasFinished = outcome.isFinished
        outcome.record(machine.onBytes(&input))
        if outcome.isNegotiated {
            outcome.trailing += Array(input.readableBytesView)
        } else if !wasFinished && !outcome.isFinished {
            outcome.unconsumedWhileActive += input.readableBytes
        }
    }
    return outcome
}

/// Feeds `machine` the whole `input` in one chunk, byte by byte, and split in two at every point,
/// and expects the same outcome every time; returns it.
@discardableResult
func feedAllSplits(
    _ machine: MultistreamMachine,
    _ input: [UInt8],
    sourceLocation: SourceLocation = #_sourceLocation
) -> Outcome {
    let whole = feed(machine, chunks: [input])
    #expect(whole.unconsumedWhileActive == 0, sourceLocation: sourceLocation)
    let byteByByte = feed(machine, chunks: input.map { [$0] })
    #expect(byteByByte == whole, "byte by byte", sourceLocation: sourceLocation)
    for split in 0...input.count {
        let outcome = feed(machine, chunks: [Array(input[..<split]), Array(input[split...])])
        #expect(outcome == whole, "split at \(split)", sourceLocation: sourceLocation)
    }
    return whole
}

/// The result of running an initiator and a responder against each other.
struct Conversation {
    var initiator = Outcome()
    var responder = Outcome()
    /// Every byte the initiator received / the responder received, in order.
    var toInitiator: [UInt8] = []
    var toResponder: [UInt8] = []
}

/// Wires two machines together. Each side writes its `appData` as soon as it may: the initiator
/// on `.optimisticallySelected` or `.negotiated`, the responder on `.negotiated`.
func converse(
    initiator: MultistreamMachine,
    responder: MultistreamMachine,
    initiatorAppData: [UInt8] = [],
    responderAppData: [UInt8] = []
) -> Conversation {
    var initiator = initiator
    var responder = responder
    var result = Conversation()
    var wireToResponder: [UInt8] = []
    var wireToInitiator: [UInt8] = []
    var initiatorWroteApp = false
    var responderWroteApp = false

    func process(
        _ actions: [MultistreamMachine.Action],
        into outcome: inout Outcome,
        wire: inout [UInt8],
        appData: [UInt8],
        wroteApp: inout Bool
    ) {
        outcome.record(actions)
        for action in actions {
            switch action {
            case .send(let bytes): wire += Array(bytes.readableBytesView)
            case .optimisticallySelected, .negotiated:
                if !wroteApp {
                    wire += appData
                    wroteApp = true
                }
            case .listed, .failed: break
            }
        }
    }

    var noAppYet = false
    process(
        responder.start(), into: &result.responder, wire: &wireToInitiator, appData: [], wroteApp: &noAppYet)
    process(
        initiator.start(), into: &result.initiator, wire: &wireToResponder, appData: initiatorAppData,
        wroteApp: &initiatorWroteApp)

    for _ in 0..<100 where !(wireToResponder.isEmpty && wireToInitiator.isEmpty) {
        if !wireToResponder.isEmpty {
            result.toResponder += wireToResponder
            var input = buffer(wireToResponder)
            wireToResponder = []
            process(
                responder.onBytes(&input), into: &result.responder, wire: &wireToInitiator,
                appData: responderAppData, wroteApp: &responderWroteApp)
            if result.responder.isNegotiated {
                result.responder.trailing += Array(input.readableBytesView)
            }
        }
        if !wireToInitiator.isEmpty {
            result.toInitiator += wireToInitiator
            var input = buffer(wireToInitiator)
            wireToInitiator = []
            process(
                initiator.onBytes(&input), into: &result.initiator, wire: &wireToResponder,
                appData: initiatorAppData, wroteApp: &initiatorWroteApp)
            if result.initiator.isNegotiated {
                result.initiator.trailing += Array(input.readableBytesView)
            }
        }
    }
    return result
}
