import Testing
@testable import MsgNetMultipacket

@Test func placeholder() { #expect(Bool(true)) }
