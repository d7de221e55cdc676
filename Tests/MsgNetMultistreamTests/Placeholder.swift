import Testing
@testable import MsgNetMultistream

@Test func placeholder() { #expect(Bool(true)) }
