import MsgNetHost
import NIOCore
import NIOPosix
import Testing

@Suite("Datagram path: the handled-protocol predicate")
struct HandledProtocolsTests {
    /// The predicate remembers its last answer; every change of the set must still show at once.
    @Test("answers follow every change of the set, through the memo")
    func followsChanges() async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let handled = HandledProtocols()
        let ask = handled.predicate(on: loop)
        func answer(_ name: String) async throws -> Bool { try await loop.submit { ask(name) }.get() }

        #expect(try await answer("/a") == false)
        #expect(try await answer("/a") == false)  // remembered
        #expect(handled.set(["/a"]))
        #expect(try await answer("/a") == true)
        #expect(try await answer("/a") == true)  // remembered
        #expect(try await answer("/b") == false)  // another name replaces the memo
        #expect(try await answer("/a") == true)
        #expect(!handled.set(["/a"]))  // no change
        #expect(handled.set(["/b"]))
        #expect(try await answer("/a") == false)
        #expect(try await answer("/b") == true)
        #expect(handled.set([]))
        #expect(try await answer("/b") == false)
        // Built-in protocols (identify) are always handled.
        #expect(try await answer("/ipfs/id/1.0.0") == true)
        #expect(handled.names.isEmpty)
    }
}
