import Testing
@testable import MsgNetSecurity

@Test func placeholder() { #expect(Bool(true)) }
