import Testing
@testable import XPMEMComm

@Suite struct JobEnvironmentTests {
    func environment(_ values: [String: String], parent: Int = 4242) throws -> JobEnvironment {
        try JobEnvironment.from(lookup: { values[$0] }, parentProcess: parent, userID: 1000)
    }

    @Test func xprunVariablesWin() throws {
        let job = try environment(["XPMEM_RANK": "2", "XPMEM_SIZE": "4", "XPMEM_JOB_DIR": "/tmp/job",
                                   "OMPI_COMM_WORLD_LOCAL_RANK": "0", "OMPI_COMM_WORLD_LOCAL_SIZE": "8"])
        #expect(job == JobEnvironment(rank: 2, size: 4, rendezvousDirectory: "/tmp/job", launcher: "xprun"))
    }

    @Test func openMPIUsesLocalRanksAndTheJobNamespace() throws {
        let job = try environment(["OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
                                   "OMPI_COMM_WORLD_LOCAL_SIZE": "2", "PMIX_NAMESPACE": "prterun-host-123@1"])
        #expect(job.rank == 1 && job.size == 2 && job.launcher == "Open MPI")
        #expect(job.rendezvousDirectory == "/tmp/xpmem-job-1000-prterun-host-123_1")
    }

    @Test func mpichFallsBackToTheParentProcess() throws {
        let job = try environment(["PMI_RANK": "3", "PMI_SIZE": "4"], parent: 777)
        #expect(job.rank == 3 && job.launcher == "MPICH")
        #expect(job.rendezvousDirectory == "/tmp/xpmem-job-1000-ppid777")
    }

    @Test func missingOrInconsistentVariablesAreRefused() {
        #expect(throws: CommunicatorError.self) { try environment([:]) }
        #expect(throws: CommunicatorError.self) { try environment(["XPMEM_RANK": "4", "XPMEM_SIZE": "4"]) }
    }
}

@Suite struct LayoutTests {
    @Test func linesDoNotOverlapAndRingsArePageAligned() {
        let layout = ControlLayout(size: 4)
        let header = (0..<4).flatMap { [layout.arrivalOffset(of: $0), layout.acknowledgedOffset(of: $0)] }
            + [layout.publicationOffset]
        #expect(Set(header).count == header.count)
        #expect(header.allSatisfy { $0 % ControlLayout.line == 0 && $0 + ControlLayout.line <= layout.ringsOffset })
        #expect(layout.ringsOffset % 4096 == 0)
        #expect(layout.ringOffset(from: 3) + layout.ringStride == layout.segmentSize)
    }

    @Test func slicesCoverEveryElementOnceInWholeCacheLines() {
        for ranks in 1...5 {
            for count in [1, 7, 8, 9, 100, 131_072] {
                let slices = (0..<ranks).map { Communicator.sliceBounds(of: $0, ranks: ranks, count: count) }
                #expect(slices.first?.lowerBound == 0 && slices.last?.upperBound == count)
                for (left, right) in zip(slices, slices.dropFirst()) {
                    #expect(left.upperBound == right.lowerBound)
                    #expect(left.upperBound % 8 == 0 || left.upperBound == count)
                }
            }
        }
    }
}

@Suite struct MeasurementScheduleTests {
    @Test func formatsLikePrintf() {
        #expect(MeasurementSchedule.fixed(0.1567, places: 3) == "0.157")
        #expect(MeasurementSchedule.fixed(12347.1814, places: 2) == "12347.18")
        #expect(MeasurementSchedule.fixed(0, places: 2) == "0.00")
        #expect(MeasurementSchedule.fixed(-1.5, places: 1) == "-1.5")
    }

    @Test func parsesSizeListsAndMatchesTheCSchedule() {
        #expect(MeasurementSchedule.sizes("0,8,1M,64M") == [0, 8, 1 << 20, 64 << 20])
        #expect(MeasurementSchedule.sizes("8,x") == nil)
        #expect(MeasurementSchedule.powersOfTwo(upTo: 4) == [0, 1, 2, 4])
        #expect(MeasurementSchedule.repetitions(size: 8, scale: 1) == 2000)
        #expect(MeasurementSchedule.repetitions(size: 1 << 20, scale: 1) == 256)
        #expect(MeasurementSchedule.repetitions(size: 64 << 20, scale: 0.1) == 2)
    }
}
