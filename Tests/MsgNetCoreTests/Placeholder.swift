import Testing
@testable import MsgNetCore

@Test func placeholder() { #expect(Bool(true)) }
