import Testing
@testable import MsgNetMplex

@Test func placeholder() { #expect(Bool(true)) }
