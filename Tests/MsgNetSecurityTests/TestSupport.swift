import Crypto
import MsgNetControl
import MsgNetCore
import MsgNetTestSupport
import NIOCore

@testable import MsgNetSecurity

/// The single `.send` in `actions`, if that is all they hold.
func sentMessage(_ actions: [NoiseHandshake.Action]) -> [UInt8]? {
    guard actions.count == 1, case .send(let bytes) = actions[0] else { return nil }
    return bytes
}

/// The failure in `actions`, if they end with one.
func failure(_ actions: [NoiseHandshake.Action]) -> SecurityError? {
    guard case .failed(let error) = actions.last else { return nil }
    return error
}

/// The result in `actions`, if they complete.
func completion(_ actions: [NoiseHandshake.Action]) -> NoiseHandshakeResult? {
    guard case .completed(let result) = actions.last else { return nil }
    return result
}

/// The three messages and both results of a handshake between two machines.
struct HandshakeRun {
    var messages: [[UInt8]]
    var initiator: NoiseHandshakeResult
    var responder: NoiseHandshakeResult
}

/// Runs `initiator` and `responder` back to back; nil if anything other than success happens.
func runHandshake(_ initiator: inout NoiseHandshake, _ responder: inout NoiseHandshake) -> HandshakeRun? {
    guard responder.start().isEmpty, let m1 = sentMessage(initiator.start()),
        let m2 = sentMessage(responder.onMessage(m1))
    else { return nil }
    let a2 = initiator.onMessage(m2)
    guard a2.count == 2, case .send(let m3) = a2[0], let initiatorResult = completion(a2) else { return nil }
    let a3 = responder.onMessage(m3)
    guard a3.count == 1, let responderResult = completion(a3) else { return nil }
    return HandshakeRun(messages: [m1, m2, m3], initiator: initiatorResult, responder: responderResult)
}

/// Collects a future's result (EmbeddedEventLoop completes futures synchronously).
final class ResultBox<Value: Sendable>: @unchecked Sendable {
    var result: Result<Value, any Error>?

    init(_ future: EventLoopFuture<Value>) {
        future.whenComplete { self.result = $0 }
    }

    var value: Value? { try? result?.get() }
    var error: (any Error)? {
        if case .failure(let error) = result { return error }
        return nil
    }
}
