import Testing
@testable import MsgNetControl

@Test func placeholder() { #expect(Bool(true)) }
