import XPMEMSystem

/// Who this process is within its job on this host, read from the launcher's environment.
///
/// Launchers, in the order they are tried:
/// - `xprun`: `XPMEM_RANK`, `XPMEM_SIZE`, `XPMEM_LOCAL_RANK`, and `XPMEM_JOB_DIR` for the rendezvous.
/// - Open MPI's `mpirun`: `OMPI_COMM_WORLD_LOCAL_RANK` / `OMPI_COMM_WORLD_LOCAL_SIZE`.
/// - MPICH's Hydra: `MPI_LOCALRANKID` / `MPI_LOCALNRANKS` (else `PMI_RANK` / `PMI_SIZE` on one host).
///
/// Under an MPI launcher the communicator spans the ranks on *this host* (the local ranks): MPI
/// carries data between hosts, the broker within one.
public struct JobEnvironment: Sendable, Equatable {
    /// This process's rank among the communicator's ranks (the local rank under MPI launchers).
    public var rank: Int
    public var size: Int
    /// The directory where ranks publish their control segments' ids (see `Rendezvous`).
    public var rendezvousDirectory: String
    /// Which launcher's variables were found: "xprun", "Open MPI", "MPICH".
    public var launcher: String

    public init(rank: Int, size: Int, rendezvousDirectory: String, launcher: String) {
        self.rank = rank
        self.size = size
        self.rendezvousDirectory = rendezvousDirectory
        self.launcher = launcher
    }

    /// Reads the process environment.
    public static func current() throws(CommunicatorError) -> JobEnvironment {
        try from(lookup: ThisProcess.environment, parentProcess: ThisProcess.parentID, userID: ThisProcess.userID)
    }

    /// The decision, separated from the process's real environment so that tests can feed it.
    static func from(lookup: (String) -> String?, parentProcess: Int, userID: Int) throws(CommunicatorError)
        -> JobEnvironment
    {
        func number(_ name: String) -> Int? { lookup(name).flatMap { Int($0) } }
        let found: (rank: Int, size: Int, launcher: String)
        if let rank = number("XPMEM_RANK"), let size = number("XPMEM_SIZE") {
            found = (rank, size, "xprun")
        } else if let rank = number("OMPI_COMM_WORLD_LOCAL_RANK"), let size = number("OMPI_COMM_WORLD_LOCAL_SIZE") {
            found = (rank, size, "Open MPI")
        } else if let rank = number("MPI_LOCALRANKID"), let size = number("MPI_LOCALNRANKS") {
            found = (rank, size, "MPICH")
        } else if let rank = number("PMI_RANK"), let size = number("PMI_SIZE") {
            found = (rank, size, "MPICH")
        } else {
            throw .missingEnvironment("none of XPMEM_RANK/XPMEM_SIZE (xprun), OMPI_COMM_WORLD_LOCAL_RANK (Open MPI) "
                + "or PMI_RANK/PMI_SIZE (MPICH) is set; start it with `xprun -n N`")
        }
        guard found.size >= 1, (0..<found.size).contains(found.rank) else {
            throw .missingEnvironment("rank \(found.rank) of size \(found.size) from \(found.launcher) is out of range")
        }
        return JobEnvironment(rank: found.rank, size: found.size,
                              rendezvousDirectory: rendezvousDirectory(lookup: lookup, parentProcess: parentProcess,
                                                                       userID: userID),
                              launcher: found.launcher)
    }

    /// `XPMEM_JOB_DIR` when a launcher made one. Otherwise a name every local rank of one job derives
    /// alike: the MPI job's identifier when the launcher exports one (`PMIX_NAMESPACE`, Open MPI's
    /// `OMPI_MCA_ess_base_jobid`), else the parent process — on one host, `mpirun` (or its daemon, or
    /// Hydra's proxy) is the parent of every local rank.
    static func rendezvousDirectory(lookup: (String) -> String?, parentProcess: Int, userID: Int) -> String {
        if let directory = lookup("XPMEM_JOB_DIR"), !directory.isEmpty { return directory }
        let job = lookup("PMIX_NAMESPACE") ?? lookup("OMPI_MCA_ess_base_jobid") ?? "ppid\(parentProcess)"
        let safe = String(job.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." ? $0 : "_" })
        return "/tmp/xpmem-job-\(userID)-\(safe)"
    }
}
