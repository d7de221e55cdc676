import Testing
@testable import MsgNetStreams

@Test func placeholder() { #expect(Bool(true)) }
