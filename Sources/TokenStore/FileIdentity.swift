#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The device and inode a path names right now: a file restored over the store (`mv new store.db`) has another one,
/// while every write to the same file keeps it.
struct FileIdentity: Equatable, Sendable, CustomStringConvertible {
    let device: UInt64
    let inode: UInt64
    /// Bytes in the file when it was looked at; an empty file is no store to open.
    let size: Int64

    /// The file at `path`, or nil when there is none (or it cannot be looked at, which counts the same: no store).
    static func of(_ path: String) -> FileIdentity? {
        var status = stat()
        guard stat(path, &status) == 0, (status.st_mode & S_IFMT) == S_IFREG else { return nil }
        return FileIdentity(device: UInt64(status.st_dev), inode: UInt64(status.st_ino), size: Int64(status.st_size))
    }

    /// Same file, whatever its size now.
    func isSameFile(as other: FileIdentity?) -> Bool {
        guard let other else { return false }
        return device == other.device && inode == other.inode
    }

    static func == (lhs: FileIdentity, rhs: FileIdentity) -> Bool { lhs.isSameFile(as: rhs) }

    var description: String { "device \(device) inode \(inode)" }
}
