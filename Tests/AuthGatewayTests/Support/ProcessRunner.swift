import Foundation

/// Runs the package's own executables (`authctl`, `authgateway`), built next to the test bundle.
enum ProcessRunner {
    static let binDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    struct Result {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    static func executable(_ name: String) -> String {
        let candidates = [binDirectory.appendingPathComponent(name), packageRoot.appendingPathComponent(".build/debug/\(name)")]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0.path) }?.path ?? candidates[0].path
    }

    /// Runs a command to completion with no standard input.
    static func run(_ name: String, _ arguments: [String], environment: [String: String] = [:], stdin: String? = nil) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable(name))
        process.arguments = arguments
        process.currentDirectoryURL = packageRoot
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let input = Pipe()
        process.standardInput = stdin == nil ? FileHandle.nullDevice : input
        try process.run()
        if let stdin {
            input.fileHandleForWriting.write(Data(stdin.utf8))
            try input.fileHandleForWriting.close()
        }
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self), stderr: String(decoding: stderr, as: UTF8.self))
    }

    /// Starts `authgateway` on a free loopback port and returns the process and its port once it listens.
    static func startGateway(
        policy: String, db: String, environment: [String: String] = [:], arguments: [String] = [], log: URL
    ) async throws -> (Process, Int) {
        FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable("authgateway"))
        process.arguments = ["--policy", policy, "--db", db, "--listen", "127.0.0.1:0"] + arguments
        process.currentDirectoryURL = packageRoot
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // Poll the log for the listening line; bounded so a broken server fails the test instead of hanging it.
        for _ in 0..<300 {
            let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            if let range = text.range(of: "listening on 127.0.0.1:") {
                let digits = text[range.upperBound...].prefix { $0.isNumber }
                if let port = Int(digits) { return (process, port) }
            }
            if !process.isRunning { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        process.terminate()
        throw ProcessError.didNotStart((try? String(contentsOf: log, encoding: .utf8)) ?? "")
    }

    enum ProcessError: Error { case didNotStart(String) }
}
