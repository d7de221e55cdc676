import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

extension InteropTests {
    /// The process harness the other tests rely on: output capture, exit status, timeouts,
    /// and that a process is killed when a test fails.
    @Suite("process harness", .timeLimit(.minutes(1)))
    struct Harness {
        @Test("captures stdout and stderr lines and the exit status")
        func capture() async throws {
            let output = try await runToCompletion(
                "/bin/sh", ["-c", "echo one; echo two; echo oops >&2; printf partial; exit 3"], name: "sh",
                timeout: .seconds(20))
            #expect(output.finished)
            #expect(output.status == 3 && !output.signaled)
            #expect(!output.succeeded)
            #expect(output.stdoutLines == ["one", "two"])
            #expect(output.stdoutText == "one\ntwo\npartial")
            #expect(output.stderrLines == ["oops"])
        }

        @Test("a process that prints nothing times out, and is killed on the way out")
        func timeoutKills() async throws {
            let pid = PIDBox()
            await #expect(throws: HarnessError.self) {
                try await withChild("/bin/sh", ["-c", "exec sleep 60"], name: "silent") { child in
                    pid.set(child.pid)
                    _ = try await child.firstLine(timeout: .milliseconds(200))
                }
            }
            let killed = try #require(pid.get())
            // The child was reaped: no such process any more.
            #expect(kill(killed, 0) == -1 && errno == ESRCH)
        }

        @Test("firstLine fails at once when the process exits without a line")
        func exitsWithoutLine() async throws {
            try await withChild("/bin/sh", ["-c", "echo nope >&2; exit 2"], name: "quitter") { child in
                let error = await #expect(throws: HarnessError.self) {
                    _ = try await child.firstLine(timeout: .seconds(20))
                }
                #expect(error?.description.contains("nope") == true, "\(String(describing: error))")
            }
        }
    }
}

/// A pid shared between a closure and the test.
private final class PIDBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Int32?
    func set(_ v: Int32) { lock.withLock { value = v } }
    func get() -> Int32? { lock.withLock { value } }
}
