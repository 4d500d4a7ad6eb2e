@preconcurrency import Glibc

extension FileSystem {
    /// Whether `path` names a directory (following symbolic links). The corresponding C function is `stat`.
    public static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFDIR
    }
}
