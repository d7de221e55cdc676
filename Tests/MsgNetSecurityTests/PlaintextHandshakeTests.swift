import MsgNetControl
import MsgNetCore
import NIOCore
import Testing

@testable import MsgNetSecurity

@Suite struct PlaintextHandshakeTests {
    let alice = PrivateKey.generate()
    let bob = PrivateKey.generate()

    func sent(_ actions: [PlaintextHandshake.Action]) -> [UInt8]? {
        guard actions.count == 1, case .send(let bytes) = actions[0] else { return nil }
        return bytes
    }

    func failure(_ actions: [PlaintextHandshake.Action]) -> SecurityError? {
        guard case .failed(let error) = actions.last else { return nil }
        return error
    }

    /// A length-prefixed exchange with arbitrary contents.
    func framed(_ exchange: PlaintextExchangeMessage) -> [UInt8] {
        let body = exchange.encoded()
        return UVarint.encode(UInt64(body.count)) + body
    }

    func exchange(of key: PrivateKey, id: [UInt8]? = nil) -> PlaintextExchangeMessage {
        PlaintextExchangeMessage(
            id: id ?? key.peerID.bytes,
            publicKey: KeyMessage(type: .ed25519, data: key.publicKey.rawBytes)
        )
    }

    @Test func backToBack() throws {
        var a = PlaintextHandshake(identity: alice, expectedRemotePeer: bob.peerID)
        var b = PlaintextHandshake(identity: bob)
        let fromA = try #require(sent(a.start()))
        let fromB = try #require(sent(b.start()))
        // The wire form is uvarint(length) || Exchange{id, pubkey}.
        #expect(fromA == framed(exchange(of: alice)))
        let key = alice.publicKey.rawBytes
        #expect(
            fromA == [0x4e, 0x0a, 0x26, 0x00, 0x24, 0x08, 0x01, 0x12, 0x20] + key + [
                0x12, 0x24, 0x08, 0x01, 0x12, 0x20,
            ] + key)

        let onA = a.onBytes(fromB)
        let onB = b.onBytes(fromA)
        guard case .completed(let peerB, let keyB, let leftoverA) = onA.last,
            case .completed(let peerA, let keyA, let leftoverB) = onB.last
        else {
            Issue.record("exchange did not complete: \(onA) \(onB)")
            return
        }
        #expect(peerB == bob.peerID && keyB == bob.publicKey)
        #expect(peerA == alice.peerID && keyA == alice.publicKey)
        #expect(leftoverA.readableBytes == 0 && leftoverB.readableBytes == 0)
        #expect(failure(a.onBytes([1])) == .unexpectedMessage("plaintext bytes after the exchange completed"))
    }

    @Test func everySplitPointKeepsLeftover() throws {
        let appData: [UInt8] = Array("application bytes after the exchange".utf8)
        let stream = framed(exchange(of: bob)) + appData
        for split in 0...stream.count {
            for chunks in [[Array(stream[..<split]), Array(stream[split...])], stream.map { [$0] }] {
                var machine = PlaintextHandshake(identity: alice, expectedRemotePeer: bob.peerID)
                _ = machine.start()
                var delivered = 0
                var rest: [UInt8]?
                for chunk in chunks {
                    delivered += chunk.count
                    let actions = machine.onBytes(chunk)
                    if case .completed(let peer, _, let leftover) = actions.last {
                        #expect(peer == bob.peerID)
                        rest = Array(leftover.readableBytesView) + Array(stream[delivered...])
                        break
                    }
                    #expect(actions.isEmpty)
                }
                #expect(rest == appData)
            }
        }
    }

    @Test func truncatedExchangeFedByteByByteWaits() throws {
        let stream = framed(exchange(of: bob))
        var machine = PlaintextHandshake(identity: alice)
        _ = machine.start()
        for byte in stream.dropLast() {
            #expect(machine.onBytes([byte]).isEmpty)
        }
        guard case .completed = machine.onBytes([stream.last!]).last else {
            Issue.record("the last byte did not complete the exchange")
            return
        }
    }

    @Test func idKeyMismatchFails() throws {
        let wrongID = alice.peerID.bytes
        var machine = PlaintextHandshake(identity: alice)
        _ = machine.start()
        let error = failure(machine.onBytes(framed(exchange(of: bob, id: wrongID))))
        #expect(error == .peerIDKeyMismatch(claimed: wrongID, derived: bob.peerID))
        #expect(failure(machine.onBytes([0])) == .unexpectedMessage("plaintext bytes after the exchange failed"))
    }

    @Test func expectedPeerMismatchFails() {
        let other = PrivateKey.generate().peerID
        var machine = PlaintextHandshake(identity: alice, expectedRemotePeer: other)
        _ = machine.start()
        #expect(
            failure(machine.onBytes(framed(exchange(of: bob)))) == .peerIDMismatch(expected: other, actual: bob.peerID))
    }

    @Test func oversizeLengthPrefixFailsBeforeTheBody() {
        var machine = PlaintextHandshake(identity: alice)
        _ = machine.start()
        #expect(failure(machine.onBytes(UVarint.encode(4097))) == .messageTooLarge(size: 4097, limit: 4096))

        var huge = PlaintextHandshake(identity: alice)
        _ = huge.start()
        #expect(failure(huge.onBytes(UVarint.encode(UInt64(1) << 62))) == .messageTooLarge(size: 1 << 62, limit: 4096))

        var overflow = PlaintextHandshake(identity: alice)
        _ = overflow.start()
        guard case .malformedMessage = failure(overflow.onBytes([UInt8](repeating: 0xff, count: 10))) else {
            Issue.record("varint overflow not rejected")
            return
        }
    }

    @Test func malformedExchangesFail() {
        func verdict(_ bytes: [UInt8]) -> SecurityError? {
            var machine = PlaintextHandshake(identity: alice)
            _ = machine.start()
            return failure(machine.onBytes(bytes))
        }
        #expect(
            verdict(framed(PlaintextExchangeMessage(id: bob.peerID.bytes, publicKey: nil)))
                == .malformedPayload("Exchange has no pubkey"))
        #expect(
            verdict(
                framed(
                    PlaintextExchangeMessage(
                        id: nil, publicKey: KeyMessage(type: .ed25519, data: bob.publicKey.rawBytes))))
                == .malformedPayload("Exchange has no id"))
        guard case .malformedPayload = verdict([3, 0xff, 0xff, 0xff]) else {
            Issue.record("garbage protobuf accepted")
            return
        }
        let badKey = PlaintextExchangeMessage(id: [0, 1, 2], publicKey: KeyMessage(type: .ed25519, data: [1, 2, 3]))
        guard case .invalidKey = verdict(framed(badKey)) else {
            Issue.record("bad key accepted")
            return
        }
        // An empty exchange (length 0) has neither field.
        #expect(verdict([0]) == .malformedPayload("Exchange has no id"))
    }

    @Test func bytesBeforeStartFail() {
        var machine = PlaintextHandshake(identity: alice)
        #expect(failure(machine.onBytes([1])) == .unexpectedMessage("plaintext bytes before start()"))
    }
}
