import XPMEMSystem

/// The load average when the figures were taken, and the cores: a figure taken while other work
/// shares the cores says so.
struct MachineLoad: Encodable {
    var oneMinute: Double
    var cores: Int
    var warning: String?

    /// The load when the program started, before its own processes added to it (read by each
    /// command's first line).
    static let atStart = now()

    static func now() -> MachineLoad {
        let text = FileSystem.readSmallFile("/proc/loadavg") ?? ""
        let oneMinute = Double(text.split(separator: " ").first ?? "") ?? 0
        let cores = ThisProcess.onlineProcessors
        var load = MachineLoad(oneMinute: oneMinute, cores: cores, warning: nil)
        if oneMinute > Double(cores) / 2 {
            load.warning = "load average \(oneMinute) on \(cores) cores: other work shares this machine; the interleaved "
                + "ratios below hold against drift, single figures may not"
        }
        return load
    }
}
