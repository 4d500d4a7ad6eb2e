import ArgumentParser
import XPMEM

extension Probe {
    /// Floods the broker as one uid: connects until refused, then exports segments until refused, and
    /// reports the refusals (after listing the segments it can see); then holds everything until it reads
    /// "stop" or its standard input closes, so that the test can
    /// check that other users and root are still served meanwhile.
    struct Flood: ParsableCommand {
        @OptionGroup var options: ProbeOptions
        @Option(help: "Connections to try.") var connections = 64
        @Option(help: "Segments to try to export (on the first connection).") var segments = 64

        func run() throws {
            try options.becomeRequestedUser()
            let lister = try XPMEMBroker.connect(socketPath: options.socket, name: "flood lister")
            report("visible \(try lister.segments().map(\.id).sorted().joined(separator: ","))")
            lister.close()
            var held: [XPMEMBroker] = []
            var refusal = "none"
            for _ in 0..<connections {
                do {
                    held.append(try XPMEMBroker.connect(socketPath: options.socket, name: "flood"))
                } catch {
                    refusal = "\(error)"
                    break
                }
            }
            report("connected \(held.count) refusal \(refusal)")
            var exported: [ExportedSegment] = []
            refusal = "none"
            if let first = held.first {
                for _ in 0..<segments {
                    do {
                        exported.append(try first.makeSegment(size: 4096))
                    } catch {
                        refusal = "\(error)"
                        break
                    }
                }
            }
            report("exported \(exported.count) refusal \(refusal)")
            report("holding")
            while let line = readLine(), line != "stop" {}
            withExtendedLifetime((held, exported)) {}
        }
    }
}
