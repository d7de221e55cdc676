import MsgNetMultistream
import Testing

@Suite("ProtocolSelector")
struct SelectorTests {
    @Test("exact ids are selected literally")
    func exact() {
        var selector = ProtocolSelector()
        selector.add("/noise")
        selector.add("/plaintext/2.0.0")
        #expect(selector.select("/noise") == "/noise")
        #expect(selector.select("/noise/") == nil)
        #expect(selector.select("/NOISE") == nil)
        #expect(selector.registration(for: "/plaintext/2.0.0") == "/plaintext/2.0.0")
        #expect(selector.advertised == ["/noise", "/plaintext/2.0.0"])
    }

    @Test("a predicate selects the proposed id and is advertised under its name")
    func predicate() {
        var selector = ProtocolSelector(["/ipfs/ping/1.0.0"])
        selector.add(matching: { $0.hasPrefix("/chat/") && $0.hasSuffix(".0") }, advertised: "/chat/1.0")
        #expect(selector.select("/chat/2.0") == "/chat/2.0")
        #expect(selector.registration(for: "/chat/2.0") == "/chat/1.0")
        #expect(selector.select("/chat/2.1") == nil)
        #expect(selector.advertised == ["/ipfs/ping/1.0.0", "/chat/1.0"])
    }

    @Test("adding a name again replaces it in place; remove drops exact and predicate entries")
    func replaceAndRemove() {
        var selector = ProtocolSelector(["/a", "/b", "/c"])
        selector.add(matching: { $0 == "/b2" }, advertised: "/b")
        #expect(selector.advertised == ["/a", "/b", "/c"])
        #expect(selector.select("/b") == nil)
        #expect(selector.select("/b2") == "/b2")
        selector.add("/a")
        #expect(selector.advertised == ["/a", "/b", "/c"])
        selector.remove("/b")
        #expect(selector.select("/b2") == nil)
        selector.remove("/a")
        #expect(selector.select("/a") == nil)
        #expect(selector.advertised == ["/c"])
    }

    @Test("registrations are tried in order")
    func order() {
        var selector = ProtocolSelector()
        selector.add(matching: { $0.hasPrefix("/x") }, advertised: "/x-any")
        selector.add("/x/1")
        #expect(selector.registration(for: "/x/1") == "/x-any")
    }
}
