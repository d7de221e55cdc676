// Shared by MsgNetInteropTests and (through a symlink) MsgNetHostTests.
import Foundation
import NIOConcurrencyHelpers

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// An error of the test harness itself: a process that did not start, did not answer in time,
/// or printed something unexpected. The message carries what the process printed.
struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// What a child process has printed so far, and how it ended.
struct ChildOutput: Sendable {
    var stdout: [UInt8] = []
    var stderr: [UInt8] = []
    var stdoutClosed = false
    var stderrClosed = false
    /// Exit status, or the signal number when `signaled`.
    var status: Int32?
    var signaled = false

    var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
    var stderrText: String { String(decoding: stderr, as: UTF8.self) }
    /// Complete stdout lines (without the newline).
    var stdoutLines: [String] { Self.lines(stdout) }
    /// Complete stderr lines (without the newline).
    var stderrLines: [String] { Self.lines(stderr) }
    /// Exited (by itself or by a signal) and both pipes reached EOF.
    var finished: Bool { status != nil && stdoutClosed && stderrClosed }
    /// Exited normally with status 0.
    var succeeded: Bool { finished && !signaled && status == 0 }

    private static func lines(_ bytes: [UInt8]) -> [String] {
        var out = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
            .map { String(decoding: $0, as: UTF8.self) }
        out.removeLast()  // the text after the last newline is not a complete line
        return out
    }

    /// A short summary for failure messages.
    var summary: String {
        let how = status.map { signaled ? "killed by signal \($0)" : "exit status \($0)" } ?? "still running"
        return
            "\(how); stdout: \(stdoutText.suffix(2000).debugDescription); stderr: \(stderrText.suffix(4000).debugDescription)"
    }
}

/// A spawned process (Foundation `Process`) whose stdout and stderr are collected by two reader
/// threads. Callers wait for conditions on the output with a timeout; ``stop()`` kills it.
/// Use it through ``withChild(_:_:name:_:)`` so it is killed on every path.
final class ChildProcess: @unchecked Sendable {
    // `process` is only touched in `start` and for its pid; every mutable state is in `state`.
    private let process = Process()
    let name: String
    /// The write end of the child's stdin, when it was started with one (else stdin is /dev/null).
    private let input: FileHandle?
    private struct Waiter {
        let predicate: @Sendable (ChildOutput) -> Bool
        let continuation: CheckedContinuation<ChildOutput?, Never>
    }
    private struct State {
        var output = ChildOutput()
        var waiters: [Int: Waiter] = [:]
        var cancelled: Set<Int> = []
        var nextWaiter = 0
    }
    private let state = NIOLockedValueBox(State())

    private init(name: String, input: FileHandle?) {
        self.name = name
        self.input = input
    }

    /// Starts `executable` with `arguments`; stdin is a pipe for ``writeLine(_:)`` when
    /// `withInput`, otherwise /dev/null.
    static func start(
        _ executable: String, _ arguments: [String], name: String, environment: [String: String]? = nil,
        withInput: Bool = false
    ) throws -> ChildProcess {
        if withInput {
            // A write to a child that already exited must fail, not kill the test process.
            signal(SIGPIPE, SIG_IGN)
        }
        let stdin = withInput ? Pipe() : nil
        let child = ChildProcess(name: name, input: stdin?.fileHandleForWriting)
        let process = child.process
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        if let stdin {
            process.standardInput = stdin
        } else {
            process.standardInput = FileHandle.nullDevice
        }
        process.terminationHandler = { [child] p in
            let signaled = p.terminationReason == .uncaughtSignal
            let status = p.terminationStatus
            child.update { o in
                o.status = status
                o.signaled = signaled
            }
        }
        do {
            try process.run()
        } catch {
            throw HarnessError("\(name): cannot start \(executable): \(error)")
        }
        child.drain(stdout.fileHandleForReading, isStdout: true)
        child.drain(stderr.fileHandleForReading, isStdout: false)
        return child
    }

    var pid: Int32 { process.processIdentifier }

    /// Writes `line` and a newline to the child's stdin (started `withInput`).
    func writeLine(_ line: String) throws {
        guard let input else { throw HarnessError("\(name) was started without a stdin pipe") }
        do {
            try input.write(contentsOf: Array((line + "\n").utf8))
        } catch {
            throw HarnessError("\(name): cannot write to stdin: \(error); \(output.summary)")
        }
    }

    /// Closes the child's stdin (it reads end of input).
    func closeInput() {
        try? input?.close()
    }

    /// Reads `handle` on its own thread until EOF.
    private func drain(_ handle: FileHandle, isStdout: Bool) {
        let thread = Thread { [self] in
            while true {
                let data = handle.availableData
                if data.isEmpty {
                    update { o in
                        if isStdout { o.stdoutClosed = true } else { o.stderrClosed = true }
                    }
                    return
                }
                update { o in
                    if isStdout { o.stdout += data } else { o.stderr += data }
                }
            }
        }
        thread.start()
    }

    private func update(_ change: (inout ChildOutput) -> Void) {
        state.withLockedValue { s in
            change(&s.output)
            let output = s.output
            for (id, waiter) in s.waiters where waiter.predicate(output) {
                s.waiters[id] = nil
                waiter.continuation.resume(returning: output)
            }
        }
    }

    /// What the process printed so far.
    var output: ChildOutput { state.withLockedValue { $0.output } }

    /// Waits until `predicate` holds for the output.
    /// - Throws: ``HarnessError`` (with everything the process printed) after `timeout`.
    @discardableResult
    func wait(
        for what: String,
        timeout: Duration,
        until predicate: @escaping @Sendable (ChildOutput) -> Bool
    ) async throws -> ChildOutput {
        let result = await withTaskGroup(of: ChildOutput?.self) { group in
            group.addTask { await self.waitUntil(predicate) }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next()!
            group.cancelAll()
            return first
        }
        guard let result else {
            throw HarnessError("\(name): no \(what) within \(timeout); \(output.summary)")
        }
        return result
    }

    private func waitUntil(_ predicate: @escaping @Sendable (ChildOutput) -> Bool) async -> ChildOutput? {
        let id = state.withLockedValue { s in
            s.nextWaiter += 1
            return s.nextWaiter
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<ChildOutput?, Never>) in
                state.withLockedValue { s in
                    if s.cancelled.remove(id) != nil {
                        continuation.resume(returning: nil)
                    } else if predicate(s.output) {
                        continuation.resume(returning: s.output)
                    } else {
                        s.waiters[id] = Waiter(predicate: predicate, continuation: continuation)
                    }
                }
            }
        } onCancel: {
            state.withLockedValue { s in
                if let waiter = s.waiters.removeValue(forKey: id) {
                    waiter.continuation.resume(returning: nil)
                } else {
                    s.cancelled.insert(id)
                }
            }
        }
    }

    /// Waits for the first complete stdout line (e.g. a listen address).
    /// - Throws: when the process exits first or after `timeout`.
    func firstLine(timeout: Duration) async throws -> String {
        let output = try await wait(for: "first stdout line", timeout: timeout) { o in
            o.stdout.contains(UInt8(ascii: "\n")) || o.finished
        }
        guard let line = output.stdoutLines.first else {
            throw HarnessError("\(name) ended before printing a line; \(output.summary)")
        }
        return line.trimmingCharacters(in: .whitespaces)
    }

    /// Waits until the process has exited and its pipes are drained.
    func waitForExit(timeout: Duration) async throws -> ChildOutput {
        try await wait(for: "exit", timeout: timeout) { $0.finished }
    }

    /// Sends `signal` unless the process already exited.
    func send(_ signal: Int32) {
        state.withLockedValue { s in
            if s.output.status == nil { _ = kill(pid, signal) }
        }
    }

    /// Kills the process (SIGKILL) unless it already exited, and waits for it to end.
    func stop() async {
        closeInput()
        send(SIGKILL)
        _ = try? await waitForExit(timeout: .seconds(10))
    }
}

/// Runs `body` with a started child process and kills the process afterwards, on success,
/// error and cancellation alike.
func withChild<R: Sendable>(
    _ executable: String,
    _ arguments: [String],
    name: String,
    environment: [String: String]? = nil,
    withInput: Bool = false,
    _ body: (ChildProcess) async throws -> R
) async throws -> R {
    let child = try ChildProcess.start(
        executable, arguments, name: name, environment: environment, withInput: withInput)
    do {
        let result = try await body(child)
        await child.stop()
        return result
    } catch {
        await child.stop()
        throw error
    }
}

/// Runs a process to completion (killing it after `timeout`) and returns what it printed.
func runToCompletion(
    _ executable: String,
    _ arguments: [String],
    name: String,
    timeout: Duration = .seconds(60)
) async throws -> ChildOutput {
    try await withChild(executable, arguments, name: name) { child in
        try await child.waitForExit(timeout: timeout)
    }
}

/// `count` deterministic bytes with no short period (xorshift64*), so a misplaced, dropped or
/// repeated chunk shows up as a mismatch. (A zero seed is made odd: xorshift stays at 0.)
func patternBytes(count: Int, seed: UInt64 = 0x9E37_79B9_7F4A_7C15) -> [UInt8] {
    var x = seed | 1
    var out = [UInt8]()
    out.reserveCapacity(count + 8)
    while out.count < count {
        x ^= x >> 12
        x ^= x << 25
        x ^= x >> 27
        let v = x &* 0x2545_F491_4F6C_DD1D
        withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) }
    }
    out.removeLast(out.count - count)
    return out
}
