import Testing
@testable import MsgNetHost

@Test func placeholder() { #expect(Bool(true)) }
